"""`chatvla2 arm --port PORT [--profile x5] status|enable|home|damp` (`--sim`: see sim/cli.py).

status  read every motor (a damping command each: nothing is enabled) and print a table
enable  enable every motor, print the table, leave them enabled (limp until commanded)
home    enable, move slowly (20 % of the velocity limits) to the home pose, then damp and disable
damp    enable, damp for 2 s, disable
"""

from __future__ import annotations

import sys
import time

import numpy as np

from drivers.arm import ArmConfig, ARXArm
from drivers.motor_frames import JOINT_NAMES, MotorReading

HOME_VELOCITY_SCALE = 0.2
HOME_TIMEOUT_S = 30.0
HOME_TOLERANCE_RAD = 0.02


class MotorsNotAnswering(OSError):
    pass


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


def arm_main(args) -> int:
    """`args.port`: the adapter (`chatvla2 arm --sim` goes through `sim.cli.arm_with_sim_main`,
    which starts a simulated arm and passes its pty here)."""
    port = args.port
    arm = ARXArm(ArmConfig(port, profile=args.profile, velocity_scale=HOME_VELOCITY_SCALE if args.action == "home" else 1.0))
    if not arm.profile.verified:
        print(f"warning: the {arm.profile.name} profile is unverified (assembled by analogy with the X5)", file=sys.stderr)
    if args.action == "status":
        try:
            return _report(arm, arm.read_motors(), port)
        finally:
            arm.link.close()
    if args.action == "enable":
        arm.link.open()
        try:
            return _report(arm, arm.enable_and_read(), port)
        finally:
            arm.link.close()
    if args.action == "damp":
        with arm:
            arm.damping()
            print(f"damping for {arm.config.disconnect_damping_s:.0f} s, then disabling")
        return 0
    return _home(arm)


def _home(arm: ARXArm) -> int:
    home = np.array(arm.profile.home + (0.0,))
    with arm:
        start = time.monotonic()
        while True:
            arm.send_action(home)  # re-sent at 50 Hz so the target watchdog never holds it
            obs = arm.get_observation()
            error = float(np.max(np.abs(obs["joint_positions"] - home[:6])))
            if error < HOME_TOLERANCE_RAD:
                print(f"home reached in {time.monotonic() - start:.1f} s (largest joint error {error:.3f} rad)")
                return 0
            if time.monotonic() - start > HOME_TIMEOUT_S:
                raise TimeoutError(f"home not reached within {HOME_TIMEOUT_S:.0f} s (largest joint error {error:.3f} rad)")
            time.sleep(0.02)
