#!/usr/bin/env bash
# Step 3: merge the run's LoRA adapter into its base model (PEFT merge_and_unload) with a parity check.
set -euo pipefail

# shellcheck source=training/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<USAGE
usage: training/3_merge_adapter.sh [--run NAME] [--dtype auto|bf16|fp16|fp32] [--out DIR]
                                   [--base-weights w16|dequant-nf4] [--dry-run] [--help] [more flags]

Merges checkpoints/<run>/'s LoRA adapter into the base model it was trained on and writes
merged_models/<run>/: safetensors shards, tokenizer + chat template, generation config and a
manifest (base, adapter, checksums, versions, parity). A QLoRA adapter is merged into the base loaded
in full precision (not into 4-bit weights); --base-weights dequant-nf4 merges into the dequantised
4-bit weights the adapter was trained against. Before anything is kept, held-out prompts go through
base + adapter and through the merged model; if their logits differ by more than the tolerance the
output is removed and the script exits non-zero. Re-running with the same adapter, base and settings
says "up to date" and does nothing.

  --dry-run   say what would be merged, write nothing
  --help      this text, then every flag of 'voicetune merge'
USAGE
}

show_help_if_asked voicetune merge -- "$@"
echo "==> merge: voicetune merge $*"
exec "$PY" -m voicetune merge "$@"
