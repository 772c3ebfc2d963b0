"""The 95% interval printed beside every success rate (evaluation/rates.py)."""

from __future__ import annotations

import pytest

from chatvla2.evaluation.rates import format_rate, wilson_interval


def test_wilson_interval_matches_published_values():
    # the values scipy.stats.binomtest(k, n).proportion_ci(method="wilson") gives: 42 of 50 -> 0.7149 .. 0.9166
    low, high = wilson_interval(42, 50)
    assert low == pytest.approx(0.7149, abs=1e-4) and high == pytest.approx(0.9166, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # about +-8 points at 85% of 50, as the issue says
    low, high = wilson_interval(43, 50)
    assert 0.07 < (high - low) / 2 < 0.11


def test_format_rate_and_bad_counts():
    assert format_rate(42, 50) == "42/50 84% [71-92]"
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
