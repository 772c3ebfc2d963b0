from __future__ import annotations

import numpy as np
import pytest

from chatvla2.runtime.safety import ActionSafety


def make():
    s = ActionSafety(low=[-1, -1], high=[1, 1], max_step=[0.1, 0.5])
    s.reset(np.zeros(2))
    return s


def test_clamps_to_limits_then_rate_limits():
    s = make()
    out, changed = s.filter([5.0, -0.2])
    np.testing.assert_allclose(out, [0.1, -0.2])
    assert changed == ["limits", "rate"] and s.counts.clamped_to_limits == 1 and s.counts.rate_limited == 1
    out, changed = s.filter([0.15, -0.3])
    np.testing.assert_allclose(out, [0.15, -0.3])
    assert changed == []


def test_non_finite_action_holds_the_last_one():
    s = make()
    s.filter([0.05, 0.05])
    out, changed = s.filter([np.nan, 0.0])
    np.testing.assert_allclose(out, [0.05, 0.05])
    assert changed == ["non_finite"] and s.counts.refused_non_finite == 1


def test_reset_clamps_the_measured_state_and_shape_is_checked():
    s = ActionSafety(low=[-1], high=[1], max_step=[0.1])
    s.reset(np.array([3.0]))
    np.testing.assert_allclose(s.last, [1.0])
    with pytest.raises(ValueError, match="2 values, expected 1"):
        s.filter([0.0, 0.0])
    with pytest.raises(ValueError):
        ActionSafety(low=[1], high=[0], max_step=[0.1])


def test_bimanual_defaults():
    s = ActionSafety.bimanual_arx(50.0)
    assert s.low.shape == (14,) and s.max_step[0] == pytest.approx(1.5 / 50)
