#!/usr/bin/env bash
# Issue 10 on the lent 2-GPU machine, in one call: the same `voicetune train` (training/2_train_lora.sh)
# on a randomly initialised Llama-3.1-8B-shaped QLoRA, first on one GPU, then on two through
# accelerate + DeepSpeed ZeRO-2, then the two-GPU run's checkpoint resumed on one GPU (voicetune
# re-lays DeepSpeed's per-GPU optimizer shards: see voicetune/train/resume.py).
#
# Here, once (both folders git-ignored; carry them):
#   bash ../shared/device/make_wheelhouse.sh .wheelhouse            # + DeepSpeed's pure-Python wheel
#   mkdir -p .carry/tok && cp models/base/tokenizer* models/base/chat_template.jinja .carry/tok/
#   VOICETUNE_HOME=$PWD/.carry/home voicetune prepare --input data/demo/author --name long \
#       --base-model models/base --sequence-len 2048
# On the device:  bash benchmarks/perf/gpu_multi_gpu.sh [STEPS_TWO_GPUS] [STEPS_ONE_GPU]
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,11p' "$0"
    exit 0
fi
steps_two="${1:-50}"
steps_one="${2:-20}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="${OUT:-/tmp/multi-gpu-out}"
mkdir -p "$out"

# shellcheck source=benchmarks/perf/device_env.sh
source benchmarks/perf/device_env.sh
# shellcheck disable=SC2119  # no extra wheels
device_install_wheelhouse
device_export_env
export VOICETUNE_HOME="$root/.carry/home"
device_gpu_line

echo "==> random Llama-3.1-8B-shaped model (bf16, built on the GPU, no download)"
python3 benchmarks/perf/random_llama8b.py /tmp/m8b .carry/tok

train() {
    python3 -m voicetune train --profile 80gb --data long --base-model /tmp/m8b --wandb off \
        --set use_tensorboard=false --set eval_sample_packing=false "$@"
}
summary() {
    python3 - "$1" <<'PY'
import json, sys
m = json.load(open(f"{sys.argv[1]}/manifest.json"))
keys = ["global_step", "max_steps", "tokens_per_second", "trainable_tokens_per_second", "peak_vram_gib",
        "vram_estimate_gib", "peak_vram_train_gib", "peak_vram_eval_gib", "final_train_loss", "final_eval_loss", "wall_seconds", "gpus"]
print(json.dumps({k: m.get(k) for k in keys}))
PY
}

if (( steps_one > 0 )); then
    echo "==> one GPU, $steps_one steps"
    CUDA_VISIBLE_DEVICES=0 train --run one-gpu --max-steps "$steps_one" 2>&1 | tee "$out/one-gpu.log" \
        | grep -vE "it/s\]|s/it\]" || true
    summary "$VOICETUNE_HOME/checkpoints/one-gpu" | tee "$out/summary.jsonl"
fi

echo "==> two GPUs (DeepSpeed ZeRO-2), $steps_two steps"
train --run two-gpu --gpus 2 --multi-gpu deepspeed --max-steps "$steps_two" 2>&1 | tee "$out/two-gpu.log" | grep -vE "it/s\]|s/it\]" || true
summary "$VOICETUNE_HOME/checkpoints/two-gpu" | tee -a "$out/summary.jsonl"
find "$VOICETUNE_HOME/checkpoints/two-gpu/output" -maxdepth 1 -name "checkpoint-*" | tee "$out/two-gpu-checkpoints.txt"

echo "==> the two-GPU checkpoint resumed on one GPU, to step $((steps_two + 10))"
CUDA_VISIBLE_DEVICES=0 train --run two-gpu --gpus 1 --resume --max-steps "$((steps_two + 10))" 2>&1 \
    | tee "$out/resume-one-gpu.log" | grep -vE "it/s\]|s/it\]" || true
summary "$VOICETUNE_HOME/checkpoints/two-gpu" | tee -a "$out/summary.jsonl"
# the learning rate and loss around the switch: the schedule must continue, not warm up again
python3 - "$VOICETUNE_HOME/checkpoints/two-gpu/output" "$steps_two" <<'PY' | tee "$out/resume-lr.txt"
import json, sys
from pathlib import Path
out, switch = Path(sys.argv[1]), int(sys.argv[2])
last = max(out.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
for entry in json.loads((last / "trainer_state.json").read_text())["log_history"]:
    if "loss" in entry and switch - 3 <= entry["step"] <= switch + 3:
        print(f"step {entry['step']:3d}  lr {entry['learning_rate']:.3e}  loss {entry['loss']:.4f}")
PY
