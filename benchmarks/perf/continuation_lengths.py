#!/usr/bin/env python3
"""How long each model's benchmark continuations are: mean words, and the share that ended well short of
the budget (under 60% of the held-out author's mean words), from the samples in results.json files.

A model that ends its answers early writes pieces too short to judge; this shows it at a glance.

    python benchmarks/perf/continuation_lengths.py NAME=path/results.json [...] [--out lengths.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def lengths(results: dict) -> dict[str, dict[str, float]]:
    """Each model's continuation lengths (voicetune.voice.benchmark.continuation_lengths) from the
    samples: the author's held-out continuations are the reference."""
    from voicetune.voice.benchmark import continuation_lengths

    samples = results["samples"]
    names = list(samples[0]["continuations"])
    author = next((n for n in names if n.startswith("author")), None)
    references = [s["continuations"][author] for s in samples] if author else []
    return {
        name: {
            **continuation_lengths([s["continuations"][name] for s in samples], references),
            "prompts": len(samples),
        }
        for name in names
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
        "ended_early": "fewer words than 60% of the author's held-out mean (benchmark.ENDED_EARLY_SHARE)",
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
