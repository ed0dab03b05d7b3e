"""The calibrated voice score: how much does a set of texts sound like the author? 0 = like the other
authors' real writing (the floor), 1 = like the author's own held-out writing (the ceiling).

Pure (numpy and scipy through `voicetune.voice.stylometry` and `voicetune.voice.bootstrap`; no torch,
no scikit-learn): it scores strings, so a checkpoint sweep can call it on any model's output.

How it works
------------
A *measure* is a text profile pooled over a set of pieces: function-word rates, the rates of the
most frequent words (the features of Burrows' Delta), punctuation marks per word, the distribution of
sentence lengths, the distribution of word lengths. Pooling over many short pieces (one per prompt)
gives a profile of thousands of words; a single 50-word piece says almost nothing.

Each measure is turned into one number by projecting the pooled profile on the line that separates the
author from the others: ``m(set) = w . profile`` with ``w = S^-1 (author - others)``, the difference
of the two reference profiles solved against ``S``, the features' covariance between stretches of one
writer's text (standardised as Delta standardises its features, and shrunk towards the identity by
Ledoit & Wolf's estimate, 2004): Fisher's linear discriminant. A projection is linear in the pooled
profile, so, unlike a distance, it is not inflated by the sampling noise of a small set, and sets of
different sizes land on the same scale. It also means the score sees movement along that line only:
text unlike both sides in another way (the author's own words shuffled) can still score high; the
benchmark's distance measures and samples show that.

The line comes from *reference* text (the author's training text and the other authors' books), and
the scale is *calibrated* on separate pieces cut to the evaluation length: the author's held-out
pieces give the ceiling (1) and the other authors' pieces the floor (0), per measure. A measure is
kept only if it separates the two at this length and count: the 95% interval of
``ceiling - floor`` (bootstrap over the calibration pieces) must exclude zero. The kept measures are
averaged with weights proportional to their separation squared (``(gap / se)^2``, i.e. inverse
variance of each calibrated score), so the combination keeps floor = 0 and ceiling = 1.

Intervals are percentile bootstrap intervals over the pieces (prompts), and every replicate also
redraws the calibration pieces, so the uncertainty of where the floor and ceiling lie is in every
interval. Differences between two systems are paired: both are recomputed on the same resampled
prompts and the same calibration replicate.

Entry points
------------
``fit_voice_scale(author_pieces, other_pieces, *, author_reference=None, other_reference=None,
seed=0, n_boot=2000) -> VoiceScale``
    author_pieces: the author's held-out texts cut to the evaluation length; other_pieces: other
    authors' real text at the same length and (about the same) count. author_reference /
    other_reference: longer text that defines each measure's line (the author's training texts;
    the other authors' texts as a list or {author: [texts]}). Without references, the pieces are
    split in two: the even-numbered ones define the line, the odd-numbered ones calibrate it (never
    both on the same pieces, which would let noise pass the separation check).
``score_pieces(scale, pieces, *, seed=0, n_boot=None) -> Estimate``
    the score of one system's pieces with its 95% interval (n = pieces). Score pieces that were not
    used to fit the scale: the calibration pieces themselves score 0 and 1 exactly (in-sample).
``score_difference(scale, pieces_a, pieces_b, *, seed=0, n_boot=None) -> Estimate``
    score(a) - score(b), paired over prompts: pieces_a[i] and pieces_b[i] answer the same prompt.
``measure_scores(scale, pieces, *, seed=0) -> dict[str, Estimate]``
    the calibrated score of each measure that passed, for a table.
``cut_pieces(texts, words, count, *, seed=0) -> list[str]``
    pieces that start at a sentence and hold ``words`` words, as model continuations do.

Use the same ``seed`` for every system of one comparison, so all are resampled alike.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voicetune.core.errors import VoicetuneError
from voicetune.voice.bootstrap import Estimate, expanded_alpha, percentile_interval, resample_weights
from voicetune.voice.stylometry import (
    FUNCTION_WORDS,
    PUNCTUATION_MARKS,
    normalize_typography,
    paragraphs,
    punctuation_counts,
    sentences,
    skeleton_bigrams,
    words,
)

__all__ = [
    "MEASURES",
    "Estimate",
    "MeasureScale",
    "VoiceScale",
    "cut_pieces",
    "fit_voice_scale",
    "measure_scores",
    "score_difference",
    "score_pieces",
]

# Edges of the sentence-length bins (words), the last bin open: [1,4), [4,7), ... [60, inf).
SENTENCE_BINS: tuple[int, ...] = (1, 4, 7, 10, 13, 16, 20, 25, 30, 40, 60)
WORD_LENGTH_MAX = 13  # letters; longer words share the last bin
FREQUENT_WORDS = 150  # Burrows' Delta's usual vocabulary size
ALPHA = 0.05

MEASURES: dict[str, str] = {
    "function_words": "Function words (rate of each of the closed-class words)",
    "frequent_words": f"Most frequent words (Delta's features: the {FREQUENT_WORDS} commonest words' rates)",
    "punctuation": "Punctuation (each mark per word)",
    "sentence_length": "Sentence lengths (share of complete sentences in each length bin)",
    "word_length": "Word lengths (share of words of each length)",
    "word_order": "Word order (pairs of function words and content-word slots, e.g. 'of the', 'the *')",
    "character_ngrams": "Character 3-grams (the commonest, per character: spelling, affixes, punctuation)",
}
CHAR_NGRAMS = 400
ORDER_PAIRS = 200


@dataclass(frozen=True)
class _Counts:
    """Per-piece feature counts (n, d) and the denominator each is a rate of (n,)."""

    counts: np.ndarray
    totals: np.ndarray


def _sentence_bin(length: int) -> int:
    return int(np.searchsorted(SENTENCE_BINS, length, side="right") - 1)


def _char_ngrams(text: str) -> list[str]:
    flat = " ".join(normalize_typography(text).split())
    return [flat[i : i + 3] for i in range(len(flat) - 2)]


def _piece_counts(pieces: Sequence[str], vocabularies: Mapping[str, Sequence[str]]) -> dict[str, _Counts]:
    """Every measure's counts for every piece."""
    fw_index = {w: i for i, w in enumerate(FUNCTION_WORDS)}
    voc_index = {w: i for i, w in enumerate(vocabularies["frequent_words"])}
    order_index = {w: i for i, w in enumerate(vocabularies["word_order"])}
    char_index = {w: i for i, w in enumerate(vocabularies["character_ngrams"])}
    wo = np.zeros((n := len(pieces), len(order_index)))
    ch = np.zeros((n, len(char_index)))
    n_pairs = np.zeros(n)
    n_chars = np.zeros(n)
    fw = np.zeros((n, len(FUNCTION_WORDS)))
    fr = np.zeros((n, len(voc_index)))
    pu = np.zeros((n, len(PUNCTUATION_MARKS)))
    se = np.zeros((n, len(SENTENCE_BINS)))
    wl = np.zeros((n, WORD_LENGTH_MAX))
    n_words = np.zeros(n)
    n_sentences = np.zeros(n)
    for i, text in enumerate(pieces):
        tokens = words(text)
        n_words[i] = len(tokens)
        for token, count in Counter(tokens).items():
            if (j := fw_index.get(token)) is not None:
                fw[i, j] = count
            if (j := voc_index.get(token)) is not None:
                fr[i, j] = count
            wl[i, min(len(token.replace("'", "")), WORD_LENGTH_MAX) - 1] += count
        pu[i] = list(punctuation_counts(text).values())
        pairs = skeleton_bigrams(tokens)
        n_pairs[i] = len(pairs)
        for pair, count in Counter(pairs).items():
            if (j := order_index.get(pair)) is not None:
                wo[i, j] = count
        grams = _char_ngrams(text)
        n_chars[i] = len(grams)
        for gram, count in Counter(grams).items():
            if (j := char_index.get(gram)) is not None:
                ch[i, j] = count
        for sentence in sentences(text, complete_only=True):
            se[i, _sentence_bin(len(words(sentence)))] += 1
            n_sentences[i] += 1
    return {
        "function_words": _Counts(fw, n_words),
        "frequent_words": _Counts(fr, n_words),
        "punctuation": _Counts(pu, n_words),
        "sentence_length": _Counts(se, n_sentences),
        "word_length": _Counts(wl, n_words),
        "word_order": _Counts(wo, n_pairs),
        "character_ngrams": _Counts(ch, n_chars),
    }


def _pooled(c: _Counts, weights: np.ndarray) -> np.ndarray:
    """(B, d) pooled rates of the pieces drawn with multiplicities `weights` (B, n)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ c.counts) / (weights @ c.totals)[:, None]


def _rates(c: _Counts) -> np.ndarray:
    """Per-piece rates (n, d); a piece without words (or sentences) is left out (NaN row)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return c.counts / c.totals[:, None]


@dataclass(frozen=True)
class MeasureScale:
    """One measure's line (weights), floor and ceiling, and its separation check."""

    key: str
    label: str
    weights: np.ndarray  # (d,) the line from others to the author
    floor: float  # projection of the pooled calibration pieces of the others
    ceiling: float  # ... of the author's
    floor_boot: np.ndarray  # (B,) the same on resampled calibration pieces
    ceiling_boot: np.ndarray
    separation: Estimate  # ceiling - floor with its interval, in units of (ceiling - floor)
    passed: bool
    weight: float  # share in the combined score (0 when not passed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "passed": self.passed,
            "verdict": "separates the author from the others"
            if self.passed
            else "cannot tell at this length",
            "weight": self.weight,
            "separation": self.separation.to_dict(),
            "floor": self.floor,
            "ceiling": self.ceiling,
        }


@dataclass(frozen=True)
class VoiceScale:
    """A fitted scale: see the module docstring. Immutable; safe to reuse for any number of systems."""

    vocabularies: dict[str, tuple[str, ...]]
    measures: tuple[MeasureScale, ...]
    n_boot: int
    seed: int
    calibration: dict[str, int] = field(default_factory=dict)  # pieces and words per side
    lines_from: str = "reference"  # "reference" texts, or "pieces" (split in two)

    @property
    def passed(self) -> tuple[MeasureScale, ...]:
        return tuple(m for m in self.measures if m.passed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "floor": "others (real text of the other authors)",
            "ceiling": "author (held-out text)",
            "method": "per measure, the pooled profile projected on the line from the other authors to "
            "the author (variance-weighted difference of the reference profiles), calibrated so the "
            "other authors' pieces score 0 and the author's held-out pieces 1; measures whose 95% "
            "separation interval includes 0 are left out; the rest averaged, weighted by "
            "(separation / standard error)^2",
            "lines_from": self.lines_from,
            "calibration": dict(self.calibration),
            "bootstrap": self.n_boot,
            "measures": {m.key: m.to_dict() for m in self.measures},
            "used": [m.key for m in self.passed],
        }


def _draws(n: int, count: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) multiplicities of `count` pieces drawn with replacement from n."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(count, np.full(n, 1.0 / n), size=n_boot).astype(float)


def _vocabularies(texts: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The commonest words, function-word pairs and character 3-grams of the line texts."""
    word_counts: Counter[str] = Counter()
    pair_counts: Counter[str] = Counter()
    char_counts: Counter[str] = Counter()
    for text in texts:
        tokens = words(text)
        word_counts.update(tokens)
        pair_counts.update(skeleton_bigrams(tokens))
        char_counts.update(_char_ngrams(text))
    return {
        "frequent_words": tuple(w for w, _ in word_counts.most_common(FREQUENT_WORDS)),
        "word_order": tuple(w for w, _ in pair_counts.most_common(ORDER_PAIRS)),
        "character_ngrams": tuple(w for w, _ in char_counts.most_common(CHAR_NGRAMS)),
    }


def _segments(texts: Sequence[str], size: int, limit: int, rng: np.random.Generator) -> list[str]:
    """Consecutive `size`-word stretches of the texts (at most `limit`, drawn with rng), for variances."""
    out: list[str] = []
    for text in texts:
        tokens = text.split()
        out += [" ".join(tokens[i : i + size]) for i in range(0, len(tokens) - size + 1, size)]
    if len(out) > limit:
        keep = np.sort(rng.choice(len(out), size=limit, replace=False))
        out = [out[i] for i in keep]
    return out


def _as_groups(other: Mapping[str, Sequence[str]] | Sequence[str]) -> list[Sequence[str]]:
    return list(other.values()) if isinstance(other, Mapping) else [other]


def fit_voice_scale(
    author_pieces: Sequence[str],
    other_pieces: Sequence[str],
    *,
    author_reference: Sequence[str] | None = None,
    other_reference: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    seed: int = 0,
    n_boot: int = 2000,
    check_count: int | None = None,
) -> VoiceScale:
    """Fit the scale (module docstring). check_count: how many pieces a scored system will have (its
    prompts); the separation check asks whether sets of that many pieces tell the author from the
    others (default: the calibration count). Calibrating on more pieces than that is cheaper than
    generating them and pins the floor and ceiling down. Raises VoicetuneError when there is too
    little to calibrate."""
    author_pieces, other_pieces = list(author_pieces), list(other_pieces)
    rng = np.random.default_rng(seed)
    if (author_reference is None) != (other_reference is None):
        raise VoicetuneError("give both author_reference and other_reference, or neither")
    if author_reference is None or other_reference is None:
        lines_from = "pieces"
        author_line, other_line = [author_pieces[0::2]], [other_pieces[0::2]]
        author_pieces, other_pieces = author_pieces[1::2], other_pieces[1::2]
    else:
        lines_from = "reference"
        author_line, other_line = [list(author_reference)], _as_groups(other_reference)
    if min(len(author_pieces), len(other_pieces)) < 4:
        raise VoicetuneError(
            f"the voice scale needs at least 4 calibration pieces a side (got {len(author_pieces)} of the "
            f"author's, {len(other_pieces)} of the others'): give more held-out text"
        )
    piece_words = int(np.median([len(p.split()) for p in author_pieces + other_pieces]))
    vocabularies = _vocabularies([t for group in author_line + other_line for t in group])
    # Variances between stretches of text: segments of the pieces' own length from the line texts.
    seg_size = max(20, piece_words)
    line_counts = [
        _piece_counts(_segments(group, seg_size, 400, rng) or list(group), vocabularies)
        for group in author_line + other_line
    ]
    count = check_count or min(len(author_pieces), len(other_pieces))
    calibrate = _Calibration(
        _piece_counts(author_pieces, vocabularies),
        _piece_counts(other_pieces, vocabularies),
        resample_weights(len(author_pieces), n_boot, seed + 101),
        resample_weights(len(other_pieces), n_boot, seed + 202),
        _draws(len(author_pieces), count, n_boot, seed + 303),
        _draws(len(other_pieces), count, n_boot, seed + 404),
    )
    fitted = [calibrate(key, _line(key, line_counts)) for key in MEASURES]
    strengths = {m.key: s for m, s in fitted if m.passed}
    total = sum(strengths.values())
    measures = tuple(
        dataclasses.replace(m, weight=strengths.get(m.key, 0.0) / total if total else 0.0) for m, _ in fitted
    )
    calibration = {
        "author_pieces": len(author_pieces),
        "other_pieces": len(other_pieces),
        "words_per_piece": piece_words,
        "check_count": count,
    }
    return VoiceScale(vocabularies, measures, n_boot, seed, calibration, lines_from)


def _line(key: str, line_counts: Sequence[Mapping[str, _Counts]]) -> np.ndarray:
    """The measure's weights, a linear discriminant: the within-writer covariance of the features
    (between stretches of each writer's text, Ledoit-Wolf shrunk) solved against the difference of
    the author's and the others' profiles. The first group is the author, each other group one other
    author, counted once."""
    per_group = [lc[key] for lc in line_counts]
    profiles = [c.counts.sum(axis=0) / max(1.0, c.totals.sum()) for c in per_group]
    others_profile = np.mean(profiles[1:], axis=0)
    rates = [r[np.isfinite(r).all(axis=1)] for r in (_rates(c) for c in per_group)]
    within = np.vstack([r - r.mean(axis=0) for r in rates if len(r) > 1])
    var = within.var(axis=0)
    positive = var[var > 0]
    # A feature that hardly varies would get a huge weight from noise: floor at the lower quartile.
    scale = np.sqrt(np.maximum(var, np.quantile(positive, 0.25) if positive.size else 1.0))
    return (
        np.linalg.solve(_shrunk_correlation(within / scale), (profiles[0] - others_profile) / scale) / scale
    )


def _shrunk_correlation(z: np.ndarray) -> np.ndarray:
    """Ledoit & Wolf (2004) shrinkage of z's second-moment matrix towards a multiple of the identity,
    with their estimate of the best intensity: stable with more features than the data can pin down."""
    n = len(z)
    moment = z.T @ z / n
    target = np.eye(len(moment)) * float(np.mean(np.diag(moment)))
    spread = float(np.sum(np.sum(z**2, axis=1) ** 2) / n**2 - np.sum(moment**2) / n)
    distance = float(np.sum((moment - target) ** 2))
    intensity = float(np.clip(spread / distance, 0.0, 1.0)) if distance > 0 else 1.0
    return (1 - intensity) * moment + intensity * target


@dataclass(frozen=True)
class _Calibration:
    """The calibration pieces' counts and their bootstrap draws (B, n): whole-set resamples for the
    floor and ceiling, resamples of check_count pieces for the separation check."""

    author: dict[str, _Counts]
    other: dict[str, _Counts]
    author_boot: np.ndarray
    other_boot: np.ndarray
    author_check: np.ndarray
    other_check: np.ndarray

    def __call__(self, key: str, w: np.ndarray) -> tuple[MeasureScale, float]:
        """(the measure's scale, its strength (gap / se)^2, 0 when it fails the separation check)."""
        a, o = self.author[key], self.other[key]
        ceiling = float((_pooled(a, np.ones((1, len(a.totals)))) @ w)[0])
        floor = float((_pooled(o, np.ones((1, len(o.totals)))) @ w)[0])
        gap = ceiling - floor
        check = _pooled(a, self.author_check) @ w - _pooled(o, self.other_check) @ w
        check = check[np.isfinite(check)]
        count = int(self.author_check[0].sum()) if len(self.author_check) else 0
        low, high = percentile_interval(check, expanded_alpha(ALPHA, count))
        passed = bool(math.isfinite(gap) and gap > 0 and math.isfinite(low) and low > 0)
        unit = abs(gap) if gap else 1.0
        scale = MeasureScale(
            key=key,
            label=MEASURES[key],
            weights=w,
            floor=floor,
            ceiling=ceiling,
            floor_boot=_pooled(o, self.other_boot) @ w,
            ceiling_boot=_pooled(a, self.author_boot) @ w,
            separation=Estimate(gap / unit, low / unit, high / unit, count),
            passed=passed,
            weight=0.0,
        )
        strength = (gap / float(np.std(check))) ** 2 if passed and np.std(check) > 0 else 0.0
        return scale, strength


def _replicates(
    scale: VoiceScale, pieces: Sequence[str], weights: np.ndarray
) -> dict[str, tuple[float, np.ndarray]]:
    """measure -> (calibrated point value, calibrated replicates (B,)) for the measures that passed."""
    counts = _piece_counts(pieces, scale.vocabularies)
    ones = np.ones((1, len(pieces)))
    b = np.arange(weights.shape[0]) % scale.n_boot  # calibration replicate paired with each draw
    out: dict[str, tuple[float, np.ndarray]] = {}
    for m in scale.passed:
        point = float((_pooled(counts[m.key], ones) @ m.weights)[0])
        boot = _pooled(counts[m.key], weights) @ m.weights
        with np.errstate(invalid="ignore", divide="ignore"):
            value = (point - m.floor) / (m.ceiling - m.floor)
            reps = (boot - m.floor_boot[b]) / (m.ceiling_boot[b] - m.floor_boot[b])
        out[m.key] = (value, reps)
    return out


def _combine(scale: VoiceScale, parts: Mapping[str, tuple[float, np.ndarray]]) -> tuple[float, np.ndarray]:
    value = sum(m.weight * parts[m.key][0] for m in scale.passed)
    reps = sum(m.weight * parts[m.key][1] for m in scale.passed)
    return float(value), np.asarray(reps, dtype=float)


def _estimate(value: float, reps: np.ndarray, n: int) -> Estimate:
    ok = reps[np.isfinite(reps)]
    if n < 2 or not math.isfinite(value) or ok.size < 0.5 * reps.size:
        return Estimate(value, math.nan, math.nan, n)
    low, high = percentile_interval(ok, expanded_alpha(ALPHA, n))
    return Estimate(value, low, high, n)


def _nothing(n: int) -> Estimate:
    return Estimate(math.nan, math.nan, math.nan, n)


def score_pieces(
    scale: VoiceScale, pieces: Sequence[str], *, seed: int = 0, n_boot: int | None = None
) -> Estimate:
    """The voice score of one system's pieces, 95% percentile interval over the pieces (module doc)."""
    n = len(pieces)
    if not scale.passed or n == 0:
        return _nothing(n)
    weights = resample_weights(n, n_boot or scale.n_boot, seed)
    value, reps = _combine(scale, _replicates(scale, pieces, weights))
    return _estimate(value, reps, n)


def score_difference(
    scale: VoiceScale,
    pieces_a: Sequence[str],
    pieces_b: Sequence[str],
    *,
    seed: int = 0,
    n_boot: int | None = None,
) -> Estimate:
    """score(a) - score(b), paired: the i-th pieces of a and b answer the same prompt."""
    if len(pieces_a) != len(pieces_b):
        raise VoicetuneError(
            "a paired difference needs one piece per prompt on both sides "
            f"({len(pieces_a)} vs {len(pieces_b)})"
        )
    n = len(pieces_a)
    if not scale.passed or n == 0:
        return _nothing(n)
    weights = resample_weights(n, n_boot or scale.n_boot, seed)
    va, ra = _combine(scale, _replicates(scale, pieces_a, weights))
    vb, rb = _combine(scale, _replicates(scale, pieces_b, weights))
    return _estimate(va - vb, ra - rb, n)


def measure_scores(
    scale: VoiceScale, pieces: Sequence[str], *, seed: int = 0, n_boot: int | None = None
) -> dict[str, Estimate]:
    """The calibrated score of each measure that passed (0 = others, 1 = author), with intervals."""
    n = len(pieces)
    if not scale.passed or n == 0:
        return {}
    weights = resample_weights(n, n_boot or scale.n_boot, seed)
    return {
        key: _estimate(value, reps, n) for key, (value, reps) in _replicates(scale, pieces, weights).items()
    }


def cut_pieces(texts: Sequence[str], n_words: int, count: int, *, seed: int = 0) -> list[str]:
    """Up to `count` non-overlapping pieces of `n_words` words, each starting at a sentence (paragraph
    breaks kept), drawn with the seed from all the places the texts allow, in text order."""
    candidates: list[str] = []
    for text in texts:
        units = [(s, i == 0) for p in paragraphs(text) for i, s in enumerate(sentences(p))]
        start = 0
        while start < len(units):
            taken, used, j = "", 0, start
            while j < len(units) and used < n_words:
                sentence, new_paragraph = units[j]
                taken += ("\n\n" if new_paragraph else " ") + sentence if taken else sentence
                used += len(sentence.split())
                j += 1
            if used < n_words:
                break
            candidates.append(_first_words(taken, n_words))
            start = j
    if len(candidates) > count:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(candidates), size=count, replace=False))
        candidates = [candidates[i] for i in keep]
    return candidates


def _first_words(text: str, n_words: int) -> str:
    """The prefix of `text` holding its first n_words whitespace-separated words (layout kept)."""
    import re

    ends = [m.end() for m in re.finditer(r"\S+", text)]
    return text[: ends[min(n_words, len(ends)) - 1]] if ends else ""
