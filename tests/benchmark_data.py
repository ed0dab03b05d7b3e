"""A benchmark result built by the real torch-free half of the benchmark (`benchmark.analyse`) on the
demo author, with continuations whose answer is known instead of model output:

- "base": the author's real continuations with their words shuffled (the author's vocabulary, no
  syntax): it must lose on the style measures;
- "tuned": the author's real text, each item answered with the reference of the next prompt (the
  author's voice, not the answer to that prompt): it must beat "base";
- "copycat": passages copied from the author's training text: the copying check must flag it.

Perplexity inputs are per-block log-likelihood sums drawn from fixed distributions (what a model
would produce, without a model); "tuned" is given the lower one.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from stylometry_data import DEMO, author_split, other_authors, shuffle_words


@lru_cache(maxsize=1)
def known_answer_results() -> dict[str, Any]:
    from voicetune.voice import benchmark as bm
    from voicetune.voice.perplexity import WindowScores
    from voicetune.voice.stylometry import segment_words

    train, test = author_split()
    cfg = bm.resolve_settings(
        bm.BenchmarkSettings(
            prompts=32, bootstrap=400, attribution_segments=150, calibration_pieces=80, seed=5
        ),
        "cpu",
    )
    spans = bm.held_out_windows(test, cfg.prompt_tokens, 60, lambda s: len(s.split()))
    items, rest = bm.split_prompts(spans, cfg.prompts, cfg.seed)
    calibration = [f"{w.prompt}\n\n{w.reference}" for w in rest]
    references = [item.reference for item in items]
    copied = segment_words(train[1], 60)[5 : 5 + len(items)]
    generations = {
        "base": [shuffle_words(r, i) for i, r in enumerate(references)],
        "tuned": references[1:] + references[:1],
        "copycat": copied,
    }
    rng = np.random.default_rng(0)
    tokens = np.full(24, 128)
    windows = {
        "base": WindowScores(rng.normal(3.6, 0.2, 24) * 128, tokens),
        "tuned": WindowScores(rng.normal(3.1, 0.2, 24) * 128, tokens),
        "copycat": WindowScores(rng.normal(2.0, 0.2, 24) * 128, tokens),
    }
    plan = bm.Plan(
        name="known-answers",
        models=[],
        train_dir=DEMO / "author",
        test_dir=DEMO / "author",
        others_dir=DEMO / "others",
        out_dir=Path("unused"),
        notes=["made by tests/benchmark_data.py"],
    )
    results = bm.analyse(
        cfg, plan, train, test, other_authors(), items, generations, windows, "base", calibration
    )
    results["models"] = [
        {"name": n, "model_dir": f"/models/{n}", "adapter_dir": None, "prompt_format": "chat",
         "perplexity_blocks": 24, "perplexity_tokens": int(tokens.sum()),
         **bm.continuation_lengths(generations[n], [item.reference for item in items])}
        for n in generations
    ]  # fmt: skip
    results["timing_seconds"] = {"total": 1.0, "cpu_total": 1.0}
    return results
