"""Stage-0 reading samples: image-text pairs that teach a tiny VLM to read before robot training.

ChatVLA-2 starts from Qwen2-VL, which already reads whiteboards and cards; the tiny models here start
from nothing, so they first learn to read the math game's own images (this stands in for that
pre-training). Each sample is a top-camera math scene with the arms at home and one question about
what is written; its answer uses the exact wording of the robot's reasoning (scoring.math_text), so
the reading carries over to it. Toy kinds are image_text.py's, for one mix of both tasks.

What is shown is wider than both splits: operands and cards 0..99, + - and x (subtraction never
below 0; a result the answer states stays 0..99, as the reasoning form writes it). How it looks
(LOOKS): "in_domain" and "open_world" are exactly the robot splits' looks (math_game.make_scene
draws them); "beyond" is outside both: its own boards, inks, card colours and table tops, every
installed font (so, as the open-world look, it is the same on machines with the same fonts),
stronger handwriting jitter and wider light. A toy kind has no beyond look: it is drawn in the
open-world look, and its "look" says so.

Each sample also carries `chars`: every character written on the board and the cards with its
pixel box, a dense reading target (an optional per-visual-token loss).

Streams: tags 41..44 (TAGS) start every random stream here; robot episodes use 1 and 2, stage-1
image-text data (image_text.py) 3, 11 and 12, so no sample shows a robot episode's scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
from PIL import Image, ImageDraw

from chatvla2.contract.embodiment import GRIPPER_INDICES
from chatvla2.contract.names import unknown_name
from chatvla2.contract.scene import INSTRUCTION
from chatvla2.sim.tasks import fonts, image_text, math_game, render
from chatvla2.sim.tasks.camera import Camera
from chatvla2.sim.tasks.env import START_STATE, still_world
from chatvla2.sim.tasks.math_game import BOARD, BOARDS, CARD_SIZE, SLOTS, MathScene
from chatvla2.sim.tasks.render import SUPERSAMPLE, Hand, Lighting, Renderer, handwriting
from chatvla2.sim.tasks.splits import IN_DOMAIN, OPEN_WORLD
from chatvla2.sim.tasks.world import arm_poses

BEYOND = "beyond"
LOOKS = (IN_DOMAIN, OPEN_WORLD, BEYOND)
MATH_KINDS = ("board", "cards", "arithmetic", "card_at", "where_is", "board_colour", "count", "scene_reasoning")
TOY_KINDS = image_text.KINDS[len(image_text.MATH_KINDS) :]
KINDS = MATH_KINDS + TOY_KINDS
# Random streams: the look, the kind and which card a question names; the game scene of a split
# look; of the beyond look; what a reading scene shows and how a beyond one looks.
TAG_KIND, TAG_SCENE, TAG_BEYOND, TAG_CONTENT = 41, 42, 43, 44
TAGS = (TAG_KIND, TAG_SCENE, TAG_BEYOND, TAG_CONTENT)
# Toy samples are image_text.sample's at seeds from here on: stage-1 data uses small seeds.
TOY_SEED_OFFSET = 1 << 40
OPERATORS = ("+", "-", "x")

# The beyond look: (board colour, frame colour, inks) per board name, as math_game.BOARDS; card
# colours and inks; table tops (drawn here: render.py's textures belong to the splits).
BEYOND_BOARDS = {
    "pink paper": ((248, 210, 222), (196, 132, 152), ((0, 110, 118), (92, 52, 20), (196, 84, 0))),
    "grey slate": ((70, 74, 82), (38, 38, 42), ((250, 170, 70), (130, 220, 245), (250, 180, 210))),
    "orange board": ((246, 182, 108), (168, 104, 52), ((20, 36, 96), (0, 84, 40), (70, 20, 70))),
    "mint board": ((204, 240, 222), (104, 150, 128), ((168, 0, 116), (92, 52, 20), (20, 36, 96))),
}
BEYOND_CARD_COLOURS = ((208, 226, 250), (252, 212, 164), (214, 214, 214), (232, 220, 250))
BEYOND_CARD_INKS = ((0, 110, 118), (92, 52, 20), (168, 0, 116), (196, 84, 0))
BEYOND_TABLES = ("cork", "checker tiles", "teal plastic", "striped cloth", "concrete")
BEYOND_JITTER = 1.6  # Hand.draw's jitter: rotations up to 19 degrees, offsets 13 % of the height
INK_ALPHA = 32  # a character's box holds its pixels drawn at least this opaque (of 255, before the 3x reduction)


@dataclass(frozen=True)
class ReadingScene(MathScene):
    """A math scene in the beyond look: its board's colours are its own (math_game.BOARDS holds only
    the splits' boards) and `background` names a BEYOND_TABLES top (render it with `image`)."""

    board_colours: tuple = ((255, 255, 255), (128, 128, 128))  # (board, frame)

    def draw_furniture(self, image: Image.Image, cam: Camera) -> None:
        # MathScene.draw_furniture with this scene's colours: the same layout, line for line.
        colour, frame = self.board_colours
        u1, v1, u2, v2 = _board_rect(self, cam)
        draw = ImageDraw.Draw(image)
        edge = max(1, round(0.008 * cam.scale(0.0)))
        draw.rectangle((u1 - edge, v1 - edge, u2 + edge, v2 + edge), fill=frame)
        draw.rectangle((u1, v1, u2, v2), fill=colour)
        text = handwriting(self.expression + "=", self.board_hand, 0.62 * (v2 - v1))
        size = _board_fit(text.size, u1, u2)
        if size is not None:
            text = text.resize(size, Image.LANCZOS)
        image.paste(text, _board_corner(text.size, u1, v1, u2, v2), text)


# --- the samples -----------------------------------------------------------------------------------------


def sample(seed: int, height: int, width: int, look: str | None = None, kind: str | None = None) -> dict:
    """The reading sample of (seed, look, kind); None draws the look, the kind, or both from the seed.

    {"image": (H, W, 3) uint8, "question", "answer", "kind", "look", "seed", "chars", "answer_boxes"}:
    chars is `char_boxes` of a math scene, empty for a toy scene (nothing written); answer_boxes is
    `answer_boxes`: where the answer's characters that are read off the image are written."""
    seed = int(seed)
    rng = np.random.default_rng([TAG_KIND, seed])
    drawn_look, drawn_kind = LOOKS[int(rng.integers(len(LOOKS)))], KINDS[int(rng.integers(len(KINDS)))]
    look = check_look(drawn_look if look is None else look)
    kind = check_kind(drawn_kind if kind is None else kind)
    if kind in TOY_KINDS:
        split = OPEN_WORLD if look == BEYOND else look
        # One toy seed per (seed, look): a beyond toy sample is not the open-world one of the seed.
        toy = image_text.sample(split, TOY_SEED_OFFSET + 3 * seed + LOOKS.index(look), height, width, kind=kind)
        return _sample(toy["image"], toy["question"], toy["answer"], kind, split, seed, [], [])
    scene = make_scene(seed, look, kind)
    question, answer, card = _question(scene, kind, rng)  # which card is asked about: the seed's stream, after look and kind
    chars = char_boxes(scene, height, width)
    return _sample(image(scene, height, width), question, answer, kind, look, seed, chars, answer_boxes(scene, kind, answer, chars, card))


def samples(seeds, height: int, width: int, look: str | None = None, kind: str | None = None):
    """Yield the samples of `seeds` (any iterable of ints), in order."""
    for seed in seeds:
        yield sample(seed, height, width, look, kind)


def check_look(look: str) -> str:
    if look in LOOKS:
        return look
    raise unknown_name(look, LOOKS, "reading look", "looks")


def check_kind(kind: str) -> str:
    if kind in KINDS:
        return kind
    raise unknown_name(kind, KINDS, "reading kind", "kinds")


def _sample(image, question, answer, kind, look, seed, chars, boxes) -> dict:
    return {
        "image": image, "question": question, "answer": answer, "kind": kind, "look": look, "seed": int(seed),
        "chars": chars, "answer_boxes": boxes,
    }  # fmt: skip


def _question(scene: MathScene, kind: str, rng: np.random.Generator) -> tuple[str, str, int | None]:
    """(question, answer, the index of the card the question names, or None)."""
    c = scene.cards
    if kind == "board":
        return "What is written on the whiteboard?", scene.expression, None
    if kind == "cards":
        return "What numbers are on the cards, from left to right?", f"There are: {c[0]} (left), {c[1]} (middle), and {c[2]} (right).", None
    if kind == "arithmetic":
        return "What is the answer to the expression on the whiteboard?", f"{scene.expression}={scene.result}.", None
    if kind == "card_at":
        k = int(rng.integers(3))
        return f"Which number is on the {SLOTS[k]} card?", c[k], k
    if kind == "where_is":
        unique = [k for k in range(3) if c.count(c[k]) == 1]
        k = unique[int(rng.integers(len(unique)))]
        return f"Where is the card with {c[k]}?", SLOTS[k], k
    if kind == "board_colour":
        return "What colour is the board?", scene.board, None
    if kind == "count":
        return "How many cards show a two-digit number?", str(sum(len(v) == 2 for v in c)), None
    return INSTRUCTION, scene.reasoning(), None  # scene_reasoning: the expert's text at the episode start


def answer_boxes(scene: MathScene, kind: str, answer: str, chars: list, card: int | None = None) -> list[tuple[int, tuple]]:
    """[(index in `answer`, pixel box)] of the answer's characters that are copied from the image: the
    board's expression (and its "=") and the cards' digits, wherever the answer states them (the
    reasoning states the expression twice). A dense target for where the language model should
    look while it writes each one (training/reading_attention.py). `chars` is `char_boxes(scene, ...)`;
    `card` the card a card_at question names. Kinds whose answer is not copied (where, colour, count): []."""
    expression = scene.expression
    board = [box for _, box in chars[: len(expression) + 1]]  # the expression, then "="
    cards, start = [], len(expression) + 1
    for value in scene.cards:
        cards.append([box for _, box in chars[start : start + len(value)]])
        start += len(value)
    # (text to find after the previous one, the boxes of its first characters)
    pieces = {
        "board": [(expression, board[:-1])],
        "arithmetic": [(expression + "=", board)],
        "card_at": [(scene.cards[card], cards[card])] if card is not None else [],
        "cards": [(f"{v} ({SLOTS[k]})", cards[k]) for k, v in enumerate(scene.cards)],
        "scene_reasoning": [(expression + ".", board[:-1]), (expression + "=", board)]
        + [(f"{v} ({SLOTS[k]})", cards[k]) for k, v in enumerate(scene.cards)],
    }.get(kind, [])
    out, cursor = [], 0
    for text, boxes in pieces:
        at = answer.find(text, cursor)
        if at < 0:
            raise ValueError(f"answer_boxes: {text!r} is not in the {kind} answer {answer!r}")
        out += [(at + i, box) for i, box in enumerate(boxes)]
        cursor = at + len(text)
    return out


# --- the scenes ---------------------------------------------------------------------------------------------


def make_scene(seed: int, look: str, kind: str = "board") -> MathScene:
    """The math scene a sample of (seed, look, kind) shows. "scene_reasoning" gets a scene of the game
    itself (math_game.make_scene, every operand and operator: its reasoning text is the robot's);
    every other kind the same layout with the wider content (module docstring), "arithmetic" with a
    result 0..99. A beyond scene is a ReadingScene."""
    check_look(look)
    if kind not in MATH_KINDS:
        raise unknown_name(kind, MATH_KINDS, "reading math kind", "kinds")
    if look == BEYOND:
        scene = math_game.make_scene(OPEN_WORLD, seed, vocabulary=math_game.ALL, tag=TAG_BEYOND)
    else:
        scene = math_game.make_scene(look, seed, vocabulary=math_game.ALL, tag=TAG_SCENE)
    rng = np.random.default_rng([TAG_CONTENT, LOOKS.index(look), seed, MATH_KINDS.index(kind)])
    if kind != "scene_reasoning":
        # Only what is written changes; steps, answer and arms keep the game scene's (never read here).
        a, op, b = expression(rng, bounded=kind == "arithmetic")
        scene = replace(scene, a=a, op=op, b=b, cards=_cards(rng))
    n = len(scene.expression) + 1
    if look == BEYOND:
        scene = _beyond(scene, rng, n)
    elif kind != "scene_reasoning":
        inks = BOARDS[look][scene.board][2]
        scene = replace(scene, board_hand=Hand.draw(rng, look, n, inks))  # one jitter per character written
    return scene


def _number(rng) -> int:
    # A third one-digit numbers: a single digit on a card is what a 2-step episode shows.
    return int(rng.integers(10)) if rng.random() < 0.35 else int(rng.integers(10, 100))


def expression(rng, bounded: bool) -> tuple[int, str, int]:
    """(a, op, b): operands 0..99 (a third one-digit), + - or x, never below 0; `bounded`: the
    result 0..99, as the reasoning's arithmetic writes it."""
    op = OPERATORS[int(rng.integers(len(OPERATORS)))]
    while True:
        a, b = _number(rng), _number(rng)
        if op == "-" and a < b:
            a, b = b, a  # never below 0: the reasoning form writes no sign
        if not bounded or math_game.evaluate(a, op, b) <= 99:
            return a, op, b


def _cards(rng) -> tuple[str, str, str]:
    while True:
        cards = tuple(str(_number(rng)) for _ in SLOTS)
        if len(set(cards)) > 1:  # "where_is" asks for a value on exactly one card
            return cards


def _beyond(scene: MathScene, rng, n: int) -> ReadingScene:
    names = sorted(BEYOND_BOARDS)
    board = names[int(rng.integers(len(names)))]
    colour, frame, inks = BEYOND_BOARDS[board]
    background = BEYOND_TABLES[int(rng.integers(len(BEYOND_TABLES)))]
    lighting = Lighting(
        float(rng.uniform(0.6, 1.3)),
        tuple(float(t) for t in rng.uniform(-0.12, 0.12, 3)),
        tuple(float(g) for g in rng.uniform(-0.25, 0.25, 2)),
        float(rng.uniform(1.5, 6.0)),
    )
    card_colour = BEYOND_CARD_COLOURS[int(rng.integers(len(BEYOND_CARD_COLOURS)))]
    board_hand = _beyond_hand(rng, n, inks)
    card_hands = tuple(_beyond_hand(rng, 2, BEYOND_CARD_INKS) for _ in SLOTS)
    base = {f.name: getattr(scene, f.name) for f in fields(scene)}
    base.update(
        board=board, background=background, lighting=lighting, board_hand=board_hand, card_hands=card_hands, card_colour=card_colour
    )
    return ReadingScene(**base, board_colours=(colour, frame))


def _beyond_hand(rng, n: int, inks) -> Hand:
    hand = Hand.draw(rng, OPEN_WORLD, n, inks, jitter=BEYOND_JITTER)
    every = all_fonts()
    return replace(hand, font=every[int(rng.integers(len(every)))])  # any installed font, not one split's


def all_fonts() -> tuple[str, ...]:
    return fonts.split_fonts(IN_DOMAIN) + fonts.split_fonts(OPEN_WORLD)


def board_colours(scene: MathScene) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(board, frame) colours of the scene's board."""
    if isinstance(scene, ReadingScene):
        return scene.board_colours
    return {**BOARDS[IN_DOMAIN], **BOARDS[OPEN_WORLD]}[scene.board][:2]


# --- drawing ----------------------------------------------------------------------------------------------


def image(scene: MathScene, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8: the scene with the arms at home. A split look is env.still_world's frame; a
    beyond one the same renderer with a BEYOND_TABLES top."""
    if not isinstance(scene, ReadingScene):
        return still_world(scene, height, width)[0]
    # Renderer draws only render.py's table tops: give it one (felt: the quickest), then lay this look's own over it.
    renderer = Renderer(replace(scene, background="green felt"), height, width)
    renderer.table = table_texture(scene.background, renderer.cam, np.random.default_rng(list(scene.stream) + [0x7AB1E]))
    state = np.array(START_STATE, dtype=float)
    return renderer.render(scene.make_props(), arm_poses(state), state[list(GRIPPER_INDICES)])


def table_texture(name: str, cam: Camera, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 beyond table top, in metres on the table as render.table_texture (textures scale with the scene)."""
    v, u = np.mgrid[0 : cam.height, 0 : cam.width].astype(np.float32) + 0.5
    s = cam.scale(0.0)
    x, y = (cam.height / 2 - v) / s, (cam.width / 2 - u) / s
    phase = rng.uniform(0, 2 * math.pi, size=3).astype(np.float32)
    grain = rng.normal(0, 1, size=x.shape).astype(np.float32)
    shade = np.zeros((*x.shape, 3), np.float32)
    if name == "cork":
        base = (186, 142, 92)
        shade += (16 * grain + 10 * np.sin(x * 23 + phase[0]) * np.sin(y * 19 + phase[1]))[..., None]
    elif name == "checker tiles":
        base = (204, 204, 198)
        tiles = (np.floor(x / 0.05 + phase[0]) + np.floor(y / 0.05 + phase[1])) % 2
        shade += (-124 * tiles + 3 * grain)[..., None]
    elif name == "teal plastic":
        base = (40, 128, 136)
        shade += (3 * grain + 8 * np.sin(x * 3 + y * 2 + phase[0]))[..., None]
    elif name == "striped cloth":
        base = (220, 186, 60)
        stripes = np.floor((x + y) / 0.03 + phase[0]) % 2
        shade += stripes[..., None] * np.array((26, 52, 160), np.float32) + 4 * grain[..., None]
    elif name == "concrete":
        base = (150, 148, 142)
        blotch = 12 * np.sin(x * 11 + phase[0]) * np.cos(y * 9 + phase[1]) + 8 * np.sin((x - y) * 17 + phase[2])
        shade += (blotch + 10 * grain)[..., None]
    else:
        raise unknown_name(name, BEYOND_TABLES, "beyond table top", "table tops")
    return np.clip(np.array(base, np.float32) + shade, 0, 255).astype(np.uint8)


def blanked(scene: MathScene) -> MathScene:
    """The scene with its writing in the board's and the cards' own colours: nothing reads (the ink
    is gone, the layout the same): the reference for what the characters cover."""
    colour = board_colours(scene)[0]
    return replace(
        scene,
        board_hand=replace(scene.board_hand, ink=tuple(colour)),
        card_hands=tuple(replace(h, ink=tuple(scene.card_colour)) for h in scene.card_hands),
    )


# --- where each character is ----------------------------------------------------------------------------------


def char_boxes(scene: MathScene, height: int, width: int) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Every character written in the scene's image at (height, width), with its pixel box (u1, v1, u2, v2),
    u2 and v2 exclusive (Pillow's getbbox): the board's expression and "=", then the left, middle and
    right cards' digits. The operator is written + - x (as the texts write it, whatever glyph the
    font drew). A box is the upright box around the character's ink (the ink turned by the hand's
    tilt and a card's yaw; its faint antialiased rim may fall outside).

    No second drawing: each glyph's ink pixels are carried through the steps that place it (the
    layout of render.handwriting, MathScene.draw_furniture, math_game._draw_card and the camera's
    SpriteBook), as affine maps of points; tests/sim/tasks/test_reading.py checks the boxes cover
    the ink the image shows."""
    cam = Camera(height, width)
    out = []
    u1, v1, u2, v2 = _board_rect(scene, cam)
    text = scene.expression + "="
    size, points = _text_points(text, scene.board_hand, 0.62 * (v2 - v1))
    fit = _board_fit(size, u1, u2) or size
    corner = _board_corner(fit, u1, v1, u2, v2)
    place = _affine(scale=(fit[0] / size[0], fit[1] / size[1]), shift=corner)
    out += [(c, _box(p, place)) for c, p in zip(text, points)]
    for prop, hand in zip(scene.make_props(), scene.card_hands):
        # SpriteBook's sprite of the card: its scale in steps of 0.5 %, turned by its yaw, centred on its top face.
        ppm = 1.005 ** round(math.log(cam.scale(prop.top)) / math.log(1.005))
        side = CARD_SIZE * ppm
        card = max(1, round(max(2, int(math.ceil(side * SUPERSAMPLE))) / SUPERSAMPLE))  # render.supersampled's size
        size, points = _text_points(prop.name, hand, side * (0.55 if len(prop.name) == 1 else 0.42))
        w, h = size
        fit = (max(1, int(0.9 * card)), max(1, int(h * 0.9 * card / w))) if w > 0.9 * card else size
        place = _affine(scale=(fit[0] / w, fit[1] / h), shift=((card - fit[0]) // 2, (card - fit[1]) // 2))
        sprite = (card, card)
        if abs(prop.yaw) > 1e-4:
            sprite, turn = _rotation(sprite, math.degrees(prop.yaw))
            place = turn @ place
        centre = cam.project(prop.position + np.array([0.0, 0.0, prop.height]))
        place = _affine(shift=(int(round(centre[0] - sprite[0] / 2)), int(round(centre[1] - sprite[1] / 2)))) @ place
        out += [(c, _box(p, place)) for c, p in zip(prop.name, points)]
    return out


def _board_rect(scene: MathScene, cam: Camera) -> tuple[float, float, float, float]:
    x1, x2, y1, y2 = BOARD
    dx, dy = scene.board_offset
    (u1, v1), (u2, v2) = cam.project(np.array([[x2 + dx, y2 + dy, 0.0], [x1 + dx, y1 + dy, 0.0]]))
    return u1, v1, u2, v2


def _board_fit(size, u1, u2) -> tuple[int, int] | None:
    """The size MathScene.draw_furniture shrinks a long expression to (None: it fits)."""
    w, h = size
    if w > 0.92 * (u2 - u1):
        return max(1, int(0.92 * (u2 - u1))), max(1, int(h * 0.92 * (u2 - u1) / w))
    return None


def _board_corner(size, u1, v1, u2, v2) -> tuple[int, int]:
    return int(round((u1 + u2 - size[0]) / 2)), int(round((v1 + v2 - size[1]) / 2))


def _affine(scale=(1.0, 1.0), shift=(0.0, 0.0)) -> np.ndarray:
    return np.array([[scale[0], 0.0, shift[0]], [0.0, scale[1], shift[1]], [0.0, 0.0, 1.0]])


def _box(points: np.ndarray, place: np.ndarray) -> tuple[int, int, int, int]:
    """The box of the pixels that hold `points` (continuous pixel coordinates) mapped by `place`."""
    if not len(points):
        points = np.zeros((1, 2))  # a glyph with no ink (not seen): a point at its image's corner
    q = points @ place[:2, :2].T + place[:2, 2]
    lo, hi = q.min(axis=0), q.max(axis=0)
    return int(math.floor(lo[0])), int(math.floor(lo[1])), int(math.floor(hi[0])) + 1, int(math.floor(hi[1])) + 1


def _rotation(size: tuple[int, int], degrees: float) -> tuple[tuple[int, int], np.ndarray]:
    """(new size, forward 3x3 map) of Image.rotate(degrees, expand=True) on an image of `size`: Pillow's
    own matrix (output to input, pixel centres at +0.5 on both sides), inverted."""
    w, h = size
    a = -math.radians(degrees)
    m = [round(math.cos(a), 15), round(math.sin(a), 15), 0.0, round(-math.sin(a), 15), round(math.cos(a), 15), 0.0]

    def transform(x, y):
        return m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]

    m[2], m[5] = transform(-w / 2, -h / 2)
    m[2] += w / 2
    m[5] += h / 2
    corners = [transform(x, y) for x, y in ((0, 0), (w, 0), (w, h), (0, h))]
    nw = math.ceil(max(c[0] for c in corners)) - math.floor(min(c[0] for c in corners))
    nh = math.ceil(max(c[1] for c in corners)) - math.floor(min(c[1] for c in corners))
    m[2], m[5] = transform(-(nw - w) / 2.0, -(nh - h) / 2.0)
    inverse = np.array([[m[0], m[1], m[2]], [m[3], m[4], m[5]], [0.0, 0.0, 1.0]])
    return (nw, nh), np.linalg.inv(inverse)


def _text_points(text: str, hand: Hand, height_px: float) -> tuple[tuple[int, int], list[np.ndarray]]:
    """(size, points): the size of render.handwriting(text, hand, height_px) and, per character, its
    ink pixels (alpha >= INK_ALPHA, supersampled) in that image's continuous pixel coordinates.
    render.handwriting's steps, each character kept apart (test_reading checks the size)."""
    ss = SUPERSAMPLE
    strip, placed = render.placed_glyphs(text, hand, height_px)
    points, boxes = [], []
    for glyph, x0, y0 in placed:
        alpha = np.asarray(glyph)
        ys, xs = np.nonzero(alpha)
        ink = alpha[ys, xs] >= INK_ALPHA
        xs, ys = xs + x0, ys + y0  # where handwriting pastes it in its strip (which clips it)
        inside = (xs >= 0) & (xs < strip[0]) & (ys >= 0) & (ys < strip[1])
        if inside.any():  # the strip's crop box is the union of these: every non-zero pixel
            boxes.append((xs[inside].min(), ys[inside].min(), xs[inside].max() + 1, ys[inside].max() + 1))
        ink &= inside
        points.append(np.stack([xs[ink], ys[ink]], axis=1).astype(float) + 0.5)  # pixel centres
    crop = (
        (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)) if boxes else (0, 0, 1, 1)
    )
    (tw, th), turn = _rotation((crop[2] - crop[0], crop[3] - crop[1]), hand.tilt)
    out = (max(1, round(tw / ss)), max(1, round(th / ss)))
    place = _affine(scale=(out[0] / tw, out[1] / th)) @ turn @ _affine(shift=(-crop[0], -crop[1]))
    return out, [p @ place[:2, :2].T + place[:2, 2] for p in points]
