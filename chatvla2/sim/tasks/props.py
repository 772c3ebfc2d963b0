"""Things on the table that a gripper can pick up (the cards, the toys), and the grasp rules of the
fast kinematic mode.

There is no contact physics: a prop is grasped when a gripper closes on it from above, is carried
rigidly while the gripper stays closed, and drops onto the surface below when the gripper opens.
The rules (project choices, sized to the props and the X5 gripper's 0.088 m, docs/reference/arx.md):

- a gripper is "on" a prop when its gripper point (kinematics.py: between the finger tips) is
  within GRASP_XY horizontally of the prop's centre and between GRASP_Z_BELOW above the prop's
  bottom and GRASP_Z_ABOVE above its top;
- the fingers stop at the prop's `grasp_width` (the backend is told, `ArmBackend.apply`), and a
  gripper that closes to that width while on the prop, having been at least that wide the step
  before, holds it (a gripper that arrives already closed pushes on the prop and holds nothing);
- a held prop counts as lifted (for the math game: "picked") once its bottom is LIFT_M above the
  surface it rested on;
- a held prop is let go when its gripper opens RELEASE_MARGIN beyond the grasp width: it lands
  on whatever surface lies under its centre (`support`), keeping x, y and its yaw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

GRASP_XY = 0.02
GRASP_Z_BELOW = 0.003
GRASP_Z_ABOVE = 0.01
LIFT_M = 0.04
RELEASE_MARGIN = 0.004
CLOSE_MARGIN = 0.0005  # numerical slack on "closed to the grasp width"


@dataclass
class Prop:
    """One graspable thing. `position` is the centre of its footprint at its bottom (world, m)."""

    name: str  # how texts name it: "banana", or the card's value "14"
    kind: str  # "card" or "toy"
    position: np.ndarray
    size: tuple[float, float]  # footprint along its own x and y before `yaw`, m
    height: float
    grasp_width: float  # finger gap when closed on it, m (< 0.088)
    draw: Callable  # draw(px_per_m) -> RGBA PIL image of its top face, centred, before yaw
    yaw: float = 0.0
    slot: str = ""  # the math game's card position: "left", "middle" or "right"
    held_by: int | None = None
    grip_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rest_z: float = 0.0  # height of the surface it last rested on
    lifted: bool = False

    @property
    def top(self) -> float:
        return float(self.position[2] + self.height)


def on_prop(grip_point: np.ndarray, prop: Prop) -> bool:
    """Whether a gripper point is where closing the fingers grasps `prop` (module docstring)."""
    dx, dy = grip_point[0] - prop.position[0], grip_point[1] - prop.position[1]
    if dx * dx + dy * dy > GRASP_XY**2:
        return False
    return prop.position[2] + GRASP_Z_BELOW <= grip_point[2] <= prop.top + GRASP_Z_ABOVE


@dataclass(frozen=True)
class Event:
    kind: str  # "grasped", "lifted", "released"
    prop: int  # index into the props list
    arm: int
    step: int


class Grasping:
    """Applies the grasp rules to a list of props after every step.

    `support(x, y) -> z` gives the height of the surface under a point (the table is 0).
    """

    def __init__(self, props: list[Prop], support: Callable[[float, float], float], widths):
        self.props = props
        self.support = support
        self.events: list[Event] = []
        self.previous_widths = np.array(widths, dtype=float)

    def finger_stops(self, grip_points, widths) -> np.ndarray:
        """(2,) the width each gripper's fingers cannot close past now: the grasp width of a prop
        it holds or is on (and still open wider than), else 0."""
        stops = np.zeros(2)
        for arm in range(2):
            held = self.held(arm)
            if held is not None:
                stops[arm] = self.props[held].grasp_width
                continue
            for prop in self.props:
                if prop.held_by is None and widths[arm] > prop.grasp_width - CLOSE_MARGIN and on_prop(grip_points[arm], prop):
                    stops[arm] = max(stops[arm], prop.grasp_width)
        return stops

    def held(self, arm: int) -> int | None:
        for i, prop in enumerate(self.props):
            if prop.held_by == arm:
                return i
        return None

    def update(self, grip_points, widths, step: int) -> list[Event]:
        """Grasp, carry, lift and release after the arms moved; returns this step's events."""
        new: list[Event] = []
        for arm in range(2):
            i = self.held(arm)
            if i is not None:
                prop = self.props[i]
                if widths[arm] > prop.grasp_width + RELEASE_MARGIN:
                    prop.held_by = None
                    prop.position[2] = self.support(prop.position[0], prop.position[1])
                    prop.rest_z = float(prop.position[2])
                    new.append(Event("released", i, arm, step))
                    continue
                prop.position = grip_points[arm] + prop.grip_offset
                if not prop.lifted and prop.position[2] >= prop.rest_z + LIFT_M:
                    prop.lifted = True
                    new.append(Event("lifted", i, arm, step))
                continue
            for j, prop in enumerate(self.props):
                if (prop.held_by is None and widths[arm] <= prop.grasp_width + CLOSE_MARGIN
                        and self.previous_widths[arm] >= prop.grasp_width - CLOSE_MARGIN
                        and on_prop(grip_points[arm], prop)):
                    prop.held_by = arm
                    prop.grip_offset = prop.position - grip_points[arm]
                    prop.lifted = False
                    new.append(Event("grasped", j, arm, step))
                    break
        self.previous_widths = np.array(widths, dtype=float)
        self.events.extend(new)
        return new
