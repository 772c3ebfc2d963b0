"""Toy placement: splits, determinism, regions, icons (sim/tasks/toy_placement.py, toys.py)."""

from __future__ import annotations

import numpy as np
import pytest

from chatvla2.sim.tasks import toys
from chatvla2.sim.tasks.env import still_world
from chatvla2.sim.tasks.render import BACKGROUNDS
from chatvla2.sim.tasks.toy_placement import PLACES, SHELF, make_scene

SEEDS = range(150)


def test_the_splits_share_no_toy():
    in_domain = set(toys.OBJECTS["in_domain"]) | set(toys.TARGETS["in_domain"])
    open_world = set(toys.OBJECTS["open_world"]) | set(toys.TARGETS["open_world"])
    assert not in_domain & open_world
    assert all(toys.toy(n).graspable for n in toys.OBJECTS["in_domain"] + toys.OBJECTS["open_world"])


@pytest.mark.parametrize("split", ["in_domain", "open_world"])
def test_scenes_use_their_split_only(split):
    other = "open_world" if split == "in_domain" else "in_domain"
    unseen = set(toys.OBJECTS[other]) | set(toys.TARGETS[other])
    places = set()
    for seed in SEEDS:
        s = make_scene(split, seed)
        places.add(s.place)
        names = {item.name for item in s.items} | {s.target}
        assert not names & unseen, (seed, names)
        assert s.obj in toys.OBJECTS[split] and (s.target == SHELF or s.target in toys.TARGETS[split])
        assert s.background in BACKGROUNDS[split]
        assert (s.target == SHELF) == (s.place in ("top", "bottom"))
        assert s.instruction.startswith(f"Pick the {s.obj} and place it ")
    assert places == set(PLACES)


def test_instruction_wording():
    wording = {"left": "to the left of the", "right": "to the right of the", "front": "in front of the",
               "behind": "behind the", "top": "to the top of the shelf", "bottom": "to the bottom of the shelf"}
    for place, words in wording.items():
        s = make_scene("in_domain", 0, place=place)
        assert s.instruction == f"Pick the {s.obj} and place it {words}{'' if s.target == SHELF else ' ' + s.target}."


def test_a_seed_is_always_the_same_episode():
    a, b = make_scene("open_world", 5), make_scene("open_world", 5)
    assert a == b and make_scene("open_world", 6) != a
    np.testing.assert_array_equal(still_world(a, 252, 308)[0], still_world(b, 252, 308)[0])


@pytest.mark.parametrize("place", ["left", "right", "front", "behind"])
def test_regions_lie_on_the_named_side_in_the_image(place):
    for seed in range(10):
        scene = make_scene("in_domain", seed, place=place)
        _, world = still_world(scene, 252, 308)
        truth = scene.truth(world)
        t, r = truth.target_box, truth.region
        # (The target's box is its top face, a little larger in perspective than its footprint.)
        side = {"left": r[2] <= t[0] + 15, "right": r[0] >= t[2] - 15, "front": r[1] >= t[3] - 15,
                "behind": r[3] <= t[1] + 15}
        assert side[place], (seed, place, t, r)
        assert r[0] <= truth.point[0] <= r[2] and r[1] <= truth.point[1] <= r[3]


def test_shelf_steps():
    top, bottom = make_scene("in_domain", 1, place="top"), make_scene("in_domain", 1, place="bottom")
    assert top.region[4] > bottom.region[4] > 0
    assert top.support(top.point[0], top.point[1]) == top.region[4]


# Main colour of some icons, as a test on the rendered pixels (before lighting: within its range).
COLOURS = {
    "apple": lambda p: (p[:, 0] > 120) & (p[:, 1] < 80) & (p[:, 2] < 80),
    "banana": lambda p: (p[:, 0] > 160) & (p[:, 1] > 140) & (p[:, 2] < 90),
    "blue cup": lambda p: (p[:, 2] > 120) & (p[:, 2] > p[:, 0] + 60),
    "duck": lambda p: (p[:, 0] > 160) & (p[:, 1] > 140) & (p[:, 2] < 90),
    "toy car": lambda p: (p[:, 0] > 120) & (p[:, 1] < 80) & (p[:, 2] < 80),
    "avocado": lambda p: (p[:, 1] > p[:, 0]) & (p[:, 1] > p[:, 2] + 20),
    "carrot": lambda p: (p[:, 0] > 160) & (p[:, 1] > 60) & (p[:, 1] < 160) & (p[:, 2] < 80),
    "pepper": lambda p: (p[:, 0] > 120) & (p[:, 1] < 80) & (p[:, 2] < 80),
}


def test_icons_show_their_colour_inside_their_box():
    seen = set()
    for split in ("in_domain", "open_world"):
        for seed in range(12):
            scene = make_scene(split, seed)
            frame, world = still_world(scene, 252, 308)
            outside = np.ones(frame.shape[:2], bool)
            for i, prop in enumerate(world.props):
                u1, v1, u2, v2 = world.sprites.box(i, prop)
                outside[max(v1, 0) : v2, max(u1, 0) : u2] = False
            for i, prop in enumerate(world.props):
                if prop.name not in COLOURS:
                    continue
                elsewhere = COLOURS[prop.name](frame[outside].astype(int)).mean()
                if elsewhere > 0.05:  # e.g. a red apple on the red tablecloth: not a test of the icon
                    continue
                u1, v1, u2, v2 = world.sprites.box(i, prop)
                pixels = frame[v1:v2, u1:u2].reshape(-1, 3).astype(int)
                assert COLOURS[prop.name](pixels).mean() > 0.08, (split, seed, prop.name)
                seen.add(prop.name)
    assert len(seen) >= 6, seen


def test_reasoning_boxes_match_the_drawn_object():
    scene = make_scene("in_domain", 3)
    frame, world = still_world(scene, 252, 308)
    box = world.box(0)
    text = scene.reasoning(world)
    assert text.startswith(f"The {scene.obj} is at [{box[0]}, {box[1]}, {box[2]}, {box[3]}]. ")
    assert scene.score(text, world) == {"object_recognition": 1, "spatial_affordance": 1, "iou": 1.0, "parsed": True,
                                        "form": 1}
