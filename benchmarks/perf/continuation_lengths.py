#!/usr/bin/env python3
"""How long each model's benchmark continuations are: mean words, and the share that ended well short of
the budget (under 60% of the held-out author's mean words), from the samples in results.json files.

A model that ends its answers early writes pieces too short to judge; this shows it at a glance.

    python benchmarks/perf/continuation_lengths.py NAME=path/results.json [...] [--out lengths.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

SHORT = 0.6  # "ended early": fewer words than this share of the author's own held-out continuations


def lengths(results: dict) -> dict[str, dict[str, float]]:
    samples = results["samples"]
    names = list(samples[0]["continuations"])
    words = {name: [len(s["continuations"][name].split()) for s in samples] for name in names}
    author = next((n for n in names if n.startswith("author")), None)
    floor = SHORT * statistics.mean(words[author]) if author else 0.0
    return {
        name: {
            "mean_words": round(statistics.mean(counts), 1),
            "ended_early_share": round(sum(c < floor for c in counts) / len(counts), 3),
            "prompts": len(counts),
        }
        for name, counts in words.items()
    }


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("runs", nargs="+", metavar="NAME=RESULTS_JSON")
    parser.add_argument("--out", type=Path, help="also write the table here as JSON")
    args = parser.parse_args(argv)
    table: dict[str, dict] = {}
    for item in args.runs:
        name, sep, path = item.partition("=")
        if not sep:
            print(f"error: '{item}' is not NAME=path/results.json", file=sys.stderr)
            return 2
        try:
            table[name] = lengths(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, IndexError) as exc:
            print(f"error: {path}: not a benchmark results.json with samples ({exc})", file=sys.stderr)
            return 1
    payload = {
        "command": "python benchmarks/perf/continuation_lengths.py " + " ".join(sys.argv[1:]),
        "ended_early": f"fewer words than {SHORT:.0%} of the author's held-out mean",
        "runs": table,
    }
    text = json.dumps(payload, indent=1)
    print(text)
    if args.out:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
