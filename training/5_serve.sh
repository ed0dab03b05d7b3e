#!/usr/bin/env bash
# Step 5 (optional): serve the model behind an OpenAI-compatible server (vLLM on a GPU, llama.cpp on a CPU).
set -euo pipefail

# shellcheck source=training/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<USAGE
usage: training/5_serve.sh [--run NAME] [--backend auto|vllm|llama-cpp] [--quant q4_k_m] [--port 8000]
                           [--host 127.0.0.1] [--dry-run] [--help] [-- server flags]

With an NVIDIA GPU: vLLM's OpenAI-compatible server on merged_models/<run>/ (run
training/3_merge_adapter.sh first); vLLM is an optional extra: without it this prints how to install
it (pip install -e .[serve]) and exits non-zero. On a CPU (or --backend llama-cpp): llama-cpp-python's
OpenAI-compatible server on the run's exported GGUF (training/4_export.sh; --quant picks the file).
Served under the run's name, on 127.0.0.1 unless --host says otherwise.
Then, for example:
  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"model": "<run>", "messages": [{"role": "user", "content": "Write about the sea."}]}'

  --dry-run   print the server command, start nothing
  --help      this text, then every flag of 'voicetune serve'
USAGE
}

show_help_if_asked voicetune serve -- "$@"
exec "$PY" -m voicetune serve "$@"
