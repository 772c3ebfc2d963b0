"""How the arms move under a 14-D joint target: the one thing the two stepping modes differ in.

`TaskEnv` (env.py) talks to an `ArmBackend` only:
- `reset(state) -> state`: put both arms at `state` (14-D: left 6 joints + gripper width, then
  right) and return the state actually reached;
- `apply(targets, finger_stops) -> state`: send one control period's targets (one step, 1/50 s)
  and return the measured state at the end of it. `finger_stops` (2,) is, per gripper, the width
  its fingers cannot close past because a prop is between them (props.py); 0 when nothing is.

`KinematicBackend` is the fast mode: no ptys, no time passes; each joint moves towards its target
by at most its velocity limit x 1/50 s (the X5's limits, drivers/profiles.py, docs/reference/arx.md), clipped to
the joint limits, and each gripper likewise at its 0.3 m/s, never closing past its stop.

The driver mode, `DriverBackend` (driver_backend.py): two simulated ARX X5 arms behind ptys
(sim/processes.py, sim/robot.py) driven through the real drivers at the control rate, in real
time. `reset` moves the arms to the state through the drivers and waits until they are still
there; `apply` sends the targets (`BimanualRobot.send_action`), waits for the next 50 Hz tick and
returns the measured joints and gripper widths (`get_state`). The simulated gripper has no prop to
stop on, so that backend honours `finger_stops` itself (the gripper is not commanded far past a
stop, its width never reads below one); the environment judges grasps on whatever state the
backend returns, measured in that mode.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from chatvla2.contract.embodiment import ARMS, CONTROL_HZ, DIM, GRIPPER_INDICES
from chatvla2.drivers.profiles import X5


class ArmBackend(Protocol):
    def reset(self, state: np.ndarray) -> np.ndarray: ...

    def apply(self, targets: np.ndarray, finger_stops: np.ndarray) -> np.ndarray: ...


def _per_arm(values) -> np.ndarray:
    return np.concatenate([np.asarray(values, dtype=float)] * len(ARMS))


LOW = _per_arm(X5.action_low)  # joints (rad) and gripper width (m), both arms
HIGH = _per_arm(X5.action_high)
STEP_MAX = _per_arm(X5.velocity_max + (X5.gripper.speed_max_m_s,)) / CONTROL_HZ


class KinematicBackend:
    """The fast mode: joints and grippers follow the targets under a per-step rate limit."""

    def __init__(self, step_max: np.ndarray = STEP_MAX):
        self.step_max = np.asarray(step_max, dtype=float)
        self.state = np.zeros(DIM)

    def reset(self, state: np.ndarray) -> np.ndarray:
        self.state = np.clip(np.asarray(state, dtype=float), LOW, HIGH)
        return self.state.copy()

    def apply(self, targets: np.ndarray, finger_stops: np.ndarray) -> np.ndarray:
        targets = np.clip(np.asarray(targets, dtype=float), LOW, HIGH)
        state = self.state + np.clip(targets - self.state, -self.step_max, self.step_max)
        for arm, g in enumerate(GRIPPER_INDICES):
            stop = float(finger_stops[arm])
            if self.state[g] >= stop:  # the fingers close onto the prop and stay there
                state[g] = max(state[g], stop)
        self.state = state
        return state.copy()
