"""Bootstrap confidence intervals over users (seeded, vectorised numpy).

Users are the unit of resampling: each resample draws n users with replacement, and a metric's
value on it is the mean of the drawn users' per-user values. Paired comparisons draw the same
users for both systems, so the interval is for the mean per-user difference (B - A).
Intervals are percentile intervals; a paired interval's half-width is the smallest effect the
comparison could detect. Paired p-values come from a sign-flip permutation test
(`scipy.stats.permutation_test`, ``permutation_type="samples"``: each user's two values swapped
or not), exact when 2**n does not exceed the resamples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

__all__ = ["Interval", "PairedDifference", "bootstrap_means", "mean_ci", "paired_difference", "paired_permutation_p"]

_CHUNK_CELLS = 4_000_000  # resamples x users drawn at once (32 MB of int64 indices)


class Interval(BaseModel):
    mean: float
    low: float
    high: float
    n: int


class PairedDifference(BaseModel):
    """B - A over the users both have."""

    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    p_value: float  # two-sided paired permutation test of the mean difference (`paired_permutation_p`)
    n: int

    @property
    def half_width(self) -> float:
        """Half the interval's width: the smallest effect this comparison could tell from zero."""
        return (self.high - self.low) / 2


def bootstrap_means(values: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement) of the rows of ``values``.

    ``values`` is (n,) or (n, m): m statistics resampled with the same draws. Returns
    (n_resamples,) or (n_resamples, m). Deterministic for a seed.
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[0]
    if n == 0:
        raise ValueError("no values to resample")
    rng = np.random.default_rng(seed)
    out = np.empty((n_resamples,) + v.shape[1:])
    step = max(1, _CHUNK_CELLS // n)
    for start in range(0, n_resamples, step):
        stop = min(n_resamples, start + step)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = v[idx].mean(axis=1)
    return out


def mean_ci(values: Sequence[float], n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """The mean and its percentile bootstrap interval."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        nan = float("nan")
        return Interval(mean=nan, low=nan, high=nan, n=0)
    means = bootstrap_means(v, n_resamples, seed)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(mean=float(v.mean()), low=float(low), high=float(high), n=len(v))


def paired_difference(
    a: Sequence[float], b: Sequence[float], n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> PairedDifference:
    """Mean per-user difference B - A with a paired bootstrap interval (same users drawn for both)."""
    va = np.asarray(a, dtype=np.float64)
    vb = np.asarray(b, dtype=np.float64)
    if va.shape != vb.shape:
        raise ValueError(f"paired values differ in length: {len(va)} vs {len(vb)}")
    if len(va) == 0:
        nan = float("nan")
        return PairedDifference(mean_a=nan, mean_b=nan, diff=nan, low=nan, high=nan, p_value=nan, n=0)
    d = vb - va
    means = bootstrap_means(d, n_resamples, seed)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    p = paired_permutation_p(va, vb, n_resamples, seed)
    return PairedDifference(
        mean_a=float(va.mean()), mean_b=float(vb.mean()), diff=float(d.mean()),
        low=float(low), high=float(high), p_value=p, n=len(d),
    )


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(b - a, axis=axis)


def paired_permutation_p(a: Sequence[float], b: Sequence[float], n_resamples: int = 1000, seed: int = 0) -> float:
    """Two-sided p-value of the mean paired difference B - A under the null that each user's two
    values are exchangeable (`scipy.stats.permutation_test`, paired "samples" permutations).
    Users with equal values contribute nothing; all equal gives 1. Deterministic for a seed."""
    from scipy.stats import permutation_test

    va = np.asarray(a, dtype=np.float64)
    vb = np.asarray(b, dtype=np.float64)
    if va.shape != vb.shape:
        raise ValueError(f"paired values differ in length: {len(va)} vs {len(vb)}")
    differs = va != vb
    if differs.sum() < 2:  # none or one differing user: every sign flip is as extreme as the data
        return 1.0
    result = permutation_test(
        (va[differs], vb[differs]), _mean_difference, permutation_type="samples", vectorized=True,
        n_resamples=n_resamples, alternative="two-sided", rng=np.random.default_rng(seed),
    )
    return float(min(1.0, result.pvalue))
