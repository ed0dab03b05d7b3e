"""The checkpoint chosen by voice (voicetune.voice.checkpoint_choice) and the style-strength sweep
(voicetune.voice.strength): the choice rule, the trainer's eval losses, the plots. Pure and fast; the
models themselves run in the GPU results (benchmarks/results/gpu-h200-voice) and the demo."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from voicetune.core.errors import VoicetuneError
from voicetune.voice.checkpoint_choice import Point, choose_best, eval_losses, plot_curve
from voicetune.voice.strength import plot_sweep, sweep_points


def _point(step: int, value: float | None, copying: float = 0.0, loss: float | None = 2.5) -> Point:
    voice = {"value": value, "ci_low": None if value is None else value - 0.1,
             "ci_high": None if value is None else value + 0.1, "n": 16}  # fmt: skip
    return Point(step, f"checkpoint-{step}" if step else None, voice, copying, 3, loss)


def test_the_best_checkpoint_is_the_lowest_eval_loss_unless_another_sounds_clearly_more_like_the_author() -> (
    None
):
    """Among checkpoints copying no more than the author: the lowest eval loss; a checkpoint with a
    higher voice score replaces it only when the paired difference's interval is above 0."""
    points = [
        _point(0, 0.9),  # the base model never counts
        _point(100, 0.4, loss=2.6),
        _point(200, 0.75, copying=0.05, loss=2.55),  # copies more than the author
        _point(300, 0.6, loss=2.5),
    ]
    best, why = choose_best(points, author_copying=0.01)
    assert best.step == 300 and why.startswith("the lowest eval loss 2.500, voice 0.60 [0.50, 0.70]")
    assert "1 checkpoint(s) left out for copying more than the author" in why

    # 200 may now compete: not clearly higher by its interval alone, then clearly by a paired difference
    best, why = choose_best(points, author_copying=0.10)
    assert best.step == 300 and "no checkpoint's voice score is clearly higher at 16 prompts" in why
    gap = {"value": 0.35, "ci_low": 0.05, "ci_high": 0.6, "n": 16}
    best, why = choose_best(points, author_copying=0.10, paired=lambda a, b: gap)
    assert best.step == 200 and "clearly higher voice score than the lowest-eval-loss checkpoint" in why
    best, _ = choose_best(points, author_copying=0.10, paired=lambda a, b: {**gap, "ci_low": -0.01})
    assert best.step == 300


def test_when_every_checkpoint_copies_the_least_copying_one_is_taken() -> None:
    best, why = choose_best([_point(1, 0.9, copying=0.2), _point(2, 0.5, copying=0.1)], author_copying=0.0)
    assert best.step == 2 and "copies least (10.0%)" in why


def test_a_score_that_could_not_be_computed_never_wins_and_no_checkpoint_is_an_error() -> None:
    best, _ = choose_best([_point(1, None), _point(2, 0.3)], author_copying=0.0)
    assert best.step == 2
    best, why = choose_best([_point(1, None, loss=2.7), _point(2, None, loss=2.6)], author_copying=0.0)
    assert best.step == 2 and why.startswith("the lowest eval loss 2.600, voice n/a")
    with pytest.raises(VoicetuneError, match="no saved checkpoint"):
        choose_best([_point(0, 0.5)], author_copying=0.0)


def test_eval_losses_come_from_the_trainers_log() -> None:
    state = {
        "log_history": [
            {"step": 5, "loss": 3.0},
            {"step": 5, "eval_loss": 2.9},
            {"step": 10, "eval_loss": 2.7},
        ]
    }
    assert eval_losses(state) == {5: 2.9, 10: 2.7}
    assert eval_losses(None) == {}


def test_the_curve_and_the_sweep_are_plotted(tmp_path: Path) -> None:
    curve = {
        "run": "demo",
        "points": [
            p.as_json() for p in (_point(0, 0.4, loss=3.1), _point(50, None), _point(100, 0.7, loss=2.8))
        ],
        "author": {"voice_score": {"value": 1.0}},
        "best": {"step": 100},
    }
    plot_curve(curve, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 10_000

    windows = {0.5: 30.0, 1.0: 31.0, 1.5: 35.0}
    calls: list[float] = []

    def run_scale(scale: float) -> tuple[list[str], SimpleNamespace]:
        calls.append(scale)
        return [f"text at {scale}"], SimpleNamespace(perplexity=windows[scale])

    points = sweep_points(
        [0.5, 1.0, 1.5],
        run_scale,
        lambda texts: {"value": float(texts[0].split()[-1]), "ci_low": 0.0, "ci_high": 2.0, "n": 1},
        lambda texts: 0.0,
    )
    assert calls == [0.5, 1.0, 1.5] and [p["perplexity"] for p in points] == [30.0, 31.0, 35.0]
    assert math.isclose(points[2]["voice_score"]["value"], 1.5)
    assert plot_sweep({"points": points, "author_voice_score": 1.0, "author_copying": 0.0}, tmp_path) == [
        "strength_sweep.png"
    ]
    assert plot_sweep(None, tmp_path) == []


def test_the_stronger_strength_is_kept_unless_clearly_worse_less_fluent_than_base_or_copying() -> None:
    """choose_strength: x1.5 of the best checkpoint unless one of three checks fails (module
    docstring of voicetune.voice.checkpoint_choice); each failure says which in its reason."""
    from voicetune.voice.checkpoint_choice import choose_strength

    gain = {"value": -0.08, "ci_low": -0.61, "ci_high": 0.40, "n": 16}  # noisy: not clearly lower
    fluent = {"base": 44.16, "x1": 39.11, "stronger": 40.26}
    scale, why = choose_strength(gain, fluent, copying=0.0, author_copying=0.0)
    assert scale == 1.5 and why.startswith("x1.5: the learnt direction taken further") and "base 44.16" in why

    scale, why = choose_strength({**gain, "ci_high": -0.02}, fluent, 0.0, 0.0)
    assert scale == 1.0 and "scored clearly lower" in why
    scale, why = choose_strength(gain, {**fluent, "stronger": 44.2}, 0.0, 0.0)
    assert scale == 1.0 and "worse than the base model" in why
    scale, why = choose_strength(gain, {**fluent, "stronger": float("nan")}, 0.0, 0.0)
    assert scale == 1.0  # a perplexity that could not be computed never passes
    scale, why = choose_strength(gain, fluent, copying=0.02, author_copying=0.01)
    assert scale == 1.0 and "copies more" in why
