"""ARX X5 forward kinematics, a damped-least-squares inverse kinematics, and the two arms in the
world frame of the simulated tasks.

Link offsets and joint axes: docs/reference/arx.md, "Kinematics" (from the public X5 URDF). docs/reference/arx.md
gives the offsets without their frame flips; those come from the same URDF
(real-stanford/arx5-sdk, models/X5.urdf): joint3 sits at (-0.264, 0, 0) with rpy (-pi, 0, 0), so at
all-zero the upper arm points backwards and the forearm folds forwards over it (the SDK's
`reset_to_home` pose), and joint6 carries a second (-pi, 0, 0) flip that undoes the first. The URDF
writes pi as 3.1416; we use pi (7e-6 rad apart, under a micron at the gripper).

World frame (a project choice, used by every task here): metres, origin on the table top midway
between the two arm bases, x forward (away from the robot, towards the whiteboard), y to the
robot's left, z up. Both bases sit on the table top facing +x, the left one at y = +0.3, the right
one at y = -0.3. "Gripper position" is the URDF's `eef_link` (0.145 m beyond joint6 along its x):
the point between the finger tips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from chatvla2.contract.embodiment import JOINTS_PER_ARM
from chatvla2.drivers.profiles import X5

# Joint limits of the X5 (drivers/profiles.py, from docs/reference/arx.md "Limits used by the public SDK").
Q_MIN = np.array(X5.position_min)
Q_MAX = np.array(X5.position_max)
GRIPPER_MAX_M = X5.gripper.width_m  # 0.088 m (docs/reference/arx.md)
JOINTS = JOINTS_PER_ARM  # joints 1..6 (contract/embodiment.py)

LEFT_BASE = np.array([0.0, 0.3, 0.0])  # project choice (see the module docstring)
RIGHT_BASE = np.array([0.0, -0.3, 0.0])
BASES = (LEFT_BASE, RIGHT_BASE)  # in the order of the 14-D state's arms (contract/embodiment.py ARMS)


def _translate(x: float, y: float, z: float) -> np.ndarray:
    t = np.eye(4)
    t[:3, 3] = (x, y, z)
    return t


def _flip_x() -> np.ndarray:
    """rpy (-pi, 0, 0): a half turn about x (y -> -y, z -> -z); exact, no 3.1416 rounding."""
    return np.diag([1.0, -1.0, -1.0, 1.0])


# (fixed transform from the parent joint frame, rotation axis) for joints 1..6 (docs/reference/arx.md + X5.urdf).
_CHAIN = (
    (_translate(0.0, 0.0, 0.0603), "z"),  # joint1 yaw
    (_translate(0.02, 0.0, 0.0402), "y"),  # joint2 pitch
    (_translate(-0.264, 0.0, 0.0) @ _flip_x(), "y"),  # joint3 pitch, upper arm 0.264
    (_translate(0.245, 0.0, -0.056), "y"),  # joint4 pitch
    (_translate(0.06575, -0.001, -0.0825), "z"),  # joint5 yaw
    (_translate(0.02845, 0.0, 0.0825) @ _flip_x(), "x"),  # joint6 roll
)
_EEF = _translate(0.145, 0.0, 0.0)  # gripper_fixed_joint: 0.145 m along link6's x


def _rotation(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    r = np.eye(4)
    if axis == "z":
        r[0, 0], r[0, 1], r[1, 0], r[1, 1] = c, -s, s, c
    elif axis == "y":
        r[0, 0], r[0, 2], r[2, 0], r[2, 2] = c, s, -s, c
    else:
        r[1, 1], r[1, 2], r[2, 1], r[2, 2] = c, -s, s, c
    return r


@dataclass(frozen=True)
class ArmPose:
    """Forward kinematics of one arm, in the frame it was computed in (base or world).

    joints: (7, 3) origins of joints 1..6 and the gripper point; rotation: (3, 3) orientation of
    the gripper frame (column 0 = the direction the gripper points, column 1 = the axis along
    which the fingers open and close).
    """

    joints: np.ndarray
    rotation: np.ndarray

    @property
    def position(self) -> np.ndarray:
        return self.joints[-1]

    @property
    def pointing(self) -> np.ndarray:
        return self.rotation[:, 0]

    @property
    def finger_axis(self) -> np.ndarray:
        return self.rotation[:, 1]


def forward(q, base=(0.0, 0.0, 0.0)) -> ArmPose:
    """Joint angles (6,) in rad -> the arm's joint origins and gripper pose, offset by `base`.

    At all-zero the gripper is at (0.2402, 0.001, 0.1565) from the base, pointing along +x.
    """
    t = np.eye(4)
    t[:3, 3] = base
    points = np.empty((JOINTS + 1, 3))
    for i, ((fixed, axis), angle) in enumerate(zip(_CHAIN, q[:JOINTS])):
        t = t @ fixed
        points[i] = t[:3, 3]
        t = t @ _rotation(axis, float(angle))
    t = t @ _EEF
    points[JOINTS] = t[:3, 3]
    return ArmPose(points, t[:3, :3].copy())


DOWN = np.array([0.0, 0.0, -1.0])
# Weight of the pointing error against the position error (m per unit of direction): enough to
# keep the gripper vertical to a fraction of a degree without slowing the position convergence.
_POINTING_WEIGHT = 0.2


class IKError(RuntimeError):
    pass


def _ik_error(q: np.ndarray, target: np.ndarray, tilt: float) -> np.ndarray:
    pose = forward(q)
    return np.concatenate([target - pose.position, _POINTING_WEIGHT * (tilted_down(q[0], tilt) - pose.pointing)])


def tilted_down(yaw: float, tilt: float) -> np.ndarray:
    """Straight down, tipped by `tilt` rad away from the base in the arm's vertical plane (the plane
    of joint1's `yaw`: with joints 5 and 6 at 0 the gripper cannot point out of it)."""
    return np.array([math.cos(yaw) * math.sin(tilt), math.sin(yaw) * math.sin(tilt), -math.cos(tilt)])


# A seed with the gripper pointing down about 0.35 m in front of the base, found once with this
# solver from a hand-picked elbow-up guess; every solve starts from it, turned towards the target,
# so the solver always lands on the same (elbow-up) branch.
_SEED = np.array([0.0, 1.0, 1.2, -0.8, 0.0, 0.0])


def inverse(target, q0=None, tilt: float = 0.0, tol: float = 1e-5, max_iter: int = 60,
            damping: float = 0.02) -> np.ndarray:
    """Joint angles (6,) that put the gripper at `target` (base frame, m) pointing straight down
    (or tipped `tilt` rad outwards, see `tilted_down`).

    Damped least squares over joints 1-4 (yaw and the three pitches); joints 5 and 6 stay at 0:
    with the gripper vertical they only turn the fingers, which the tasks do not need. The
    Jacobian is numeric (forward differences). Joint limits are enforced at every iteration.
    Raises IKError when the residual stays above `tol` (the point is out of reach).
    """
    target = np.asarray(target, dtype=float)
    if q0 is None:
        q = _SEED.copy()
        q[0] = math.atan2(target[1], target[0])
    else:
        q = np.array(q0, dtype=float)
    active = 4
    eps = 1e-6
    error = _ik_error(q, target, tilt)
    for i in range(max_iter):
        norm = float(np.linalg.norm(error))
        if norm < tol:
            return q
        if i >= 20 and norm > 100 * tol:
            break  # converged to a joint limit, not to the target: out of reach (saves the rest)
        jac = np.empty((6, active))
        for j in range(active):
            dq = q.copy()
            dq[j] += eps
            jac[:, j] = (error - _ik_error(dq, target, tilt)) / eps  # d(pose)/dq = -d(error)/dq
        step = jac.T @ np.linalg.solve(jac @ jac.T + damping**2 * np.eye(6), error)
        q[:active] = np.clip(q[:active] + step, Q_MIN[:active], Q_MAX[:active])
        error = _ik_error(q, target, tilt)
    if np.linalg.norm(error) < tol:
        return q
    raise IKError(f"no joint solution puts the gripper at {np.round(target, 4).tolist()} pointing "
                  f"{tilt:.2f} rad off vertical (residual {np.linalg.norm(error):.2e})")


# The wrist cannot keep the gripper vertical much above 0.15 m (joint4 reaches its -1.6 rad limit,
# docs/reference/arx.md): higher waypoints (lifting, carrying) accept the gripper tipped outwards by these steps.
TILTS = (0.0, 0.3, 0.6, 0.9)


def inverse_world(arm: int, target_world, q0=None, tilts=TILTS) -> np.ndarray:
    """`inverse` for a target in the world frame, for arm 0 (left) or 1 (right), trying each tilt
    of `tilts` in turn: the gripper is as vertical as the joint limits allow."""
    local = np.asarray(target_world, dtype=float) - BASES[arm]
    for tilt in tilts[:-1]:
        try:
            return inverse(local, q0, tilt)
        except IKError:
            pass
    return inverse(local, q0, tilts[-1])


def reach(arm: int, point_world) -> float:
    """Horizontal distance (m) from the arm's base to a world point: how far the arm must reach."""
    d = np.asarray(point_world, dtype=float)[:2] - BASES[arm][:2]
    return float(math.hypot(d[0], d[1]))


# The horizontal band, from each base, where `inverse_world` keeps the gripper vertical from the
# table top up to 0.12 m above it (tests/sim/tasks/test_kinematics.py checks it): tasks put every
# grasp and every placement inside it.
REACH_MIN = 0.18
REACH_MAX = 0.44
VERTICAL_MAX_Z = 0.12
