"""The robot in one place (contract/embodiment.py): the 14-D layout is consistent, built from the
drivers' arm, and the drivers, the runtime and the simulator put the arms where it says."""

from __future__ import annotations

import numpy as np

from chatvla2.contract import embodiment as e
from chatvla2.contract.config import ActionHeadConfig
from chatvla2.drivers.profiles import ARM_DIMS, ARM_GRIPPER, ARM_JOINTS, PROFILES


def test_the_layout_is_two_arms_of_six_joints_and_a_gripper():
    assert e.ARMS == ("left", "right")
    assert (e.JOINTS_PER_ARM, e.ARM_DIM, e.DIM) == (6, 7, 14)
    assert e.STATE_DIM == e.ACTION_DIM == e.DIM
    assert e.GRIPPER_INDICES == (6, 13)
    assert e.ARM_SLICES == (slice(0, 7), slice(7, 14))
    assert e.JOINT_SLICES == (slice(0, 6), slice(7, 13))


def test_one_unique_name_per_dimension():
    assert len(e.DIM_NAMES) == e.DIM == 14
    assert len(set(e.DIM_NAMES)) == e.DIM
    assert e.DIM_NAMES[0] == "left_joint1" and e.DIM_NAMES[-1] == "right_gripper"
    assert all(e.BIMANUAL.index(name) == i for i, name in enumerate(e.DIM_NAMES))


def test_the_gripper_indices_are_the_grippers_and_the_rest_are_joints():
    assert [e.DIM_NAMES[g] for g in e.GRIPPER_INDICES] == [f"{arm}_gripper" for arm in e.ARMS]
    assert all(e.DIM_NAMES[i].split("_", 1)[1] in ARM_JOINTS for i in e.JOINT_INDICES)
    assert sorted(e.JOINT_INDICES + e.GRIPPER_INDICES) == list(range(e.DIM))


def test_the_slices_cover_the_vector_once_in_arm_order():
    covered = [i for s in e.ARM_SLICES for i in range(e.DIM)[s]]
    assert covered == list(range(e.DIM))
    for arm, (name, whole, joints) in enumerate(zip(e.ARMS, e.ARM_SLICES, e.JOINT_SLICES)):
        assert all(n.startswith(f"{name}_") for n in e.DIM_NAMES[whole])
        assert list(range(e.DIM)[joints]) + [e.GRIPPER_INDICES[arm]] == list(range(e.DIM)[whole])
        assert e.DIM_NAMES[joints] == tuple(f"{name}_{j}" for j in ARM_JOINTS)


def test_each_arm_is_the_drivers_arm():
    assert e.BIMANUAL.joints == ARM_JOINTS and e.BIMANUAL.gripper == ARM_GRIPPER
    assert ARM_DIMS == ARM_JOINTS + (ARM_GRIPPER,)
    for profile in PROFILES.values():  # every profile's arm has the layout's joints, and one value each
        assert profile.num_joints == e.JOINTS_PER_ARM, profile.name
        assert len(profile.motor_ids) == len(profile.action_low) == len(profile.action_high) == e.ARM_DIM
        assert len(profile.home) == e.JOINTS_PER_ARM


def test_the_control_rate_suits_the_drivers_controller():
    """The profiles state no policy rate; the drivers' controller bounds it: a target every control
    period keeps well inside its target watchdog, and the controller runs faster than the policy."""
    from chatvla2.drivers.controller import ControllerConfig

    controller = ControllerConfig()
    assert e.CONTROL_HZ == 50 and isinstance(e.CONTROL_HZ, int)  # the datasets store it as an integer fps
    assert e.CONTROL_PERIOD_S == 1.0 / e.CONTROL_HZ == 0.02
    assert e.CONTROL_PERIOD_S * 2 <= controller.target_timeout_s
    assert controller.rate_hz >= 5 * e.CONTROL_HZ


def test_the_defaults_that_read_the_embodiment():
    from chatvla2.runtime.loop import LoopConfig

    assert (ActionHeadConfig().action_dim, ActionHeadConfig().state_dim) == (e.ACTION_DIM, e.STATE_DIM)
    assert LoopConfig().rate_hz == 50.0 and isinstance(LoopConfig().rate_hz, float)


class _Arm:
    fault = None

    def __init__(self):
        self.sent = None

    def send_action(self, action):
        self.sent = np.asarray(action, dtype=float)
        return self.sent


def test_the_drivers_bimanual_robot_splits_actions_as_the_layout_says():
    from chatvla2.drivers.bimanual import PER_ARM, SIDES, BimanualARX

    assert SIDES == e.ARMS and PER_ARM == e.ARM_DIM
    robot = object.__new__(BimanualARX)  # no links: only the split is tested
    robot.left, robot.right = _Arm(), _Arm()
    action = np.arange(e.DIM, dtype=float)
    sent = robot.send_action(action)
    np.testing.assert_array_equal(sent, action)
    for arm, whole in zip((robot.left, robot.right), e.ARM_SLICES):
        np.testing.assert_array_equal(arm.sent, action[whole])


def test_the_runtime_state_follows_the_layout():
    from chatvla2.runtime.robots import BimanualRobot

    class Observed:
        def get_observation(self):
            out = {}
            for arm, name in enumerate(e.ARMS):
                out[f"{name}_joint_positions"] = np.arange(e.JOINTS_PER_ARM) + 10.0 * arm
                out[f"{name}_gripper_width"] = 0.5 + arm
            return out

    state = BimanualRobot(Observed()).get_state()
    assert state.shape == (e.DIM,) and state.dtype == np.float32
    for arm in range(len(e.ARMS)):
        np.testing.assert_array_equal(state[e.JOINT_SLICES[arm]], np.arange(e.JOINTS_PER_ARM) + 10.0 * arm)
        assert state[e.GRIPPER_INDICES[arm]] == 0.5 + arm


def test_the_dataset_names_its_columns_with_the_layout():
    from chatvla2.sim.dataset_format import joint_names

    assert joint_names(e.DIM) == list(e.DIM_NAMES)
    assert joint_names(e.DIM - 1) is None


def test_the_simulated_arms_follow_the_layout():
    from chatvla2.sim.tasks.backend import HIGH, LOW, KinematicBackend
    from chatvla2.sim.tasks.kinematics import BASES

    assert len(BASES) == len(e.ARMS)
    assert LOW.shape == HIGH.shape == (e.DIM,)
    assert list(HIGH[list(e.GRIPPER_INDICES)]) == [PROFILES["x5"].gripper.width_m] * len(e.ARMS)
    assert KinematicBackend().state.shape == (e.DIM,)
