"""Arm profiles (ARX X5, L5, R5): motor ids, motor models, limits, gains, gripper calibration.

Every number marked `docs/reference/arx.md` comes from docs/reference/arx.md (the public ARX5 SDK and Damiao
documentation); numbers marked `project choice` are ours. Codecs take their ranges from here.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

from chatvla2.drivers.damiao import DamiaoRanges
from chatvla2.drivers.ec_a4310 import EcRanges
from chatvla2.drivers.errors import DriverUserError


@dataclass(frozen=True)
class MotorModel:
    """A motor model: which codec speaks to it, the ranges flashed into it, its torque constant."""

    name: str
    family: str  # "damiao" or "ec"
    ranges: DamiaoRanges | EcRanges
    torque_constant: float  # N*m per frame torque unit (docs/reference/arx.md: the command carries torque / Kt)

    @property
    def frame_torque_limit(self) -> float:
        """Largest torque (N*m) the frame's torque field can carry."""
        r = self.ranges
        return (r.t_max if isinstance(r, DamiaoRanges) else r.i_max) * self.torque_constant


# docs/reference/arx.md: ranges as flashed on ARX arms: position +-12.5 rad, velocity +-45 rad/s, torque +-18,
# kp 0..500, kd 0..5. Torque constants: DM-J4310 0.424, DM-J4340 1.0 N*m/A.
DM_J4310 = MotorModel("DM-J4310", "damiao", DamiaoRanges(p_max=12.5, v_max=45.0, t_max=18.0), 0.424)
DM_J4340 = MotorModel("DM-J4340", "damiao", DamiaoRanges(p_max=12.5, v_max=45.0, t_max=18.0), 1.0)
# docs/reference/arx.md: EC-A4310: position +-12.5 rad, velocity +-18 rad/s, current +-30, kp 0..500, kd 0..5;
# torque constant 1.4 N*m/A.
EC_A4310 = MotorModel("EC-A4310", "ec", EcRanges(p_max=12.5, v_max=18.0, i_max=30.0), 1.4)


@dataclass(frozen=True)
class GripperCalibration:
    """gripper width (m) = motor angle / open_readout_rad * width_m (docs/reference/arx.md)."""

    open_readout_rad: float = 5.03
    width_m: float = 0.088
    speed_max_m_s: float = 0.3
    torque_max: float = 1.5
    kp: float = 5.0
    kd: float = 0.2
    damping_kd: float = 0.5  # project choice

    def width_to_angle(self, width_m: float) -> float:
        return width_m / self.width_m * self.open_readout_rad

    def angle_to_width(self, angle_rad: float) -> float:
        return angle_rad / self.open_readout_rad * self.width_m

    @property
    def angle_speed_max(self) -> float:
        return abs(self.width_to_angle(self.speed_max_m_s))


# One arm, whatever its profile: its joints 1..6 and its gripper, in motor order (motor_frames.py) and in
# the order of the arm's state and action (joint positions in rad, then the gripper width in m). The
# robot the policy drives is two of these (contract/embodiment.py composes the pair).
ARM_JOINTS = ("joint1", "joint2", "joint3", "joint4", "joint5", "joint6")
ARM_GRIPPER = "gripper"
ARM_DIMS = ARM_JOINTS + (ARM_GRIPPER,)


@dataclass(frozen=True)
class ArmProfile:
    """One ARX arm: 6 joints + gripper (ARM_DIMS). Joint arrays are in joint order 1..6."""

    name: str
    joint_ids: tuple[int, ...]
    gripper_id: int
    joint_motors: tuple[MotorModel, ...]
    gripper_motor: MotorModel
    position_min: tuple[float, ...]
    position_max: tuple[float, ...]
    velocity_max: tuple[float, ...]
    torque_max: tuple[float, ...]
    kp: tuple[float, ...]
    kd: tuple[float, ...]
    damping_kd: tuple[float, ...]
    gripper: GripperCalibration
    home: tuple[float, ...] = (0.0,) * len(ARM_JOINTS)  # docs/reference/arx.md: SDK reset_to_home is all-zero
    temperature_max_c: float = 80.0  # project choice: host-side over-temperature threshold
    verified: bool = True  # False: a profile assembled by analogy, not from a datasheet

    @property
    def motor_ids(self) -> tuple[int, ...]:
        return self.joint_ids + (self.gripper_id,)

    @property
    def motors(self) -> tuple[MotorModel, ...]:
        return self.joint_motors + (self.gripper_motor,)

    @property
    def num_joints(self) -> int:
        return len(self.joint_ids)

    @property
    def action_low(self) -> tuple[float, ...]:
        """Lowest value of each action dimension: joint positions (rad), then the gripper width (m)."""
        return self.position_min + (0.0,)

    @property
    def action_high(self) -> tuple[float, ...]:
        """Highest value of each action dimension: joint positions (rad), then the gripper width (m)."""
        return self.position_max + (self.gripper.width_m,)


# docs/reference/arx.md, "Limits used by the public SDK for X5/L5", joints 1..6.
_POSITION_MIN = (-3.14, -0.05, -0.1, -1.6, -1.57, -2.0)
_POSITION_MAX = (2.618, 3.50, 3.20, 1.55, 1.57, 2.0)
_VELOCITY_MAX = (5.0, 5.0, 5.5, 5.5, 5.0, 5.0)
_TORQUE_MAX = (30.0, 40.0, 30.0, 15.0, 10.0, 10.0)
_KP = (80.0, 70.0, 70.0, 30.0, 30.0, 20.0)
_KD = (2.0, 2.0, 2.0, 1.0, 1.0, 0.7)
_DAMPING_KD = (5.0, 5.0, 5.0, 1.5, 1.5, 1.0)  # project choice ("damping: kp = 0, raised kd")
_JOINT_IDS = (1, 2, 4, 5, 6, 7)  # docs/reference/arx.md: motor CAN ids of joints 1..6
_GRIPPER_ID = 8

X5 = ArmProfile(
    name="x5",
    joint_ids=_JOINT_IDS,
    gripper_id=_GRIPPER_ID,
    joint_motors=(EC_A4310, EC_A4310, EC_A4310, DM_J4310, DM_J4310, DM_J4310),  # docs/reference/arx.md
    gripper_motor=DM_J4310,
    position_min=_POSITION_MIN,
    position_max=_POSITION_MAX,
    velocity_max=_VELOCITY_MAX,
    torque_max=_TORQUE_MAX,
    kp=_KP,
    kd=_KD,
    damping_kd=_DAMPING_KD,
    gripper=GripperCalibration(),
)

# The L5 differs from the X5 only in its first three joint motors (docs/reference/arx.md).
L5 = replace(X5, name="l5", joint_motors=(DM_J4340, DM_J4340, DM_J4340, DM_J4310, DM_J4310, DM_J4310))

# docs/reference/arx.md says only "L5 and R5 are similar" to the X5: the R5 profile reuses the X5 motor table and
# limits, and is marked unverified until someone checks it against an R5.
R5 = replace(X5, name="r5", verified=False)

PROFILES: dict[str, ArmProfile] = {p.name: p for p in (X5, L5, R5)}


class UnknownProfileError(DriverUserError, LookupError):
    pass


def get_profile(name: str) -> ArmProfile:
    """The named profile; a typo gets the closest name suggested."""
    key = name.strip().lower()
    if key in PROFILES:
        return PROFILES[key]
    close = difflib.get_close_matches(key, PROFILES, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UnknownProfileError(f"unknown arm profile '{name}'{hint}; known: {', '.join(PROFILES)}")
