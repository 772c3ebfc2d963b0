"""The robot the control loop drives, behind `get_state / send_action / damping / disconnect`.

- `BimanualRobot`: the drivers' `BimanualARX` (two ARX arms, two SLCAN adapters) as a 14-D
  robot: state = left (6 joint positions, gripper width), then right.
- `open_robot(left_port, right_port)`: connects both arms. Simulated arms are the same path on
  ptys (`sim.robot` starts them and passes their device paths).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


class BimanualRobot:
    def __init__(self, robot, after_disconnect: Sequence[Callable[[], None]] = ()):
        self.robot = robot
        self.after_disconnect = list(after_disconnect)

    def get_state(self) -> np.ndarray:
        obs = self.robot.get_observation()
        return np.concatenate([
            obs["left_joint_positions"], [obs["left_gripper_width"]],
            obs["right_joint_positions"], [obs["right_gripper_width"]],
        ]).astype(np.float32)

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


def open_robot(left_port: str, right_port: str, profile: str = "x5", disconnect_damping_s: float = 2.0,
               feedback_timeout_s: float | None = None, after_disconnect: Sequence[Callable[[], None]] = ()) -> BimanualRobot:
    """Two ARX arms on their SLCAN adapters, connected (enabled). `after_disconnect` runs after the
    arms are disabled (and if connecting fails): e.g. stopping simulated arms."""
    from drivers.arm import ArmConfig, ARXArm
    from drivers.bimanual import BimanualARX
    from drivers.controller import ControllerConfig

    if not left_port or not right_port:
        raise ValueError("an ARX robot needs two adapters: --port LEFT --port RIGHT (or --left-port/--right-port)")
    controller = ControllerConfig() if feedback_timeout_s is None else ControllerConfig(feedback_timeout_s=feedback_timeout_s)
    try:
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
