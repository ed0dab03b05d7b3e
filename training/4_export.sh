#!/usr/bin/env bash
# Step 4 (optional): export the merged model to GGUF for llama.cpp, Ollama and LM Studio.
set -euo pipefail

# shellcheck source=training/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<USAGE
usage: training/4_export.sh [--run NAME] [--help] [more flags]

Exports merged_models/<run>/ (run training/3_merge_adapter.sh first) to GGUF for llama.cpp, Ollama
and LM Studio.

  --help      this text, then every flag of 'voicetune export-gguf'
USAGE
}

show_help_if_asked voicetune export-gguf -- "$@"
echo "==> export: voicetune export-gguf $*"
exec "$PY" -m voicetune export-gguf "$@"
