"""Style strength: the fine-tuned adapter at a few LoRA scales, without retraining.

A LoRA adapter adds scale x (alpha / r) x B @ A to each weight it adapts; scale 1.0 is the model as
trained, 0 the base model. Below 1 the imitation weakens, above 1 it is pushed further (PEFT's
`LoraLayer.scaling`, multiplied by `voicetune.model.loading.scale_lora_` before any merge).
`voicetune merge --scale S` and `voicetune generate --scale S` use one scale; the benchmark sweeps a
few here, on the same prompts and the same calibrated voice scale as the rest of its report, and
gives for each the voice score, the held-out perplexity and copying, so a person sees what a
stronger voice costs (`strength_sweep` in results.json, the plot `strength_sweep.png`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from voicetune.core.progress import header, say

PLOT_FILE = "strength_sweep.png"
# On a CPU each scale is one more generation pass (~4 minutes of the demo's 15 on 2 cores): none by
# default there (`--strengths 1.5` asks for one); on a GPU a pass takes seconds.
CPU_SCALES: tuple[float, ...] = ()
GPU_SCALES = (0.5, 1.5, 2.0)


def default_scales(device: str) -> tuple[float, ...]:
    return GPU_SCALES if device == "cuda" else CPU_SCALES


def adapter_of(spec: Any) -> tuple[Path, Path, float] | None:
    """(base, adapter, scale it was merged at) of a fine-tuned model: its own adapter when unmerged,
    else what its merge manifest records; None when it is a plain model (nothing to sweep)."""
    from voicetune.core.artifacts import MergedModel

    if spec.adapter_dir is not None:
        return Path(spec.model_dir), Path(spec.adapter_dir), 1.0
    merged = MergedModel.find(Path(spec.model_dir))
    if merged is None or merged.base_model is None or merged.adapter_dir is None:
        return None
    if not (merged.adapter_dir / "adapter_config.json").is_file():
        return None
    return merged.base_model, merged.adapter_dir, merged.lora_scale


def fit_benchmark_scale(
    cfg: Any,
    train_texts: Sequence[str],
    others: Mapping[str, Sequence[str]],
    calibration_texts: Sequence[str],
    references: Sequence[str],
) -> Any:
    """The benchmark's voice scale, fitted as `voicetune.voice.benchmark.analyse` fits it (same pieces,
    same seed), so the sweep's points sit on the scale of the report's voice score."""
    from voicetune.voice import voice_score as vs
    from voicetune.voice.benchmark import other_author_pieces, split_other_authors

    segment = max(30, int(statistics.median([len(r.split()) for r in references])))
    others_reference, others_held_out = split_other_authors(others, cfg.others_holdout)
    pieces = other_author_pieces(others_held_out, segment, len(references) + cfg.calibration_pieces, cfg.seed)
    author_calibration = vs.cut_pieces(calibration_texts, segment, cfg.calibration_pieces, seed=cfg.seed)
    return vs.fit_voice_scale(
        author_calibration, pieces[len(references) :], author_reference=train_texts,
        other_reference=others_reference, seed=cfg.seed, n_boot=cfg.bootstrap, check_count=len(references),
    )  # fmt: skip


def sweep(
    cfg: Any,
    fine_tuned: Any,
    scales: Sequence[float],
    items: Sequence[Any],
    fmt: Any,
    test_texts: Sequence[str],
    train_texts: Sequence[str],
    others: Mapping[str, Sequence[str]],
    calibration_texts: Sequence[str],
    own: tuple[Sequence[str], Any],
) -> dict[str, Any] | None:
    """results.json's `strength_sweep`: one point per scale (the fine-tuned model's own scale reuses
    its continuations and perplexity, `own`), on the benchmark's prompts. None when the fine-tuned
    model has no adapter to scale."""
    from voicetune.model.loading import load_for_inference
    from voicetune.voice import perplexity as lm
    from voicetune.voice import voice_score as vs
    from voicetune.voice.benchmark import _render_prompts
    from voicetune.voice.stylometry import NoveltyIndex

    references = [item.reference for item in items]
    found = adapter_of(fine_tuned)
    if found is None or not scales:
        return None
    base, adapter, merged_at = found
    scale = fit_benchmark_scale(cfg, train_texts, others, calibration_texts, references)
    novelty = NoveltyIndex(train_texts)

    def run_scale(factor: float) -> tuple[list[str], Any]:
        if abs(factor - merged_at) < 1e-9:
            return list(own[0]), own[1]
        header(f"benchmark: style strength x{factor:g} ({adapter})")
        model, tokenizer = load_for_inference(
            base, adapter, cfg.device, merge_adapter=True, lora_scale=factor
        )
        prompts, raw = _render_prompts(tokenizer, items, fmt, cfg.prompt_format)
        windows = lm.perplexity_windows(
            model, tokenizer, test_texts, cfg.ppl_max_tokens, cfg.ppl_window, cfg.ppl_stride,
            batch_size=max(1, min(8, cfg.batch_size // 2)), desc=f"x{factor:g}: perplexity",
        )  # fmt: skip
        texts = lm.generate_continuations(
            model, tokenizer, list(prompts), cfg.max_new_tokens, cfg.temperature, cfg.top_p,
            cfg.repetition_penalty, cfg.seed, cfg.batch_size, add_special_tokens=raw,
            desc=f"x{factor:g}: generate",
        )  # fmt: skip
        del model, tokenizer
        lm.release_memory()
        return texts, windows

    def copying(texts: Sequence[str]) -> float:
        pairs = [novelty.ngram_overlap(t, cfg.novelty_n) for t in texts]
        total = sum(n for _, n in pairs)
        return sum(f for f, _ in pairs) / total if total else 0.0

    points = sweep_points(
        sorted({*scales, merged_at}),
        run_scale,
        lambda texts: vs.score_pieces(scale, list(texts), seed=cfg.seed).to_dict(),
        copying,
    )
    for p in points:
        v = p["voice_score"]
        say(
            f"strength x{p['scale']:g}: voice {v['value']}, perplexity {p['perplexity']:.2f}, "
            f"copying {p['copying']['ngram_share']:.1%}"
        )
    author = vs.score_pieces(scale, list(references), seed=cfg.seed).to_dict()
    return {
        "adapter_dir": str(adapter),
        "base_model": str(base),
        "fine_tuned_scale": merged_at,
        "note": "scale 1.0 = the adapter as trained; the fine-tuned model's own scale reuses its "
        "continuations and perplexity; the same prompts, seed and voice scale as the rest of the report",
        "author_voice_score": author.get("value"),
        "author_copying": copying(references),
        "points": points,
    }


def sweep_points(
    scales: Sequence[float],
    run_scale: Callable[[float], tuple[Sequence[str], Any]],
    voice: Callable[[Sequence[str]], Mapping[str, Any]],
    copying: Callable[[Sequence[str]], float],
) -> list[dict[str, Any]]:
    """One point per scale: run_scale(scale) -> (continuations, perplexity WindowScores)."""
    points = []
    for factor in scales:
        texts, windows = run_scale(factor)
        points.append(
            {
                "scale": factor,
                "voice_score": dict(voice(texts)),
                "perplexity": round(float(windows.perplexity), 4),
                "copying": {"ngram_share": copying(texts)},
            }
        )
    return points


def plot_sweep(sweep_result: Mapping[str, Any] | None, folder: Path) -> list[str]:
    """strength_sweep.png: voice score against perplexity (left) and against copying (right), one
    labelled point per scale. Returns the file names written."""
    points = [
        p for p in (sweep_result or {}).get("points") or [] if p["voice_score"].get("value") is not None
    ]
    if not points or sweep_result is None:
        return []
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from voicetune.core.manifest import write_bytes_atomic

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    values = [p["voice_score"]["value"] for p in points]
    errors = [
        [p["voice_score"]["value"] - p["voice_score"]["ci_low"] for p in points],
        [p["voice_score"]["ci_high"] - p["voice_score"]["value"] for p in points],
    ]
    for ax, xs, label in (
        (axes[0], [p["perplexity"] for p in points], "perplexity of the author's held-out text"),
        (axes[1], [100 * p["copying"]["ngram_share"] for p in points], "copied 8-grams (% of the text)"),
    ):
        ax.errorbar(xs, values, yerr=errors, marker="o", linestyle="-", capsize=3)
        for x, y, p in zip(xs, values, points, strict=True):
            ax.annotate(f"x{p['scale']:g}", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel(label)
    if sweep_result.get("author_voice_score") is not None:
        for ax in axes:
            ax.axhline(sweep_result["author_voice_score"], color="grey", linestyle="--", linewidth=1)
    axes[1].axvline(
        100 * float(sweep_result.get("author_copying") or 0), color="grey", linestyle=":", linewidth=1
    )
    axes[0].set_ylabel("voice score (0 other authors, 1 the author)")
    fig.suptitle("style strength: the adapter at several LoRA scales (grey: the author's own new writing)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(folder / PLOT_FILE, buffer.getvalue())
    return [PLOT_FILE]
