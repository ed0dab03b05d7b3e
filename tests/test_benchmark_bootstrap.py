"""Bootstrap intervals over prompts: seeded, paired, and right on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voicetune.voice import bootstrap as bs


def test_weights_are_reproducible_multiplicities() -> None:
    a = bs.resample_weights(10, 500, seed=4)
    assert a.shape == (500, 10) and np.all(a.sum(axis=1) == 10)
    assert np.array_equal(a, bs.resample_weights(10, 500, seed=4))
    assert not np.array_equal(a, bs.resample_weights(10, 500, seed=5))


def test_mean_interval_covers_the_mean_and_shrinks_with_more_prompts() -> None:
    rng = np.random.default_rng(0)
    small = rng.normal(1.0, 1.0, 20)
    large = rng.normal(1.0, 1.0, 400)
    e_small = bs.estimate(bs.mean_of(small), bs.resample_weights(20, 2000, 1))
    e_large = bs.estimate(bs.mean_of(large), bs.resample_weights(400, 2000, 1))
    assert e_small.value == pytest.approx(small.mean())
    assert e_small.ci_low < e_small.value < e_small.ci_high
    assert (e_large.ci_high - e_large.ci_low) < (e_small.ci_high - e_small.ci_low) / 3
    # The percentile interval of a mean is about +-1.96 standard errors.
    se = large.std(ddof=1) / math.sqrt(400)
    assert e_large.ci_high - e_large.ci_low == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_nan_values_are_left_out_of_means() -> None:
    values = np.array([1.0, np.nan, 3.0])
    assert bs.estimate(bs.mean_of(values), bs.resample_weights(3, 200, 0)).value == pytest.approx(2.0)


def test_identical_systems_differ_by_exactly_zero() -> None:
    values = np.random.default_rng(2).normal(size=30)
    diff = bs.difference(bs.mean_of(values), bs.mean_of(values.copy()), bs.resample_weights(30, 500, 0))
    assert (diff.value, diff.ci_low, diff.ci_high) == (0.0, 0.0, 0.0)


def test_paired_difference_detects_a_small_consistent_gain_that_unpaired_intervals_miss() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(0.0, 1.0, 40)  # prompts vary a lot ...
    tuned = base - 0.2 + rng.normal(0, 0.05, 40)  # ... but tuned is always a little lower
    weights = bs.resample_weights(40, 2000, 0)
    a, b = bs.estimate(bs.mean_of(tuned), weights), bs.estimate(bs.mean_of(base), weights)
    assert a.ci_high > b.ci_low  # the separate intervals overlap
    diff = bs.difference(bs.mean_of(tuned), bs.mean_of(base), weights)
    assert diff.ci_high < 0  # the paired one does not


def test_pooled_ratio_and_gap_statistics() -> None:
    weights = bs.resample_weights(4, 300, 0)
    ratio = bs.estimate(bs.ratio_of(np.array([1, 0, 3, 0]), np.array([2, 2, 4, 0])), weights)
    assert ratio.value == pytest.approx(4 / 8)
    counts = np.array([[1, 0], [0, 1], [1, 1], [2, 0]])
    share = bs.estimate(bs.pooled(counts, lambda c: c[:, 0] / c.sum(axis=1)), weights)
    assert share.value == pytest.approx(4 / 6)
    gap = bs.gap_to(bs.mean_of(np.array([1.0, 2.0, 3.0, 4.0])), bs.mean_of(np.array([2.0, 2.0, 2.0, 2.0])))
    assert gap(np.ones((1, 4)))[0] == pytest.approx(0.5)
    assert bs.exp_of(bs.mean_of(np.zeros(4)))(np.ones((1, 4)))[0] == 1.0


def test_one_unit_has_no_interval_and_json_has_no_nan() -> None:
    one = bs.estimate(bs.mean_of(np.array([2.0])), bs.resample_weights(1, 100, 0))
    assert one.value == 2.0 and math.isnan(one.ci_low)
    assert one.to_dict() == {"value": 2.0, "ci_low": None, "ci_high": None, "n": 1}


# --------------------------------------------------------------------------- coverage on known truths

SIMULATIONS = 200
PROMPTS = 24


def _coverage(intervals: list[bs.Estimate], truth: float | np.ndarray) -> float:
    truths = np.broadcast_to(np.asarray(truth, dtype=float), (len(intervals),))
    return float(np.mean([e.ci_low <= t <= e.ci_high for e, t in zip(intervals, truths, strict=True)]))


def test_mean_intervals_cover_the_true_mean() -> None:
    """200 simulated benchmarks of 24 prompts, skewed per-prompt values (exponential, mean 2)."""
    rng = np.random.default_rng(11)
    weights = bs.resample_weights(PROMPTS, 1000, 0)
    data = rng.exponential(2.0, (SIMULATIONS, PROMPTS))
    intervals = [bs.estimate(bs.mean_of(row), weights) for row in data]
    assert _coverage(intervals, 2.0) >= 0.90
    assert all(e.ci_low <= e.value <= e.ci_high for e in intervals)


def test_pooled_jensen_shannon_intervals_cover_the_true_distance() -> None:
    """Pooled counts of 12 marks per prompt (each prompt its own mix around the true profile) against
    a known reference: the plain pooled distance is inflated by sampling noise, so every replicate
    can lie above it; the bias-corrected basic interval covers the true distance and holds its value."""
    from voicetune.voice.stylometry import jensen_shannon_rows

    rng = np.random.default_rng(12)
    k = 12
    reference = rng.dirichlet(np.full(k, 2.0))
    truth_profile = 0.7 * reference + 0.3 * rng.dirichlet(np.full(k, 2.0))
    truth = float(jensen_shannon_rows(truth_profile[None, :], reference)[0])
    weights = bs.resample_weights(PROMPTS, 1000, 1)
    intervals = []
    for _ in range(SIMULATIONS):
        per_prompt = rng.dirichlet(truth_profile * 50, PROMPTS)
        counts = np.array([rng.multinomial(20, p) for p in per_prompt], dtype=float)
        statistic = bs.pooled(counts, lambda c: jensen_shannon_rows(c, reference))
        intervals.append(bs.estimate(statistic, weights, bias_corrected=True))
    assert _coverage(intervals, truth) >= 0.90
    assert all(e.ci_low <= e.value <= e.ci_high for e in intervals)
    # The old failure: the plain value sits below (almost) every replicate of a pooled distance.
    plain = bs.pooled(counts, lambda c: jensen_shannon_rows(c, reference))
    assert np.mean(plain(weights) > plain(np.ones((1, PROMPTS)))[0]) > 0.75


def test_paired_difference_intervals_cover_the_true_difference() -> None:
    """Two systems on the same prompts: a large prompt effect shared by both, a true gap of 0.3."""
    rng = np.random.default_rng(13)
    weights = bs.resample_weights(PROMPTS, 1000, 2)
    prompt_effect = rng.normal(0.0, 1.0, (SIMULATIONS, PROMPTS))
    a = prompt_effect + 0.3 + rng.normal(0.0, 0.3, (SIMULATIONS, PROMPTS))
    b = prompt_effect + rng.normal(0.0, 0.3, (SIMULATIONS, PROMPTS))
    intervals = [bs.difference(bs.mean_of(x), bs.mean_of(y), weights) for x, y in zip(a, b, strict=True)]
    assert _coverage(intervals, 0.3) >= 0.90
    assert all(e.ci_low <= e.value <= e.ci_high for e in intervals)
    # Paired, the interval is far narrower than the prompt effect alone would allow.
    assert np.median([e.width for e in intervals]) < 0.5  # unpaired: about 1.2


def test_expanded_interval_widens_small_samples_only() -> None:
    assert bs.expanded_alpha(0.05, 10) < bs.expanded_alpha(0.05, 50) < 0.05
    assert bs.expanded_alpha(0.05, 10_000) == pytest.approx(0.05, abs=0.001)
