"""Toy placement (slides, "Spatial Reasoning: Toy Placement"): "Pick the [obj] and place it to
[place] of the [target]".

The paper ran this task on a Franka at 15 Hz with a side camera (docs/reference/model.md); here it runs on the
same bimanual ARX setup and top camera as the math game, at 50 Hz, so one policy and one data
format serve both tasks (a project choice). The instruction follows the slides' own examples:
"Pick the banana and place it to the left of the bowl." / "... in front of the tape." / "... behind
the pink block." / "Pick the brown mug and place it to the top of the shelf." (PLACE_PHRASES in
scoring.py).

The table holds the object, the target (a toy, or a two-step shelf for top/bottom) and one or two
distractors from the same split (toys.py: the splits share no object or target). The shelf is a
stepped stand, 0.22 m wide: its bottom step (front, 0.025 m high) and its top step (back, 0.07 m)
are both visible from the top camera, which a shelf with one board above the other would not be.

Regions (world frame, project choices): left/right/front/behind of a target are the bands from
0.01 m to 0.18 m beyond the target's edge on that side, 0.02 m wider than the target across;
front is towards the robot (lower in the image), behind away from it (kinematics.py, camera.py).
Top/bottom are the top/bottom step, 0.01 m in from their edges. Success: the object, released,
rests with its centre in the region and on the region's surface (table, or the step).

The reasoning (scoring.py writes and parses it; boxes and points in 0..1000 image coordinates):
- until the object is first grasped: "The banana is at [x1, y1, x2, y2]. The bowl is at [x1, y1,
  x2, y2]. I should place the banana to the left of the bowl, at [u, v]. First, pick the banana."
- from the first observation after the grasp to the end: "Already picked the banana. The bowl is
  at [x1, y1, x2, y2]. I should place it to the left of the bowl, at [u, v]."
Boxes are what the current image shows; [u, v] is where the expert puts the object's centre, on
the region's surface.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from chatvla2.sim.tasks import scoring
from chatvla2.sim.tasks.camera import Camera
from chatvla2.sim.tasks.kinematics import BASES, REACH_MAX, REACH_MIN, forward, reach
from chatvla2.sim.tasks.props import Prop
from chatvla2.sim.tasks.render import BACKGROUNDS, Lighting
from chatvla2.sim.tasks.splits import IN_DOMAIN, OPEN_WORLD, SPLITS, check_split
from chatvla2.sim.tasks.toys import OBJECTS, TARGETS, toy

TASK = "toy_placement"
PLACES = ("left", "right", "front", "behind", "top", "bottom")
SHELF = "shelf"
SHELF_STEP = 0.09  # depth of each step along x
SHELF_WIDTH = 0.22
SHELF_Z = {"bottom": 0.025, "top": 0.07}
SHELF_COLOURS = {IN_DOMAIN: ((206, 170, 118), (150, 112, 70)), OPEN_WORLD: ((236, 236, 230), (150, 150, 150))}
BAND = (0.01, 0.18)  # the side regions: from 1 cm to 18 cm beyond the target's edge
VISIBLE_X = (0.08, 0.56)
VISIBLE_Y = (-0.35, 0.35)


@dataclass(frozen=True)
class Placed:
    name: str
    x: float
    y: float
    yaw: float
    z: float = 0.0


@dataclass(frozen=True)
class ToyScene:
    split: str
    seed: int
    obj: str
    target: str  # a toy name, or "shelf"
    place: str
    arm: int
    items: tuple[Placed, ...]  # [0] the object, [1] the target toy (absent for the shelf), then distractors
    shelf: tuple[float, float] | None  # (front edge x, centre y)
    point: tuple[float, float, float]  # where the expert puts the object (world, on the region's surface)
    region: tuple[float, float, float, float, float]  # x1, x2, y1, y2, z
    background: str
    lighting: Lighting
    tag: int = 2  # first word of the random stream: 2 for robot episodes (image_text.py uses others)
    task: str = TASK

    @property
    def instruction(self) -> str:
        return f"Pick the {self.obj} and place it {scoring.PLACE_PHRASES[self.place].format(self.target)}."

    @property
    def stream(self) -> tuple[int, ...]:
        return (self.tag, SPLITS.index(self.split), self.seed)

    # --- props and furniture -----------------------------------------------------------------------
    def make_props(self) -> list[Prop]:
        props = []
        for item in self.items:
            t = toy(item.name)
            props.append(
                Prop(
                    name=item.name,
                    kind="toy",
                    position=np.array([item.x, item.y, item.z]),
                    size=t.size,
                    height=t.height,
                    grasp_width=t.grasp_width,
                    draw=functools.partial(_sprite, item.name),
                    yaw=item.yaw,
                    rest_z=item.z,
                )
            )
        return props

    def shelf_steps(self) -> dict[str, tuple[float, float, float, float]]:
        """'bottom'/'top' -> (x1, x2, y1, y2) of each step (empty without a shelf)."""
        if self.shelf is None:
            return {}
        x0, yc = self.shelf
        y1, y2 = yc - SHELF_WIDTH / 2, yc + SHELF_WIDTH / 2
        return {"bottom": (x0, x0 + SHELF_STEP, y1, y2), "top": (x0 + SHELF_STEP, x0 + 2 * SHELF_STEP, y1, y2)}

    @property
    def furniture_top(self) -> float:
        """Height of the highest furniture (the shelf's top step): the expert carries above it."""
        return SHELF_Z["top"] if self.shelf is not None else 0.0

    def support(self, x: float, y: float) -> float:
        """Height of the surface under (x, y): a shelf step or the table."""
        for step, (x1, x2, y1, y2) in self.shelf_steps().items():
            if x1 <= x <= x2 and y1 <= y <= y2:
                return SHELF_Z[step]
        return 0.0

    def draw_furniture(self, image: Image.Image, cam: Camera) -> None:
        if self.shelf is None:
            return
        face, edge = SHELF_COLOURS[self.split]
        draw = ImageDraw.Draw(image)
        for step in ("bottom", "top"):  # the top step last: it is nearer the camera
            x1, x2, y1, y2 = self.shelf_steps()[step]
            z = SHELF_Z[step]
            (u1, v1), (u2, v2) = cam.project(np.array([[x2, y2, z], [x1, y1, z]]))
            if step == "top":  # its front face's shadow on the bottom step
                shadow = max(1, round(0.012 * cam.scale(z)))
                draw.rectangle((u1, v2, u2, v2 + shadow), fill=tuple(int(c * 0.55) for c in face))
            draw.rectangle((u1, v1, u2, v2), fill=face, outline=edge, width=max(1, round(0.006 * cam.scale(z))))

    def shelf_box(self, cam: Camera) -> tuple[int, int, int, int]:
        steps = self.shelf_steps()
        corners = [cam.project(np.array([steps[s][1], steps[s][3], SHELF_Z[s]])) for s in steps]
        corners += [cam.project(np.array([steps[s][0], steps[s][2], SHELF_Z[s]])) for s in steps]
        c = np.array(corners)
        return cam.norm_box((c[:, 0].min(), c[:, 1].min(), c[:, 0].max(), c[:, 1].max()))

    # --- reasoning, success, scores ------------------------------------------------------------------------
    def region_box(self, cam: Camera) -> tuple[int, int, int, int]:
        x1, x2, y1, y2, z = self.region
        (u1, v1), (u2, v2) = cam.project(np.array([[x2, y2, z], [x1, y1, z]]))
        return cam.norm_box((u1, v1, u2, v2))

    def truth(self, world, object_box: bool = True) -> scoring.ToyTruth:
        """What the image shows now: the boxes, the region and the expert's point, 0..1000
        (object_box=False skips the object's box, (0, 0, 0, 0): form 2 texts do not use it)."""
        cam = world.camera
        if "toy_fixed" not in world.cache:  # the shelf, the region and the point never move
            point = tuple(int(v) for v in cam.to_norm(cam.project(np.array(self.point))))
            shelf = self.shelf_box(cam) if self.target == SHELF else None
            world.cache["toy_fixed"] = (shelf, self.region_box(cam), point)
        shelf, region, point = world.cache["toy_fixed"]
        target_box = shelf if self.target == SHELF else world.box(1)
        obj_box = world.box(0) if object_box else (0, 0, 0, 0)
        return scoring.ToyTruth(self.obj, self.target, self.place, obj_box, target_box, region, point)

    def reasoning(self, world) -> str:
        grasped = world.ever_grasped(0)
        return scoring.toy_text(self.truth(world, object_box=not grasped), grasped=grasped)

    def outcome(self, world) -> tuple[bool, bool]:
        """(success, failed): the object rests, released, in the region (never fails early)."""
        prop = world.props[0]
        x1, x2, y1, y2, z = self.region
        at_rest = prop.held_by is None and world.ever_grasped(0)
        inside = x1 <= prop.position[0] <= x2 and y1 <= prop.position[1] <= y2 and abs(prop.position[2] - z) < 1e-6
        return bool(at_rest and inside), False

    def score(self, text: str, world) -> dict:
        return scoring.score_toy(text, self.truth(world))

    def moves(self) -> list[tuple]:
        return [("pick", self.arm, 0), ("place", self.arm, 0, self.point), ("retreat", self.arm)]


def _sprite(name: str, ppm: float) -> Image.Image:
    return toy(name).sprite(ppm)


def _radius(name: str) -> float:
    return 0.5 * math.hypot(*toy(name).size)


def _region(place: str, target: Placed | None, shelf) -> tuple[float, float, float, float, float]:
    if place in ("top", "bottom"):
        x0, yc = shelf
        x1 = x0 + (SHELF_STEP if place == "top" else 0.0)
        return (x1 + 0.01, x1 + SHELF_STEP - 0.01, yc - SHELF_WIDTH / 2 + 0.01, yc + SHELF_WIDTH / 2 - 0.01, SHELF_Z[place])
    hx, hy = (s / 2 for s in toy(target.name).size)
    tx, ty = target.x, target.y
    near, far = BAND
    if place == "left":
        return (tx - hx - 0.02, tx + hx + 0.02, ty + hy + near, ty + hy + far, 0.0)
    if place == "right":
        return (tx - hx - 0.02, tx + hx + 0.02, ty - hy - far, ty - hy - near, 0.0)
    if place == "behind":
        return (tx + hx + near, tx + hx + far, ty - hy - 0.02, ty + hy + 0.02, 0.0)
    return (tx - hx - far, tx - hx - near, ty - hy - 0.02, ty + hy + 0.02, 0.0)  # front


def _placement(place: str, target: Placed | None, shelf, obj: str, rng) -> tuple[float, float, float]:
    """Where the expert puts the object's centre: next to the target, clear of it, or mid-step."""
    if place in ("top", "bottom"):
        x1, x2, y1, y2, z = _region(place, None, shelf)
        return (0.5 * (x1 + x2), 0.5 * (y1 + y2) + float(rng.uniform(-0.03, 0.03)), z)
    hx, hy = (s / 2 for s in toy(target.name).size)
    gap = _radius(obj) + 0.02
    j = float(rng.uniform(-0.01, 0.01))
    dx, dy = {"left": (0, hy + gap), "right": (0, -hy - gap), "behind": (hx + gap, 0), "front": (-hx - gap, 0)}[place]
    return (target.x + dx + (j if dx == 0 else 0), target.y + dy + (j if dy == 0 else 0), 0.0)


def _reachable(arm: int, x: float, y: float) -> bool:
    return REACH_MIN + 0.01 <= reach(arm, (x, y)) <= REACH_MAX - 0.01


def _visible(x: float, y: float, r: float) -> bool:
    """In the picture (at both preset sizes), and not under an arm at rest."""
    inside = VISIBLE_X[0] <= x - r and x + r <= VISIBLE_X[1] and VISIBLE_Y[0] <= y - r and y + r <= VISIBLE_Y[1]
    return inside and _clear_of_home_arms(x, y, r)


def _on_shelf(x: float, y: float, r: float, shelf) -> bool:
    if shelf is None:
        return False
    x0, yc = shelf
    return x0 - r - 0.02 <= x <= x0 + 2 * SHELF_STEP + r + 0.02 and abs(y - yc) <= SHELF_WIDTH / 2 + r + 0.02


# The arms at rest (all-zero home, kinematics.py) reach 0.24 m forward of their bases along y = +-0.3
# and would hide what lies under them: nothing is put within 4 cm of that footprint.
_HOME_REACH = float(forward(np.zeros(6)).position[0]) + 0.02


def _clear_of_home_arms(x: float, y: float, r: float) -> bool:
    for base in BASES:
        dx = x - min(max(x, base[0]), base[0] + _HOME_REACH)  # distance to the segment base -> gripper
        if math.hypot(dx, y - base[1]) < r + 0.04:
            return False
    return True


def _in_region(x: float, y: float, region, margin: float) -> bool:
    x1, x2, y1, y2, _ = region
    return x1 - margin <= x <= x2 + margin and y1 - margin <= y <= y2 + margin


ALL = "all"  # a vocabulary, not a split: both splits' objects and targets (image_text.py)


def vocabulary_of(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(objects, targets) of a split, or of ALL."""
    if name == ALL:
        return OBJECTS[IN_DOMAIN] + OBJECTS[OPEN_WORLD], TARGETS[IN_DOMAIN] + TARGETS[OPEN_WORLD]
    check_split(name)
    return OBJECTS[name], TARGETS[name]


class NoLayout(RuntimeError):
    """The layout sampler found no placement for the seed's objects (the seed is unusable)."""


def make_scene(split: str, seed: int, place: str | None = None, vocabulary: str | None = None, tag: int = 2) -> ToyScene:
    """The episode of (split, seed): always the same scene. `place` forces one of PLACES.

    `vocabulary` (default: the split) chooses the objects and targets, the split everything else
    (table, shelf colour, light); `tag` selects another random stream (image_text.py)."""
    check_split(split)
    rng = np.random.default_rng([tag, SPLITS.index(split), seed])
    drawn_place = PLACES[int(rng.integers(len(PLACES)))]
    place = place or drawn_place
    objects, targets = vocabulary_of(vocabulary or split)
    obj = objects[int(rng.integers(len(objects)))]
    target = SHELF if place in ("top", "bottom") else targets[int(rng.integers(len(targets)))]
    others = [n for n in objects + targets if n not in (obj, target)]
    n_distractors = 1 + int(rng.integers(2))
    distractors = [others[int(i)] for i in rng.choice(len(others), size=n_distractors, replace=False)]
    r_obj = _radius(obj)
    for _ in range(2000):
        # The arm first, then everything it handles on its side of the table: the object on its
        # side is nearer to it (bases at y = +-0.3), and the place must be within its reach too.
        arm = int(rng.integers(2))
        side = 1.0 if arm == 0 else -1.0
        shelf, target_item = None, None
        if target == SHELF:
            shelf = (float(rng.uniform(0.16, 0.22)), side * float(rng.uniform(0.0, 0.12)))
            inner = abs(shelf[1]) + SHELF_WIDTH / 2 + r_obj + 0.025  # the object stands beside the shelf, outboard
            ox, oy = float(rng.uniform(0.15, 0.42)), side * float(rng.uniform(inner, max(inner, 0.31)))
        else:
            ox, oy = float(rng.uniform(0.15, 0.42)), side * float(rng.uniform(0.005, 0.3))
            target_item = Placed(target, float(rng.uniform(0.16, 0.46)), side * float(rng.uniform(-0.05, 0.28)), 0.0)
            if not _visible(target_item.x, target_item.y, _radius(target)):
                continue
            if math.hypot(ox - target_item.x, oy - target_item.y) < r_obj + _radius(target) + 0.03:
                continue
        if not (_reachable(arm, ox, oy) and _visible(ox, oy, r_obj)):
            continue
        region = _region(place, target_item, shelf)
        point = _placement(place, target_item, shelf, obj, rng)
        if not (_reachable(arm, point[0], point[1]) and _visible(point[0], point[1], r_obj)):
            continue
        if _on_shelf(ox, oy, r_obj, shelf) or _in_region(ox, oy, region, r_obj):
            continue
        placed = [Placed(obj, ox, oy, float(rng.uniform(-0.5, 0.5)))] + ([target_item] if target_item else [])
        ok = True
        for name in distractors:
            r = _radius(name)
            for _ in range(100):
                x, y = float(rng.uniform(0.12, 0.5)), float(rng.uniform(-0.32, 0.32))
                clear = (
                    _visible(x, y, r)
                    and not _on_shelf(x, y, r, shelf)
                    and not _in_region(x, y, region, r + 0.02)
                    and math.hypot(x - point[0], y - point[1]) > r + r_obj + 0.03
                    and all(math.hypot(x - p.x, y - p.y) > r + _radius(p.name) + 0.03 for p in placed)
                )
                if clear:
                    placed.append(Placed(name, x, y, float(rng.uniform(-0.5, 0.5))))
                    break
            else:
                ok = False
                break
        if not ok:
            continue
        backgrounds = BACKGROUNDS[split]
        background = backgrounds[int(rng.integers(len(backgrounds)))]
        lighting = Lighting.draw(rng, split)
        return ToyScene(split, seed, obj, target, place, arm, tuple(placed), shelf, point, region, background, lighting, tag)
    # Rare: one seed in millions of the training stream's (training/scene_stream.py draws another).
    raise NoLayout(f"no toy-placement layout for {split} seed {seed}")
