"""The robot the policy drives, written once: two ARX arms as one 14-D state/action vector, at the
control rate. numpy-free, torch-free.

Control rate: `CONTROL_HZ` = 50, the rate of the ARX demonstrations ChatVLA-2 learns from
(docs/reference/model.md): one action per `CONTROL_PERIOD_S` (20 ms). The control loop's default
rate, the simulator's step, the expert's trajectories, the datasets' fps and the calibration's
control budget are this number. It is the policy's rate, not the motors': each arm's driver runs its
own 500 Hz controller (drivers/controller.py) that steps towards the latest target, and holds when no
target comes for its watchdog's 0.2 s (ten control periods). An int: the datasets store it as fps.

Layout (`BIMANUAL`): the arms in `ARMS` order (left, then right), each arm's dimensions the
drivers' (`drivers.profiles.ARM_DIMS`: joints 1..6, positions in rad, then the gripper's finger
width in m), concatenated:

    index  0..5  left joint1..joint6     6  left gripper
    index 7..12  right joint1..joint6   13  right gripper

State and action share it (`STATE_DIM` = `ACTION_DIM` = `DIM`). The per-arm facts stay in the
drivers (they import nothing of ours, and an arm is theirs); the drivers' `BimanualARX` puts the
two arms together in this same order (tests/contract/test_embodiment.py checks that it does).
"""

from __future__ import annotations

from dataclasses import dataclass

from chatvla2.drivers.profiles import ARM_GRIPPER, ARM_JOINTS

CONTROL_HZ = 50
CONTROL_PERIOD_S = 1.0 / CONTROL_HZ


@dataclass(frozen=True)
class BimanualLayout:
    """Arms side by side in one vector: each arm's joints, then its gripper."""

    arms: tuple[str, ...]
    joints: tuple[str, ...]  # one arm's joints, in order
    gripper: str

    @property
    def joints_per_arm(self) -> int:
        return len(self.joints)

    @property
    def arm_dim(self) -> int:
        """Dimensions per arm: its joints and its gripper."""
        return self.joints_per_arm + 1

    @property
    def dim(self) -> int:
        return len(self.arms) * self.arm_dim

    @property
    def names(self) -> tuple[str, ...]:
        """One name per dimension: "left_joint1" .. "left_gripper", "right_joint1" .. "right_gripper"."""
        return tuple(f"{arm}_{name}" for arm in self.arms for name in self.joints + (self.gripper,))

    def arm_slice(self, arm: int) -> slice:
        """Arm `arm`'s dimensions (its joints and its gripper)."""
        return slice(arm * self.arm_dim, (arm + 1) * self.arm_dim)

    def joint_slice(self, arm: int) -> slice:
        """Arm `arm`'s joints."""
        return slice(arm * self.arm_dim, arm * self.arm_dim + self.joints_per_arm)

    def gripper_index(self, arm: int) -> int:
        """Arm `arm`'s gripper width."""
        return arm * self.arm_dim + self.joints_per_arm

    @property
    def arm_slices(self) -> tuple[slice, ...]:
        return tuple(self.arm_slice(arm) for arm in range(len(self.arms)))

    @property
    def joint_slices(self) -> tuple[slice, ...]:
        return tuple(self.joint_slice(arm) for arm in range(len(self.arms)))

    @property
    def gripper_indices(self) -> tuple[int, ...]:
        return tuple(self.gripper_index(arm) for arm in range(len(self.arms)))

    @property
    def joint_indices(self) -> tuple[int, ...]:
        """Every joint dimension, in order (every dimension but the grippers)."""
        return tuple(i for s in self.joint_slices for i in range(s.start, s.stop))

    def index(self, name: str) -> int:
        """The dimension named `name` ("right_gripper" -> 13)."""
        return self.names.index(name)


BIMANUAL = BimanualLayout(arms=("left", "right"), joints=ARM_JOINTS, gripper=ARM_GRIPPER)

ARMS = BIMANUAL.arms  # ("left", "right"): arm index 0 is the left arm
JOINTS_PER_ARM = BIMANUAL.joints_per_arm  # 6
ARM_DIM = BIMANUAL.arm_dim  # 7
DIM = BIMANUAL.dim  # 14
STATE_DIM = DIM
ACTION_DIM = DIM
DIM_NAMES = BIMANUAL.names
ARM_SLICES = BIMANUAL.arm_slices  # (slice(0, 7), slice(7, 14))
JOINT_SLICES = BIMANUAL.joint_slices  # (slice(0, 6), slice(7, 13))
GRIPPER_INDICES = BIMANUAL.gripper_indices  # (6, 13)
JOINT_INDICES = BIMANUAL.joint_indices  # 0..5, 7..12
