#!/usr/bin/env bash
# Step 2: pin the installed torch in setup/constraints.txt, install the Axolotl that fits this Python and
# torch (the table in voicetune/machine/versions.py), then check torch did not change and torchao is there.
set -euo pipefail
# shellcheck source=setup/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: setup/2_install_axolotl.sh [--dry-run] [--help]

Writes setup/constraints.txt (torch==<installed>) so that no later pip install can replace torch,
installs the newest Axolotl release that takes this Python and this torch (kept when the installed one
already does), then checks that torch is unchanged and torchao imports.

  --dry-run   print the plan, change nothing
  --help      this text"
parse_args "$USAGE" "$@"
require_venv

step "Axolotl"
load_plan axolotl --shell
note "$AXO_NOTES"
[[ "$AXO_STATUS" != blocked ]] || die "$AXO_REASON"

# The constraints file: rewritten only when the torch it pins changed (idempotent).
if [[ -f "$CONSTRAINTS" ]] && [[ "$(cat "$CONSTRAINTS")" == "${AXO_CONSTRAINTS%$'\n'}" ]]; then
    say "ok: $CONSTRAINTS pins torch==$AXO_TORCH"
else
    say "write: $CONSTRAINTS (torch==$AXO_TORCH)"
    if (( ! DRY_RUN )); then printf '%s' "$AXO_CONSTRAINTS" > "$CONSTRAINTS"; fi
fi

case "$AXO_STATUS" in
    keep)
        say "ok: $AXO_REASON: nothing to do" ;;
    install)
        say "install: $AXO_REASON"
        vpip install "axolotl==$AXO_VERSION" -c "$CONSTRAINTS"
        if (( ! DRY_RUN )); then
            step "check: torch unchanged, torchao present"
            after="$("$VPY" -c 'from importlib.metadata import version; print(version("torch"))')"
            [[ "$after" == "$AXO_TORCH" ]] || die "torch changed from $AXO_TORCH to $after while installing Axolotl: run setup/1_install_pytorch.sh, then this script again"
            # torchao prints harmless warnings about GPU-only kernels on import: show them only on failure.
            if ! err="$("$VPY" -c 'import torchao' 2>&1)"; then
                printf '%s\n' "$err" | tail -5 >&2
                die "torchao does not import after installing Axolotl: run '$VPY -m pip install torchao -c $CONSTRAINTS'"
            fi
            say "ok: torch $after unchanged; torchao imports"
        fi ;;
    *) die "unexpected plan status '$AXO_STATUS'" ;;
esac

finish "step 2 done: next, setup/3_install_training_stack.sh"
