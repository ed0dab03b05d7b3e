#!/usr/bin/env bash
# Step 4: one table of what this machine can do (voicetune doctor), each failure with its fix.
set -euo pipefail
# shellcheck source=setup/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: setup/4_verify.sh [--json] [--dry-run] [--help]

Runs 'voicetune doctor' in the venv: GPU, compute capability, VRAM, driver, WSL, torch + CUDA, whether
torch's kernels cover the card, bf16, a real 4-bit NF4 matmul forward and backward, flash-attn (a real
call), Axolotl, DeepSpeed, disk and RAM. Exits 1 when a check fails.

  --json      the rows as JSON
  --dry-run   list the checks, run nothing
  --help      this text"
args=()
rest=()
for a in "$@"; do
    if [[ "$a" == --json ]]; then args+=(--json); else rest+=("$a"); fi
done
parse_args "$USAGE" "${rest[@]+"${rest[@]}"}"
require_venv

if (( DRY_RUN )); then
    say "would run: PYTHONPATH=$ROOT $VPY -m voicetune doctor ${args[*]+"${args[*]}"}"
    exit 0
fi
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$VPY" -m voicetune doctor "${args[@]+"${args[@]}"}"
