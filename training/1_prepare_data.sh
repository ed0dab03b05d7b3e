#!/usr/bin/env bash
# Step 1: turn your writing (data/raw/) into clean train/val/test examples for Axolotl.
set -euo pipefail

# shellcheck source=training/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<USAGE
usage: training/1_prepare_data.sh [--input DIR] [--name NAME] [--base-model DIR]
                                  [--modes continue,write,rewrite] [--ratio continue=0.5,...]
                                  [--sequence-len N] [--format chat_template|completion]
                                  [--seed N] [--redact] [--min-words N] [--dry-run] [--help] [more flags]

Reads every .txt .md .html .pdf .docx .epub .odt .rtf under --input (default data/raw/, nested
folders allowed), strips licence headers, page furniture and contents pages, removes duplicates,
splits by document (by section for a small corpus) into train/val/test, chunks with the base
model's own tokenizer so no example exceeds --sequence-len after its chat template, builds the
training pairs, and writes data/processed/<name>/ (train/val/test.jsonl, texts/, manifest.json).

A bad file gets one line saying why and the rest goes on. Exits 1 only when nothing usable
remains or the corpus is below --min-words (it says how much more is needed); 2 when the base
model is missing. A re-run with the same inputs and settings says "up to date" and does nothing.

  --dry-run   list what would be read, with counts; write nothing
  --help      this text, then every flag of 'voicetune prepare'
USAGE
}

show_help_if_asked voicetune prepare -- "$@"
echo "==> prepare: voicetune prepare $*"
exec "$PY" -m voicetune prepare "$@"
