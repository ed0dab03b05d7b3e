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

The best checkpoint (`choose_best`), among those that copy no more than the author's own new writing
(if every one copies more, the one that copies least): the lowest eval loss, unless another
checkpoint's voice score is clearly higher (paired difference on the same prompts, its interval above
0). A quick score on 16 prompts is too noisy to rank checkpoints by its value alone.

Then its strength (`choose_strength`): the best checkpoint's adapter is also tried at LoRA scale
STRONGER (1.5) on the same prompts. A short run learns the direction of a voice before its size: in
the sweeps committed here x1.5 scored above x1 on the test prompts in all but one (benchmarks/results/
gpu-h200-voice, recipe-trials/*: the exception trained the end-of-turn label, since dropped). So
x1.5 is kept unless, on the validation prompts, it (1) scores clearly lower (paired interval below
0), (2) reads the author's validation text worse than the base model (perplexity: never less fluent
on the author than where training started; a long GPU run's x1.5 fails this) or (3) copies more
than the author's own new writing.

Written to `checkpoints/<run>/voice_curve.json` and `voice_curve.png`; `voicetune
merge --checkpoint best` (the default of training/3_merge_adapter.sh) merges that checkpoint at that
strength (unless --scale says otherwise) and says which and why.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicetune.core.errors import VoicetuneError
from voicetune.core.manifest import fingerprint, write_json_atomic
from voicetune.core.progress import header, say

CURVE_FILE = "voice_curve.json"
PLOT_FILE = "voice_curve.png"
CURVE_VERSION = 2
STRONGER = 1.5  # the one other strength the curve tries (each costs a generation pass)
PPL_MAX_TOKENS = 2048  # validation tokens scored for the strength's fluency guard
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


def choose_best(
    points: Sequence[Point],
    author_copying: float,
    paired: Callable[[Point, Point], Mapping[str, Any]] | None = None,
) -> tuple[Point, str]:
    """(the checkpoint to merge, why). Among the checkpoints (step > 0) that copy no more than the
    author's own new writing (if none, the one that copies least): the one with the lowest eval loss
    (a precise number), unless another one's voice score is *clearly* higher: paired(a, b), the
    voice-score difference a - b on the same prompts, has its 95% interval above 0 (without `paired`,
    a's interval lies above b's). A quick score on a few prompts is too noisy to rank checkpoints
    by its value alone: on the CPU demo it ranked checkpoint 80 above 160 one run and below it the next."""
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
    anchor = min(allowed, key=lambda p: (p.eval_loss if p.eval_loss is not None else math.inf, -p.step))
    loss = f"eval loss {anchor.eval_loss:.3f}" if anchor.eval_loss is not None else "the last step"
    left_out = (
        f"; {len(trained) - len(allowed)} checkpoint(s) left out for copying more than the author"
        if len(allowed) < len(trained)
        else ""
    )
    copying = f"copying {anchor.copying:.1%} of 8-grams (the author's own new writing: {author_copying:.1%})"
    rivals = [p for p in allowed if p is not anchor and _value(p) > -math.inf]
    if rivals:
        rival = max(rivals, key=lambda p: (_value(p), p.step))
        if paired is not None:
            gap = paired(rival, anchor)
            clearly = isinstance(gap.get("ci_low"), int | float) and gap["ci_low"] > 0
        else:
            gap = {}
            low, high = rival.voice.get("ci_low"), anchor.voice.get("ci_high")
            clearly = isinstance(low, int | float) and isinstance(high, int | float) and low > high
        if clearly:
            return rival, (
                f"a clearly higher voice score than the lowest-eval-loss checkpoint (step {anchor.step}): "
                f"{_fmt(rival.voice)}" + (f", difference {_fmt(gap)}" if gap else "")
                + f", copying {rival.copying:.1%}{left_out}"
            )  # fmt: skip
        versus = f" (step {rival.step}: {_fmt(rival.voice)}" + (f", difference {_fmt(gap)})" if gap else ")")
        return anchor, (
            f"the lowest {loss}, voice {_fmt(anchor.voice)}; no checkpoint's voice score is clearly "
            f"higher at {anchor.voice.get('n', '?')} prompts{versus}, {copying}{left_out}"
        )
    return anchor, f"the lowest {loss}, voice {_fmt(anchor.voice)}, {copying}{left_out}"


def choose_strength(
    gain: Mapping[str, Any],
    perplexity: Mapping[str, float],
    copying: float,
    author_copying: float,
    scale: float = STRONGER,
) -> tuple[float, str]:
    """(the LoRA scale to merge the best checkpoint at, why): x`scale` unless the validation prompts
    show it clearly scoring lower (gain: the paired difference x`scale` - x1, its interval below 0), or
    it reads the author's validation text worse than the base model (perplexity: "base", "x1",
    "stronger"), or it copies more of the training text than the author's own new writing."""
    ppl_base, ppl_one, ppl_strong = perplexity["base"], perplexity["x1"], perplexity["stronger"]
    facts = (
        f"x{scale:g} - x1 on the validation prompts {_fmt(gain)}; validation perplexity base "
        f"{ppl_base:.2f}, x1 {ppl_one:.2f}, x{scale:g} {ppl_strong:.2f}; copying {copying:.1%} "
        f"(the author: {author_copying:.1%})"
    )
    high = gain.get("ci_high")
    if isinstance(high, int | float) and math.isfinite(high) and high < 0:
        return 1.0, f"as trained: x{scale:g} scored clearly lower ({facts})"
    if not ppl_strong <= ppl_base:
        return 1.0, f"as trained: x{scale:g} reads the author's text worse than the base model ({facts})"
    if copying > author_copying:
        return 1.0, f"as trained: x{scale:g} copies more of the training text than the author ({facts})"
    return scale, (
        f"x{scale:g}: the learnt direction taken further, as it still reads the author's text better than "
        f"the base model and scores no lower ({facts})"
    )


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


@dataclass(frozen=True)
class _Plan:
    """What the curve scores, with what settings, and the fingerprints that say when it is up to date."""

    run: str
    trained: Any  # TrainedRun
    base: Path
    data: Any  # PreparedData
    checkpoints: list[Path]
    device: str
    settings: dict[str, Any]
    others_dir: Path
    inputs_key: str
    key: str


def _plan(args: argparse.Namespace) -> _Plan:
    from voicetune.core.artifacts import PreparedData, TrainedRun
    from voicetune.core.paths import demo_data_dir
    from voicetune.model.loading import pick_device

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
    return _Plan(
        run_name, trained, base, PreparedData.load(trained.data_dir), checkpoints, device, settings,
        others_dir, inputs_key, fingerprint(inputs_key, settings),
    )  # fmt: skip


def _up_to_date(plan: _Plan, args: argparse.Namespace) -> dict[str, Any] | None:
    """The curve already written for these checkpoints: with the same settings, or (asked without
    settings, as the merge script asks) with other settings (say, the demo's shorter ones)."""
    existing = read_curve(plan.trained.folder)
    if not existing or args.force:
        return None
    asked = args.prompts is not None or args.max_new_tokens is not None
    if existing.get("fingerprint") == plan.key or (
        not asked and existing.get("inputs_fingerprint") == plan.inputs_key
    ):
        return existing
    return None


@dataclass
class _Judge:
    """The validation prompts and what every model's continuations of them are measured with: the
    voice score's scale (calibrated on validation text that is never a prompt and on the other
    authors) and the copying check against the training text."""

    prompts: list[str]
    references: list[str]  # the author's own text that follows each prompt
    scale: Any  # voice_score.VoiceScale
    novelty: Any  # stylometry.NoveltyIndex
    words: int  # words a calibration piece
    seed: int

    def copying(self, texts: Sequence[str]) -> tuple[float, int]:
        """(share of the texts' 8-grams found in the training text, the longest copied span in words)."""
        found = total = longest = 0
        for text in texts:
            f, t = self.novelty.ngram_overlap(text, NOVELTY_N)
            found, total = found + f, total + t
            longest = max(longest, self.novelty.longest_copied_span(text))
        return (found / total if total else 0.0), longest

    def estimate(self, texts: Sequence[str]) -> dict[str, Any]:
        from voicetune.voice import voice_score as vs

        return dict(vs.score_pieces(self.scale, list(texts), seed=self.seed).to_dict())

    def difference(self, a: Sequence[str], b: Sequence[str]) -> dict[str, Any]:
        """The voice-score difference a - b, paired on the same prompts."""
        from voicetune.voice import voice_score as vs

        return dict(vs.score_difference(self.scale, list(a), list(b), seed=self.seed).to_dict())


def _judge(plan: _Plan, tokenizer: Any, train_texts: list[str], val_texts: list[str], seed: int) -> _Judge:
    import numpy as np

    from voicetune.core.prompting import render_prompt
    from voicetune.voice import perplexity as lm
    from voicetune.voice import voice_score as vs
    from voicetune.voice.attribution import drop_the_author, load_other_authors
    from voicetune.voice.benchmark import (
        held_out_windows,
        other_author_pieces,
        split_other_authors,
        split_prompts,
    )
    from voicetune.voice.stylometry import NoveltyIndex, load_author_texts

    data, settings = plan.data, plan.settings
    others, dropped = drop_the_author(
        load_other_authors(plan.others_dir),
        train_texts + val_texts + load_author_texts(data.texts_dir("test")),
    )
    for note in dropped:
        say(f"voice curve: note: {note}")
    others_reference, others_held_out = split_other_authors(others, OTHERS_HOLDOUT)
    windows = held_out_windows(
        val_texts,
        settings["prompt_tokens"],
        settings["max_new_tokens"],
        lambda s: lm.count_tokens(tokenizer, s),
    )
    items, rest = split_prompts(windows, settings["prompts"], seed)
    if len(items) < 4 or not rest:
        raise VoicetuneError(
            f"the validation texts in {data.texts_dir('val')} hold only {len(windows)} prompt windows: "
            f"prepare with a larger val_fraction, or pass --prompts with fewer"
        )
    references = [item.reference for item in items]
    words = max(20, int(np.median([len(r.split()) for r in references])))
    author_calibration = vs.cut_pieces(
        [f"{w.prompt}\n\n{w.reference}" for w in rest], words, CALIBRATION_PIECES, seed=seed
    )
    others_calibration = other_author_pieces(others_held_out, words, CALIBRATION_PIECES, seed)
    scale = vs.fit_voice_scale(
        author_calibration,
        others_calibration,
        author_reference=train_texts,
        other_reference=others_reference,
        seed=seed,
        check_count=len(items),
    )
    prompts = [render_prompt(tokenizer, "continue", item.prompt, data.prompt_format) for item in items]
    return _Judge(prompts, references, scale, NoveltyIndex(train_texts), words, seed)


def build_curve(args: argparse.Namespace) -> dict[str, Any]:
    """Score every saved checkpoint of the run (module docstring), choose the best and its strength,
    write voice_curve.json and its plot; an up-to-date curve is returned as it is."""
    import json

    from voicetune.model.loading import load_for_inference
    from voicetune.voice import perplexity as lm
    from voicetune.voice.stylometry import load_author_texts

    started = time.monotonic()
    plan = _plan(args)
    existing = _up_to_date(plan, args)
    if existing is not None:
        say(f"voice curve: up to date ({plan.trained.folder / CURVE_FILE}); --force scores again")
        return existing

    header(f"voice curve: {len(plan.checkpoints)} checkpoints of {plan.run} on {plan.device}")
    settings, device = plan.settings, plan.device
    train_texts = load_author_texts(plan.data.texts_dir("train"))
    val_texts = load_author_texts(plan.data.texts_dir("val"))
    model, tokenizer = load_for_inference(plan.base, None, device)
    judge = _judge(plan, tokenizer, train_texts, val_texts, args.seed)

    def continuations(m: Any, label: str) -> list[str]:
        return lm.generate_continuations(
            m, tokenizer, judge.prompts, settings["max_new_tokens"], settings["temperature"],
            settings["top_p"], 1.0, args.seed, settings["batch_size"], add_special_tokens=False,
            desc=f"{label}: generate",
        )  # fmt: skip

    state = json.loads((plan.checkpoints[-1] / "trainer_state.json").read_text(encoding="utf-8"))
    losses = eval_losses(state)
    points: list[Point] = []
    generated: dict[str, list[str]] = {}
    if device == "cuda":  # the base model's point, for the plot; on a CPU it costs a minute, skipped
        texts = continuations(model, "base")
        share, longest = judge.copying(texts)
        points.append(Point(0, None, judge.estimate(texts), share, longest, losses.get(0)))
    # the strength's fluency guard compares with the base model: score it while it is loaded
    base_perplexity = validation_perplexity(model, tokenizer, val_texts, "base")
    # On a CPU each checkpoint goes onto a copy of the base in memory (reading it again from disk cost
    # seconds a checkpoint); a GPU frees the base for the next model instead.
    base_in_memory = model if device == "cpu" else None
    del model
    lm.release_memory()

    def merged(folder: Path, scale: float = 1.0) -> Any:
        """The checkpoint folded into the base model at LoRA scale `scale`."""
        fresh = deepcopy(base_in_memory) if base_in_memory is not None else None
        return load_for_inference(
            plan.base, folder, device, merge_adapter=True, lora_scale=scale, loaded=fresh
        )[0]

    for folder in plan.checkpoints:
        step = int(folder.name.rsplit("-", 1)[1])
        model = merged(folder)
        texts = continuations(model, folder.name)
        del model
        lm.release_memory()
        generated[folder.name] = texts
        share, longest = judge.copying(texts)
        point = Point(step, folder.name, judge.estimate(texts), share, longest, losses.get(step))
        points.append(point)
        say(
            f"voice curve: step {step}: voice {_fmt(point.voice)}, copying {share:.1%}, eval loss "
            + (f"{point.eval_loss:.3f}" if point.eval_loss is not None else "n/a")
        )
    author_share, author_longest = judge.copying(judge.references)
    best, why = choose_best(
        points, author_share, lambda a, b: judge.difference(generated[a.checkpoint], generated[b.checkpoint])
    )
    best_folder = next(p for p in plan.checkpoints if p.name == best.checkpoint)
    strength = _try_stronger(
        merged, best_folder, generated[best_folder.name], base_perplexity, tokenizer, val_texts,
        continuations, judge.copying, author_share, judge.difference,
    )  # fmt: skip
    curve = {
        "schema_version": CURVE_VERSION,
        "fingerprint": plan.key,
        "inputs_fingerprint": plan.inputs_key,
        "run": plan.run,
        "data_dir": str(plan.data.folder),
        "prompts_from": "validation split (texts/val), never the test split",
        "settings": settings,
        "rule": "among checkpoints copying no more 8-grams of the training text than the author's own new "
        "writing (else the one copying least): the lowest eval loss, unless another's voice score is "
        f"clearly higher (paired interval above 0). Then x{STRONGER:g} of that checkpoint unless it "
        "scores clearly lower (paired), reads the validation text worse than the base model, or copies "
        "more than the author",
        "author": {
            "voice_score": judge.estimate(judge.references),
            "copying": {"ngram_share": author_share, "n": NOVELTY_N, "longest_span_words": author_longest},
        },
        "points": [p.as_json() for p in points],
        "best": {
            "step": best.step,
            "checkpoint": best.checkpoint,
            "why": why,
            "scale": strength["scale"],
            "scale_why": strength["why"],
        },
        "strength": strength,
        "voice_scale": {
            "measures_kept": [m.key for m in judge.scale.measures if m.passed],
            "words_per_piece": judge.words,
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    run_folder = plan.trained.folder
    write_json_atomic(run_folder / CURVE_FILE, curve)
    plot_curve(curve, run_folder / PLOT_FILE)
    say(f"voice curve: wrote {run_folder / CURVE_FILE} and {PLOT_FILE}")
    return curve


def validation_perplexity(model: Any, tokenizer: Any, val_texts: Sequence[str], label: str) -> float:
    """Perplexity of up to PPL_MAX_TOKENS tokens of the validation texts (the strength's fluency guard)."""
    from voicetune.voice import perplexity as lm

    # windows overlap by a quarter, as the CPU benchmark's: the same tokens for every model compared
    scores = lm.perplexity_windows(
        model, tokenizer, val_texts, PPL_MAX_TOKENS, window=512, stride=384, desc=f"{label}: perplexity"
    )
    return float(scores.perplexity)


def _try_stronger(
    merged: Callable[..., Any],
    best_folder: Path,
    best_texts: Sequence[str],
    base_perplexity: float,
    tokenizer: Any,
    val_texts: Sequence[str],
    continuations: Any,
    copying: Any,
    author_copying: float,
    paired_gain: Any,
) -> dict[str, Any]:
    """The best checkpoint at x STRONGER against x1 (module docstring): one more generation pass and
    two more validation perplexities (the base model's is given); returns the curve's `strength` block."""
    from voicetune.voice import perplexity as lm

    perplexity = {"base": base_perplexity}
    model = merged(best_folder)
    perplexity["x1"] = validation_perplexity(model, tokenizer, val_texts, f"{best_folder.name} x1")
    del model
    model = merged(best_folder, STRONGER)
    perplexity["stronger"] = validation_perplexity(
        model, tokenizer, val_texts, f"{best_folder.name} x{STRONGER:g}"
    )
    texts = continuations(model, f"{best_folder.name} x{STRONGER:g}")
    del model
    lm.release_memory()
    share, _ = copying(texts)
    gain = paired_gain(texts, best_texts)
    chosen, why = choose_strength(gain, perplexity, share, author_copying)
    say(f"voice curve: strength {why}")
    return {
        "tried": STRONGER,
        "gain": gain,
        "perplexity": {k: round(v, 4) for k, v in perplexity.items()},
        "copying": share,
        "scale": chosen,
        "why": why,
    }


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
