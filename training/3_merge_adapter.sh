#!/usr/bin/env bash
# Step 3: merge the run's LoRA adapter into its base model (PEFT merge_and_unload) with a parity check.
set -euo pipefail

# shellcheck source=training/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<USAGE
usage: training/3_merge_adapter.sh [--run NAME] [--checkpoint best|last|N] [--scale S]
                                   [--dtype auto|bf16|fp16|fp32] [--out DIR]
                                   [--base-weights w16|dequant-nf4] [--dry-run] [--help] [more flags]

Chooses the checkpoint to merge by voice, then merges it. With --checkpoint best (the default) it
first runs 'voicetune voice-curve': every saved checkpoint of checkpoints/<run>/ continues short
validation prompts and gets a voice score, its eval loss and a copying check
(checkpoints/<run>/voice_curve.json and .png; skipped when up to date); the best one is merged and
the script says which and why. --checkpoint last merges the adapter the training ended with, N its
checkpoint-N; --scale S folds the adapter in at S times its trained strength (style strength).

Writes merged_models/<run>/: safetensors shards, tokenizer + chat template, generation config and a
manifest (base, adapter, checkpoint, scale, checksums, versions, parity). A QLoRA adapter is merged
into the base loaded in full precision (not into 4-bit weights); --base-weights dequant-nf4 merges
into the dequantised 4-bit weights the adapter was trained against. Before anything is kept,
held-out prompts go through base + adapter and through the merged model; if their logits differ by
more than the tolerance the output is removed and the script exits non-zero. Re-running with the
same adapter, base and settings says "up to date" and does nothing.

  --dry-run   say what would be merged, write nothing (no voice curve either)
  --help      this text, then every flag of 'voicetune merge'
USAGE
}

show_help_if_asked voicetune merge -- "$@"
run=() checkpoint="best" dry_run=0 previous=""
for arg in "$@"; do
    case "$previous" in
        --run|--run-dir) run=(--run "$arg") ;;
        --checkpoint) checkpoint="$arg" ;;
    esac
    case "$arg" in
        --run=*|--run-dir=*) run=(--run "${arg#*=}") ;;
        --checkpoint=*) checkpoint="${arg#*=}" ;;
        --dry-run) dry_run=1 ;;
    esac
    previous="$arg"
done
if [[ "$checkpoint" == "best" && "$dry_run" -eq 0 ]]; then
    echo "==> voice curve: voicetune voice-curve ${run[*]}"
    "$PY" -m voicetune voice-curve "${run[@]}"
fi
echo "==> merge: voicetune merge $*"
exec "$PY" -m voicetune merge "$@"
