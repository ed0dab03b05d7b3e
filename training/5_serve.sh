#!/usr/bin/env bash
# Step 5 (optional): serve the merged model with vLLM's OpenAI-compatible server.
set -euo pipefail

# shellcheck source=training/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<USAGE
usage: training/5_serve.sh [--run NAME] [--port 8000] [--host 127.0.0.1] [--dry-run] [--help] [-- vLLM flags]

Starts vLLM's OpenAI-compatible server on merged_models/<run>/ (run training/3_merge_adapter.sh
first), served under the run's name, on 127.0.0.1 unless --host says otherwise. vLLM is an optional
extra: without it this prints how to install it (pip install -e .[serve]) and exits non-zero.
Then, for example:
  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"model": "<run>", "messages": [{"role": "user", "content": "Write about the sea."}]}'

  --dry-run   print the server command, start nothing
  --help      this text, then every flag of 'voicetune serve'
USAGE
}

show_help_if_asked voicetune serve -- "$@"
exec "$PY" -m voicetune serve "$@"
