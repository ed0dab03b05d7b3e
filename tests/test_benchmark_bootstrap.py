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
    assert e_small.low < e_small.value < e_small.high
    assert (e_large.high - e_large.low) < (e_small.high - e_small.low) / 3
    # The percentile interval of a mean is about +-1.96 standard errors.
    se = large.std(ddof=1) / math.sqrt(400)
    assert e_large.high - e_large.low == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_nan_values_are_left_out_of_means() -> None:
    values = np.array([1.0, np.nan, 3.0])
    assert bs.estimate(bs.mean_of(values), bs.resample_weights(3, 200, 0)).value == pytest.approx(2.0)


def test_identical_systems_differ_by_exactly_zero() -> None:
    values = np.random.default_rng(2).normal(size=30)
    diff = bs.difference(bs.mean_of(values), bs.mean_of(values.copy()), bs.resample_weights(30, 500, 0))
    assert (diff.value, diff.low, diff.high) == (0.0, 0.0, 0.0)


def test_paired_difference_detects_a_small_consistent_gain_that_unpaired_intervals_miss() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(0.0, 1.0, 40)  # prompts vary a lot ...
    tuned = base - 0.2 + rng.normal(0, 0.05, 40)  # ... but tuned is always a little lower
    weights = bs.resample_weights(40, 2000, 0)
    a, b = bs.estimate(bs.mean_of(tuned), weights), bs.estimate(bs.mean_of(base), weights)
    assert a.high > b.low  # the separate intervals overlap
    diff = bs.difference(bs.mean_of(tuned), bs.mean_of(base), weights)
    assert diff.high < 0  # the paired one does not


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
    assert one.value == 2.0 and math.isnan(one.low)
    assert one.to_dict() == {"value": 2.0, "ci_low": None, "ci_high": None, "n": 1}
