#!/usr/bin/env bash
# The one-command recipe for the lent GPU machine (device tool): install the wheelhouse that runs
# Axolotl there, then run benchmarks/perf/training_throughput.py with its results written straight into
# $OUT (so a command cut short still returns what it measured).
#
# Here, once:   bash ../shared/device/make_wheelhouse.sh .wheelhouse      (git-ignored, ~47 MB)
# On the device (carry .wheelhouse):
#   bash benchmarks/perf/gpu_throughput.sh --models 8b --arms a,b,c
#   bash benchmarks/perf/gpu_throughput.sh --models smol,8b --arms a,b,c,c:8gb --steps 12
# Every argument goes to the Python script (see its --help). Back here, merge the calls' results:
#   python benchmarks/perf/training_throughput.py --merge out1/throughput-*.json out2/throughput-*.json
set -euo pipefail

usage() {
    cat <<'TEXT'
Usage: benchmarks/perf/gpu_throughput.sh [--dry-run] [benchmark arguments...]

Installs .wheelhouse into /tmp/site with benchmarks/perf/device_env.sh (axolotl, bitsandbytes,
liger-kernel, trl, datasets for the GPU machine's Python 3.12 / torch 2.11 + CUDA 13), then runs
  python3 benchmarks/perf/training_throughput.py --out-dir "$OUT" --deadline-s <what is left of 570 s> ARGS
Defaults: --models 8b --arms a,b,c. Results: $OUT/throughput-<gpu>.json and .md, logs in
$OUT/throughput-logs/. Without $OUT, results go to benchmarks/results/.

  --dry-run   print what would run (the install and the benchmark's plan), change nothing
  --help      this text
TEXT
}

dry_run=0
args=()
for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --dry-run) dry_run=1 ;;
        *) args+=("$arg") ;;
    esac
done
(( ${#args[@]} )) || args=(--models 8b --arms "a,b,c")

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="${OUT:-benchmarks/results}"
py="${PYTHON:-python3}"
budget="${VOICETUNE_BENCH_BUDGET_S:-570}"   # the device tool allows 600 s a command
# shellcheck source=benchmarks/perf/device_env.sh
source benchmarks/perf/device_env.sh

if (( dry_run )); then
    echo "would install .wheelhouse into $DEVICE_SITE (if present) and run:"
    echo "  $py benchmarks/perf/training_throughput.py --out-dir $out --dry-run ${args[*]}"
    exec "$py" benchmarks/perf/training_throughput.py --out-dir "$out" --dry-run "${args[@]}"
fi

echo "==> wheelhouse"
# shellcheck disable=SC2119  # no extra wheels
device_install_wheelhouse || echo "arms b and c need Axolotl" >&2
device_export_env

echo "==> GPU"
device_gpu_line || true
"$py" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'

left=$(( budget - SECONDS ))
echo "==> benchmark (deadline ${left} s)"
status=0
"$py" benchmarks/perf/training_throughput.py --out-dir "$out" --deadline-s "$left" "${args[@]}" || status=$?
df -h /tmp | tail -1
exit "$status"
