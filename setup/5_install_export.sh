#!/usr/bin/env bash
# Step 5 (optional; ./run_tests.sh runs it): the llama.cpp runtime for `voicetune export` and the CPU
# server of `voicetune serve` - llama-cpp-python built once into a cache outside the checkout, then
# installed from that wheel (with its OpenAI-server extras), and llama.cpp's HF->GGUF converter.
set -euo pipefail
# shellcheck source=setup/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VERSION="0.3.36"  # llama-cpp-python; its sdist carries llama.cpp's sources and convert_hf_to_gguf.py
CACHE="${VOICETUNE_CACHE:-$HOME/.cache/voicetune}/llama-cpp/$VERSION"
USAGE="usage: setup/5_install_export.sh [--dry-run] [--help]

Installs llama-cpp-python ${VERSION} (with its server extras) into the venv from a wheel cached in
$CACHE/wheels/<cpu>/ (built from PyPI's sdist on the first run only: about 7-12 min on
2 cores; a re-run reuses it) and unpacks llama.cpp's converter into $CACHE/converter/.
Nothing already installed changes version. Set VOICETUNE_CACHE to move the cache.

  --dry-run   print the plan, change nothing
  --help      this text"
parse_args "$USAGE" "$@"
require_venv

# The CPU features the wheel is built for (in its cache path, so another machine never gets a wheel
# its CPU cannot run): x86-64-v3 (AVX2/FMA/F16C) where present, else llama.cpp's portable baseline.
CMAKE_FLAGS=(-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF
             -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF)
CPU="$(uname -m)-generic"
if [[ "$(uname -m)" == "x86_64" ]] && grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo \
    && grep -qw f16c /proc/cpuinfo && grep -qw bmi2 /proc/cpuinfo; then
    CPU="x86-64-v3"
    CMAKE_FLAGS+=(-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
fi
WHEELS="$CACHE/wheels/$CPU"
CONVERTER="$CACHE/converter"

installed() {
    "$VPY" - "$VERSION" <<'PY' 2>/dev/null
import importlib.metadata as m, sys
assert m.version("llama_cpp_python") == sys.argv[1]
import llama_cpp, fastapi, uvicorn, sse_starlette, starlette_context, pydantic_settings  # noqa: F401
PY
}

step "llama.cpp's converter (convert_hf_to_gguf.py, conversion/, gguf-py/)"
if [[ -f "$CONVERTER/convert_hf_to_gguf.py" ]]; then
    say "ok: cached in $CONVERTER"
    NEED_SDIST=0
else
    say "unpack it from the llama-cpp-python $VERSION sdist into $CONVERTER"
    NEED_SDIST=1
fi

step "llama-cpp-python $VERSION ($CPU)"
wheel="$(compgen -G "$WHEELS/llama_cpp_python-$VERSION-*.whl" | head -n 1 || true)"
if installed; then
    say "ok: llama-cpp-python $VERSION with the server extras is installed"
    BUILD=0
elif [[ -n "$wheel" ]]; then
    say "install from the cached wheel $wheel"
    BUILD=0
else
    say "build a wheel once into $WHEELS (about 7-12 min on 2 cores), then install it"
    BUILD=1
    NEED_SDIST=1
fi

if (( NEED_SDIST )); then
    sdist="$(compgen -G "$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz" | head -n 1 || true)"
    if [[ -z "$sdist" ]]; then
        run mkdir -p "$CACHE/sdist"
        vpip download --no-deps --no-binary :all: --dest "$CACHE/sdist" "llama-cpp-python==$VERSION"
        sdist="$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz"
    fi
    if [[ ! -f "$CONVERTER/convert_hf_to_gguf.py" ]]; then
        top="llama_cpp_python-$VERSION/vendor/llama.cpp"
        run mkdir -p "$CONVERTER.partial"
        run tar -xzf "$sdist" -C "$CONVERTER.partial" --strip-components=3 \
            "$top/convert_hf_to_gguf.py" "$top/conversion" "$top/gguf-py" "$top/LICENSE"
        run mv "$CONVERTER.partial" "$CONVERTER"
    fi
    if (( BUILD )); then
        run mkdir -p "$WHEELS"
        printf '+ CMAKE_ARGS="%s"\n' "${CMAKE_FLAGS[*]}"
        if (( ! DRY_RUN )); then
            CMAKE_ARGS="${CMAKE_FLAGS[*]}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
                "$VPY" -m pip wheel --no-deps --wheel-dir "$WHEELS.partial" "$sdist"
            mv "$WHEELS.partial/llama_cpp_python-$VERSION-"*.whl "$WHEELS/"
            rmdir "$WHEELS.partial"
        fi
        wheel="$(compgen -G "$WHEELS/llama_cpp_python-$VERSION-*.whl" | head -n 1 || true)"
        wheel="${wheel:-$WHEELS/llama_cpp_python-$VERSION-py3-none-linux_$(uname -m).whl}"
    fi
fi

if ! installed; then
    # Every package already in the venv keeps its version (Axolotl pins some that the server extras
    # would otherwise upgrade, e.g. python-dotenv); only the missing ones are added.
    pins="$(mktemp)"
    trap 'rm -f "$pins"' EXIT
    if (( ! DRY_RUN )); then
        "$VPY" -m pip freeze --exclude-editable | grep '==' | grep -iv '^llama.cpp.python==' > "$pins" || true
        [[ -f "$CONSTRAINTS" ]] && cat "$CONSTRAINTS" >> "$pins"
    fi
    vpip install --disable-pip-version-check -c "$pins" "${wheel}[server]"
    if (( ! DRY_RUN )) && ! installed; then
        die "llama-cpp-python $VERSION does not import after installing $wheel: delete $WHEELS and run again"
    fi
fi

finish "step 5 done: voicetune export and the CPU server of voicetune serve can run"
