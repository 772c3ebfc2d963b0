"""The reasoning texts of both tasks: how the expert writes them and how a generated one is scored,
the paper's way (docs/reference/model.md, "How the paper scores"; slides, Tables 1 and 2).

Math matching game: OCR out of 4 and math reasoning out of 2.
  - ocr_numbers 1: both numbers of "On the whiteboard is A?B." are the board's, in order;
  - ocr_cards 1: "There are: X (left), Y (middle), and Z (right)." names every card's value at its
    position;
  - ocr_sign 2: the operator of "On the whiteboard is A?B." is the board's;
  - math_answer 1: the result R of the sentence "A?B=R." is the true result;
  - math_cards 1: the cards the text says to pick, with their positions and in order, are the
    answer's, and the "First, pick"/"Pick" sentence names the first of them (form A and C); in
    form B "Already picked" must name the first answer card and "I should pick" the second.
Toy placement: object recognition 1 and spatial affordance 1.
  - object_recognition 1: form 1: "The OBJ is at [x1, y1, x2, y2]." names the instructed object
    and the box overlaps the object's true box with IoU >= 0.5; form 2 (the object is in the
    gripper, so no box is asked for): "Already picked the OBJ." names the instructed object;
  - spatial_affordance 1: the point of "..., at [u, v]." lies in the instructed region (edges
    included): the image box of the area where the object must come to rest.

What the parser accepts (strict: one full match of one form, nothing else):
  - the text, stripped of leading and trailing whitespace, must match a form below character for
    character: single spaces, the punctuation shown, lower-case position words, nothing before,
    between or after the sentences;
  - numbers are unsigned decimal digits, compared as written ("07" is not "7"); the operator is
    one ASCII character, + - or x; positions are left, middle, right; box and point coordinates
    are integers 0..1000 (camera.py) written "[x1, y1, x2, y2]" and "[u, v]" with ", " between;
    object names are lower-case words separated by single spaces;
  - placement phrases: "to the left of the T", "to the right of the T", "in front of the T",
    "behind the T", "to the top of the T", "to the bottom of the T";
  - a text that matches no form scores 0 on every point (parsed = False); a text that parses but
    gets a field wrong loses only the points of that field.

Math forms (examples from docs/reference/model.md):
  A (2 steps, before the first pick): "On the whiteboard is 7+7. 7+7=14. There are: 8 (left),
     4 (middle), and 1 (right). I should pick 1(right) and 4(middle). First, pick 1 from right."
  B (2 steps, after it): "On the whiteboard is 7+7. 7+7=14. There are: 8 (left), 4 (middle), and
     1 (right). Already picked 1 from right. I should pick 4 from middle."
  C (1 step): "On the whiteboard is 18+16. 18+16=34. There are: 25 (left), 43 (middle), and
     34 (right). I should pick 34(right). Pick 34 from right."
Toy forms:
  1 (before the grasp): "The banana is at [412, 300, 520, 388]. The bowl is at [100, 200, 220,
     310]. I should place the banana in front of the bowl, at [160, 420]. First, pick the banana."
  2 (after it): "Already picked the banana. The bowl is at [100, 200, 220, 310]. I should place
     it in front of the bowl, at [160, 420]."
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chatvla2.sim.tasks.camera import box_iou

# --- math matching game -------------------------------------------------------------------------


@dataclass(frozen=True)
class MathTruth:
    a: int
    op: str
    b: int
    result: int
    cards: tuple[str, str, str]  # values at left, middle, right
    answer: tuple[tuple[str, str], ...]  # (value, slot) to pick, in order


def _prefix(t: MathTruth) -> str:
    e = f"{t.a}{t.op}{t.b}"
    c = t.cards
    return f"On the whiteboard is {e}. {e}={t.result}. There are: {c[0]} (left), {c[1]} (middle), and {c[2]} (right)."


def math_text(t: MathTruth, picked_first: bool = False) -> str:
    """The expert's reasoning: form C for 1 step, A before the first pick, B after it."""
    if len(t.answer) == 1:
        (v, s), = t.answer
        return f"{_prefix(t)} I should pick {v}({s}). Pick {v} from {s}."
    (v1, s1), (v2, s2) = t.answer
    if picked_first:
        return f"{_prefix(t)} Already picked {v1} from {s1}. I should pick {v2} from {s2}."
    return f"{_prefix(t)} I should pick {v1}({s1}) and {v2}({s2}). First, pick {v1} from {s1}."


_N = r"(\d+)"
_OP = r"([+\-x])"
_SLOT = r"(left|middle|right)"
_MATH_PREFIX = (rf"On the whiteboard is {_N}{_OP}{_N}\. {_N}{_OP}{_N}={_N}\. "
                rf"There are: {_N} \(left\), {_N} \(middle\), and {_N} \(right\)\. ")
MATH_FORMS = {
    "A": re.compile(_MATH_PREFIX + rf"I should pick {_N}\({_SLOT}\) and {_N}\({_SLOT}\)\. First, pick {_N} from {_SLOT}\."),
    "B": re.compile(_MATH_PREFIX + rf"Already picked {_N} from {_SLOT}\. I should pick {_N} from {_SLOT}\."),
    "C": re.compile(_MATH_PREFIX + rf"I should pick {_N}\({_SLOT}\)\. Pick {_N} from {_SLOT}\."),
}
MATH_POINTS = {"ocr_numbers": 1, "ocr_cards": 1, "ocr_sign": 2, "math_answer": 1, "math_cards": 1}


def parse_math(text: str) -> tuple[str, tuple[str, ...]] | None:
    """(form, groups) of the one form the text matches, or None."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    for form, pattern in MATH_FORMS.items():
        m = pattern.fullmatch(text)
        if m:
            return form, m.groups()
    return None


def score_math(text: str, t: MathTruth) -> dict:
    """The paper's points for one reasoning text: ocr (0..4), math (0..2) and each part."""
    parsed = parse_math(text)
    points = dict.fromkeys(MATH_POINTS, 0)
    form = None
    if parsed is not None:
        form, g = parsed
        a, op, b, _, _, _, r, c1, c2, c3 = g[:10]
        rest = g[10:]
        points["ocr_numbers"] = int(a == str(t.a) and b == str(t.b))
        points["ocr_cards"] = int((c1, c2, c3) == tuple(t.cards))
        points["ocr_sign"] = 2 * int(op == t.op)
        points["math_answer"] = int(r == str(t.result))
        first = t.answer[0]
        if form == "A":
            chosen = [(rest[0], rest[1]), (rest[2], rest[3])]
            ok = chosen == list(t.answer) and (rest[4], rest[5]) == first
        elif form == "B":
            ok = [(rest[0], rest[1]), (rest[2], rest[3])] == list(t.answer)
        else:
            ok = [(rest[0], rest[1])] == list(t.answer) and (rest[2], rest[3]) == first
        points["math_cards"] = int(ok)
    ocr = points["ocr_numbers"] + points["ocr_cards"] + points["ocr_sign"]
    math = points["math_answer"] + points["math_cards"]
    return {"ocr": ocr, "math": math, **points, "parsed": parsed is not None, "form": form}


# --- toy placement --------------------------------------------------------------------------------

PLACE_PHRASES = {
    "left": "to the left of the {}",
    "right": "to the right of the {}",
    "front": "in front of the {}",
    "behind": "behind the {}",
    "top": "to the top of the {}",
    "bottom": "to the bottom of the {}",
}


@dataclass(frozen=True)
class ToyTruth:
    obj: str
    target: str
    place: str  # a PLACE_PHRASES key
    obj_box: tuple[int, int, int, int]  # 0..1000, the object where it is now
    target_box: tuple[int, int, int, int]
    region: tuple[int, int, int, int]  # 0..1000 box of the instructed region
    point: tuple[int, int]  # where the expert will put the object

    @property
    def phrase(self) -> str:
        return PLACE_PHRASES[self.place].format(self.target)


def _box(b) -> str:
    return "[" + ", ".join(str(int(v)) for v in b) + "]"


def toy_text(t: ToyTruth, grasped: bool = False) -> str:
    """The expert's reasoning: form 1 before the object is grasped, form 2 after."""
    if grasped:
        return (f"Already picked the {t.obj}. The {t.target} is at {_box(t.target_box)}. "
                f"I should place it {t.phrase}, at {_box(t.point)}.")
    return (f"The {t.obj} is at {_box(t.obj_box)}. The {t.target} is at {_box(t.target_box)}. "
            f"I should place the {t.obj} {t.phrase}, at {_box(t.point)}. First, pick the {t.obj}.")


_NAME = r"([a-z]+(?: [a-z]+)*)"
_BOX = r"\[(\d+), (\d+), (\d+), (\d+)\]"
_POINT = r"\[(\d+), (\d+)\]"
_PHRASE = r"(to the left of|to the right of|in front of|behind|to the top of|to the bottom of) the " + _NAME
TOY_FORMS = {
    1: re.compile(rf"The {_NAME} is at {_BOX}\. The {_NAME} is at {_BOX}\. I should place the {_NAME} {_PHRASE}, "
                  rf"at {_POINT}\. First, pick the {_NAME}\."),
    2: re.compile(rf"Already picked the {_NAME}\. The {_NAME} is at {_BOX}\. I should place it {_PHRASE}, at {_POINT}\."),
}


def parse_toy(text: str) -> tuple[int, tuple[str, ...]] | None:
    if not isinstance(text, str):
        return None
    text = text.strip()
    for form, pattern in TOY_FORMS.items():
        m = pattern.fullmatch(text)
        if m:
            return form, m.groups()
    return None


def _in_box(point, box) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def score_toy(text: str, t: ToyTruth) -> dict:
    """The paper's toy-placement points for one reasoning text (module docstring)."""
    parsed = parse_toy(text)
    recognition = affordance = 0
    iou = 0.0
    form = None
    if parsed is not None:
        form, g = parsed
        if form == 1:
            name, box = g[0], tuple(int(v) for v in g[1:5])
            iou = box_iou(box, t.obj_box)
            recognition = int(name == t.obj and iou >= 0.5)
            point = (int(g[-3]), int(g[-2]))
        else:
            recognition = int(g[0] == t.obj)
            point = (int(g[-2]), int(g[-1]))
        affordance = int(_in_box(point, t.region))
    return {"object_recognition": recognition, "spatial_affordance": affordance, "iou": round(iou, 4),
            "parsed": parsed is not None, "form": form}
