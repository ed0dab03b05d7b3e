#!/usr/bin/env bash
# The voice benchmark: does the fine-tuned model write like the author, more than the base model
# does, without copying? A thin shell around `voicetune benchmark` (voicetune/voice/benchmark.py).
set -euo pipefail

# shellcheck source=training/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../training/lib.sh"

usage() {
    cat <<USAGE
usage: benchmarks/1_voice_comparison.sh --run NAME [more flags]
       benchmarks/1_voice_comparison.sh --author-train DIR --author-test DIR \\
           --model base=models/base --model tuned=merged_models/NAME      # any author, any models

Results go to benchmarks/results/<run>/: report.md, report.html, PNG plots, results.json
(schema: docs/results_schema.md) and samples.md.

  --help      this text, then every flag of 'voicetune benchmark'
USAGE
}

show_help_if_asked voicetune benchmark -- "$@"
echo "==> benchmark: voicetune benchmark $*"
exec "$PY" -m voicetune benchmark "$@"
