#!/usr/bin/env bash
# Step 1: install the PyTorch build this machine's GPU and driver need (or the CPU build), unless the
# installed torch already fits; then check that torch.cuda.get_arch_list() covers the card.
set -euo pipefail
# shellcheck source=setup/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: setup/1_install_pytorch.sh [--dry-run] [--help]

Reads the GPU (name, compute capability, VRAM, driver, the CUDA the driver runs) and WSL2 with
nvidia-smi, picks the torch build (voicetune/machine/plan.py: sm_120 needs CUDA 12.8+, other cards get the
newest CUDA build their driver runs, no GPU gets the CPU build), installs it into the venv only when
the installed torch does not already fit, then checks its kernels cover the card.
See the whole plan with: voicetune setup-plan   (or PYTHONPATH=. python3 -m voicetune setup-plan)

environment:
  VOICETUNE_VENV             the venv (default: <checkout>/.venv)
  VOICETUNE_TORCH_VERSION    ask for a torch version (default: the newest that fits)
  VOICETUNE_TORCH_INDEX_URL  a mirror of the PyTorch wheel index
  VOICETUNE_CPU_ONLY=1       install the CPU build even with a GPU

  --dry-run   print the plan, change nothing
  --help      this text"
parse_args "$USAGE" "$@"
require_venv

step "PyTorch"
load_plan torch --shell
note "$TORCH_NOTES"
case "$TORCH_STATUS" in
    keep)
        say "ok: $TORCH_REASON: nothing to do" ;;
    blocked)
        die "$TORCH_REASON" ;;
    install)
        say "install: $TORCH_REASON"
        args=(install "$TORCH_SPEC")
        # The same build is there but does not import: reinstall it in place (its deps stay).
        if (( TORCH_FORCE )); then args+=(--force-reinstall --no-deps); fi
        if [[ -n "$TORCH_INDEX_URL" ]]; then
            if [[ "$TORCH_INDEX_MODE" == extra ]]; then args+=(--extra-index-url "$TORCH_INDEX_URL")
            else args+=(--index-url "$TORCH_INDEX_URL"); fi
        fi
        vpip "${args[@]}"
        if (( ! DRY_RUN )); then
            step "check: torch's kernels cover this machine"
            plan check-torch || die "the installed torch does not fit this machine (above); run setup/4_verify.sh for the whole picture"
        fi ;;
    *) die "unexpected plan status '$TORCH_STATUS'" ;;
esac

finish "step 1 done: next, setup/2_install_axolotl.sh"
