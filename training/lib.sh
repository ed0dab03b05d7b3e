# shellcheck shell=bash
# Shared by the numbered scripts in training/ (sourced, not run): voicetune's Python, and --help.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${VOICETUNE_VENV:-$ROOT/.venv}/bin/python"
[[ -x "$PY" ]] || PY="$(command -v python3)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# show_help_if_asked MODULE [VERB] -- ARGS...: when ARGS hold -h/--help (before a bare --), print the
# calling script's usage, then `python -m MODULE [VERB] --help`, and exit.
show_help_if_asked() {
    local target=() arg
    while (( $# )) && [[ "$1" != "--" ]]; do target+=("$1"); shift; done
    (( $# )) && shift
    for arg in "$@"; do
        [[ "$arg" == "--" ]] && return 0
        if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
            usage
            echo
            "$PY" -m "${target[@]}" --help
            exit 0
        fi
    done
}
