#!/usr/bin/env python3
"""Speed of one benchmark generation pass: the CPU benchmark's prompts (40-token openings of the
held-out text in the continue prompt, 80 new tokens, temperature 0.8, top-p 0.95) on a model folder;
160 by default (the CPU default when generation_speed.json was measured; it is 128 now: --prompts).

Each configuration is one pass of `voicetune.voice.perplexity.generate_continuations` at a batch size;
`--repeat-kv` also times each with transformers' SDPA attention (key/value heads repeated for a
padded batch); `--transformers-sampling` also times transformers' own sampling (`do_sample=True`, which
sorts the whole vocabulary of every row at every step) in one batch of 160, length-unsorted, as the
benchmark ran before. Prints a line per pass and writes them as JSON (--out), with the command and
the machine.

usage: .venv/bin/python benchmarks/perf/generation_speed.py [--model merged_models/demo-cpu]
       [--data data/processed/demo] [--batch-sizes 40,160] [--transformers-sampling] [--repeat-kv]
       [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _prompts(tokenizer: object, data: Path, count: int) -> list[str]:
    """The benchmark's own prompts: its windows, its draw, its continue prompt in the chat template."""
    from voicetune.model.generate import prompt_format
    from voicetune.voice import benchmark

    texts = benchmark._load_texts(data / "texts" / "test", False)
    windows = benchmark.held_out_windows(
        texts,
        40,
        80,
        lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"]),  # type: ignore[operator]
    )
    items, _ = benchmark.split_prompts(windows, count, 1234)
    return benchmark._render_prompts(tokenizer, items, prompt_format(data), "chat")[0]


def _transformers_pass(model: object, tokenizer: object, prompts: list[str]) -> list[str]:
    """The old way: one batch, transformers' sampling (TopPLogitsWarper sorts the vocabulary)."""
    import torch

    tokenizer.padding_side = "left"  # type: ignore[attr-defined]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)  # type: ignore[operator]
    torch.manual_seed(1234)
    with torch.inference_mode():
        out = model.generate(  # type: ignore[attr-defined]
            **encoded, max_new_tokens=80, do_sample=True, temperature=0.8, top_p=0.95, top_k=0,
            pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
        )  # fmt: skip
    return [
        tokenizer.decode(row, skip_special_tokens=True) for row in out[:, encoded["input_ids"].shape[1] :]
    ]  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO / "merged_models" / "demo-cpu")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "processed" / "demo")
    parser.add_argument("--prompts", type=int, default=160)
    parser.add_argument("--batch-sizes", default="40,160")
    parser.add_argument("--transformers-sampling", action="store_true")
    parser.add_argument(
        "--repeat-kv",
        action="store_true",
        help="also time each batch size with transformers' SDPA attention, which repeats the key/value "
        "heads of a padded batch (voicetune's CPU generation reads them in place)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not (args.model / "config.json").is_file():
        print(f"error: {args.model} is not a model folder (config.json): give --model", file=sys.stderr)
        return 1

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from voicetune.voice.perplexity import generate_continuations

    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    model = AutoModelForCausalLM.from_pretrained(str(args.model), dtype=torch.float32).eval()
    prompts = _prompts(tokenizer, args.data, args.prompts)
    runs: list[dict[str, object]] = []

    def record(how: str, batch: int, seconds: float, texts: list[str]) -> None:
        words = statistics.mean(len(t.split()) for t in texts)
        runs.append(
            {
                "sampling": how,
                "batch_size": batch,
                "seconds": round(seconds, 1),
                "mean_words": round(words, 1),
            }
        )
        print(
            f"{how}, batch {batch}: {seconds:.1f} s for {len(texts)} prompts ({words:.1f} words each)",
            flush=True,
        )

    from voicetune.model import attention

    in_place = attention.cpu_grouped_query_attention
    attentions = [("", in_place)]
    if args.repeat_kv:  # transformers' own SDPA attention: the context manager made a no-op
        attentions.append((", key/value heads repeated", lambda model: contextlib.nullcontext()))
    for batch in [int(b) for b in args.batch_sizes.split(",") if b]:
        for label, context in attentions:
            attention.cpu_grouped_query_attention = context  # type: ignore[assignment]
            started = time.monotonic()
            texts = generate_continuations(
                model, tokenizer, prompts, 80, 0.8, 0.95, 1.0, 1234, batch, desc=f"batch {batch}{label}"
            )
            record(
                f"voicetune (nucleus sampler, batches sorted by length{label})",
                batch,
                time.monotonic() - started,
                texts,
            )
    attention.cpu_grouped_query_attention = in_place
    if args.transformers_sampling:
        started = time.monotonic()
        texts = _transformers_pass(model, tokenizer, prompts)
        record("transformers do_sample (one unsorted batch)", len(prompts), time.monotonic() - started, texts)

    payload = {
        "command": "python benchmarks/perf/generation_speed.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": str(args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cpu": platform.processor(),
        },
        "prompts": len(prompts),
        "max_new_tokens": 80,
        "runs": runs,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
        tmp.replace(args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
