"""Which arm said it, one adapter under two names, the per-arm feedback timeout, a fault's path to
damping and disable, and a failed open that leaves nothing open (issue 9). Real ptys to the
simulated arm throughout; bounds printed as `BOUND ...` lines (`pytest -s`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import select
import threading
import time
import tty

import pytest

from chatvla2.drivers.arm import ArmConfig, ARXArm
from chatvla2.drivers.bimanual import BimanualARX
from chatvla2.drivers.controller import DEFAULT_FEEDBACK_TIMEOUT_S, ControllerConfig
from chatvla2.drivers.faults import CommunicationLost, OverTemperature, StartupRefused
from chatvla2.drivers.slcan_link import LinkError, SlcanLink
from chatvla2.sim.arm_sim import SimulatedArm
from tests.drivers.arm_test_helpers import FAST, bound, fds_on, wait_for


def safe(motor) -> bool:
    return motor.mode == ("disabled" if motor.model.family == "damiao" else "limp")


# -- 7: every fault names its arm -----------------------------------------------------------------


def test_bimanual_faults_name_their_arm():
    with SimulatedArm("x5", seed=1) as left_sim, SimulatedArm("x5", seed=2) as right_sim:
        left = ARXArm(ArmConfig(left_sim.device_path, controller=FAST, disconnect_damping_s=0.2))
        right = ARXArm(ArmConfig(right_sim.device_path, controller=FAST, disconnect_damping_s=0.2))
        with BimanualARX(left, right) as robot:
            assert (left.name, right.name) == ("left", "right")
            right_sim.inject("silent=5")
            wait_for(lambda: right.fault is not None, 2.0, "the right arm's fault")
            assert isinstance(right.fault, CommunicationLost) and right.fault.arm == "right"
            assert str(right.fault).startswith("right arm: joint4 (motor 5) silent for more than 100 ms"), right.fault
            assert left.fault is None
            with pytest.raises(CommunicationLost, match="^right arm: joint4"):
                robot.send_action([0.0] * 14)


def test_bimanual_startup_refusal_names_the_arm_and_disables_the_other():
    with SimulatedArm("x5", seed=1) as left_sim, SimulatedArm("x5", faults="overtemp=6", seed=2) as right_sim:
        left = ARXArm(ArmConfig(left_sim.device_path, controller=FAST, disconnect_damping_s=0.2))
        right = ARXArm(ArmConfig(right_sim.device_path, controller=FAST, disconnect_damping_s=0.2))
        with pytest.raises(StartupRefused, match=r"^right arm: refusing to start: joint5 \(motor 6\) reports coil"):
            BimanualARX(left, right).connect()
        assert not left.link.is_open and not right.link.is_open
        assert all(safe(m) for m in left_sim.motors.values()), [m.mode for m in left_sim.motors.values()]
        assert not any(m.enabled for m in right_sim.motors.values() if m.model.family == "damiao")


# -- 8: one adapter under two names ----------------------------------------------------------------


def test_one_adapter_under_two_names_is_refused(sim_arm, tmp_path):
    by_id = tmp_path / "usb-CANable_arm-if00"  # as /dev/serial/by-id/... links to /dev/ttyACM0
    by_id.symlink_to(sim_arm.device_path)
    with pytest.raises(ValueError, match="must be on different adapters") as refused:
        BimanualARX(ARXArm(ArmConfig(sim_arm.device_path)), ARXArm(ArmConfig(str(by_id))))
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and f"{by_id} are the same device ({sim_arm.device_path})" in message
    with pytest.raises(ValueError, match="must be on different adapters"):  # the same name, of course
        BimanualARX(ARXArm(ArmConfig(sim_arm.device_path)), ARXArm(ArmConfig(sim_arm.device_path)))
    assert sim_arm.frames_in == 0 and not sim_arm.channel_open  # refused before anything was opened


# -- 9: the feedback timeout, per arm ----------------------------------------------------------------


def test_feedback_timeout_is_set_per_arm_and_checked():
    config = ArmConfig("/dev/ttyACM0")
    assert config.feedback_timeout_s == DEFAULT_FEEDBACK_TIMEOUT_S == 0.05
    slow = config.with_feedback_timeout(0.2)
    assert slow.feedback_timeout_s == 0.2 and slow.controller.rate_hz == config.controller.rate_hz
    assert config.feedback_timeout_s == 0.05  # a copy: the other arm keeps its own
    with pytest.raises(ValueError, match="feedback_timeout_s must be within 0.004..2 s.*got 50"):
        config.with_feedback_timeout(50)  # milliseconds by mistake
    with pytest.raises(ValueError, match="feedback_timeout_s"):
        ControllerConfig(rate_hz=500.0, feedback_timeout_s=0.001)  # less than two cycles


# -- a fault's path: typed fault -> damping -> (disconnect) damping period -> disable --------------------


@pytest.mark.parametrize(
    "faults, kind, feedback_timeout_s",
    [("silent=5", CommunicationLost, 0.2), ("overtemp=6", OverTemperature, 0.05)],
)
def test_fault_to_damping_to_disable_bounds(faults, kind, feedback_timeout_s):
    damping_s = 0.3
    with SimulatedArm("x5", seed=1) as sim:
        config = ArmConfig(sim.device_path, controller=FAST, disconnect_damping_s=damping_s)
        arm = ARXArm(config.with_feedback_timeout(feedback_timeout_s)).connect()
        try:
            time.sleep(0.1)
            t_fault = time.monotonic()
            sim.inject(faults)
            wait_for(lambda: arm.fault is not None, feedback_timeout_s + 1.0, "the fault")
            assert isinstance(arm.fault, kind), arm.fault
            fault_at = arm.controller.fault_time
            healthy = [m for m in sim.motors.values() if m.motor_id not in (5, 6)]
            wait_for(lambda: all(m.mode == "damping" for m in healthy), 1.0, "damping")
            t_damping = max(next(t for t, mode in m.mode_log if t >= t_fault and mode == "damping") for m in healthy)
            t_disconnect = time.monotonic()
        finally:
            report = arm.disconnect()
    if faults.startswith("silent"):
        assert report.unconfirmed == (5,) and not report.safe  # a silent motor cannot confirm: said so
        assert feedback_timeout_s * 0.9 <= fault_at - t_fault <= feedback_timeout_s + 0.5
    else:
        assert report.safe, report.summary()
    assert all(safe(m) for m in healthy)
    t_disabled = max(m.mode_log[-1][0] for m in healthy)
    assert t_damping - t_fault <= feedback_timeout_s + 0.5
    assert damping_s - 0.05 <= t_disabled - t_disconnect <= damping_s + 0.5  # the damping period, then the disable
    bound(f"fault {faults} (feedback timeout {feedback_timeout_s * 1000:.0f} ms)", fault_to_latched=fault_at - t_fault,
          fault_to_damping_received=t_damping - t_fault,
          disconnect_to_disable_received=t_disabled - t_disconnect)


# -- 6: a failed open leaves nothing open ---------------------------------------------------------------


@pytest.fixture
def no_unclosed_bus_warning(caplog):
    """python-can logs "... was not properly shut down" when a bus is collected still open."""
    with caplog.at_level(logging.WARNING, logger="can"):
        yield
        gc.collect()
    assert "not properly shut down" not in caplog.text


@contextlib.contextmanager
def adapter_that_drops_after_open():
    """A pty whose far end we are: it reads python-can's whole opening (C, S8, an empty line, O, O),
    answers nothing and closes, so the open's wait for acknowledgements meets a closed device."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)  # only the driver holds the device open

    def drop() -> None:
        seen, end = b"", time.monotonic() + 5.0
        while seen.count(b"O\r") < 2 and time.monotonic() < end:
            if select.select([master], [], [], 0.05)[0]:
                try:
                    seen += os.read(master, 1024)
                except OSError:
                    break
        os.close(master)

    dropper = threading.Thread(target=drop, name="adapter that drops")
    dropper.start()
    try:
        yield path
    finally:
        dropper.join()


def test_open_fails_cleanly_when_the_adapter_drops_during_open(no_unclosed_bus_warning):
    with adapter_that_drops_after_open() as path:
        link = SlcanLink(path, open_reply_timeout_s=5.0)
        with pytest.raises(LinkError, match=f"cannot open the CAN adapter on '{path}'") as failed:
            link.open()
        assert len(str(failed.value).splitlines()) == 1
        assert not link.is_open and fds_on(path) == 0


def test_connect_fails_cleanly_when_the_adapter_drops(no_unclosed_bus_warning):
    with adapter_that_drops_after_open() as path:
        arm = ARXArm(ArmConfig(path))
        arm.link.open_reply_timeout_s = 5.0
        with pytest.raises(LinkError, match=path):
            arm.connect()
        assert not arm.is_connected and not arm.link.is_open and fds_on(path) == 0


def test_open_on_a_hung_adapter_fails_within_the_write_deadline(no_unclosed_bus_warning):
    """The adapter reads nothing and the OS buffer towards it is full before we open: python-can's
    first command cannot go out. Before, open wrote without a deadline (forever)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    filler = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        refused = 0
        while refused < 5:  # the pty frees room asynchronously for a moment after the first refusal
            try:
                os.write(filler, b"t0048" + b"0" * 16 + b"\r")
                refused = 0
            except BlockingIOError:
                refused += 1
                time.sleep(0.01)
        before = fds_on(path)
        t0 = time.monotonic()
        with pytest.raises(LinkError, match="stopped reading") as failed:
            SlcanLink(path).open()
        took = time.monotonic() - t0
        assert fds_on(path) == before
    finally:
        for fd in (filler, master, slave):
            os.close(fd)
    assert took <= 0.05 + 0.2 + 0.3  # one write deadline, then the port closed
    assert len(str(failed.value).splitlines()) == 1 and path in str(failed.value)
    bound("open on a hung adapter", open_fails_after=took)
