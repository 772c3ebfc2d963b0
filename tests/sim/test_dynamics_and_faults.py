"""Joint dynamics and the fault specification."""

from __future__ import annotations

import pytest

from chatvla2.sim.dynamics import MotorDynamics
from chatvla2.sim.faults import FaultSpecError, parse_faults


def test_pd_tracking_converges_and_torque_is_limited():
    m = MotorDynamics(inertia=0.05, torque_limit=30.0)
    for _ in range(1000):
        m.step(0.002, 80, 2, 1.0, 0.0, 0.0, True)
    assert m.position == pytest.approx(1.0, abs=0.01) and abs(m.velocity) < 0.05
    weak = MotorDynamics(inertia=0.05, torque_limit=1.0)
    weak.step(0.001, 500, 0, 10.0, 0.0, 0.0, True)
    assert weak.applied_torque == 1.0


def test_disabled_motor_coasts_to_rest_and_temperature_follows_torque():
    m = MotorDynamics(velocity=2.0)
    m.step(0.2, 0, 0, 0, 0, 0, False)
    assert 0.0 < m.velocity < 2.0  # friction slows it
    for _ in range(10):
        m.step(0.2, 0, 0, 0, 0, 0, False)
    assert m.velocity == 0.0 and m.applied_torque == 0.0
    hot = MotorDynamics(torque_limit=10.0)
    for _ in range(100):
        hot.step(0.1, 500, 0, 100.0, 0, 0, True)  # stalled at full torque
    assert hot.temperature_c > 30.0 + 1.0


def test_fault_spec():
    plan = parse_faults("drop=0.01,corrupt=0.001,latency=0.002,silent=4,silent=5@1.5,overcurrent=2,overtemp=5,unplug=10")
    assert plan.drop == 0.01 and plan.silent == {4: 0.0, 5: 1.5} and plan.unplug == 10.0
    assert parse_faults("").empty
    adapter = parse_faults("hang=3,stall=0.5:1.5,stall=4:0.2")
    assert adapter.hang == 3.0 and adapter.stall == [(0.5, 1.5), (4.0, 0.2)] and not adapter.empty


@pytest.mark.parametrize(
    "spec, message",
    [("dorp=0.1", "did you mean 'drop'"), ("drop=2", "bad value"), ("silent", "needs a value"), ("silent=x", "bad value"),
     ("stall=2", "expected e.g. stall=2:1"), ("stall=2:0", "bad value"), ("hang=-1", "bad value"), ("hnag=1", "did you mean 'hang'")],
)
def test_bad_fault_spec_is_one_clear_line(spec, message):
    with pytest.raises(FaultSpecError, match=message):
        parse_faults(spec)
