#!/usr/bin/env bash
# The 8 GB-card recipe for the lent GPU machine (device tool): the 8gb profile on the 8B shape with
# torch's allocator capped at 7.6 GiB (variant c:8gb-cap) beside the same run uncapped
# (c:8gb-uncapped), at 2048 tokens (micro batch 2) and at 4096 tokens (micro batch 1), 20 steps each.
# Results: $OUT/seq2048/ and $OUT/seq4096/ (throughput-<gpu>.json and .md), the tail of every worker
# log in $OUT/worker-logs.txt. If the capped run at 2048 tokens fails or goes over 8.0 GiB in
# nvidia-smi, micro batch 1 is tried ($OUT/seq2048-mb1/).
#
# Here, once:   bash ../shared/device/make_wheelhouse.sh .wheelhouse      (git-ignored, ~47 MB)
# On the device (carry .wheelhouse):   bash benchmarks/perf/gpu_8gb.sh
set -euo pipefail

usage() {
    cat <<'TEXT'
Usage: benchmarks/perf/gpu_8gb.sh [--dry-run] [--steps N]

Runs benchmarks/perf/training_throughput.py --models 8b --arms c:8gb-cap,c:8gb-uncapped at
--seq-len 2048 (micro batch 2, 4 sequences a step) and 4096 (micro batch 1, 2 sequences a step).
Results go under $OUT (or benchmarks/results/8gb/ without it).

  --dry-run   print the plans, run nothing
  --steps N   optimizer steps per arm (default 20)
  --help      this text
TEXT
}

dry_run=0
steps=20
while (( $# )); do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --dry-run) dry_run=1 ;;
        --steps) steps="${2:?--steps needs a number}"; shift ;;
        *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="${OUT:-benchmarks/results/8gb}"
py="${PYTHON:-python3}"
budget="${VOICETUNE_BENCH_BUDGET_S:-570}"   # the device tool allows 600 s a command
# shellcheck source=benchmarks/perf/device_env.sh
source benchmarks/perf/device_env.sh

bench() {  # bench SEQ_LEN SEQS MICRO_BATCH DIR [extra args...]
    local seq="$1" seqs="$2" micro="$3" dir="$4"
    shift 4
    local args=(--out-dir "$out/$dir" --no-merge --models 8b --arms "c:8gb-cap,c:8gb-uncapped"
                --seq-len "$seq" --batch-seqs "$seqs" --steps "$steps" --warmup-steps 3
                --set "micro_batch_size=$micro" "$@")
    if (( dry_run )); then
        "$py" benchmarks/perf/training_throughput.py --dry-run "${args[@]}"
        return 0
    fi
    local left=$(( budget - SECONDS ))
    echo "==> seq $seq, micro batch $micro (deadline ${left} s)"
    "$py" benchmarks/perf/training_throughput.py --deadline-s "$left" "${args[@]}" || true
}

capped_fits() {  # capped_fits DIR: the capped run finished within 8.0 GiB in nvidia-smi
    "$py" - "$out/$1" <<'PY'
import json, pathlib, sys
files = list(pathlib.Path(sys.argv[1]).glob("throughput-*.json"))
runs = json.loads(files[0].read_text())["runs"] if files else []
run = next((r for r in runs if r["label"] == "c:8gb-cap"), {})
ok = run.get("status") == "ok" and (run.get("smi_peak_gib") or 99) <= 8.0
print(f"capped run: {run.get('status')}, nvidia-smi {run.get('smi_peak_gib')} GiB")
sys.exit(0 if ok else 1)
PY
}

if (( ! dry_run )); then
    echo "==> wheelhouse"
    # shellcheck disable=SC2119  # no extra wheels
    device_install_wheelhouse
    device_export_env
    device_gpu_line || true
fi
bench 2048 4 2 seq2048
bench 4096 2 1 seq4096
if (( ! dry_run )) && ! capped_fits seq2048; then
    bench 2048 4 1 seq2048-mb1 --arms c:8gb-cap
fi
if (( ! dry_run )); then
    tail -n 30 "$out"/seq*/throughput-logs/*.log > "$out/worker-logs.txt" 2>/dev/null || true
fi
