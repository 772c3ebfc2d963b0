"""`chatvla2 arm --port PORT [--profile x5] status|enable|home|damp` (`--sim`: see sim/cli.py).

status  read every motor (a damping command each: nothing is enabled) and print a table
enable  enable every motor, print the table, leave them enabled (limp until commanded); refuses,
        disabling every motor again, on a silent motor or a motor error
home    enable, move slowly (20 % of the velocity limits) to the home pose, then damp and disable
damp    enable, damp for 2 s, disable

Ctrl-C, SIGTERM and SIGHUP all stop the same way: damping, then disable, then exit 130 (SIGINT) or
128 + the signal number, with one line saying whether every motor confirmed the disable. A disable
that was not sent or not confirmed is never reported as success (one line, exit 2).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from chatvla2.drivers.arm import ArmConfig, ARXArm
from chatvla2.drivers.arm_command_config import ArmCommandConfig
from chatvla2.drivers.errors import DriverDeviceError, DriverUserError
from chatvla2.drivers.motor_frames import JOINT_NAMES, MotorReading
from chatvla2.drivers.stop_signals import StopSignals

HOME_VELOCITY_SCALE = 0.2
HOME_TIMEOUT_S = 30.0
HOME_TOLERANCE_RAD = 0.02


class MotorsNotAnswering(DriverDeviceError):
    pass


class ArmNotDisabled(DriverDeviceError):
    """The command ended but the arm was not (confirmed) disabled."""


class HomeNotReached(DriverUserError, TimeoutError):
    """The arm did not reach the home pose in time."""


def format_table(arm: ARXArm, readings: dict[int, MotorReading]) -> str:
    head = f"{'joint':8} {'id':>3} {'motor':9} {'state':24} {'pos rad':>9} {'vel rad/s':>9} {'torque Nm':>9} {'temp C':>6}"
    rows = [head, "-" * len(head)]
    for i, (motor_id, model) in enumerate(zip(arm.profile.motor_ids, arm.profile.motors)):
        r = readings.get(i)
        if r is None:
            rows.append(f"{JOINT_NAMES[i]:8} {motor_id:>3} {model.name:9} {'NO REPLY':24}")
            continue
        vel = "-" if r.velocity is None else f"{r.velocity:9.3f}"
        rows.append(
            f"{JOINT_NAMES[i]:8} {motor_id:>3} {model.name:9} {r.state:24} {r.position:9.3f} {vel:>9} "
            f"{r.torque:9.2f} {r.temperature_c:6.0f}"
        )
    g = arm.profile.gripper
    if 6 in readings:
        rows.append(f"gripper width {g.angle_to_width(readings[6].position) * 1000:.1f} mm")
    return "\n".join(rows)


def _report(arm: ARXArm, readings: dict[int, MotorReading], port: str) -> int:
    print(f"ARX {arm.profile.name.upper()} on {port}")
    print(format_table(arm, readings))
    missing = [f"motor {arm.profile.motor_ids[i]}" for i in range(len(arm.profile.motor_ids)) if i not in readings]
    if missing:
        raise MotorsNotAnswering(f"no reply from {', '.join(missing)} on {port} (is the arm powered?)")
    return 0


def arm_main(config: ArmCommandConfig) -> int:
    """`config.port`: the adapter (`chatvla2 arm --sim` goes through `sim.cli.arm_with_sim_main`,
    which starts a simulated arm and passes its pty here)."""
    port = config.port
    arm_config = ArmConfig(port, profile=config.profile, velocity_scale=HOME_VELOCITY_SCALE if config.action == "home" else 1.0)
    if config.feedback_timeout_s is not None:
        arm_config = arm_config.with_feedback_timeout(config.feedback_timeout_s)
    arm = ARXArm(arm_config)
    if not arm.profile.verified:
        print(f"warning: the {arm.profile.name} profile is unverified (assembled by analogy with the X5)", file=sys.stderr)
    with StopSignals() as stops:
        if config.action == "status":  # nothing is enabled: a stop only changes the exit code
            try:
                code = _report(arm, arm.read_motors(), port)
            finally:
                arm.link.close()
            return _stopped(stops, None) if stops.requested else code
        if config.action == "enable":
            return _enable(arm, port, stops)
        return _enabled_then_disabled(arm, config.action, stops)


def _enable(arm: ARXArm, port: str, stops: StopSignals) -> int:
    try:
        readings = arm.enable_and_read()  # refuses with every motor disabled again
    except Exception as exc:
        if getattr(exc, "readings", None):
            print(f"ARX {arm.profile.name.upper()} on {port}")
            print(format_table(arm, exc.readings))
        shutdown = getattr(exc, "shutdown", None)
        if shutdown is not None and shutdown.connected:
            after = "every motor disabled again" if shutdown.safe else shutdown.summary()
            exc.args = (f"{exc}; {after}",)  # one line: the refusal and what became of the motors
        raise
    _report(arm, readings, port)
    if stops.requested:  # asked to stop while enabling: leave nothing enabled
        return _stopped(stops, arm.disconnect())
    arm.link.close()  # the motors stay enabled, as asked
    return 0


def _enabled_then_disabled(arm: ARXArm, action: str, stops: StopSignals) -> int:
    """`home` / `damp`: whatever happens (an error, a fault, a stop signal) the arm is damped, then
    disabled, and the exit code says whether that was confirmed."""
    error: BaseException | None = None
    try:
        arm.connect()
        if not stops.requested:
            if action == "damp":
                arm.damping()
                print(f"damping for {arm.config.disconnect_damping_s:.0f} s, then disabling", flush=True)
            else:
                _home(arm, stops)
    except BaseException as exc:  # noqa: BLE001 - re-raised after the arm is safe
        error = exc
    report = arm.disconnect()
    if stops.requested:
        return _stopped(stops, report, error)
    if not report.safe:
        raise ArmNotDisabled(report.summary() + (f" (after: {error})" if error else "")) from error
    if error is not None:
        raise error
    print(report.summary())
    return 0


def _stopped(stops: StopSignals, report, error: BaseException | None = None) -> int:
    what = report.summary() if report is not None else "nothing was enabled"
    if error is not None:
        what += f" (after: {error})"
    try:
        print(f"chatvla2 arm: stopped by {stops.name}: {what}", file=sys.stderr, flush=True)
    except OSError:  # SIGHUP: the terminal may be gone
        pass
    return stops.exit_code


def _home(arm: ARXArm, stops: StopSignals) -> None:
    home = np.array(arm.profile.home + (0.0,))
    start = time.monotonic()
    while not stops.requested:
        arm.send_action(home)  # re-sent at 50 Hz so the target watchdog never holds it
        obs = arm.get_observation()
        error = float(np.max(np.abs(obs["joint_positions"] - home[:6])))
        if error < HOME_TOLERANCE_RAD:
            print(f"home reached in {time.monotonic() - start:.1f} s (largest joint error {error:.3f} rad)", flush=True)
            return
        if time.monotonic() - start > HOME_TIMEOUT_S:
            raise HomeNotReached(f"home not reached within {HOME_TIMEOUT_S:.0f} s (largest joint error {error:.3f} rad)")
        stops.sleep(0.02)
