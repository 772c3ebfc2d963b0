"""The state of one scene in progress: the props where they are now, the grasp events so far, the
arms' joint state and poses, and the boxes the props cover in the image the policy sees. The
environment owns it; the tasks read it to write the expert's reasoning, to judge success and to
score a reasoning text against what the image shows at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from chatvla2.contract.embodiment import GRIPPER_INDICES, JOINT_SLICES
from chatvla2.sim.tasks.camera import Camera
from chatvla2.sim.tasks.kinematics import BASES, ArmPose, forward
from chatvla2.sim.tasks.props import Grasping, Prop


def arm_poses(state: np.ndarray) -> list[ArmPose]:
    """World-frame poses of both arms from the 14-D state (left 6 joints + gripper, then right)."""
    return [forward(state[joints], base) for joints, base in zip(JOINT_SLICES, BASES)]


@dataclass
class World:
    scene: object
    props: list[Prop]
    grasping: Grasping
    state: np.ndarray  # (14,) float
    poses: list[ArmPose]
    camera: Camera
    sprites: object  # render.SpriteBook: the props' drawn extents, for boxes
    step: int = 0
    cache: dict = field(default_factory=dict)  # for the tasks: what depends only on the scene and camera

    @property
    def widths(self) -> np.ndarray:
        return self.state[list(GRIPPER_INDICES)]

    def lifted_order(self) -> list[int]:
        """Props in the order they were first lifted (the math game's "picked")."""
        order: list[int] = []
        for event in self.grasping.events:
            if event.kind == "lifted" and event.prop not in order:
                order.append(event.prop)
        return order

    def ever_grasped(self, index: int) -> bool:
        return any(e.kind == "grasped" and e.prop == index for e in self.grasping.events)

    def box(self, index: int) -> tuple[int, int, int, int]:
        """The prop's box in 0..1000 image coordinates (camera.py), as reasoning texts write it."""
        prop = self.props[index]
        key = ("box", index, prop.position.tobytes(), prop.yaw)
        if key not in self.cache:
            if len(self.cache) > 4096:
                self.cache.clear()
            self.cache[key] = self.camera.norm_box(self.sprites.box(index, prop))
        return self.cache[key]
