"""The robot the control loop drives, behind `get_state / send_action / damping / disconnect`.

- `BimanualRobot`: the drivers' `BimanualARX` (two ARX arms, two SLCAN adapters) as a 14-D
  robot: state = left (6 joint positions, gripper width), then right (contract/embodiment.py).
- `open_robot(left_port, right_port)`: connects both arms. Simulated arms are the same path on
  ptys (`sim.robot` starts them and passes their device paths).
- Feedback timeout: no reply from a motor for this long is a CommunicationLost fault (the arm
  damps). Default for real arms: the drivers' `ControllerConfig.feedback_timeout_s` (50 ms, 25
  cycles at 500 Hz); `sim.robot` uses 200 ms on simulated arms; `chatvla2 run --feedback-timeout`
  sets it, within (0, `MAX_FEEDBACK_TIMEOUT_S`].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from chatvla2.contract.embodiment import ARMS
from chatvla2.contract.errors import InvalidInput
from chatvla2.runtime.numbers import is_finite_number

# Above this the arm would run blind too long before damping on a lost link.
MAX_FEEDBACK_TIMEOUT_S = 1.0


def default_feedback_timeout() -> float:
    """The drivers' default feedback timeout for real arms (ControllerConfig)."""
    from chatvla2.drivers.controller import ControllerConfig

    return ControllerConfig().feedback_timeout_s


def check_feedback_timeout(seconds: float) -> float:
    if not is_finite_number(seconds) or not 0 < seconds <= MAX_FEEDBACK_TIMEOUT_S:
        raise InvalidInput(f"--feedback-timeout must be within (0, {MAX_FEEDBACK_TIMEOUT_S:g}] seconds, got {seconds!r}")
    return float(seconds)


class BimanualRobot:
    def __init__(self, robot, after_disconnect: Sequence[Callable[[], None]] = ()):
        self.robot = robot
        self.after_disconnect = list(after_disconnect)

    def get_state(self) -> np.ndarray:
        """The 14-D state (contract/embodiment.py): per arm in `ARMS` order, its joint positions, then
        its gripper width."""
        obs = self.robot.get_observation()
        parts: list = []
        for arm in ARMS:
            parts += [obs[f"{arm}_joint_positions"], [obs[f"{arm}_gripper_width"]]]
        return np.concatenate(parts).astype(np.float32)

    def send_action(self, action) -> np.ndarray:
        return self.robot.send_action(action)

    def damping(self) -> None:
        self.robot.damping()

    def disconnect(self) -> None:
        """Damping (the driver's disconnect_damping_s), then disable, then close; then the
        `after_disconnect` callbacks."""
        try:
            self.robot.disconnect()
        finally:
            _run_all(self.after_disconnect)

    @property
    def interventions(self) -> dict:
        return self.robot.interventions

    @property
    def feedback_timeout_s(self) -> float:
        """What the arms' controllers use (both arms share one setting)."""
        return self.robot.left.config.controller.feedback_timeout_s

    def damping_sent_at(self, timeout_s: float = 0.2) -> float | None:
        """time.monotonic() when both arms had sent their first damping command (waits up to
        `timeout_s` for it); None if an arm is not connected or did not send it."""
        times = []
        for arm in (self.robot.left, self.robot.right):
            controller = arm.controller
            times.append(None if controller is None else controller.wait_damping_sent(timeout_s))
        return None if None in times else max(times)


def open_robot(left_port: str, right_port: str, profile: str = "x5", disconnect_damping_s: float = 2.0,
               feedback_timeout_s: float | None = None, after_disconnect: Sequence[Callable[[], None]] = ()) -> BimanualRobot:
    """Two ARX arms on their SLCAN adapters, connected (enabled). `after_disconnect` runs after the
    arms are disabled (and if connecting fails): e.g. stopping simulated arms."""
    from chatvla2.drivers.arm import ArmConfig, ARXArm
    from chatvla2.drivers.bimanual import BimanualARX
    from chatvla2.drivers.controller import ControllerConfig

    try:
        if not left_port or not right_port:
            raise InvalidInput("an ARX robot needs two adapters: --port LEFT --port RIGHT (or --left-port/--right-port)")
        if feedback_timeout_s is None:
            controller = ControllerConfig()
        else:
            controller = ControllerConfig(feedback_timeout_s=check_feedback_timeout(feedback_timeout_s))
        arms = [ARXArm(ArmConfig(port, profile=profile, controller=controller, disconnect_damping_s=disconnect_damping_s))
                for port in (left_port, right_port)]
        robot = BimanualARX(*arms).connect()
    except BaseException:
        _run_all(after_disconnect)
        raise
    return BimanualRobot(robot, after_disconnect)


def _run_all(callbacks) -> None:
    for callback in callbacks:
        callback()
