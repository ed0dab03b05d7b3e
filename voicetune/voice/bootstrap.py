"""Bootstrap confidence intervals over prompts (seeded, paired across models).

Every measure is a function of the prompts it is computed over. One bootstrap replicate draws the
prompts again with replacement, as a vector of multiplicities (how often each prompt was drawn), and
recomputes the measure from it: a mean becomes a weighted mean, a pooled distribution a weighted sum
of per-prompt counts. All models share the same draws, so the difference between two models has its
own interval (a paired bootstrap), which is the honest test of "does fine-tuned beat base".
Intervals: percentile for means and pooled ratios; for pooled distances, whose plain value is
inflated by sampling noise, the bootstrap bias-corrected value with the basic interval (see
`estimate`). Every interval holds its value.
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
    """A point value with its 1 - alpha interval over n resampled units (prompts, pieces or blocks)."""

    value: float
    ci_low: float
    ci_high: float
    n: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "value": _clean(self.value),
            "ci_low": _clean(self.ci_low),
            "ci_high": _clean(self.ci_high),
            "n": self.n,
        }

    @property
    def width(self) -> float:
        return self.ci_high - self.ci_low


def _clean(x: float) -> float | None:
    """JSON has no NaN: missing values become null."""
    return None if x is None or not math.isfinite(x) else float(x)


def resample_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) multiplicities of n prompts drawn with replacement, reproducible from the seed."""
    if n == 0:
        return np.zeros((n_boot, 0))
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def _usable(samples: np.ndarray, point: float) -> np.ndarray | None:
    finite = np.asarray(samples, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size < max(10, 0.5 * np.size(samples)) or not math.isfinite(point):
        return None
    return finite


def percentile_interval(samples: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """The alpha/2 and 1 - alpha/2 quantiles of the replicates (NaN when fewer than 10 are finite)."""
    finite = np.asarray(samples, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size < 10:
        return math.nan, math.nan
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _hold(value: float, low: float, high: float) -> tuple[float, float]:
    """Rounding only: a value equal to an end up to float noise (all replicates equal) is held."""
    tol = 1e-12 * max(1.0, abs(value))
    if low - tol <= value < low:
        low = value
    if high < value <= high + tol:
        high = value
    return low, high


def expanded_alpha(alpha: float, n: int) -> float:
    """The tail level that widens a bootstrap interval for small samples (Hesterberg 2015, "What
    teachers should know about the bootstrap", Am. Stat. 69(4): the "expanded percentile" interval):
    quantiles at z' = sqrt(n / (n - 1)) * t(n - 1, 1 - alpha/2) instead of z(1 - alpha/2). The plain
    bootstrap is too narrow by about sqrt((n - 1) / n) and by t vs z; with 24 prompts it covers ~91%."""
    from scipy.stats import norm, t

    if n < 2:
        return alpha
    z = math.sqrt(n / (n - 1)) * float(t.ppf(1 - alpha / 2, n - 1))
    return float(2 * norm.sf(z))


def _summarise(samples: np.ndarray, point: float, n: int, alpha: float, bias_corrected: bool) -> Estimate:
    finite = _usable(samples, point)
    if finite is None:
        return Estimate(point, math.nan, math.nan, n)
    tail = expanded_alpha(alpha, n)
    q_low, q_high = np.quantile(finite, [tail / 2, 1 - tail / 2])
    if bias_corrected:
        # Basic bootstrap around the bias-corrected value: theta - (median* - theta), interval
        # [2 theta - q_high, 2 theta - q_low]. The median of the replicates lies between their
        # quantiles, so the interval always holds the value.
        value = 2 * point - float(np.median(finite))
        low, high = 2 * point - float(q_high), 2 * point - float(q_low)
    else:
        value, low, high = point, float(q_low), float(q_high)
    low, high = _hold(value, low, high)
    return Estimate(value, low, high, n)


def estimate(
    statistic: Statistic, weights: np.ndarray, alpha: float = 0.05, *, bias_corrected: bool = False
) -> Estimate:
    """Point value (every prompt once) and 1 - alpha interval over the bootstrap weights.

    Means and pooled ratios (nearly linear in the weights): the percentile interval, which holds the
    value because the replicates centre on it. Pooled distances to a reference (Jensen-Shannon, KS,
    Delta of a pooled profile): bias_corrected=True. A distance is inflated by sampling noise, and
    resampling prompts adds the same kind of noise again, so every replicate can lie above the plain
    value (the bias-corrected percentile interval then collapsed to a point outside it). The bootstrap
    estimates that inflation (median replicate - value) and removes it; the basic interval
    [2 value - q(1 - alpha/2), 2 value - q(alpha/2)] goes with it (Davison & Hinkley 1997, ch. 2.4,
    5.2). A coverage test on simulated data with a known truth is in tests/test_benchmark_bootstrap.py.
    """
    n = weights.shape[1]
    value = float(statistic(np.ones((1, n)))[0])
    if n < 2:  # one unit: nothing to resample
        return Estimate(value, math.nan, math.nan, n)
    return _summarise(np.asarray(statistic(weights), dtype=float), value, n, alpha, bias_corrected)


def difference(
    a: Statistic, b: Statistic, weights: np.ndarray, alpha: float = 0.05, *, bias_corrected: bool = False
) -> Estimate:
    """a - b with a paired interval (both recomputed on the same draws); bias_corrected as in estimate."""
    n = weights.shape[1]
    ones = np.ones((1, n))
    value = float(a(ones)[0] - b(ones)[0])
    if n < 2:
        return Estimate(value, math.nan, math.nan, n)
    samples = np.asarray(a(weights), dtype=float) - np.asarray(b(weights), dtype=float)
    return _summarise(samples, value, n, alpha, bias_corrected)


def unpaired_difference(
    a: Statistic,
    b: Statistic,
    weights_a: np.ndarray,
    weights_b: np.ndarray,
    alpha: float = 0.05,
    *,
    bias_corrected: bool = False,
    absolute: bool = False,
) -> Estimate:
    """a - b (|a - b| with absolute) for two independent sets of units, each resampled on its own
    draws (rows of weights_a and weights_b pair up only as independent draws); n = the smaller set."""
    n = min(weights_a.shape[1], weights_b.shape[1])

    def combine(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
        return np.abs(d) if absolute else d

    value = float(combine(a(np.ones((1, weights_a.shape[1]))), b(np.ones((1, weights_b.shape[1]))))[0])
    if n < 2:
        return Estimate(value, math.nan, math.nan, n)
    return _summarise(combine(a(weights_a), b(weights_b)), value, n, alpha, bias_corrected)


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
