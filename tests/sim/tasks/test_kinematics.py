"""ARX X5 forward kinematics against hand-computed poses, and IK round trips (sim/tasks/kinematics.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chatvla2.sim.tasks import kinematics as k


def test_home_pose_by_hand():
    # docs/reference/arx.md + X5.urdf at all-zero: joint2 at (0.02, 0, 0.0603 + 0.0402); the upper arm points back
    # 0.264 and flips (rpy -pi), so joint4 = (0.02 - 0.264 + 0.245, 0, 0.1005 + 0.056); joint5 adds
    # (0.06575, +0.001, +0.0825) and joint6 (0.02845, 0, -0.0825) in the flipped frame; the gripper
    # is 0.145 further along x, the second flip undone.
    pose = k.forward(np.zeros(6))
    expected = [
        (0.0, 0.0, 0.0603), (0.02, 0.0, 0.1005), (-0.244, 0.0, 0.1005), (0.001, 0.0, 0.1565),
        (0.06675, 0.001, 0.239), (0.0952, 0.001, 0.1565), (0.2402, 0.001, 0.1565),
    ]
    np.testing.assert_allclose(pose.joints, expected, atol=1e-12)
    np.testing.assert_allclose(pose.rotation, np.eye(3), atol=1e-12)


def test_joint1_turns_the_arm_about_z():
    pose = k.forward([math.pi / 2, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(pose.position, (-0.001, 0.2402, 0.1565), atol=1e-12)
    np.testing.assert_allclose(pose.pointing, (0, 1, 0), atol=1e-12)


def test_joint2_pitches_the_arm_down():
    # Rotating (0.2202, 0.001, 0.056) (joint2 -> gripper at home) by +90 degrees about y gives
    # (0.056, 0.001, -0.2202): the gripper ends below joint2, pointing straight down.
    pose = k.forward([0, math.pi / 2, 0, 0, 0, 0])
    np.testing.assert_allclose(pose.position, (0.076, 0.001, -0.1197), atol=1e-12)
    np.testing.assert_allclose(pose.pointing, (0, 0, -1), atol=1e-12)


def test_bases_offset_the_world_frame():
    q = np.array([0.3, 1.2, 1.0, -0.5, 0.2, 0.1])
    for base in k.BASES:
        np.testing.assert_allclose(k.forward(q, base).position, k.forward(q).position + base, atol=1e-12)


@pytest.mark.parametrize("arm", [0, 1])
def test_ik_round_trip_over_the_reach_band(arm):
    for r in np.linspace(k.REACH_MIN, k.REACH_MAX, 6):
        for angle in np.linspace(-1.4, 1.4, 7):
            for z in (0.0, 0.05, k.VERTICAL_MAX_Z):
                target = k.BASES[arm] + np.array([r * math.cos(angle), r * math.sin(angle), z])
                q = k.inverse_world(arm, target)
                pose = k.forward(q, k.BASES[arm])
                np.testing.assert_allclose(pose.position, target, atol=1e-4)
                assert pose.pointing[2] < -0.9999  # vertical inside the band
                assert np.all(q >= k.Q_MIN - 1e-12) and np.all(q <= k.Q_MAX + 1e-12)


def test_ik_tilts_the_gripper_above_the_vertical_band():
    target = k.LEFT_BASE + np.array([0.3, 0.0, 0.25])
    q = k.inverse_world(0, target)
    pose = k.forward(q, k.LEFT_BASE)
    np.testing.assert_allclose(pose.position, target, atol=1e-4)
    assert -0.99 < pose.pointing[2] < -0.5


def test_ik_recovers_a_forward_pose():
    q = np.array([0.4, 1.7, 1.3, -1.2, 0.0, 0.0])
    target = k.forward(q).position
    solved = k.inverse(target)
    np.testing.assert_allclose(k.forward(solved).position, target, atol=1e-4)


def test_ik_refuses_out_of_reach():
    with pytest.raises(k.IKError, match="no joint solution"):
        k.inverse_world(0, k.LEFT_BASE + np.array([0.9, 0.0, 0.0]))
