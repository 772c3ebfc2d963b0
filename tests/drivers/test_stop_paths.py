"""Every stop path of `chatvla2 arm` ends safe (issue 9), through the real path: a real
`python -m chatvla2 arm --port PTY ...` process, real signals sent to its PID, and a simulated arm
in this process behind a real pty, whose log says what each motor received and when.

Bounds are measured on the simulator's side (`mode_log`, time.monotonic(), one clock for both
processes) and printed as `BOUND ...` lines (`pytest -s`). The CLI damps for 2 s (docs/reference/arx.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from chatvla2.sim.arm_sim import SimulatedArm
from tests.child_signals import default_stop_signals
from tests.drivers.arm_test_helpers import bound, wait_for

CLI_DAMPING_S = 2.0  # drivers.cli uses ArmConfig's default disconnect_damping_s
AWAY_FROM_HOME = (1.2, 0.25, 0.31, -0.1, 0.15, 0.05, 0.5)  # joint1 1.2 rad out: ~1 s to home at 20 %


def start_arm_cli(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "chatvla2", "arm", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_stop_signals)


def finish(proc: subprocess.Popen, within_s: float = 15.0) -> tuple[int, str, str]:
    """Wait for the process (killing it if it overruns, never leaving it behind); (code, out, err)."""
    try:
        out, err = proc.communicate(timeout=within_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"`chatvla2 arm` did not exit within {within_s} s\n{err}")
    with pytest.raises(ProcessLookupError):  # exited and reaped: no process left with that PID
        os.kill(proc.pid, 0)
    return proc.returncode, out, err


def final_modes(sim: SimulatedArm) -> dict[int, str]:
    return {motor_id: m.mode for motor_id, m in sim.motors.items()}


def safe_mode(motor) -> str:
    return "disabled" if motor.model.family == "damiao" else "limp"


def first_entry(sim: SimulatedArm, mode: str, after: float) -> float:
    """When the last motor entered `mode` at or after `after` (every motor must have)."""
    times = []
    for motor in sim.motors.values():
        entries = [t for t, m in motor.mode_log if m == mode and t >= after]
        assert entries, (motor.motor_id, mode, motor.mode_log[-4:])
        times.append(entries[0])
    return max(times)


def damping_start(sim: SimulatedArm) -> float:
    """When the last motor entered its final damping (the one before its disable)."""
    return max(m.mode_log[-2][0] for m in sim.motors.values())


@pytest.mark.parametrize(
    "action, sig",
    [
        pytest.param(action, sig, id=f"{action}-{sig.name}")
        for action, sig in [("home", signal.SIGTERM), ("home", signal.SIGHUP), ("home", signal.SIGINT),
                            ("damp", signal.SIGTERM), ("damp", signal.SIGHUP)]
    ],
)
def test_a_termination_signal_damps_then_disables(action, sig):
    with SimulatedArm("x5", seed=1, initial_positions=AWAY_FROM_HOME) as sim:
        proc = start_arm_cli("--port", sim.device_path, action)
        try:
            # home: signal while the arm moves; damp: while it damps
            moving = "position" if action == "home" else "damping"
            wait_for(lambda: all(m.mode == moving for m in sim.motors.values()), 10.0, f"every motor in {moving}")
            t_signal = time.monotonic()
            os.kill(proc.pid, sig)
        finally:
            code, out, err = finish(proc)
        assert code == 128 + sig, err  # 130 for SIGINT, 143 SIGTERM, 129 SIGHUP
        assert err.strip().splitlines() == [err.strip()], err  # one line
        assert f"stopped by {sig.name}" in err and "disabled (all 7 motors confirmed)" in err, err
        assert all(mode == safe_mode(sim.motors[i]) for i, mode in final_modes(sim).items()), final_modes(sim)
        t_disable = max(m.mode_log[-1][0] for m in sim.motors.values())
        if action == "home":
            t_damping = first_entry(sim, "damping", t_signal)
            assert t_damping - t_signal < 0.5  # the CLI polls its stop request every 20 ms
        else:
            t_damping = damping_start(sim)  # already damping when the signal came
        assert CLI_DAMPING_S - 0.05 <= t_disable - t_damping <= CLI_DAMPING_S + 1.0
        assert t_disable - t_signal <= CLI_DAMPING_S + 1.5
        bound(f"{action} + {sig.name}", signal_to_damping=max(0.0, t_damping - t_signal),
              signal_to_disable=t_disable - t_signal)


def test_arm_sim_home_stops_on_sigterm_in_one_process():
    """`--sim`: the simulated arm lives inside the `chatvla2 arm` process; the driver's own report
    (every motor confirmed the disable) is the evidence, and nothing is left running."""
    proc = start_arm_cli("--sim", "home")
    try:
        line = proc.stdout.readline()  # home is 0.3 rad away: reached, then 2 s of damping
        assert "home reached" in line, line
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGTERM)
    finally:
        code, out, err = finish(proc)
    assert code == 143, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("chatvla2 arm: stopped by SIGTERM: "), err
    assert "damped, then disabled (all 7 motors confirmed)" in err


@pytest.mark.parametrize("action", ["damp", "home"])
def test_link_lost_while_damping_is_not_reported_as_success(action):
    with SimulatedArm("x5", seed=1) as sim:
        proc = start_arm_cli("--port", sim.device_path, action)
        try:
            # damp: damping from the start; home (0.3 rad away): damping once home is reached
            wait_for(lambda: all(m.mode == "damping" for m in sim.motors.values()), 10.0, "damping")
            sim.unplug()
        finally:
            code, out, err = finish(proc)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "NOT safely disabled: the disable was not sent" in err and "link" in err, err


@pytest.mark.parametrize(
    "faults, message",
    [
        ("overtemp=5", "joint4 (motor 5) reports coil over-temperature"),
        ("silent=7", "no feedback from joint6 (motor 7)"),
    ],
)
def test_enable_refuses_a_faulty_motor_and_disables_every_motor(faults, message):
    with SimulatedArm("x5", faults=faults, seed=1) as sim:
        code, out, err = finish(start_arm_cli("--port", sim.device_path, "enable"))
        assert code == 2, (out, err)
        assert len(err.strip().splitlines()) == 1 and message in err and "refusing to start" in err, err
        for motor in sim.motors.values():
            if motor.motor_id != 7 or "silent" not in faults:
                assert motor.mode in ("disabled", "limp"), (motor.motor_id, motor.mode_log)
            assert not (motor.model.family == "damiao" and motor.enabled and motor.motor_id != 7), motor.motor_id


def test_enable_on_an_adapter_that_drops_at_once_is_one_line():
    """The pty closes right after `O` (acks never come: the open's drain hits the closed device):
    one line, exit 2, no traceback from a bus left open."""
    with SimulatedArm("x5", faults="unplug=0", ack="none") as sim:
        code, out, err = finish(start_arm_cli("--port", sim.device_path, "enable"))
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "not properly shut down" not in err and sim.device_path in err, err
