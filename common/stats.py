"""Paired-delta statistics for claim verdicts (common/results.py): Student's t quantiles written out in
float64 (no scipy), the t-interval of a mean and a seeded paired bootstrap.

    stats = delta_stats([1.33, 1.0, 1.0, 0.33, -1.34])   # mean 0.464, 95 % t-interval [-0.867, 1.795]
    t_quantile(0.975, 4)                                  # 2.776445...
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CONFIDENCE = 0.95
BOOTSTRAP_MIN_N = 30  # from this many paired deltas on, the interval is a paired bootstrap
BOOTSTRAP_RESAMPLES = 10_000


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b), by its continued fraction (Numerical Recipes, eq. 6.4.5)
    evaluated with the modified Lentz method; the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) keeps x on the
    side where the fraction converges fast."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 1000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-16:
            break
    return math.exp(log_front) * fraction / a


def t_cdf(t: float, df: float) -> float:
    """Student's t CDF: 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2 for t >= 0, mirrored for t < 0;
    the standard normal CDF when df is infinite."""
    if math.isinf(df):
        return 0.5 * math.erfc(-t / math.sqrt(2.0))
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (df = inf: the normal), by bisection
    on `t_cdf` to float64 resolution, e.g. t_quantile(0.975, 4) = 2.776445."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if mid in (low, high):
            break
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
    return 0.5 * (low + high)


@dataclass(frozen=True)
class DeltaStats:
    """Paired deltas method - baseline: mean, sample sd (ddof 1), n and a `confidence` interval
    (`method`: "t", "bootstrap", or "none" when n = 1)."""

    mean: float
    sd: float | None
    n: int
    low: float | None
    high: float | None
    method: str
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2


def delta_stats(
    deltas: list[float],
    confidence: float = CONFIDENCE,
    bootstrap_min_n: int = BOOTSTRAP_MIN_N,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> DeltaStats:
    """Mean, sd and interval of paired deltas: mean +- t_{(1+c)/2, n-1} * sd / sqrt(n) for n < `bootstrap_min_n`,
    else the percentile interval of `resamples` seeded bootstrap means (resampling whole pairs)."""
    n = len(deltas)
    if n == 0:
        raise ValueError("delta_stats needs at least one delta")
    mean = math.fsum(deltas) / n
    if n == 1:
        return DeltaStats(mean, None, 1, None, None, "none", confidence)
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in deltas) / (n - 1))
    if n < bootstrap_min_n:
        half = t_quantile((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
        return DeltaStats(mean, sd, n, mean - half, mean + half, "t", confidence)
    import numpy as np

    values = np.asarray(deltas, dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    low, high = np.quantile(values[draws].mean(axis=1), [(1 - confidence) / 2, (1 + confidence) / 2])
    return DeltaStats(mean, sd, n, float(low), float(high), "bootstrap", confidence)
