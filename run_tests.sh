#!/usr/bin/env bash
# Installs what the tests need (the same setup/ scripts a user runs, then the dev extras) and runs
# the whole suite: ruff, the import contracts, shellcheck, pytest (unit tests + one end-to-end run of the pipeline).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VOICETUNE_VENV:-$ROOT/.venv}"

usage() {
    cat <<EOF
Usage: ./run_tests.sh [pytest arguments]

Sets up .venv with setup/0..3 (skipped when already installed), installs the test tools, then runs
ruff, shellcheck and pytest. Extra arguments go to pytest, e.g. ./run_tests.sh -k stylometry -x
EOF
}
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage; exit 0; fi

cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1 WANDB_MODE=offline MPLBACKEND=Agg

echo "==> setup (idempotent)"
for script in setup/0_create_venv.sh setup/1_install_pytorch.sh setup/2_install_axolotl.sh \
    setup/3_install_training_stack.sh setup/5_install_export.sh; do
    bash "$script"
done

echo "==> test tools"
constraints=()
[[ -f setup/constraints.txt ]] && constraints=(-c setup/constraints.txt)
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[dev]" "${constraints[@]}"

echo "==> browser for the page tests (Debian chromium, shared by report and blind-test tests)"
if ! command -v chromium >/dev/null 2>&1; then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "note: no chromium and no root for apt-get: the browser tests will be skipped" >&2
    fi
fi
if command -v chromium >/dev/null 2>&1; then export VOICETUNE_REQUIRE_BROWSER=1; fi

echo "==> ruff"
"$VENV/bin/ruff" check .

echo "==> import contracts (the pipeline's layers, pyproject.toml [tool.importlinter])"
"$VENV/bin/lint-imports"

echo "==> shellcheck"
mapfile -t shell_scripts < <(find . -path ./.venv -prune -o -path ./.git -prune -o -name '*.sh' -print; echo .ci/run)
"$VENV/bin/shellcheck" -x "${shell_scripts[@]}"

echo "==> pytest"
"$VENV/bin/python" -m pytest "$@"
