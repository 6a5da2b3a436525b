"""Student-t intervals: the distribution against tabulated quantiles, and the interval a report prints."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peernet.study.intervals import mean_interval, t_cdf, t_quantile

# Two-sided 95% critical values t_{0.975, df}, as printed in statistics tables (3 decimals).
TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 20: 2.086, 30: 2.042}


def test_quantiles_match_the_tables() -> None:
    for df, value in TABLE.items():
        assert round(t_quantile(0.975, df), 3) == value
    assert t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: arctan(1)/π + 1/2
    assert t_quantile(0.975, 10_000) == pytest.approx(1.960, abs=1e-3)  # towards the normal
    with pytest.raises(ValueError):
        t_cdf(0.0, 0)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


@given(st.floats(-50, 50), st.integers(1, 40))
def test_cdf_is_a_symmetric_distribution(t: float, df: int) -> None:
    assert 0.0 <= t_cdf(t, df) <= 1.0
    assert t_cdf(t, df) + t_cdf(-t, df) == pytest.approx(1.0, abs=1e-12)
    assert t_cdf(t + 0.5, df) >= t_cdf(t, df) - 1e-15  # monotone, up to rounding in the far tails


def test_interval_of_three_seeds() -> None:
    low, high = mean_interval([0.70, 0.74, 0.78])  # type: ignore[misc]
    half = 4.303 * 0.04 / math.sqrt(3)
    assert low == pytest.approx(0.74 - half, abs=1e-4) and high == pytest.approx(0.74 + half, abs=1e-4)
    assert mean_interval([0.7]) is None
