"""The math matching game (docs/reference/model.md, "Robots, rates and data"; the slides, "Math Matching Game").

A whiteboard at the far side of the table shows an expression, two numbers and an operator; three
cards lie in a row in front of the robot at the left, middle and right. Instruction (the authors'
prompt, contract/scene.py): "Answer the question and pick the card with the correct answer."

- 1-step episodes: the answer is on one card (the slides' "18+16=34 ... Pick 34 from right"); the
  cards show numbers 0..99.
- 2-step episodes: the answer has two different digits, each on its own card; the robot picks
  the tens card first, then the units card (the slides' "4+8=12 ... First, pick 1 from left. Then
  pick 2 from middle"). The third card shows another digit.

Splits (splits.py): `in_domain` is addition only, operands from IN_OPERANDS, the in-domain fonts
(fonts.py), table tops (render.py), boards and inks below. `open_world` draws + - and x, operands
from OPEN_OPERANDS (disjoint from IN_OPERANDS), and its own fonts, tables, boards and inks.
Subtraction keeps the first operand larger; products stay below 100. (Image-text data,
image_text.py, draws expressions from both operand lists and every operator, `vocabulary=ALL`,
in either split's look.)

Which arm picks (a project choice, "the arm nearer the card"): the left card is the left arm's,
the right card the right arm's; the middle card, equally far from both, goes to the arm on the
side away from the episode's other card (the right arm in 1-step episodes), so each arm picks at
most one card and the arms never cross.

The reasoning at each time step (exactly the authors' template, docs/reference/model.md; `reasoning`):
- 2-step, until the first card counts as picked (grasped and lifted, props.py):
  `On the whiteboard is 7+7. 7+7=14. There are: 8 (left), 4 (middle), and 1 (right). I should pick
  1(right) and 4(middle). First, pick 1 from right.`
- 2-step, from the first observation after that (to the end of the episode):
  `On the whiteboard is 7+7. 7+7=14. There are: 8 (left), 4 (middle), and 1 (right). Already
  picked 1 from right. I should pick 4 from middle.`
- 1-step, at every step: `On the whiteboard is 18+16. 18+16=34. There are: 25 (left), 43 (middle),
  and 34 (right). I should pick 34(right). Pick 34 from right.`
The card list always names the three slots as the episode began (a picked card keeps its slot).
The operator is written + - or x (ASCII; the whiteboard draws - and x as the proper minus and
times signs where the font has them).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from chatvla2.contract.scene import INSTRUCTION
from chatvla2.sim.tasks import scoring
from chatvla2.sim.tasks.camera import Camera
from chatvla2.sim.tasks.props import Prop
from chatvla2.sim.tasks.render import BACKGROUNDS, Hand, Lighting, handwriting, supersampled
from chatvla2.sim.tasks.splits import IN_DOMAIN, OPEN_WORLD, SPLITS, check_split

TASK = "math_game"
IN_OPERANDS = (1, 2, 3, 4, 5, 7, 8, 12, 16, 18, 21, 25, 33)
OPEN_OPERANDS = (6, 9, 11, 13, 14, 17, 19, 24, 28, 36, 42, 47, 56, 63)
OPERATORS = {IN_DOMAIN: ("+",), OPEN_WORLD: ("+", "-", "x")}
SLOTS = ("left", "middle", "right")

# Geometry (world frame, kinematics.py; project choices): cards are 7 cm foam tiles, 2 cm thick,
# grasped across their width (the X5 gripper opens to 0.088 m, docs/reference/arx.md), in a row 0.29 m in front
# of the bases, 0.15 m apart; the board lies flat at the far side, where no arm reaches over it.
CARD_SIZE = 0.07
CARD_HEIGHT = 0.02
CARD_ROW_X = 0.29
SLOT_Y = {"left": 0.15, "middle": 0.0, "right": -0.15}
BOARD = (0.47, 0.60, -0.19, 0.19)  # x1, x2, y1, y2

# Boards and inks per split: (board colour, frame colour, inks).
BOARDS = {
    IN_DOMAIN: {"whiteboard": ((244, 244, 240), (150, 152, 158), ((30, 50, 160), (25, 25, 30)))},
    OPEN_WORLD: {
        "yellow paper": ((246, 226, 130), (200, 170, 80), ((200, 30, 40), (20, 110, 50), (110, 40, 140))),
        "blackboard": ((42, 62, 52), (120, 84, 50), ((240, 240, 232), (250, 230, 120))),
        "light blue board": ((200, 225, 245), (120, 130, 150), ((200, 30, 40), (110, 40, 140))),
    },
}
CARD_COLOURS = {IN_DOMAIN: ((250, 250, 246),), OPEN_WORLD: ((250, 236, 190), (214, 240, 214), (248, 218, 226))}
CARD_INKS = {IN_DOMAIN: ((20, 20, 24),), OPEN_WORLD: ((20, 20, 24), (30, 40, 140), (150, 20, 30))}


def evaluate(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


ALL = "all"  # a vocabulary, not a split: both splits' operands and every operator (image_text.py)


@functools.cache
def expressions(vocabulary: str, steps: int) -> dict[str, tuple[tuple[int, int], ...]]:
    """Operator -> every (a, b) a split's vocabulary (or ALL) allows for 1- or 2-step episodes."""
    if vocabulary == ALL:
        operands, operators = tuple(sorted(IN_OPERANDS + OPEN_OPERANDS)), OPERATORS[OPEN_WORLD]
    else:
        operands = IN_OPERANDS if check_split(vocabulary) == IN_DOMAIN else OPEN_OPERANDS
        operators = OPERATORS[vocabulary]
    table = {}
    for op in operators:
        pairs = []
        for a in operands:
            for b in operands:
                if op == "-" and a <= b:
                    continue
                r = evaluate(a, op, b)
                if r > 99 or (steps == 2 and not (r >= 10 and r // 10 != r % 10)):
                    continue
                pairs.append((a, b))
        if pairs:
            table[op] = tuple(pairs)
    return table


@dataclass(frozen=True)
class MathScene:
    split: str
    seed: int
    a: int
    op: str
    b: int
    steps: int
    cards: tuple[str, str, str]  # values at left, middle, right
    answer: tuple[str, ...]  # slots to pick, in order
    arms: tuple[int, ...]  # the arm that picks each, 0 = left
    positions: tuple[tuple[float, float], ...]  # card centres (x, y), per slot
    yaws: tuple[float, ...]
    board_offset: tuple[float, float]
    board: str
    background: str
    lighting: Lighting
    board_hand: Hand
    card_hands: tuple[Hand, ...]
    card_colour: tuple[int, int, int]
    tag: int = 1  # first word of the random stream: 1 for robot episodes (image_text.py uses others)
    task: str = TASK
    instruction: str = INSTRUCTION

    @property
    def result(self) -> int:
        return evaluate(self.a, self.op, self.b)

    @property
    def expression(self) -> str:
        return f"{self.a}{self.op}{self.b}"

    @property
    def stream(self) -> tuple[int, ...]:
        return (self.tag, SPLITS.index(self.split), self.seed)

    # --- the props and the furniture ------------------------------------------------------------
    def make_props(self) -> list[Prop]:
        props = []
        for k, slot in enumerate(SLOTS):
            x, y = self.positions[k]
            props.append(Prop(name=self.cards[k], kind="card", position=np.array([x, y, 0.0]),
                              size=(CARD_SIZE, CARD_SIZE), height=CARD_HEIGHT, grasp_width=CARD_SIZE,
                              draw=functools.partial(_draw_card, self.cards[k], self.card_hands[k], self.card_colour),
                              yaw=self.yaws[k], slot=slot))
        return props

    def support(self, x: float, y: float) -> float:
        return 0.0  # only the table: the board lies flat on it

    def draw_furniture(self, image: Image.Image, cam: Camera) -> None:
        colour, frame, _ = {**BOARDS[IN_DOMAIN], **BOARDS[OPEN_WORLD]}[self.board]
        x1, x2, y1, y2 = BOARD
        dx, dy = self.board_offset
        corners = cam.project(np.array([[x2 + dx, y2 + dy, 0.0], [x1 + dx, y1 + dy, 0.0]]))
        (u1, v1), (u2, v2) = corners
        draw = ImageDraw.Draw(image)
        edge = max(1, round(0.008 * cam.scale(0.0)))
        draw.rectangle((u1 - edge, v1 - edge, u2 + edge, v2 + edge), fill=frame)
        draw.rectangle((u1, v1, u2, v2), fill=colour)
        text = handwriting(self.expression + "=", self.board_hand, 0.62 * (v2 - v1))
        if text.width > 0.92 * (u2 - u1):  # long expressions: keep them on the board
            text = text.resize((max(1, int(0.92 * (u2 - u1))), max(1, int(text.height * 0.92 * (u2 - u1) / text.width))),
                               Image.LANCZOS)
        image.paste(text, (int(round((u1 + u2 - text.width) / 2)), int(round((v1 + v2 - text.height) / 2))), text)

    # --- what the expert says, what counts as success, how a text scores -----------------------------
    def truth(self) -> scoring.MathTruth:
        answer = tuple((self.cards[SLOTS.index(s)], s) for s in self.answer)
        return scoring.MathTruth(self.a, self.op, self.b, self.result, self.cards, answer)

    def reasoning(self, world=None) -> str:
        """The expert's reasoning for the world's state (module docstring: which form when)."""
        picked = len(world.lifted_order()) if world is not None else 0
        return scoring.math_text(self.truth(), picked_first=self.steps == 2 and picked >= 1)

    def outcome(self, world) -> tuple[bool, bool]:
        """(success, failed): the lifted cards are exactly the answer's, in order (a wrong or
        out-of-order card fails the episode at once)."""
        picked = [world.props[i].slot for i in world.lifted_order()]
        target = list(self.answer)
        if picked != target[: len(picked)]:
            return False, True
        return picked == target, False

    def score(self, text: str, world=None) -> dict:
        return scoring.score_math(text, self.truth())

    def moves(self) -> list[tuple]:
        """The expert's plan: ("pick", arm, prop index) in order, then a hold."""
        return [("pick", arm, SLOTS.index(slot)) for slot, arm in zip(self.answer, self.arms)]


def _draw_card(value: str, hand: Hand, colour, ppm: float) -> Image.Image:
    side = CARD_SIZE * ppm

    def draw(d: ImageDraw.ImageDraw, w: int, h: int) -> None:
        d.rounded_rectangle((0, 0, w - 1, h - 1), radius=w * 0.1, fill=colour + (255,), outline=(120, 120, 120, 255),
                            width=max(1, w // 40))

    card = supersampled(side, side, draw)
    text = handwriting(value, hand, side * (0.55 if len(value) == 1 else 0.42))
    if text.width > 0.9 * card.width:
        text = text.resize((max(1, int(0.9 * card.width)), max(1, int(text.height * 0.9 * card.width / text.width))),
                           Image.LANCZOS)
    card.paste(text, ((card.width - text.width) // 2, (card.height - text.height) // 2), text)
    return card


def _distractors(result: int, rng: np.random.Generator) -> list[int]:
    """Two numbers a careless reader might pick instead of `result` (1-step cards)."""
    swapped = int(str(result).zfill(2)[::-1]) if result >= 10 else result + 5
    near = [result + 1, result - 1, result + 10, result - 10, swapped, result + 2, result - 2, int(rng.integers(100))]
    pool = []
    for n in near:
        if 0 <= n <= 99 and n != result and n not in pool:
            pool.append(n)
    picks = rng.choice(len(pool), size=2, replace=False)
    return [pool[int(i)] for i in picks]


def make_scene(split: str, seed: int, steps: int | None = None, vocabulary: str | None = None,
               tag: int = 1) -> MathScene:
    """The episode of (split, seed): always the same scene. `steps` forces 1 or 2 (else drawn).

    `vocabulary` (default: the split) chooses the expressions, the split everything that is seen
    (fonts, table, board, inks, light); `tag` selects another random stream (image_text.py)."""
    check_split(split)
    rng = np.random.default_rng([tag, SPLITS.index(split), seed])
    drawn_steps = 1 if rng.random() < 0.5 else 2
    steps = steps or drawn_steps
    table = expressions(vocabulary or split, steps)
    ops = sorted(table)
    op = ops[int(rng.integers(len(ops)))]
    a, b = table[op][int(rng.integers(len(table[op])))]
    result = evaluate(a, op, b)
    if steps == 1:
        values = [result] + _distractors(result, rng)
        answer_values = [str(result)]
    else:
        tens, units = divmod(result, 10)
        others = [d for d in range(10) if d not in (tens, units)]
        values = [tens, units, others[int(rng.integers(len(others)))]]
        answer_values = [str(tens), str(units)]
    order = rng.permutation(3)
    cards = tuple(str(values[int(i)]) for i in order)
    answer = tuple(SLOTS[cards.index(v)] for v in answer_values)
    arms = _arms(answer)
    positions = tuple((CARD_ROW_X + float(rng.uniform(-0.01, 0.01)), SLOT_Y[s] + float(rng.uniform(-0.01, 0.01)))
                      for s in SLOTS)
    yaws = tuple(float(v) for v in rng.uniform(-0.2, 0.2, 3))
    boards = sorted(BOARDS[split])
    board = boards[int(rng.integers(len(boards)))]
    backgrounds = BACKGROUNDS[split]
    background = backgrounds[int(rng.integers(len(backgrounds)))]
    lighting = Lighting.draw(rng, split)
    inks = BOARDS[split][board][2]
    board_hand = Hand.draw(rng, split, len(f"{a}{op}{b}="), inks)
    card_inks = CARD_INKS[split]
    card_hands = tuple(Hand.draw(rng, split, 2, card_inks) for _ in SLOTS)
    colours = CARD_COLOURS[split]
    colour = colours[int(rng.integers(len(colours)))]
    offset = (float(rng.uniform(-0.01, 0.01)), float(rng.uniform(-0.03, 0.03)))
    return MathScene(split, seed, a, op, b, steps, cards, answer, arms, positions, yaws, offset, board, background,
                     lighting, board_hand, card_hands, colour, tag)


def _arms(answer: tuple[str, ...]) -> tuple[int, ...]:
    """The arm that picks each answer card (module docstring): 0 = left, 1 = right."""
    arms = []
    for slot in answer:
        if slot == "left":
            arms.append(0)
        elif slot == "right":
            arms.append(1)
        else:
            other = [s for s in answer if s != "middle"]
            arms.append(0 if other and other[0] == "right" else 1)
    return tuple(arms)
