#!/usr/bin/env bash
# Step 0: check Python (3.11+) and create the virtual environment; keep a healthy one, rebuild a broken one.
set -euo pipefail
# shellcheck source=setup/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: setup/0_create_venv.sh [--dry-run] [--help]

Checks that Python is 3.11 or newer (and says which Axolotl it allows), then creates the virtual
environment at \$VOICETUNE_VENV (default: $ROOT/.venv). A healthy venv is kept as it is; a broken one
(its python does not run, or has no pip) is rebuilt.

environment:
  VOICETUNE_PYTHON  interpreter to create the venv with (default: python3)
  VOICETUNE_VENV    where the venv lives (default: <checkout>/.venv)

  --dry-run   print what would be done, change nothing
  --help      this text"
parse_args "$USAGE" "$@"

PYBIN="${VOICETUNE_PYTHON:-python3}"

step "Python"
command -v "$PYBIN" >/dev/null 2>&1 || die "'$PYBIN' not found: install Python 3.11+ (e.g. sudo apt install python3.12 python3.12-venv) or set VOICETUNE_PYTHON"
"$PYBIN" -c 'import sys' 2>/dev/null || die "'$PYBIN' does not run: set VOICETUNE_PYTHON to a working Python 3.11+"
if ! "$PYBIN" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    die "$("$PYBIN" -V 2>&1) is too old: voicetune needs Python 3.11+ (e.g. sudo apt install python3.12 python3.12-venv, then VOICETUNE_PYTHON=python3.12 $0)"
fi
load_plan python --shell --python "$PYBIN"
say "ok: $PY_MESSAGE"

step "virtual environment: $VENV"
venv_health() {
    [[ -x "$VPY" ]] || { echo "no python in it"; return 1; }
    "$VPY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { echo "its python does not run or is older than 3.11"; return 1; }
    "$VPY" -m pip --version >/dev/null 2>&1 || { echo "it has no working pip"; return 1; }
    return 0
}
if problem="$(venv_health)"; then
    venv_version="$("$VPY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
    say "ok: healthy venv with Python $venv_version: kept"
    base_version="$("$PYBIN" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
    if [[ -n "${VOICETUNE_PYTHON:-}" && "${venv_version%.*}" != "${base_version%.*}" ]]; then
        say "note: the venv has Python $venv_version but VOICETUNE_PYTHON is $base_version: to switch, remove $VENV and run this again"
    fi
elif [[ -e "$VENV" ]]; then
    say "repair: $VENV is broken ($problem): rebuilding it"
    "$PYBIN" -c 'import ensurepip' 2>/dev/null || die "$PYBIN has no venv/ensurepip module: sudo apt install python3-venv (or python3.X-venv for your version)"
    run "$PYBIN" -m venv --clear "$VENV"
else
    "$PYBIN" -c 'import ensurepip' 2>/dev/null || die "$PYBIN has no venv/ensurepip module: sudo apt install python3-venv (or python3.X-venv for your version)"
    run "$PYBIN" -m venv "$VENV"
fi

finish "step 0 done: next, setup/1_install_pytorch.sh"
