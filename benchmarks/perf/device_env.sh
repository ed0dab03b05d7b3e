# shellcheck shell=bash
# Sourced by the benchmarks/gpu_*.sh recipes for the lent GPU machine (device tool): one place for
# installing the carried wheelhouse and for the environment every run there needs.
#
#   source "$root/benchmarks/perf/device_env.sh"
#   device_install_wheelhouse [extra.whl ...]   # .wheelhouse (+ extra wheels) into $DEVICE_SITE
#   device_export_env                           # PYTHONPATH, offline and no-telemetry settings
#   device_gpu_line [file]                      # nvidia-smi's name/memory/driver line (tee'd to file)
#   device_smollm2_gguf                         # join the carried SmolLM2 GGUF halves; check the size

DEVICE_SITE="${DEVICE_SITE:-/tmp/site}"
# The SmolLM2 GGUF (98 MB) is over one call's carry limit: it travels in two halves, each copied here
# by a call of its own (see gpu_smollm2_qlora.sh), with the gguf wheel beside them.
DEVICE_GGUF_PARTS="${DEVICE_GGUF_PARTS:-/tmp/gguf-parts}"
DEVICE_SMOLLM2_GGUF="$DEVICE_GGUF_PARTS/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_BYTES=98362432

device_install_wheelhouse() {
    if [[ ! -d .wheelhouse ]]; then
        echo "no .wheelhouse here: carry it (built by ../shared/device/make_wheelhouse.sh)" >&2
        return 1
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$DEVICE_SITE" \
        .wheelhouse/*.whl "$@" 2>/dev/null
    cp -r .wheelhouse/site/* "$DEVICE_SITE"/
    echo "installed $(find .wheelhouse -maxdepth 1 -name '*.whl' | wc -l) wheels (+$#) into $DEVICE_SITE"
}

device_export_env() {
    local root
    root="$(pwd)"
    export PYTHONPATH="$DEVICE_SITE:$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    # nothing leaves the machine: no telemetry, no hub, no wandb
    export AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
    export WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
    # the lent multi-GPU hosts: NVLink multicast stays off (KINDS.md)
    export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
}

device_gpu_line() {
    nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | tee "${1:-/dev/null}"
}

device_smollm2_gguf() {
    if [[ ! -f "$DEVICE_SMOLLM2_GGUF" ]]; then
        if ! compgen -G "$DEVICE_GGUF_PARTS/part-*" > /dev/null; then
            echo "no GGUF halves in $DEVICE_GGUF_PARTS: carry .carry_g1 and .carry_g2 first" >&2
            return 1
        fi
        cat "$DEVICE_GGUF_PARTS"/part-* > "$DEVICE_SMOLLM2_GGUF"
    fi
    local size
    size="$(stat -c %s "$DEVICE_SMOLLM2_GGUF")"
    if [[ "$size" != "$SMOLLM2_GGUF_BYTES" ]]; then
        echo "error: $DEVICE_SMOLLM2_GGUF has $size bytes, expected $SMOLLM2_GGUF_BYTES: carry both halves first" >&2
        rm -f "$DEVICE_SMOLLM2_GGUF"  # a later call with both halves joins them again
        return 1
    fi
}
