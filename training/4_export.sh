#!/usr/bin/env bash
# Step 4 (optional): the merged model as GGUF for llama.cpp, Ollama and LM Studio, checked in llama.cpp.
set -euo pipefail

# shellcheck source=training/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<USAGE
usage: training/4_export.sh [--run NAME] [--quants f16,q8_0,q4_k_m] [--prompts 8] [--help] [more flags]

Writes merged_models/<run>/gguf/ from merged_models/<run>/ (run training/3_merge_adapter.sh first):
an F16, a Q8_0 and a Q4_K_M GGUF (llama.cpp's own converter and quantiser), an Ollama Modelfile per
file (the model's chat template, the training system prompt, <|im_end|> as stop), an LM Studio folder
(lmstudio/voicetune/<run>-GGUF/) and a manifest. Every file is loaded by llama.cpp and compared with
the merged model on held-out prompts (chat template ids, greedy tokens, perplexity, end of turn), one
line per file; if the 16-bit file is not the merged model, nothing is kept and this exits non-zero.
Needs setup/5_install_export.sh (llama-cpp-python, built once into ~/.cache/voicetune/). Re-running
with the same model and settings says "up to date" and prints the recorded check.

  --help      this text, then every flag of 'voicetune export'
USAGE
}

show_help_if_asked voicetune export -- "$@"
echo "==> export: voicetune export $*"
exec "$PY" -m voicetune export "$@"
