"""Image-text samples for stage-1 co-training (docs/reference/model.md, "Two-stage training": image-text and robot
data co-trained 1:3, with math and scene QA among the image-text sets).

The images are the tasks' own top-camera scenes (arms at home), so the questions are about what
the robot sees. Kinds (KINDS): whiteboard OCR and arithmetic with + - and x, the cards' values,
naming the toys, their bounding boxes, spatial relations between two toys (a yes/no and an
open form), and a placement point (RoboPoint-style).

Splits, the same discipline as the robot episodes (splits.py): a sample's split decides how the
image looks (fonts, table tops, boards, inks, light, shelf: exactly the robot split's looks), and
the random stream; what is shown is drawn from both splits' vocabularies at once, every operator,
both operand lists, every toy. That is the point of co-training (docs/reference/model.md, "the key claim"): the
robot data never shows a minus sign or an avocado, the image-text data does, and the reasoning
carries it over to the actions. So an in-domain image-text sample may show 56-42 or a pepper, in
the in-domain look; open-world robot episodes keep their unseen look.

Answers use the reasoning texts' wording (scoring.py): "There are: 3 (left), 2 (middle), and
9 (right).", "The banana is at [x1, y1, x2, y2].", boxes and points in 0..1000 (camera.py). Object
lists go left to right across the image; a relation is the larger of the horizontal and vertical
offsets between the two boxes' centres ("front" = lower in the image, nearer the robot), asked
only when it is clear (at least 1.5 times the other and 60 units).

Each sample: {"image": (H, W, 3) uint8, "question": str, "answer": str, "kind": str,
"split": str, "seed": int}; the sample of (split, seed) is always the same.
"""

from __future__ import annotations

import numpy as np

from chatvla2.contract.names import UnknownChoice
from chatvla2.sim.tasks import math_game, toy_placement
from chatvla2.sim.tasks.env import DEFAULT_SIZE, still_world
from chatvla2.sim.tasks.scoring import PLACE_PHRASES
from chatvla2.sim.tasks.splits import SPLITS, check_split

KINDS = (
    "whiteboard_ocr",
    "arithmetic",
    "card_values",
    "object_names",
    "object_box",
    "spatial_yes_no",
    "spatial_relation",
    "placement_point",
)
MATH_KINDS = KINDS[:3]
TAG_KIND, TAG_MATH, TAG_TOY = 3, 11, 12  # random streams of their own: never a robot episode's scene


def _article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def _listing(names: list[str]) -> str:
    items = [_article(n) for n in names]
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + ", and " + items[-1]


def _relation(a, b) -> str | None:
    """Where box a lies relative to box b (a PLACE_PHRASES key), or None when it is not clear."""
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    if abs(dx) >= 1.5 * abs(dy) and abs(dx) >= 60:
        return "right" if dx > 0 else "left"
    if abs(dy) >= 1.5 * abs(dx) and abs(dy) >= 60:
        return "front" if dy > 0 else "behind"
    return None


def sample(split: str, seed: int, height: int = DEFAULT_SIZE[0], width: int = DEFAULT_SIZE[1], kind: str | None = None) -> dict:
    """The image-text sample of (split, seed); `kind` forces one of KINDS."""
    check_split(split)
    rng = np.random.default_rng([TAG_KIND, SPLITS.index(split), seed])
    drawn = KINDS[int(rng.integers(len(KINDS)))]
    kind = kind or drawn
    if kind not in KINDS:
        raise UnknownChoice(f"unknown image-text kind {kind!r}; kinds: {', '.join(KINDS)}")
    if kind in MATH_KINDS:
        scene = math_game.make_scene(split, seed, vocabulary=math_game.ALL, tag=TAG_MATH)
        image, _ = still_world(scene, height, width)
        if kind == "whiteboard_ocr":
            question, answer = "What is written on the whiteboard?", scene.expression
        elif kind == "arithmetic":
            question, answer = "What is the answer to the expression on the whiteboard?", f"{scene.expression}={scene.result}."
        else:
            c = scene.cards
            question = "What numbers are on the cards, from left to right?"
            answer = f"There are: {c[0]} (left), {c[1]} (middle), and {c[2]} (right)."
        return _sample(image, question, answer, kind, split, seed)

    # Toy kinds: a toy-placement scene from every toy, in the split's look; relation questions
    # try a few scenes until two toys stand in a clear relation.
    for attempt in range(20):
        scene = toy_placement.make_scene(split, seed * 20 + attempt, vocabulary=toy_placement.ALL, tag=TAG_TOY)
        image, world = still_world(scene, height, width)
        boxes = [world.box(i) for i in range(len(world.props))]
        names = [p.name for p in world.props]
        if kind == "object_names":
            order = sorted(range(len(names)), key=lambda i: (boxes[i][0] + boxes[i][2], i))
            return _sample(image, "What objects are on the table?", f"There are: {_listing([names[i] for i in order])}.", kind, split, seed)
        if kind == "object_box":
            i = int(rng.integers(len(names)))
            return _sample(
                image,
                f"Where is the {names[i]}? Give its bounding box.",
                f"The {names[i]} is at [{', '.join(str(v) for v in boxes[i])}].",
                kind,
                split,
                seed,
            )
        if kind == "placement_point":
            truth = scene.truth(world)
            return _sample(image, f"Point to a place {truth.phrase}.", f"[{truth.point[0]}, {truth.point[1]}]", kind, split, seed)
        pairs = [(i, j) for i in range(len(names)) for j in range(len(names)) if i != j and _relation(boxes[i], boxes[j]) is not None]
        if not pairs:
            continue
        i, j = pairs[int(rng.integers(len(pairs)))]
        relation = _relation(boxes[i], boxes[j])
        if kind == "spatial_relation":
            return _sample(
                image,
                f"Where is the {names[i]} relative to the {names[j]}?",
                f"The {names[i]} is {PLACE_PHRASES[relation].format(names[j])}.",
                kind,
                split,
                seed,
            )
        asked = relation if rng.random() < 0.5 else [r for r in ("left", "right", "front", "behind") if r != relation][int(rng.integers(3))]
        return _sample(
            image, f"Is the {names[i]} {PLACE_PHRASES[asked].format(names[j])}?", "Yes." if asked == relation else "No.", kind, split, seed
        )
    raise toy_placement.NoLayout(f"no clear spatial relation in 20 scenes for {split} seed {seed}")  # not seen


def _sample(image, question, answer, kind, split, seed) -> dict:
    return {"image": image, "question": question, "answer": answer, "kind": kind, "split": split, "seed": int(seed)}


# Which kinds `samples` draws from: every kind, or only one task's (a math-only model's co-training).
KIND_SETS = {"all": KINDS, "math": MATH_KINDS, "toy": KINDS[len(MATH_KINDS) :]}


def samples(split: str, seeds, height: int = DEFAULT_SIZE[0], width: int = DEFAULT_SIZE[1], kinds: str = "all"):
    """Yield the samples of `seeds` (any iterable of ints), in order. With `kinds` other than "all"
    the sample of seed s is of kind KIND_SETS[kinds][s % n]: each kind of the set equally often."""
    if kinds not in KIND_SETS:
        raise UnknownChoice(f"unknown image-text kinds {kinds!r}; choose one of {', '.join(KIND_SETS)}")
    chosen = KIND_SETS[kinds]
    for seed in seeds:
        yield sample(split, seed, height, width, kind=None if kinds == "all" else chosen[seed % len(chosen)])
