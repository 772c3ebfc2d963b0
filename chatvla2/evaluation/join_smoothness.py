"""How smooth the motion is where one action chunk hands over to the next (issue 24's measure).

From the joint targets actually sent, one per control step (T, 14): the joint velocity
v_t = (x_t - x_{t-1}) * rate (rad/s) and acceleration a_t = (v_t - v_{t-1}) * rate (rad/s^2), arm
joints only (a gripper opens and closes in steps by design). At a join step j (the first action
of a new chunk) the velocity jump is |v_j - v_{j-1}| and the acceleration |a_j|, the largest over
the joints. The reference is the scripted expert's own trajectories: the largest |v_t - v_{t-1}|
and |a_t| anywhere in them, so "2x the expert's largest" is a statement about the same quantity.
"""

from __future__ import annotations

import numpy as np

from chatvla2.contract.embodiment import CONTROL_HZ, JOINT_INDICES

ARM_JOINTS = list(JOINT_INDICES)


def derivatives(actions: np.ndarray, rate_hz: float = CONTROL_HZ) -> tuple[np.ndarray, np.ndarray]:
    """(velocity, acceleration), each (T, joints) with the first rows zero (no earlier step)."""
    x = np.asarray(actions, np.float64)[:, ARM_JOINTS]
    velocity = np.zeros_like(x)
    velocity[1:] = np.diff(x, axis=0) * rate_hz
    acceleration = np.zeros_like(x)
    acceleration[2:] = np.diff(velocity[1:], axis=0) * rate_hz
    return velocity, acceleration


def join_jumps(actions: np.ndarray, joins, rate_hz: float = CONTROL_HZ) -> dict[str, float | None]:
    """The largest velocity jump (rad/s) and acceleration (rad/s^2) at the join steps that have two
    earlier steps sent; None when there is none."""
    velocity, acceleration = derivatives(actions, rate_hz)
    steps = [j for j in joins if 2 <= j < len(velocity)]
    if not steps:
        return {"velocity_jump": None, "acceleration": None, "joins": 0}
    jumps = np.abs(velocity[steps] - velocity[[j - 1 for j in steps]])
    return {"velocity_jump": float(jumps.max()), "acceleration": float(np.abs(acceleration[steps]).max()), "joins": len(steps)}


def largest_anywhere(actions: np.ndarray, rate_hz: float = CONTROL_HZ) -> dict[str, float]:
    """The largest velocity jump and acceleration over every step of a trajectory (the expert's)."""
    velocity, acceleration = derivatives(actions, rate_hz)
    jumps = np.abs(np.diff(velocity[1:], axis=0))
    return {"velocity_jump": float(jumps.max(initial=0.0)), "acceleration": float(np.abs(acceleration).max(initial=0.0))}
