"""`voicetune voice-curve`: score every saved checkpoint of a run by voice, and choose the one to merge.

Eval loss says how well a checkpoint predicts the author's held-out text; it does not say whether the
model *writes* like the author (issue 20: a run whose loss fell while word choice stayed put). So each
checkpoint of `checkpoints/<run>/output/checkpoint-N/` (and the base model, step 0) continues the same
short prompts from the validation split (never the test split the benchmark uses), and each is given:

- a quick voice score: the calibrated score (voicetune.voice.voice_score, 0 = other authors, 1 = the
  author) of its continuations, with a 95% interval;
- its eval loss, from the trainer's own log at that step;
- a copying check: the share of its 8-grams found in the training text, against the same share in
  the author's own new writing (the validation text that follows each prompt).

The best checkpoint (`choose_best`) is the highest voice score among those that copy no more than the
author's own new writing does; if every one copies more, the one that copies least. Written to
`checkpoints/<run>/voice_curve.json` and `voice_curve.png`; `voicetune merge --checkpoint best` (the
default of training/3_merge_adapter.sh) merges it and says which and why.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicetune.core.errors import VoicetuneError
from voicetune.core.manifest import fingerprint, write_json_atomic
from voicetune.core.progress import header, say

CURVE_FILE = "voice_curve.json"
PLOT_FILE = "voice_curve.png"
CURVE_VERSION = 1
NOVELTY_N = 8
CALIBRATION_PIECES = 200  # per side: the author's spare validation text, the other authors' held-out text
OTHERS_HOLDOUT = 0.3  # share of each other author kept away from the scale's lines (as the benchmark)
# Quick, not the benchmark: enough prompts for an interval, short enough to score every checkpoint.
CPU_DEFAULTS = {"prompts": 16, "prompt_tokens": 64, "max_new_tokens": 64, "batch_size": 16}
# On the H200 (benchmarks/results/gpu-h200-voice) 48 prompts x 96 tokens put the base model above every
# checkpoint, with overlapping intervals, where the benchmark's 80 x 192 tokens separated them: longer.
GPU_DEFAULTS = {"prompts": 64, "prompt_tokens": 96, "max_new_tokens": 160, "batch_size": 64}


@dataclass(frozen=True)
class Point:
    """One model on the curve: step 0 is the base model."""

    step: int
    checkpoint: str | None
    voice: Mapping[str, Any]  # value, ci_low, ci_high (None when not computable), n
    copying: float  # share of the continuations' 8-grams found in the training text
    longest_span: int
    eval_loss: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "checkpoint": self.checkpoint,
            "voice_score": dict(self.voice),
            "copying": {"ngram_share": self.copying, "n": NOVELTY_N, "longest_span_words": self.longest_span},
            "eval_loss": self.eval_loss,
        }


def choose_best(points: Sequence[Point], author_copying: float) -> tuple[Point, str]:
    """(the checkpoint to merge, why): the highest voice score among the checkpoints (step > 0) that
    copy no more than the author's own new writing; if none, the one that copies least."""
    trained = [p for p in points if p.step > 0]
    if not trained:
        raise VoicetuneError("the run has no saved checkpoint to choose from: train it again")
    allowed = [p for p in trained if p.copying <= author_copying]
    if not allowed:
        best = min(trained, key=lambda p: (p.copying, -_value(p)))
        return best, (
            f"every checkpoint copies more of the training text than the author's own new writing "
            f"({author_copying:.1%} of 8-grams): step {best.step} copies least ({best.copying:.1%})"
        )
    if all(_value(p) == -math.inf for p in allowed):
        best = min(allowed, key=lambda p: (p.eval_loss if p.eval_loss is not None else math.inf, -p.step))
        loss = f" ({best.eval_loss:.3f})" if best.eval_loss is not None else ""
        return best, (
            "no voice score at this length and number of prompts (no measure told the author from the "
            f"others): the lowest eval loss{loss}, copying {best.copying:.1%} of 8-grams"
        )
    best = max(allowed, key=lambda p: (_value(p), -p.step))
    loss = f", eval loss {best.eval_loss:.3f}" if best.eval_loss is not None else ""
    why = (
        f"the highest voice score, {_fmt(best.voice)}, of "
        f"{len(trained)} checkpoints, copying {best.copying:.1%} of 8-grams (the author's own new "
        f"writing: {author_copying:.1%}){loss}"
    )
    if len(allowed) < len(trained):
        why += f"; {len(trained) - len(allowed)} checkpoint(s) left out for copying more than the author"
    return best, why


def eval_losses(trainer_state: Mapping[str, Any] | None) -> dict[int, float]:
    """step -> eval_loss from a checkpoint's trainer_state.json log history."""
    out: dict[int, float] = {}
    for entry in (trainer_state or {}).get("log_history", []):
        if "eval_loss" in entry and "step" in entry:
            out[int(entry["step"])] = float(entry["eval_loss"])
    return out


def read_curve(run_dir: Path) -> dict[str, Any] | None:
    import json

    try:
        data = json.loads((run_dir / CURVE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ------------------------------------------------------------------------------------- the verb


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Score each saved checkpoint of a run by voice (calibrated voice score on short continuations of "
        "validation prompts), eval loss and copying; write checkpoints/<run>/voice_curve.json and .png and "
        "name the best checkpoint, which `voicetune merge --checkpoint best` merges."
    )
    parser.add_argument(
        "--run", default=None, help="training run (checkpoints/<run>/); default: the only one"
    )
    parser.add_argument(
        "--prompts", type=int, default=None, help="validation prompts (default 16 CPU / 64 GPU)"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="tokens per continuation (default 64 CPU / 160 GPU)"
    )
    parser.add_argument("--others", type=Path, default=None, help="other authors (default data/demo/others)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--force", action="store_true", help="score again even when the curve is up to date")


def run(args: argparse.Namespace) -> int:
    from voicetune.core.privacy import apply_private_env

    apply_private_env()
    curve = build_curve(args)
    best = curve["best"]
    say(f"voice curve: best checkpoint {best['checkpoint']} (step {best['step']}): {best['why']}")
    return 0


def _only_run() -> str:
    from voicetune.model.merge import find_runs

    runs = find_runs()
    if len(runs) != 1:
        listed = ", ".join(runs) if runs else "none yet"
        raise VoicetuneError(
            f"which run? name it with --run (completed runs in checkpoints/: {listed})", exit_code=2
        )
    return runs[0]


def build_curve(args: argparse.Namespace) -> dict[str, Any]:
    import json

    import numpy as np

    from voicetune.core.artifacts import PreparedData, TrainedRun
    from voicetune.core.paths import demo_data_dir
    from voicetune.core.prompting import render_prompt
    from voicetune.model.loading import load_for_inference, pick_device
    from voicetune.voice import perplexity as lm
    from voicetune.voice import voice_score as vs
    from voicetune.voice.attribution import load_other_authors
    from voicetune.voice.benchmark import (
        held_out_windows,
        other_author_pieces,
        split_other_authors,
        split_prompts,
    )
    from voicetune.voice.stylometry import NoveltyIndex, load_author_texts

    started = time.monotonic()
    run_name = args.run or _only_run()
    trained = TrainedRun.load(run_name)
    base = trained.base_model
    if base is None or not base.is_dir():
        raise VoicetuneError(
            f"{trained.folder / 'manifest.json'} names no base model folder: train the run again"
        )
    if trained.data_dir is None:
        raise VoicetuneError(
            f"{trained.folder / 'manifest.json'} names no prepared data: train the run again"
        )
    data = PreparedData.load(trained.data_dir)
    checkpoints = [p for p in trained.checkpoints() if (p / "adapter_config.json").is_file()]
    if not checkpoints:
        raise VoicetuneError(
            f"{trained.adapter_dir} holds no checkpoint-N/ folders: train with checkpoints saved"
        )
    device = pick_device(args.device)
    defaults = GPU_DEFAULTS if device == "cuda" else CPU_DEFAULTS
    settings = {
        "prompts": args.prompts or defaults["prompts"],
        "prompt_tokens": defaults["prompt_tokens"],
        "max_new_tokens": args.max_new_tokens or defaults["max_new_tokens"],
        "batch_size": defaults["batch_size"],
        "temperature": 0.8,
        "top_p": 0.95,
        "seed": args.seed,
        "device": device,
    }
    others_dir = (args.others or demo_data_dir() / "others").resolve()
    inputs_key = fingerprint(
        "voice-curve",
        CURVE_VERSION,
        trained.manifest.get("fingerprint"),
        [(p.name, (p / "adapter_model.safetensors").stat().st_size) for p in checkpoints],
        str(others_dir),
    )
    key = fingerprint(inputs_key, settings)
    existing = read_curve(trained.folder)
    if existing and not args.force:
        # Up to date: the same settings, or (asked without settings, as the merge script asks) a curve
        # of these very checkpoints made with other settings (say, the demo's shorter ones).
        asked = args.prompts is not None or args.max_new_tokens is not None
        if existing.get("fingerprint") == key or (
            not asked and existing.get("inputs_fingerprint") == inputs_key
        ):
            say(f"voice curve: up to date ({trained.folder / CURVE_FILE}); --force scores again")
            return existing

    header(f"voice curve: {len(checkpoints)} checkpoints of {run_name} on {device}")
    train_texts = load_author_texts(data.texts_dir("train"))
    val_texts = load_author_texts(data.texts_dir("val"))
    others_reference, others_held_out = split_other_authors(load_other_authors(others_dir), OTHERS_HOLDOUT)
    model, tokenizer = load_for_inference(base, None, device)
    windows = held_out_windows(
        val_texts,
        settings["prompt_tokens"],
        settings["max_new_tokens"],
        lambda s: lm.count_tokens(tokenizer, s),
    )
    items, rest = split_prompts(windows, settings["prompts"], args.seed)
    if len(items) < 4 or not rest:
        raise VoicetuneError(
            f"the validation texts in {data.texts_dir('val')} hold only {len(windows)} prompt windows: "
            f"prepare with a larger val_fraction, or pass --prompts with fewer"
        )
    fmt = data.prompt_format
    prompts = [render_prompt(tokenizer, "continue", item.prompt, fmt) for item in items]
    references = [item.reference for item in items]
    words = max(20, int(np.median([len(r.split()) for r in references])))
    author_calibration = vs.cut_pieces(
        [f"{w.prompt}\n\n{w.reference}" for w in rest], words, CALIBRATION_PIECES, seed=args.seed
    )
    others_calibration = other_author_pieces(others_held_out, words, CALIBRATION_PIECES, args.seed)
    scale = vs.fit_voice_scale(
        author_calibration,
        others_calibration,
        author_reference=train_texts,
        other_reference=others_reference,
        seed=args.seed,
        check_count=len(items),
    )
    novelty = NoveltyIndex(train_texts)

    def copying(texts: Sequence[str]) -> tuple[float, int]:
        found = total = longest = 0
        for text in texts:
            f, t = novelty.ngram_overlap(text, NOVELTY_N)
            found, total = found + f, total + t
            longest = max(longest, novelty.longest_copied_span(text))
        return (found / total if total else 0.0), longest

    def estimate(texts: Sequence[str]) -> dict[str, Any]:
        return dict(vs.score_pieces(scale, list(texts), seed=args.seed).to_dict())

    def continuations(m: Any, label: str) -> list[str]:
        return lm.generate_continuations(
            m, tokenizer, prompts, settings["max_new_tokens"], settings["temperature"], settings["top_p"],
            1.0, args.seed, settings["batch_size"], add_special_tokens=False, desc=f"{label}: generate",
        )  # fmt: skip

    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text(encoding="utf-8"))
    losses = eval_losses(state)
    points: list[Point] = []
    if device == "cuda":  # the base model's point, for the plot; on a CPU it costs a minute, skipped
        texts = continuations(model, "base")
        share, longest = copying(texts)
        points.append(Point(0, None, estimate(texts), share, longest, losses.get(0)))
    del model
    lm.release_memory()
    for folder in checkpoints:
        step = int(folder.name.rsplit("-", 1)[1])
        model, _ = load_for_inference(base, folder, device, merge_adapter=True)
        texts = continuations(model, folder.name)
        del model
        lm.release_memory()
        share, longest = copying(texts)
        point = Point(step, folder.name, estimate(texts), share, longest, losses.get(step))
        points.append(point)
        say(
            f"voice curve: step {step}: voice {_fmt(point.voice)}, copying {share:.1%}, eval loss "
            + (f"{point.eval_loss:.3f}" if point.eval_loss is not None else "n/a")
        )
    author_share, author_longest = copying(references)
    best, why = choose_best(points, author_share)
    curve = {
        "schema_version": CURVE_VERSION,
        "fingerprint": key,
        "inputs_fingerprint": inputs_key,
        "run": run_name,
        "data_dir": str(data.folder),
        "prompts_from": "validation split (texts/val), never the test split",
        "settings": settings,
        "rule": "highest voice score among checkpoints copying no more 8-grams of the training text than "
        "the author's own new writing; else the one copying least",
        "author": {
            "voice_score": estimate(references),
            "copying": {"ngram_share": author_share, "n": NOVELTY_N, "longest_span_words": author_longest},
        },
        "points": [p.as_json() for p in points],
        "best": {"step": best.step, "checkpoint": best.checkpoint, "why": why},
        "voice_scale": {
            "measures_kept": [m.key for m in scale.measures if m.passed],
            "words_per_piece": words,
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    write_json_atomic(trained.folder / CURVE_FILE, curve)
    plot_curve(curve, trained.folder / PLOT_FILE)
    say(f"voice curve: wrote {trained.folder / CURVE_FILE} and {PLOT_FILE}")
    return curve


def plot_curve(curve: Mapping[str, Any], path: Path) -> None:
    """Voice score (with its interval) and eval loss against the step; the best step marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from voicetune.core.manifest import write_bytes_atomic

    points = [p for p in curve["points"] if p["voice_score"].get("value") is not None]
    steps = [p["step"] for p in points]
    values = [p["voice_score"]["value"] for p in points]
    low = [p["voice_score"]["value"] - p["voice_score"]["ci_low"] for p in points]
    high = [p["voice_score"]["ci_high"] - p["voice_score"]["value"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.errorbar(steps, values, yerr=[low, high], marker="o", capsize=3, label="voice score (95% CI)")
    author = curve["author"]["voice_score"]["value"]
    if author is not None:
        ax.axhline(author, color="grey", linestyle="--", linewidth=1, label="the author's own new writing")
    best = curve["best"]["step"]
    ax.axvline(best, color="green", linestyle=":", label=f"chosen: step {best}")
    ax.set_xlabel("optimizer step (0 = base model)")
    ax.set_ylabel("voice score (0 other authors, 1 the author)")
    ax.set_ylim(-0.05, 1.05)
    losses = [(p["step"], p["eval_loss"]) for p in curve["points"] if p["eval_loss"] is not None]
    if losses:
        twin = ax.twinx()
        twin.plot([s for s, _ in losses], [v for _, v in losses], color="tab:red", marker="s", alpha=0.6)
        twin.set_ylabel("eval loss", color="tab:red")
    ax.set_title(f"voice curve of run {curve['run']}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def _value(point: Point) -> float:
    """The voice score's value; -inf when it could not be computed (no measure separated)."""
    value = point.voice.get("value")
    return float(value) if isinstance(value, int | float) and not math.isnan(value) else -math.inf


def _fmt(estimate: Mapping[str, Any]) -> str:
    if not isinstance(estimate.get("value"), int | float):
        return "n/a"
    return f"{estimate['value']:.2f} [{estimate['ci_low']:.2f}, {estimate['ci_high']:.2f}]"
