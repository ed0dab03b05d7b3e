"""The calibrated voice score on real text: the demo author (Saki) against the other bundled authors.

The scale is fitted on one set of pieces and checked on others it never saw: the author's unseen
held-out pieces must land near 1, the other writers' unseen pieces near 0, and every interval must hold
its value.
"""

from __future__ import annotations

import math
import random
from functools import lru_cache

import numpy as np
import pytest
from stylometry_data import author_split, other_authors, shuffle_words

from voicetune.core.errors import VoicetuneError
from voicetune.voice import voice_score as vs

WORDS = 60


@lru_cache(maxsize=1)
def _pieces() -> dict[str, list[str]]:
    """Author held-out pieces and other authors' pieces (last 30% of each book), cut at WORDS words."""
    _, test = author_split()
    author = vs.cut_pieces(test, WORDS, 10_000, seed=1)
    random.Random(1).shuffle(author)
    others: list[str] = []
    reference: dict[str, list[str]] = {}
    per_author = []
    for i, (name, texts) in enumerate(other_authors().items()):
        joined = "\n\n".join(texts)
        cut = int(len(joined) * 0.7)
        reference[name] = [joined[:cut]]
        per_author.append(vs.cut_pieces([joined[cut:]], WORDS, 60, seed=i))
    for row in zip(*per_author, strict=False):
        others += list(row)
    random.Random(2).shuffle(others)
    return {"author": author, "others": others, **{f"ref:{k}": v for k, v in reference.items()}}


@lru_cache(maxsize=1)
def _scale() -> vs.VoiceScale:
    p = _pieces()
    train, _ = author_split()
    reference = {k[4:]: v for k, v in p.items() if k.startswith("ref:")}
    return vs.fit_voice_scale(
        p["author"][32:152], p["others"][32:152], author_reference=list(train),
        other_reference=reference, seed=0, n_boot=1000, check_count=32,
    )  # fmt: skip


def _holds(e: vs.Estimate) -> bool:
    return e.ci_low <= e.value <= e.ci_high


def test_unseen_author_text_scores_near_one_and_other_writers_near_zero() -> None:
    scale, p = _scale(), _pieces()
    assert len(scale.passed) >= 3, scale.to_dict()["measures"]
    assert math.isclose(sum(m.weight for m in scale.measures), 1.0)
    author = vs.score_pieces(scale, p["author"][:32], seed=3)
    others = vs.score_pieces(scale, p["others"][:32], seed=3)
    assert _holds(author) and _holds(others)
    assert author.ci_low < 1.0 + 0.35 and author.ci_high > 1.0 - 0.35, author
    assert others.ci_low < 0.35 and others.ci_high > -0.35, others
    assert author.value - others.value > 0.5
    assert author.n == 32
    # In-sample, the calibration pieces are the floor and the ceiling exactly.
    assert vs.score_pieces(scale, p["author"][32:152]).value == pytest.approx(1.0)
    assert vs.score_pieces(scale, p["others"][32:152]).value == pytest.approx(0.0, abs=1e-9)


def test_paired_difference_and_per_measure_scores() -> None:
    scale, p = _scale(), _pieces()
    author, others = p["author"][:32], p["others"][:32]
    same = vs.score_difference(scale, author, author, seed=4)
    assert (same.value, same.ci_low, same.ci_high) == (0.0, 0.0, 0.0)
    diff = vs.score_difference(scale, author, others, seed=4)
    assert _holds(diff) and diff.ci_low > 0
    parts = vs.measure_scores(scale, author, seed=4)
    assert set(parts) == {m.key for m in scale.passed}
    assert all(_holds(e) for e in parts.values())
    with pytest.raises(VoicetuneError, match="one piece per prompt"):
        vs.score_difference(scale, author, others[:5])
    as_dict = scale.to_dict()
    assert as_dict["used"] and set(as_dict["measures"]) == set(vs.MEASURES)
    for entry in as_dict["measures"].values():
        assert entry["verdict"] in ("separates the author from the others", "cannot tell at this length")


def test_word_order_is_seen_by_the_order_measures() -> None:
    """Shuffled words keep every word count; the order measures must see the difference."""
    scale, p = _scale(), _pieces()
    author = p["author"][:32]
    shuffled = [shuffle_words(t, i) for i, t in enumerate(author)]
    real = vs.measure_scores(scale, author, seed=5)
    mixed = vs.measure_scores(scale, shuffled, seed=5)
    assert real["function_words"].value == pytest.approx(mixed["function_words"].value)
    if "word_order" in real:
        assert abs(real["word_order"].value - mixed["word_order"].value) > 0.05


def test_without_references_the_lines_come_from_half_the_pieces() -> None:
    p = _pieces()
    scale = vs.fit_voice_scale(p["author"][32:152], p["others"][32:152], seed=1, n_boot=500)
    assert scale.lines_from == "pieces" and scale.calibration["author_pieces"] == 60
    author = vs.score_pieces(scale, p["author"][:32], seed=1)
    others = vs.score_pieces(scale, p["others"][:32], seed=1)
    assert author.value > others.value


def test_a_measure_that_cannot_tell_is_left_out_and_nothing_gives_no_score() -> None:
    """The same writer on both sides: no measure separates them, so there is no score (not a guess)."""
    p = _pieces()
    same = p["author"][32:192]
    scale = vs.fit_voice_scale(same[0::2], same[1::2], seed=2, n_boot=500)
    assert len(scale.passed) <= 1  # at most one false alarm at 5% each over 7 measures
    if not scale.passed:
        e = vs.score_pieces(scale, p["author"][:32])
        assert math.isnan(e.value) and e.to_dict()["value"] is None


def test_too_few_pieces_is_one_clear_error() -> None:
    with pytest.raises(VoicetuneError, match="at least 4 calibration pieces"):
        vs.fit_voice_scale(["One two three."] * 3, ["Four five six."] * 3, author_reference=["a"],
                           other_reference=["b"])  # fmt: skip


def test_cut_pieces_start_at_sentences_and_hold_the_words_asked_for() -> None:
    text = " ".join(f"Sentence number {i} has exactly seven words." for i in range(200))
    pieces = vs.cut_pieces([text], 20, 10, seed=0)
    assert len(pieces) == 10
    assert all(p.startswith("Sentence") and len(p.split()) == 20 for p in pieces)
    assert pieces == vs.cut_pieces([text], 20, 10, seed=0) != vs.cut_pieces([text], 20, 10, seed=1)
    assert vs.cut_pieces(["Too short."], 20, 5) == []
    assert np.all(np.diff([text.index(p) for p in pieces]) > 0)  # in text order, never overlapping
