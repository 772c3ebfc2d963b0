"""ARXArm through python-can's slcan interface on a pty to the simulated arm: start-up refusals,
tracking, clipping, the watchdog, each injected fault, and disconnect's damping-then-disable.

Timing bounds carry slack for a loaded 2-core machine (the sim, the driver and pytest share it):
a fault stated to trip within T is asserted within T + 0.5 s or more.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from chatvla2.drivers.arm import ArmConfig, ArmDamped, ARXArm
from chatvla2.drivers.controller import ControllerConfig
from chatvla2.drivers.faults import CommunicationLost, LinkLost, OverCurrent, OverTemperature, StartupRefused
from chatvla2.sim.arm_sim import SimulatedArm
from tests.drivers.arm_test_helpers import FAST, wait_for


def make_arm(sim: SimulatedArm, damping_s: float = 0.2, controller: ControllerConfig = FAST) -> ARXArm:
    return ARXArm(ArmConfig(sim.device_path, controller=controller, disconnect_damping_s=damping_s))


def test_track_clip_and_disconnect_damped_then_disabled(sim_arm):
    arm = make_arm(sim_arm, damping_s=0.3)
    with arm:
        obs = arm.get_observation()
        assert obs["joint_positions"][0] == pytest.approx(0.05, abs=1e-3) and obs["fault"] is None
        assert obs["motor_states"] == ("ok", "ok", "ok", "enabled", "enabled", "enabled", "enabled")
        target = [0.3, 0.5, 0.5, 0.1, -0.1, 0.2, 0.05]
        sent = arm.send_action(target)
        np.testing.assert_allclose(sent, target)
        clipped = arm.send_action([9.0, -1.0, 0.5, 0.1, -0.1, 0.2, 0.5])
        np.testing.assert_allclose(clipped, [2.618, -0.05, 0.5, 0.1, -0.1, 0.2, 0.088])
        assert arm.interventions["targets_clipped"] == 3
        arm.send_action(target)
        wait_for(lambda: abs(arm.get_observation()["joint_positions"][0] - 0.3) < 0.01, 3.0)
        with pytest.raises(ValueError, match="7 values"):
            arm.send_action([0.0] * 6)
        with pytest.raises(ValueError, match="non-finite"):
            arm.send_action([np.nan] * 7)
    for motor in sim_arm.motors.values():
        modes = [m for _, m in motor.mode_log]
        final = "disabled" if motor.model.family == "damiao" else "limp"
        assert modes[-2:] == ["damping", final], (motor.motor_id, modes)
        t_damp, t_final = motor.mode_log[-2][0], motor.mode_log[-1][0]
        assert 0.25 <= t_final - t_damp <= 2.0  # configured 0.3 s of damping


def test_watchdog_holds_a_stale_target(sim_arm):
    with make_arm(sim_arm) as arm:
        arm.send_action([2.0, 0.02, 0.03, -0.01, 0.02, -0.02, 0.0])  # 2 rad away at 5 rad/s: 0.4 s
        wait_for(lambda: arm.get_observation()["holding"], 2.0)
        held = arm.controller.snapshot()["command"][0]
        assert held < 1.99  # stopped before reaching a target that went stale after 0.3 s
        time.sleep(0.1)
        assert arm.controller.snapshot()["command"][0] == held
        assert arm.interventions["target_timeouts"] == 1
        arm.send_action([2.0, 0.02, 0.03, -0.01, 0.02, -0.02, 0.0])
        assert not arm.get_observation()["holding"]


def test_damping_and_resume(sim_arm):
    with make_arm(sim_arm) as arm:
        arm.damping()
        wait_for(lambda: sim_arm.motors[5].mode == "damping", 2.0)
        with pytest.raises(ArmDamped):
            arm.send_action([0.0] * 7)
        arm.resume()
        wait_for(lambda: sim_arm.motors[5].mode == "position", 2.0)


@pytest.mark.parametrize(
    "faults, kind, motor",
    [("silent=5", StartupRefused, "motor 5"), ("overcurrent=6", StartupRefused, "over-current")],
)
def test_connect_refuses_and_leaves_motors_disabled(faults, kind, motor):
    with SimulatedArm("x5", faults=faults) as sim:
        arm = ARXArm(ArmConfig(sim.device_path, connect_timeout_s=0.1, connect_attempts=2))
        with pytest.raises(kind, match=motor):
            arm.connect()
        assert not arm.is_connected and not arm.link.is_open
        assert all(not m.enabled for m in sim.motors.values() if m.model.family == "damiao")


def test_connect_refuses_all_zero_positions():
    with SimulatedArm("x5", initial_positions=(0.0,) * 7) as sim:
        with pytest.raises(StartupRefused, match="reads 0"):
            ARXArm(ArmConfig(sim.device_path)).connect()


def test_connect_names_a_dead_port():
    with pytest.raises(OSError, match="/dev/nonexistent-arm"):
        ARXArm(ArmConfig("/dev/nonexistent-arm")).connect()


# fault -> typed fault, the arm damping, within the stated time (+ slack)
@pytest.mark.parametrize(
    "faults, kind, bound_s",
    [
        ("silent=5", CommunicationLost, 0.1 + 0.5),  # feedback timeout 0.1 s
        ("overcurrent=5", OverCurrent, 0.5),  # Damiao nibble A: first reply
        ("overcurrent=2", OverCurrent, 20 / 250 + 0.5),  # EC: 20 consecutive cycles at 250 Hz
        ("overtemp=6", OverTemperature, 0.5),  # Damiao nibble C
        ("overtemp=1", OverTemperature, 0.5),  # EC: 100 C read > 80 C
    ],
)
def test_injected_fault_leads_to_damping(sim_arm, faults, kind, bound_s):
    with make_arm(sim_arm) as arm:
        time.sleep(0.1)
        assert arm.fault is None
        sim_arm.inject(faults)
        t = wait_for(lambda: arm.fault is not None, bound_s + 1.0)
        assert isinstance(arm.fault, kind), arm.fault
        assert t <= bound_s
        assert arm.get_observation()["mode"] == "damping"
        healthy = 4 if faults.endswith("=5") or faults.endswith("=6") else 5
        wait_for(lambda: sim_arm.motors[healthy].mode == "damping", 1.0)
        with pytest.raises(kind):
            arm.send_action([0.0] * 7)


def test_unplugged_cable_is_link_lost_and_disconnect_is_quiet(sim_arm):
    arm = make_arm(sim_arm).connect()
    try:
        sim_arm.unplug()
        wait_for(lambda: arm.fault is not None, 1.0)
        assert isinstance(arm.fault, LinkLost)
        assert not arm.controller.running
    finally:
        arm.disconnect()  # must not raise on a dead link
    assert not arm.link.is_open


def test_dropped_and_corrupted_replies_are_counted_not_fatal():
    with SimulatedArm("x5", faults="drop=0.02,corrupt=0.002", seed=3) as sim:
        with make_arm(sim, controller=ControllerConfig(rate_hz=250.0, feedback_timeout_s=0.5)) as arm:
            time.sleep(1.0)
            counts = arm.interventions
            assert counts["feedback_missed"] > 0
            # a corrupted ASCII byte can still form a valid frame with a wrong value (SLCAN carries no
            # checksum), so a fault is possible; anything raised must be typed, and the loop lives on
            assert arm.fault is None or isinstance(arm.fault, OSError)
            assert arm.controller.running


def test_bimanual_is_one_14d_robot():
    from chatvla2.drivers.bimanual import BimanualARX

    with SimulatedArm("x5") as left_sim, SimulatedArm("l5") as right_sim:
        left = ARXArm(ArmConfig(left_sim.device_path, controller=FAST, disconnect_damping_s=0.2))
        right = ARXArm(ArmConfig(right_sim.device_path, profile="l5", controller=FAST, disconnect_damping_s=0.2))
        with BimanualARX(left, right) as robot:
            sent = robot.send_action([0.1] * 6 + [0.5] + [-0.1] * 6 + [0.02])
            assert sent.shape == (14,) and sent[6] == pytest.approx(0.088) and sent[7] == -0.1
            obs = robot.get_observation()
            assert obs["left_joint_positions"].shape == (6,) and "right_gripper_width" in obs
            with pytest.raises(ValueError, match="14 values"):
                robot.send_action([0.0] * 7)
        assert right_sim.motors[1].mode == "disabled"  # L5: joint 1 is a Damiao DM-J4340
        assert left_sim.motors[1].mode == "limp"  # X5: joint 1 is an EC-A4310
