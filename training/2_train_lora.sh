#!/usr/bin/env bash
# Step 2: fine-tune a LoRA/QLoRA adapter on the prepared data with the real Axolotl CLI.
set -euo pipefail

# shellcheck source=training/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<USAGE
usage: training/2_train_lora.sh [--profile auto|cpu-demo|8gb|16gb|24gb|32gb|80gb|FILE.yaml] [--config FILE]
                                [--data NAME] [--run NAME] [--resume] [--force] [--dry-run]
                                [--wandb off|offline|online] [--max-steps N] [--gpus N] [--help] [more flags]

Renders the Axolotl config of this run into checkpoints/<run>/axolotl.yaml (a profile from
configs/axolotl/ + the run's data, base model and flags), checks it in seconds (Axolotl's own schema,
the known mistakes, data that would not fit sequence_len, free disk, a VRAM estimate against the
GPU), then runs 'accelerate launch -m axolotl.cli.train' (what 'axolotl train' runs) and streams its
output to the terminal and to checkpoints/<run>/train.log. TensorBoard logs always; wandb only with
--wandb offline (local files) or online. With --gpus N (N > 1) it launches N processes with DeepSpeed ZeRO-2 (or
--multi-gpu fsdp) from configs/deepspeed/.

  --profile auto   picks cpu-demo without a GPU; with one, the profile for its memory. Every built-in
                   profile then plans the run from the data (voicetune/train/recipe.py): the optimizer
                   updates the corpus needs first (a few hundred for 20k-200k words), then the largest
                   batch that keeps them, epochs, learning rate, rank, pair mix and the checkpoints the
                   voice curve scores; one printed line says why for each
  --resume         continue an interrupted run from its latest complete checkpoint (also after kill -9),
                   extend a finished one (with a larger --max-steps/--epochs), or move a run to another
                   --gpus count (the global batch is kept); any other change is refused
  --dry-run        render + preflight, print the exact command, train nothing
  --config FILE    voicetune's project config (default configs/voicetune.yaml); an Axolotl YAML of your
                   own goes to --profile FILE.yaml
  --help           this text, then every flag of 'voicetune train'

A finished run is skipped when nothing changed ("up to date"), and never overwritten without --force.
USAGE
}

show_help_if_asked voicetune train -- "$@"
echo "==> train: voicetune train $*"
exec "$PY" -m voicetune train "$@"
