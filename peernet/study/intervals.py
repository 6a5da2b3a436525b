"""Student-t confidence intervals for a mean over a few seeds (no SciPy: the t distribution in closed form)."""

from __future__ import annotations

import math
import statistics


def t_cdf(t: float, df: int) -> float:
    """P(T ≤ t) for Student's t with ``df`` ≥ 1 degrees of freedom: the finite series for integer ``df``
    (Abramowitz & Stegun 26.7.3 and 26.7.4), exact up to rounding."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    theta = math.atan2(t, math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2:  # odd: 2θ/π plus a series in cos²θ that starts at df = 3
        term, total = c, 0.0
        for k in range(3, df + 1, 2):
            total += term
            term *= c * c * (k - 1) / k
        a = (2 / math.pi) * (theta + s * total) if df > 1 else 2 * theta / math.pi
    else:  # even: sinθ times a series in cos²θ
        term, total = 1.0, 0.0
        for k in range(2, df + 1, 2):
            total += term
            term *= c * c * (k - 1) / k
        a = s * total
    return min(1.0, max(0.0, 0.5 + 0.5 * a))  # the series can overshoot by an ulp far out in the tails


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > p:
        lo *= 2
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, abs(mid)):
            break
    return (lo + hi) / 2


def mean_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """The two-sided ``level`` t interval for the mean of ``values`` (None for fewer than two values)."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean - half, mean + half
