"""The scripted expert: 14-D joint-target trajectories at 50 Hz for both tasks.

docs/reference/model.md: the ARX setup runs **14-D state and action** (two arms x (6 joints + gripper)) at
**50 Hz**; the gripper dimension is the finger width in metres, 0..0.088 (drivers/profiles.py).
The expert plans in the world frame and solves the joints with kinematics.inverse_world at a few
waypoints, joined by minimum-jerk segments in joint space (smooth, rate-limit friendly: each
segment's peak speed is at most half of the X5's joint and gripper speed limits, docs/reference/arx.md), so the
kinematic backend tracks every target exactly.

A pick: reach above the prop with the gripper opening (0.04 m above its top, vertical gripper),
descend to grasp height (half the prop's height, 8 mm..30 mm above its bottom), close (the action
asks for 0 m: the fingers stop on the prop), lift. A place: carry above the point at a height that
clears everything else on the table, lower to the surface, open, lift clear, and return the arm to
where the episode started. The arm that moves is the scene's choice (math_game.py, toy_placement.py:
the arm nearer the prop); the other arm holds its targets.
"""

from __future__ import annotations

import numpy as np

from chatvla2.contract.embodiment import ARM_SLICES, CONTROL_HZ, GRIPPER_INDICES, JOINT_SLICES
from chatvla2.drivers.profiles import X5
from chatvla2.sim.tasks.kinematics import GRIPPER_MAX_M, inverse_world

SPEED_SHARE = 0.5  # peak speed of a segment, as a share of the limit
VELOCITY_MAX = np.array(X5.velocity_max + (X5.gripper.speed_max_m_s,))  # per arm: 6 joints (rad/s), gripper (m/s)
MIN_JERK_PEAK = 1.875  # peak / mean speed of a minimum-jerk profile
HOVER_M = 0.04
CLEARANCE_M = 0.03


def _min_jerk(s: np.ndarray) -> np.ndarray:
    return s**3 * (10 - 15 * s + 6 * s * s)


def grasp_height(prop) -> float:
    """Gripper point above the prop's bottom when closing on it."""
    return float(np.clip(0.5 * prop.height, 0.008, 0.03))


def open_width(prop) -> float:
    return float(min(GRIPPER_MAX_M - 0.002, prop.grasp_width + 0.02))


class Trajectory:
    """Joint targets built segment by segment; `targets` is the last commanded 14-D target."""

    def __init__(self, start: np.ndarray):
        self.targets = np.array(start, dtype=float)
        self.rows: list[np.ndarray] = []
        self.seeds = [None, None]  # last IK solution per arm: keeps each solve on the same branch

    def segment(self, arm: int, joints=None, width=None, min_s: float = 0.3) -> None:
        start = self.targets.copy()
        end = start.copy()
        sl = ARM_SLICES[arm]
        if joints is not None:
            end[JOINT_SLICES[arm]] = joints
        if width is not None:
            end[GRIPPER_INDICES[arm]] = width
        mean_speed = SPEED_SHARE * VELOCITY_MAX / MIN_JERK_PEAK
        seconds = max(min_s, float(np.max(np.abs(end[sl] - start[sl]) / mean_speed)))
        n = max(1, int(np.ceil(seconds * CONTROL_HZ)))
        s = _min_jerk(np.arange(1, n + 1) / n)[:, None]
        self.rows.extend(start + s * (end - start))
        self.targets = end

    def hold(self, seconds: float) -> None:
        self.rows.extend([self.targets.copy()] * int(round(seconds * CONTROL_HZ)))

    def reach(self, arm: int, point, width=None, min_s: float = 0.3) -> None:
        q = inverse_world(arm, point, self.seeds[arm])
        self.seeds[arm] = q
        self.segment(arm, q, width, min_s)

    def array(self) -> np.ndarray:
        return np.asarray(self.rows, dtype=np.float32)


def plan(scene, start_state: np.ndarray) -> np.ndarray:
    """(T, 14) float32 joint targets that carry out `scene.moves()` from `start_state`."""
    props = scene.make_props()
    traj = Trajectory(start_state)
    for move in scene.moves():
        kind, arm = move[0], move[1]
        if kind == "pick":
            prop = props[move[2]]
            x, y, z0 = prop.position
            traj.reach(arm, (x, y, prop.top + HOVER_M), width=open_width(prop))
            traj.reach(arm, (x, y, z0 + grasp_height(prop)), min_s=0.6)
            traj.segment(arm, width=0.0, min_s=0.4)
            traj.hold(0.1)
            traj.reach(arm, (x, y, _carry_height(scene, props, move[2])), min_s=0.6)
        elif kind == "place":
            prop = props[move[2]]
            px, py, pz = move[3]
            traj.reach(arm, (px, py, _carry_height(scene, props, move[2])))
            traj.reach(arm, (px, py, pz + grasp_height(prop) + 0.004), min_s=0.6)
            traj.segment(arm, width=open_width(prop), min_s=0.3)
            traj.reach(arm, (px, py, pz + prop.height + HOVER_M), min_s=0.5)
        elif kind == "retreat":
            traj.segment(arm, np.asarray(start_state[JOINT_SLICES[arm]]), width=float(start_state[GRIPPER_INDICES[arm]]))
        else:
            raise ValueError(f"unknown expert move {kind!r}")
    traj.hold(0.3)
    return traj.array()


def _carry_height(scene, props, index: int) -> float:
    """Gripper height that keeps the carried prop CLEARANCE_M above everything else (shelf included)."""
    prop = props[index]
    tops = [p.top for i, p in enumerate(props) if i != index] + [getattr(scene, "furniture_top", 0.0)]
    clear = max(tops) + CLEARANCE_M + grasp_height(prop)
    return max(clear, prop.position[2] + grasp_height(prop) + 0.08)  # and a visible 8 cm lift
