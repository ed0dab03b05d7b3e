#!/usr/bin/env bash
# Evaluation memory on the lent GPU machine: voicetune's FusedEvalLossPlugin (Liger's fused loss in
# evaluation too) against the full logits, through the same `voicetune train` a user runs.
#   1. SmolLM2-135M (the demo model, from the GGUF; carry the halves first as in
#      gpu_smollm2_qlora.sh), 4 QLoRA steps at micro batch 16 x 4096: eval batch 15 (the val split)
#      with the fused loss, then eval batch 1; the eval losses before the first step must match those
#      the full logits gave (3.219 at batch 15 on the H100, 2.638 at batch 1).
#   2. A randomly initialised Llama-3.1-8B shape with `--profile 8gb`, 20 steps at 2048 tokens: the
#      training and evaluation peaks, both meant to stay within 7.0 GiB.
# Device call (carry .wheelhouse and .carry: .carry/tok = the SmolLM2 tokenizer files,
# .carry/home/data/processed/long = the demo author prepared at sequence_len 2048):
#   bash benchmarks/perf/gpu_eval_memory.sh          (EVAL_BATCHES="1" runs the SmolLM2 part at eval batch 1 only)
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,13p' "$0"
    exit 0
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="${OUT:-/tmp/eval-memory-out}"
mkdir -p "$out"

# shellcheck source=benchmarks/perf/device_env.sh
source benchmarks/perf/device_env.sh
shopt -s nullglob
device_install_wheelhouse "$DEVICE_GGUF_PARTS"/*.whl
shopt -u nullglob
device_export_env
export VOICETUNE_HOME="$root/.carry/home"
device_gpu_line "$out/gpu.txt"

summary() {  # the run's figures, one JSON line
    python3 - "$VOICETUNE_HOME/checkpoints/$1" "$1" <<'PY'
import json, sys, yaml
m = json.load(open(f"{sys.argv[1]}/manifest.json"))
cfg = yaml.safe_load(open(f"{sys.argv[1]}/axolotl.yaml"))
keys = ["global_step", "first_eval_loss", "final_eval_loss", "tokens_per_second", "peak_vram_train_gib",
        "vram_estimate_train_gib", "peak_vram_eval_gib", "vram_estimate_eval_gib", "wall_seconds"]
row = {"run": sys.argv[2], "micro_batch_size": cfg.get("micro_batch_size"),
       "eval_batch_size": cfg.get("eval_batch_size", cfg.get("micro_batch_size")),
       "fused_eval": any("FusedEvalLoss" in p for p in cfg.get("plugins", []))}
print(json.dumps(row | {k: m.get(k) for k in keys}))
PY
}
train() {  # run name, then voicetune train arguments
    local run="$1"
    shift
    python3 -m voicetune train --data long --run "$run" --wandb off "$@" 2>&1 \
        | tee "$out/$run.log" | grep -E "^(auto|train|  |steps|peak|throughput|error)" | tail -25 || true
    summary "$run" | tee -a "$out/summary.jsonl"
}

if device_smollm2_gguf; then
    echo "==> SmolLM2-135M, fused loss in evaluation"
    python3 -m voicetune base-model --gguf "$DEVICE_SMOLLM2_GGUF" --out /tmp/smollm2
    for batch in ${EVAL_BATCHES:-15 1}; do  # 15: the val split, what the profile gives
        train "smol-eval$batch" --profile auto --base-model /tmp/smollm2 --max-steps 4 --set "eval_batch_size=$batch"
    done
else
    echo "SmolLM2 part skipped" >&2
fi

echo "==> random Llama-3.1-8B shape, profile 8gb"
python3 benchmarks/perf/random_llama8b.py /tmp/m8b .carry/tok
train 8b-8gb --profile 8gb --base-model /tmp/m8b --max-steps 20
