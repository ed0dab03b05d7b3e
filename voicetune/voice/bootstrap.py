"""Bootstrap confidence intervals over prompts (seeded, paired across models).

Every measure is a function of the prompts it is computed over. One bootstrap replicate draws the
prompts again with replacement, as a vector of multiplicities (how often each prompt was drawn), and
recomputes the measure from it: a mean becomes a weighted mean, a pooled distribution a weighted sum
of per-prompt counts. All models share the same draws, so the difference between two models has its
own interval (a paired bootstrap), which is the honest test of "does fine-tuned beat base".
Bias-corrected percentile intervals (Efron 1981; Efron & Tibshirani 1993, *An Introduction to the
Bootstrap*, ch. 13-14).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Statistic = Callable[[np.ndarray], np.ndarray]
"""weights (B, N) -> value per row (B,): the measure recomputed with prompt i counted weights[:, i] times."""


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "value": _clean(self.value),
            "ci_low": _clean(self.low),
            "ci_high": _clean(self.high),
            "n": self.n,
        }


def _clean(x: float) -> float | None:
    """JSON has no NaN: missing values become null."""
    return None if x is None or not math.isfinite(x) else float(x)


def resample_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) multiplicities of n prompts drawn with replacement, reproducible from the seed."""
    if n == 0:
        return np.zeros((n_boot, 0))
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def _interval(samples: np.ndarray, point: float, alpha: float) -> tuple[float, float]:
    """Bias-corrected percentile interval (Efron 1981): the percentiles are shifted by how far the
    point value sits from the middle of the replicates. For a mean it is the plain percentile
    interval; for a pooled distance such as Jensen-Shannon, whose replicates run high (resampling
    repeats prompts, which makes pooled profiles lumpier), it keeps the interval around the value."""
    from scipy.stats import norm

    finite = samples[np.isfinite(samples)]
    if finite.size < max(10, 0.5 * samples.size) or not math.isfinite(point):
        return math.nan, math.nan
    below = (np.mean(finite < point) + 0.5 * np.mean(finite == point)).clip(
        0.5 / finite.size, 1 - 0.5 / finite.size
    )
    z0 = float(norm.ppf(below))
    z = float(norm.ppf(1 - alpha / 2))
    quantiles = 100 * norm.cdf([2 * z0 - z, 2 * z0 + z])
    low, high = np.percentile(finite, quantiles)
    return float(low), float(high)


def estimate(statistic: Statistic, weights: np.ndarray, alpha: float = 0.05) -> Estimate:
    """Point value (every prompt once) and 1 - alpha interval over the bootstrap weights."""
    n = weights.shape[1]
    value = float(statistic(np.ones((1, n)))[0])
    if n < 2:  # one unit: nothing to resample
        return Estimate(value, math.nan, math.nan, n)
    low, high = _interval(np.asarray(statistic(weights), dtype=float), value, alpha)
    return Estimate(value, low, high, n)


def difference(a: Statistic, b: Statistic, weights: np.ndarray, alpha: float = 0.05) -> Estimate:
    """a - b with a paired interval (both recomputed on the same draws)."""
    n = weights.shape[1]
    ones = np.ones((1, n))
    value = float(a(ones)[0] - b(ones)[0])
    if n < 2:
        return Estimate(value, math.nan, math.nan, n)
    low, high = _interval(
        np.asarray(a(weights), dtype=float) - np.asarray(b(weights), dtype=float), value, alpha
    )
    return Estimate(value, low, high, n)


def mean_of(values: np.ndarray) -> Statistic:
    """Weighted mean of one value per prompt (NaN values are left out)."""
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    filled = np.where(ok, v, 0.0)

    def statistic(w: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ filled) / (w @ ok.astype(float))

    return statistic


def ratio_of(numerators: np.ndarray, denominators: np.ndarray) -> Statistic:
    """Pooled ratio sum(num) / sum(den) over the drawn prompts (e.g. copied 8-grams / all 8-grams)."""
    num = np.asarray(numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)

    def statistic(w: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ num) / (w @ den)

    return statistic


def pooled(counts: np.ndarray, reduce: Callable[[np.ndarray], np.ndarray]) -> Statistic:
    """Per-prompt count vectors (N, K) pooled over the drawn prompts (B, K), then reduced per row."""
    matrix = np.asarray(counts, dtype=float)

    def statistic(w: np.ndarray) -> np.ndarray:
        return reduce(w @ matrix)

    return statistic


def gap_to(statistic: Statistic, target: Statistic) -> Statistic:
    """|statistic - target| on the same draws: how far a model is from the author's own value."""

    def gap(w: np.ndarray) -> np.ndarray:
        return np.abs(statistic(w) - target(w))

    return gap


def exp_of(statistic: Statistic) -> Statistic:
    """exp(statistic), e.g. perplexity from a mean negative log-likelihood."""

    def wrapped(w: np.ndarray) -> np.ndarray:
        return np.exp(statistic(w))

    return wrapped
