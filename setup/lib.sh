# shellcheck shell=bash
# Shared helpers for setup/*.sh (sourced, not run). Decisions come from `voicetune setup-plan`
# (voicetune/env/, standard-library Python); these helpers only print and execute.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VOICETUNE_VENV:-$ROOT/.venv}"
VPY="$VENV/bin/python"
# shellcheck disable=SC2034  # used by the scripts that source this file
CONSTRAINTS="$ROOT/setup/constraints.txt"
DRY_RUN=0
START_SECONDS=$SECONDS

say() { printf '%s\n' "$*"; }
step() { printf '\n==> %s\n' "$*"; }
note() { [[ -z "${1:-}" ]] || printf '%s\n' "$1" | sed 's/^/    note: /'; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Print a command, then run it unless --dry-run.
run() {
    printf '+ %s\n' "$*"
    if (( DRY_RUN )); then return 0; fi
    "$@"
}

# Common flags. $1 is the usage text; the rest are the script's arguments.
parse_args() {
    local usage="$1"
    shift
    while (( $# )); do
        case "$1" in
            -h|--help) printf '%s\n' "$usage"; exit 0 ;;
            -n|--dry-run) DRY_RUN=1 ;;
            *) die "unknown option '$1' (see --help)" ;;
        esac
        shift
    done
    if (( DRY_RUN )); then say "(dry run: printing the plan, changing nothing)"; fi
}

# The interpreter that runs the planner: the venv's when it works, else the system python3.
plan_python() {
    if [[ -x "$VPY" ]] && "$VPY" -c '' 2>/dev/null; then
        printf '%s' "$VPY"
    else
        printf '%s' "${VOICETUNE_PYTHON:-python3}"
    fi
}

# voicetune setup-plan STEP [flags]: runs from the checkout, needs nothing installed.
plan() {
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$(plan_python)" -m voicetune setup-plan "$@"
}

# Load a plan step's KEY='value' lines (shlex-quoted by the planner) into this shell.
load_plan() {
    local out extra=()
    # A dry run plans each step as if the steps before it had run (the planner looks ahead).
    if (( DRY_RUN )); then extra=(--dry-run); fi
    out="$(plan "$@" "${extra[@]+"${extra[@]}"}")" || die "the setup planner failed: run 'PYTHONPATH=$ROOT python3 -m voicetune setup-plan $*' to see why"
    eval "$out"
}

require_venv() {
    if [[ ! -x "$VPY" ]]; then
        if (( DRY_RUN )); then say "(no venv at $VENV yet: setup/0_create_venv.sh creates it)"; return 0; fi
        die "no virtual environment at $VENV: run setup/0_create_venv.sh first"
    fi
}

vpip() { run "$VPY" -m pip "$@"; }

finish() {
    say ""
    say "$1 ($(( SECONDS - START_SECONDS )) s)"
}
