#!/usr/bin/env bash
# Issue 20 on the lent GPU machine: which CPU-demo recipe moves the voice most for the same CPU time?
# Each variant trains the demo model (SmolLM2-135M-Instruct) with `--profile cpu-demo` (fp32 LoRA, the
# CPU demo's arithmetic) on one writer, then runs the benchmark with the CPU demo's settings (160
# prompts of 40 tokens, 80 new tokens) on the GPU, base vs base + the last adapter. A variant is
#   NAME:AUTHOR:SEQUENCE_LEN:STEPS:LR
# AUTHOR is `saki` (data/demo/author) or one of data/demo/others/<name>: that writer is then the person,
# and the remaining others are the benchmark's other authors (the recipe was never tuned on them).
# The same number of rows x tokens (CPU time) is 160 x 256 = 320 x 128.
#
# Needs the SmolLM2 GGUF joined in /tmp/gguf-parts (two earlier calls, see gpu_voice.sh) and carries
# .wheelhouse and .carry/ftfy. Results: $OUT/variants.jsonl (one line a variant) and each variant's
# results.json and train log under $OUT/<name>/.
#   bash benchmarks/perf/gpu_recipe_variants.sh a:saki:256:160:5e-4 b:saki:128:320:1e-3 ...
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" || $# -eq 0 ]]; then
    sed -n '2,15p' "$0"
    exit 0
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="${OUT:-/tmp/gpu-variants-out}"
mkdir -p "$out"

# shellcheck source=benchmarks/perf/device_env.sh
source benchmarks/perf/device_env.sh
device_smollm2_gguf || exit 1
device_install_wheelhouse "$DEVICE_GGUF_PARTS"/*.whl .carry/ftfy/*.whl
device_export_env
export VOICETUNE_HOME=/tmp/vt VOICETUNE_VENV=/nonexistent
home=/tmp/vt
mkdir -p "$home"
device_gpu_line "$out/gpu.txt"
base="$home/models/base"
[[ -d "$base" ]] || python3 -m voicetune base-model --gguf "$DEVICE_SMOLLM2_GGUF" --out "$base" 2>&1 | tail -1

# author_input AUTHOR: the writer's folder; others_for AUTHOR: the other authors without that writer
author_input() { if [[ "$1" == saki ]]; then echo "$root/data/demo/author"; else echo "$root/data/demo/others/$1"; fi; }
others_for() {
    local dir="$home/others-without-$1" o
    if [[ ! -d "$dir" ]]; then
        mkdir -p "$dir"
        for o in "$root"/data/demo/others/*/; do
            [[ "$(basename "$o")" == "$1" ]] || ln -s "$o" "$dir/$(basename "$o")"
        done
    fi
    echo "$dir"
}

for variant in "$@"; do
    IFS=: read -r name author seq steps lr extra <<<"$variant"
    sets=()
    if [[ -n "${extra:-}" ]]; then
        IFS=, read -r -a pairs <<<"$extra"
        for pair in "${pairs[@]}"; do sets+=(--set "$pair"); done
    fi
    data="$author-$seq"
    if [[ ! -f "$home/data/processed/$data/manifest.json" ]]; then
        python3 -m voicetune prepare --input "$(author_input "$author")" --name "$data" --base-model "$base" \
            --sequence-len "$seq" 2>&1 | tail -1
    fi
    mkdir -p "$out/$name"
    started=$SECONDS
    python3 -m voicetune train --profile cpu-demo --data "$data" --run "$name" --base-model "$base" --wandb off \
        --max-steps "$steps" --lr "$lr" --micro-batch 1 --grad-accum 1 --sequence-len "$seq" "${sets[@]}" \
        >"$out/$name/train.log" 2>&1 || { echo "$name: train failed"; continue; }
    trained=$((SECONDS - started))
    for seed in ${SEEDS:-1234 7}; do
        # --run of an unmerged run: base vs base + its last adapter, prompts from the run's held-out split
        bench=(--run "$name" --out "$home/results/$name-$seed" --prompts 160 --prompt-tokens 40 --max-new-tokens 80
            --batch-size 160 --ppl-max-tokens 2048 --device cuda --seed "$seed")
        [[ "$author" == saki ]] || bench+=(--others "$(others_for "$author")")
        python3 -m voicetune benchmark "${bench[@]}" >"$out/$name/benchmark-$seed.log" 2>&1 \
            || { echo "$name: benchmark failed"; tail -3 "$out/$name/benchmark-$seed.log"; continue; }
        cp "$home/results/$name-$seed/results.json" "$out/$name/results-$seed.json"
        python3 - "$name" "$author" "$seq" "$steps" "$lr" "${extra:-}" "$seed" "$trained" \
            "$home/results/$name-$seed/results.json" >>"$out/variants.jsonl" <<'EOF'
import json, sys
name, author, seq, steps, lr, extra, seed, trained, path = sys.argv[1:]
r = json.load(open(path))
v = r["voice_score"]
sweep = {p["scale"]: round(p["voice_score"]["value"], 3) for p in (r.get("strength_sweep") or {}).get("points", [])}
row = {"name": name, "author": author, "sequence_len": int(seq), "steps": int(steps), "lr": float(lr),
       "set": extra, "seed": int(seed), "train_s": int(trained),
       **{k: [round(v[k][x], 3) for x in ("value", "ci_low", "ci_high")] for k in v}, "sweep": sweep}
print(json.dumps(row))
EOF
        tail -1 "$out/variants.jsonl"
    done
done
