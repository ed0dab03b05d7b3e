"""Scoring continuations against the author: per-prompt values, bootstrapped measures, verdicts.

Pure (no torch): `voicetune.voice.benchmark` feeds it the models' continuations and held-out perplexity
blocks; it returns the measures, the paired comparisons with the baseline and the summary that
results.json holds (schema: docs/results_schema.md). Every measure is recomputed from per-prompt
values on the same bootstrap draws for every system (`voicetune.voice.bootstrap`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

AUTHOR = "author (held-out)"  # the reference "system": the author's own continuations
OTHERS = "others"  # the other authors' real text, as many pieces of the same length (the floor)
CANNOT_TELL = "cannot tell at this length"


@dataclass
class Context:
    """Everything the author's training text tells the measures."""

    profile: Any  # stylometry.StyleProfile
    delta: Any  # stylometry.DeltaSpace
    author_z: np.ndarray
    attributor: Any  # attribution.Attributor
    novelty: Any  # stylometry.NoveltyIndex
    mattr_window: int
    novelty_n: int


@dataclass
class TextScores:
    """Per-prompt values of one system (a model, or the author's reference continuations)."""

    words: np.ndarray
    attributed: np.ndarray
    delta_counts: np.ndarray  # (N, V) counts of the Delta vocabulary's words
    style_distance: np.ndarray
    mattr: np.ndarray
    repetition: np.ndarray
    copied: np.ndarray
    ngrams: np.ndarray
    longest_span: np.ndarray
    sentence_hist: np.ndarray
    punctuation: np.ndarray
    function_words: np.ndarray
    sentence_lengths: list[int]


def score_texts(texts: Sequence[str], ctx: Context) -> TextScores:
    from voicetune.voice import stylometry as st

    nan = math.nan
    token_lists = [st.words(t) for t in texts]
    dist, mat, rep, cop, tot, span = ([] for _ in range(6))
    hists, puncts, fws, deltas = [], [], [], []
    all_lengths: list[int] = []
    for text, tokens in zip(texts, token_lists, strict=True):
        deltas.append(ctx.delta.relative_frequencies(tokens) * len(tokens))
        d = st.style_distance(text, ctx.profile)
        dist.append(d if math.isfinite(d) else nan)
        mat.append(st.mattr(tokens, ctx.mattr_window))
        rep.append(st.repetition_rate(tokens, 3))
        found, total = ctx.novelty.ngram_overlap(text, ctx.novelty_n)
        cop.append(found)
        tot.append(total)
        span.append(ctx.novelty.longest_copied_span(text))
        lengths = st.sentence_lengths(text, complete_only=True)
        all_lengths += lengths
        hists.append(st.length_histogram(lengths))
        puncts.append(list(st.punctuation_counts(text).values()))
        fws.append(list(st.function_word_counts(tokens).values()))
    attributed = ctx.attributor.is_author(list(texts)).astype(float) if texts else np.zeros(0)
    empty = np.array([not tokens for tokens in token_lists])
    attributed = np.where(empty, 0.0, attributed)  # an empty answer is nobody's style
    return TextScores(
        words=np.array([len(t) for t in token_lists], dtype=float),
        attributed=attributed,
        delta_counts=np.array(deltas, dtype=float).reshape(len(texts), len(ctx.delta.vocabulary)),
        style_distance=np.array(dist),
        mattr=np.array(mat),
        repetition=np.array(rep),
        copied=np.array(cop, dtype=float),
        ngrams=np.array(tot, dtype=float),
        longest_span=np.array(span, dtype=float),
        sentence_hist=np.vstack(hists) if hists else np.zeros((0, 121)),
        punctuation=np.array(puncts, dtype=float).reshape(len(texts), -1),
        function_words=np.array(fws, dtype=float).reshape(len(texts), -1),
        sentence_lengths=all_lengths,
    )


@dataclass(frozen=True)
class MeasureDef:
    key: str
    label: str
    direction: Literal["lower", "higher", "closer"]
    group: Literal["fit", "style", "copying"]
    unit: str
    description: str
    pooled: bool = False  # a distance of a pooled profile: bias-corrected (voicetune.voice.bootstrap)


MEASURES: tuple[MeasureDef, ...] = (
    MeasureDef("perplexity", "Perplexity of held-out text", "lower", "fit", "perplexity",
               "exp(mean negative log-likelihood per token) of the author's held-out text, sliding windows"),
    MeasureDef("attribution_share", "Attributed to the author", "higher", "style", "share",
               "share of continuations the classifier (char n-grams + function words) attributes to the "
               "author rather than to one of the other authors"),
    MeasureDef("cosine_delta", "Cosine Delta to author", "lower", "style", "distance",
               "1 - cosine of most-frequent-word z-scores of the pooled continuations vs the author's "
               "training text (Smith & Aldridge 2011)", pooled=True),
    MeasureDef("burrows_delta", "Burrows' Delta to author", "lower", "style", "distance",
               "mean |z difference| of most-frequent-word frequencies, pooled continuations vs the "
               "author's training text (Burrows 2002)", pooled=True),
    MeasureDef("style_distance", "Style distance (voicetune)", "lower", "style", "mean |z|",
               "calibrated mean |z| over function words, word order, punctuation, sentence and word "
               "length (~0.6-0.8 for the author's own new text)"),
    MeasureDef("sentence_length_ks", "Sentence lengths vs author (KS D)", "lower", "style", "KS D",
               "Kolmogorov-Smirnov distance between pooled sentence lengths and the author's training text",
               pooled=True),
    MeasureDef("punctuation_jsd", "Punctuation profile vs author (JSD)", "lower", "style", "JS distance",
               "Jensen-Shannon distance between pooled punctuation-mark counts and the author's",
               pooled=True),
    MeasureDef("function_word_jsd", "Function-word profile vs author (JSD)", "lower", "style", "JS distance",
               "Jensen-Shannon distance between pooled function-word counts and the author's",
               pooled=True),
    MeasureDef("mattr", "Vocabulary richness (MATTR)", "closer", "style", "ratio",
               "moving-average type-token ratio (Covington & McFall 2010); closer to the author's own "
               "continuations is better"),
    MeasureDef("repetition", "Repetition (repeated 3-grams)", "closer", "style", "share",
               "share of word 3-grams repeating an earlier one in the same text; closer to the author's "
               "own continuations is better"),
    MeasureDef("copied_ngram_share", "Copied 8-grams", "lower", "copying", "share",
               "share of the text's word 8-grams that occur in the author's training text"),
    MeasureDef("longest_copied_span", "Longest copied span", "lower", "copying", "words",
               "mean over prompts of the longest run of words also found in the training text"),
)  # fmt: skip
MEASURE_BY_KEY = {m.key: m for m in MEASURES}


def statistics_for(scores: TextScores, ctx: Context) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Each prompt-level measure of one system as a bootstrap statistic (weights -> values)."""
    from voicetune.voice import bootstrap as bs
    from voicetune.voice import stylometry as st

    author_hist = np.array(ctx.profile.sentence_length_hist, dtype=float)
    author_punct = np.array([ctx.profile.punctuation_per_word[m] for m in st.PUNCTUATION_MARKS])
    author_fw = np.array([ctx.profile.function_word_freq[w] for w in st.FUNCTION_WORDS])

    def delta(kind: str) -> Callable[[np.ndarray], np.ndarray]:
        def reduce(counts: np.ndarray) -> np.ndarray:
            return st.delta_rows(counts, ctx.delta, ctx.author_z, kind)

        return bs.pooled(np.column_stack([scores.delta_counts, scores.words]), reduce)

    return {
        "attribution_share": bs.mean_of(scores.attributed),
        "cosine_delta": delta("cosine"),
        "burrows_delta": delta("burrows"),
        "style_distance": bs.mean_of(scores.style_distance),
        "sentence_length_ks": bs.pooled(scores.sentence_hist, lambda h: st.ks_rows(h, author_hist)),
        "punctuation_jsd": bs.pooled(scores.punctuation, lambda c: st.jensen_shannon_rows(c, author_punct)),
        "function_word_jsd": bs.pooled(scores.function_words, lambda c: st.jensen_shannon_rows(c, author_fw)),
        "mattr": bs.mean_of(scores.mattr),
        "repetition": bs.mean_of(scores.repetition),
        "copied_ngram_share": bs.ratio_of(scores.copied, scores.ngrams),
        "longest_copied_span": bs.mean_of(scores.longest_span),
    }


def verdict(direction: str, diff: Mapping[str, Any]) -> str:
    """'better', 'worse' or 'no clear difference' for model - baseline (for 'closer': gap - gap)."""
    low, high = diff.get("ci_low"), diff.get("ci_high")
    if low is None or high is None:
        return "not measured"
    lower_is_better = direction in ("lower", "closer")
    if high < 0:
        return "better" if lower_is_better else "worse"
    if low > 0:
        return "worse" if lower_is_better else "better"
    return "no clear difference"


def discrimination(direction: str, diff: Mapping[str, Any]) -> dict[str, Any]:
    """Can the measure tell the author's own held-out text from the other authors' real text (same
    length, same count)? diff: author - others (for 'closer': others' gap to the author)."""
    low, high = diff.get("ci_low"), diff.get("ci_high")
    if low is None or high is None:
        passed = False
    elif direction == "lower":
        passed = high < 0
    elif direction == "higher":
        passed = low > 0
    else:  # closer: the others' gap to the author's value must exceed zero
        passed = low > 0
    return {
        "difference": dict(diff),
        "difference_of": "others' gap to author" if direction == "closer" else "author - others",
        "passed": passed,
        "verdict": "tells the author from the others" if passed else CANNOT_TELL,
    }


def compute_measures(
    systems: Mapping[str, TextScores],
    windows: Mapping[str, Any],
    ctx: Context,
    baseline: str,
    n_boot: int,
    seed: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(measures, comparisons) for results.json: every measure per system with its interval, whether
    it tells the author (AUTHOR) from the other authors (OTHERS) at this length and count, and every
    model against the baseline with a paired interval and a verdict. A style measure that cannot tell
    the author from the others gets the verdict CANNOT_TELL and stays out of the summary."""
    from voicetune.voice import bootstrap as bs

    n = len(systems[AUTHOR].words)
    weights = bs.resample_weights(n, n_boot, seed)
    stats = {name: statistics_for(s, ctx) for name, s in systems.items()}
    models = [name for name in systems if name not in (AUTHOR, OTHERS)]
    measures: dict[str, Any] = {}
    comparisons: list[dict[str, Any]] = []
    # Others' pieces are not paired with prompts: they are resampled on their own draws.
    other_weights = (
        bs.resample_weights(len(systems[OTHERS].words), n_boot, seed + 7) if OTHERS in systems else None
    )

    # Perplexity: bootstrap over 128-token blocks of scored text (paired when the models share a tokenizer).
    ppl_stats: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    ppl_weights: dict[str, np.ndarray] = {}
    for name, scored in windows.items():
        ppl_stats[name] = bs.exp_of(bs.ratio_of(scored.nll, scored.tokens))
        ppl_weights[name] = bs.resample_weights(len(scored.nll), n_boot, seed + 1)
    values = {name: bs.estimate(ppl_stats[name], ppl_weights[name]).to_dict() for name in windows}
    measures["perplexity"] = _measure_entry(MEASURE_BY_KEY["perplexity"], values, None, "token_blocks", None)
    for name in models:
        if name == baseline or name not in windows or baseline not in windows:
            continue
        a, b = windows[name], windows[baseline]
        if len(a.tokens) == len(b.tokens) and np.array_equal(a.tokens, b.tokens):
            diff = bs.difference(ppl_stats[name], ppl_stats[baseline], ppl_weights[name]).to_dict()
            paired = True
        else:  # different tokenizers: independent intervals only
            diff = {
                "value": values[name]["value"] - values[baseline]["value"],
                "ci_low": None,
                "ci_high": None,
                "n": None,
            }
            paired = False
        comparisons.append(_comparison("perplexity", name, baseline, diff, paired, True))

    for measure in MEASURES[1:]:
        bc = measure.pooled
        values = {}
        for name in systems:
            w = other_weights if name == OTHERS else weights
            values[name] = bs.estimate(stats[name][measure.key], w, bias_corrected=bc).to_dict()
        check = None
        if OTHERS in systems and measure.group == "style" and other_weights is not None:
            a, o = stats[AUTHOR][measure.key], stats[OTHERS][measure.key]
            if measure.direction == "closer":
                diff = bs.unpaired_difference(
                    o, a, other_weights, weights, bias_corrected=True, absolute=True
                )
            else:
                diff = bs.unpaired_difference(a, o, weights, other_weights, bias_corrected=bc)
            check = discrimination(measure.direction, diff.to_dict())
        measures[measure.key] = _measure_entry(measure, values, values.get(AUTHOR), "prompts", check)
        usable = check is None or check["passed"]
        for name in models:
            if name == baseline:
                continue
            a, b = stats[name][measure.key], stats[baseline][measure.key]
            if measure.direction == "closer":
                target = stats[AUTHOR][measure.key]
                a, b = bs.gap_to(a, target), bs.gap_to(b, target)
            diff = bs.difference(a, b, weights, bias_corrected=bc or measure.direction == "closer").to_dict()
            comparisons.append(_comparison(measure.key, name, baseline, diff, True, usable))
    return measures, comparisons


def _measure_entry(
    measure: MeasureDef,
    values: dict[str, Any],
    ceiling: dict[str, Any] | None,
    unit_of_resampling: str,
    check: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "label": measure.label,
        "direction": measure.direction,
        "group": measure.group,
        "unit": measure.unit,
        "description": measure.description,
        "resampled_over": unit_of_resampling,
        "interval": "bias-corrected basic bootstrap" if measure.pooled else "percentile bootstrap",
        "values": values,
        "ceiling": ceiling,
        "discrimination": check,
        "in_verdict": measure.group != "copying" and (check is None or bool(check["passed"])),
    }


def _comparison(
    key: str, model: str, baseline: str, diff: dict[str, Any], paired: bool, usable: bool
) -> dict[str, Any]:
    measure = MEASURE_BY_KEY[key]
    return {
        "measure": key,
        "model": model,
        "baseline": baseline,
        "difference": diff,
        "difference_of": "gap to author" if measure.direction == "closer" else "value",
        "paired": paired,
        "verdict": verdict(measure.direction, diff) if usable else CANNOT_TELL,
    }


def distribution_tests(systems: Mapping[str, TextScores], ctx: Context) -> dict[str, Any]:
    """Test statistics on the pooled texts of each system against the author's training text."""
    from voicetune.voice import stylometry as st

    author_lengths = np.repeat(np.arange(121), np.array(ctx.profile.sentence_length_hist, dtype=int))
    author_punct = np.array([ctx.profile.punctuation_counts[m] for m in st.PUNCTUATION_MARKS], dtype=float)
    author_fw = np.array([ctx.profile.function_word_counts[w] for w in st.FUNCTION_WORDS], dtype=float)
    result: dict[str, Any] = {}
    for name, s in systems.items():
        d, p = st.ks_test(s.sentence_lengths, author_lengths.tolist())
        chi_p = st.chi_square_homogeneity(s.punctuation.sum(axis=0), author_punct)
        chi_f = st.chi_square_homogeneity(s.function_words.sum(axis=0), author_fw)
        result[name] = {
            "sentences": len(s.sentence_lengths),
            "sentence_length_ks": {"statistic": _num(d), "p_value": _num(p)},
            "punctuation_chi2": {"statistic": _num(chi_p[0]), "p_value": _num(chi_p[1]), "dof": chi_p[2]},
            "function_word_chi2": {"statistic": _num(chi_f[0]), "p_value": _num(chi_f[1]), "dof": chi_f[2]},
        }
    return result


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def profiles_for_plots(systems: Mapping[str, TextScores], ctx: Context) -> dict[str, Any]:
    """Pooled profiles (author's training text first) that the report plots."""
    from voicetune.voice import stylometry as st

    freq = ctx.profile.function_word_freq
    top_fw = sorted(st.FUNCTION_WORDS, key=lambda w: -freq[w])[:20]
    index = {w: i for i, w in enumerate(st.FUNCTION_WORDS)}
    out: dict[str, Any] = {
        "punctuation_marks": list(st.PUNCTUATION_MARKS),
        "function_words": top_fw,
        "systems": {
            "author (training)": {
                "punctuation_per_100_words": [
                    100 * ctx.profile.punctuation_per_word[m] for m in st.PUNCTUATION_MARKS
                ],
                "function_word_share": [freq[w] for w in top_fw],
                "sentence_length_hist": list(ctx.profile.sentence_length_hist),
            }
        },
    }
    for name, s in systems.items():
        words = max(1.0, float(s.words.sum()))
        fw_total = max(1.0, float(s.function_words.sum()))
        fw = s.function_words.sum(axis=0)
        out["systems"][name] = {
            "punctuation_per_100_words": (100 * s.punctuation.sum(axis=0) / words).tolist(),
            "function_word_share": [float(fw[index[w]] / fw_total) for w in top_fw],
            "sentence_length_hist": s.sentence_hist.sum(axis=0).astype(int).tolist(),
        }
    return out


def summarize(
    measures: Mapping[str, Any],
    comparisons: Sequence[Mapping[str, Any]],
    baseline: str,
    longest_span: Mapping[str, float],
) -> dict[str, Any]:
    """Per model: which measures are better / worse / unclear than the baseline, and the plain-language
    copying check against the author's own held-out text (longest_span: max over prompts, by system)."""
    out: dict[str, Any] = {}
    for model in longest_span:
        if model in (baseline, AUTHOR, OTHERS):
            continue
        mine = [c for c in comparisons if c["model"] == model]
        counts: dict[str, list[str]] = {
            "better": [],
            "worse": [],
            "no clear difference": [],
            "not measured": [],
            CANNOT_TELL: [],
        }
        for c in mine:
            if MEASURE_BY_KEY[c["measure"]].group in ("fit", "style"):
                counts[c["verdict"]].append(c["measure"])
        share = measures["copied_ngram_share"]["values"]
        own = (share.get(AUTHOR) or {}).get("value")
        model_share = share.get(model) or {}
        high = model_share.get("ci_high")
        if own is None or model_share.get("value") is None:
            copying = "not measured"
        elif high is not None and high <= max(own * 1.5, own + 0.01):
            copying = "no more than the author's own new writing"
        else:
            copying = "more than the author's own new writing"
        out[model] = {
            "better": counts["better"],
            "worse": counts["worse"],
            "no_clear_difference": counts["no clear difference"],
            "not_measured": counts["not measured"],
            "cannot_tell": counts[CANNOT_TELL],
            "copying": copying,
            "copied_ngram_share": model_share.get("value"),
            "author_copied_ngram_share": own,
            "longest_copied_span_max": longest_span[model],
            "author_longest_copied_span_max": longest_span.get(AUTHOR),
        }
    return out
