#!/usr/bin/env python3
"""Voice benchmark: does the fine-tuned model write like the author, more than the base model does,
without copying?

A thin entry point for `voicetune benchmark` (voicetune/voice/benchmark.py holds the logic; the flags are
the same). Results go to benchmarks/results/<run>/: report.md, report.html, PNG plots, results.json
(schema: docs/results_schema.md) and samples.md.

  benchmarks/1_voice_comparison.py --run demo                         # base vs the run's fine-tune
  benchmarks/1_voice_comparison.py --author-train DIR --author-test DIR \\
      --model base=models/base --model tuned=merged_models/demo       # any author, any models
  benchmarks/1_voice_comparison.py --help
"""

from __future__ import annotations

import sys

from voicetune.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["benchmark", *sys.argv[1:]]))
