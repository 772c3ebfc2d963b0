"""Stage-0 reading samples (sim/tasks/reading.py): answers true to the scene, the looks kept apart,
streams of their own, and character boxes that cover the ink."""

from __future__ import annotations

import inspect
import re
from dataclasses import fields

import numpy as np
import pytest

from chatvla2.contract.names import UnknownChoice
from chatvla2.contract.scene import INSTRUCTION
from chatvla2.sim.tasks import fonts, image_text, math_game, reading, scoring, toy_placement
from chatvla2.sim.tasks.camera import Camera
from chatvla2.sim.tasks.env import still_world
from chatvla2.sim.tasks.render import BACKGROUNDS, handwriting
from chatvla2.sim.tasks.splits import SPLITS

SPLIT_INKS = {ink for split in SPLITS for _, _, inks in math_game.BOARDS[split].values() for ink in inks}
SPLIT_INKS |= {ink for split in SPLITS for ink in math_game.CARD_INKS[split]}


def test_samples_are_deterministic_and_complete():
    a, b = reading.sample(7, 56, 84), reading.sample(7, 56, 84)
    assert set(a) == {"image", "question", "answer", "kind", "look", "seed", "chars", "answer_boxes"}
    np.testing.assert_array_equal(a["image"], b["image"])
    assert {k: v for k, v in a.items() if k != "image"} == {k: v for k, v in b.items() if k != "image"}
    assert a["image"].shape == (56, 84, 3) and a["image"].dtype == np.uint8 and a["seed"] == 7
    # None draws the look and the kind from the seed: naming the drawn ones gives the same sample.
    for seed in range(6):
        drawn = reading.sample(seed, 56, 84, kind="board")
        named = reading.sample(seed, 56, 84, look=drawn["look"], kind="board")
        np.testing.assert_array_equal(drawn["image"], named["image"])
    c = reading.sample(8, 56, 84, look=a["look"], kind=a["kind"])
    assert not np.array_equal(a["image"], c["image"])


@pytest.mark.parametrize("look", reading.LOOKS)
def test_every_kind_answers_what_the_scene_shows(look):
    for kind in reading.KINDS:
        s = reading.sample(3, 56, 84, look=look, kind=kind)
        assert s["kind"] == kind and s["image"].shape == (56, 84, 3)
        question, answer = s["question"], s["answer"]
        if kind in reading.TOY_KINDS:
            assert s["look"] == ("open_world" if look == "beyond" else look) and s["chars"] == []
            assert question.endswith(("?", ".")) and answer
            continue
        scene = reading.make_scene(3, look, kind)
        assert s["look"] == look
        np.testing.assert_array_equal(s["image"], reading.image(scene, 56, 84))
        cards = scene.cards
        if kind == "board":
            assert question == "What is written on the whiteboard?" and answer == scene.expression
            assert re.fullmatch(r"\d+[+\-x]\d+", answer)
        elif kind == "cards":
            assert question == "What numbers are on the cards, from left to right?"
            assert answer == f"There are: {cards[0]} (left), {cards[1]} (middle), and {cards[2]} (right)."
        elif kind == "arithmetic":
            a, op, b, r = re.fullmatch(r"(\d+)([+\-x])(\d+)=(\d+)\.", answer).groups()
            assert (int(a), op, int(b)) == (scene.a, scene.op, scene.b) and math_game.evaluate(int(a), op, int(b)) == int(r) <= 99
        elif kind == "card_at":
            slot = re.fullmatch(r"Which number is on the (left|middle|right) card\?", question).group(1)
            assert answer == cards[math_game.SLOTS.index(slot)]
        elif kind == "where_is":
            value = re.fullmatch(r"Where is the card with (\d+)\?", question).group(1)
            assert cards.count(value) == 1 and answer == math_game.SLOTS[cards.index(value)]
        elif kind == "board_colour":
            assert question == "What colour is the board?" and answer == scene.board
        elif kind == "count":
            assert question == "How many cards show a two-digit number?" and answer == str(sum(len(c) == 2 for c in cards))
        else:
            assert kind == "scene_reasoning" and question == INSTRUCTION
            form, groups = scoring.parse_math(answer)
            assert form in ("A", "C") and groups[:3] == (str(scene.a), scene.op, str(scene.b))
            score = scoring.score_math(answer, scene.truth())
            assert (score["ocr"], score["math"]) == (4, 2)
        assert "".join(c for c, _ in s["chars"]) == scene.expression + "=" + "".join(cards)


@pytest.mark.parametrize("look", reading.LOOKS)
def test_answer_boxes_are_where_each_copied_character_is_written(look):
    copied = {"board": "{e}", "arithmetic": "{e}=", "card_at": "{c}", "cards": "{c0}{c1}{c2}", "scene_reasoning": "{e}{e}={c0}{c1}{c2}"}
    for seed in range(8):
        for kind in reading.KINDS:
            s = reading.sample(seed, 112, 140, look=look, kind=kind)
            if kind not in copied:
                assert s["answer_boxes"] == []  # where, colour, count and the toy kinds copy nothing
                continue
            scene, answer = reading.make_scene(seed, look, kind), s["answer"]
            box_of = {}
            for character, box in s["chars"]:
                box_of.setdefault(character, []).append(box)
            indices = [i for i, _ in s["answer_boxes"]]
            assert indices == sorted(set(indices)) and all(0 <= i < len(answer) for i in indices)
            # each box is one of that very character's boxes in the image
            assert all(box in box_of[answer[i]] for i, box in s["answer_boxes"])
            c = scene.cards
            asked = answer if kind == "card_at" else ""
            expected = copied[kind].format(e=scene.expression, c=asked, c0=c[0], c1=c[1], c2=c[2])
            assert "".join(answer[i] for i in indices) == expected
            if kind == "scene_reasoning":  # the expression's two statements are the same board characters
                n = len(scene.expression)
                assert [b for _, b in s["answer_boxes"][:n]] == [b for _, b in s["answer_boxes"][n : 2 * n]]


def test_the_seed_draws_every_look_and_kind():
    drawn = [reading.sample(seed, 56, 84) for seed in range(70)]
    assert {s["kind"] for s in drawn} == set(reading.KINDS)
    assert {s["look"] for s in drawn if s["kind"] in reading.MATH_KINDS} == set(reading.LOOKS)


def test_the_vocabulary_is_wider_than_both_splits():
    operands, ops, card_values = set(), set(), set()
    for seed in range(60):
        scene = reading.make_scene(seed, "in_domain", "board")
        operands |= {scene.a, scene.b}
        ops.add(scene.op)
        card_values |= {int(c) for c in scene.cards}
        assert 0 <= scene.a <= 99 and 0 <= scene.b <= 99 and scene.result >= 0
        assert reading.make_scene(seed, "beyond", "arithmetic").result <= 99
    assert ops == {"+", "-", "x"}  # in the in-domain look, which robot data only shows with +
    assert operands - set(math_game.IN_OPERANDS) - set(math_game.OPEN_OPERANDS)
    assert min(card_values) <= 9 and max(card_values) >= 90


def test_reasoning_scenes_are_games_in_the_splits_own_look():
    for seed in range(4):
        for look in ("in_domain", "open_world"):
            game = math_game.make_scene(look, seed, vocabulary=math_game.ALL, tag=reading.TAG_SCENE)
            assert reading.make_scene(seed, look, "scene_reasoning") == game


@pytest.mark.parametrize("look", ["in_domain", "open_world"])
def test_split_looks_are_the_splits(look):
    for seed in range(25):
        for kind in ("board", "scene_reasoning"):
            scene = reading.make_scene(seed, look, kind)
            assert type(scene) is math_game.MathScene and scene.split == look
            assert scene.board in math_game.BOARDS[look] and scene.background in BACKGROUNDS[look]
            assert scene.board_hand.ink in math_game.BOARDS[look][scene.board][2]
            assert scene.card_colour in math_game.CARD_COLOURS[look]
            assert all(h.ink in math_game.CARD_INKS[look] for h in scene.card_hands)
            assert {h.font for h in (scene.board_hand, *scene.card_hands)} <= set(fonts.split_fonts(look))


def test_the_beyond_look_is_outside_both_splits():
    split_boards = {b for split in SPLITS for b in math_game.BOARDS[split]}
    assert not set(reading.BEYOND_BOARDS) & split_boards
    split_colours = {c for split in SPLITS for board in math_game.BOARDS[split].values() for c in board[:2]}
    assert not {c for board in reading.BEYOND_BOARDS.values() for c in board[:2]} & split_colours
    assert not set(reading.BEYOND_TABLES) & {b for split in SPLITS for b in BACKGROUNDS[split]}
    assert not {ink for _, _, inks in reading.BEYOND_BOARDS.values() for ink in inks} & SPLIT_INKS
    assert not set(reading.BEYOND_CARD_INKS) & SPLIT_INKS
    assert not set(reading.BEYOND_CARD_COLOURS) & {c for split in SPLITS for c in math_game.CARD_COLOURS[split]}
    used, turns = set(), []
    for seed in range(40):
        scene = reading.make_scene(seed, "beyond", "board" if seed % 2 else "scene_reasoning")
        assert isinstance(scene, reading.ReadingScene) and scene.board in reading.BEYOND_BOARDS
        assert scene.background in reading.BEYOND_TABLES and scene.board_hand.ink in reading.BEYOND_BOARDS[scene.board][2]
        assert scene.card_colour in reading.BEYOND_CARD_COLOURS and all(h.ink in reading.BEYOND_CARD_INKS for h in scene.card_hands)
        turns.append(max(abs(r) for r in scene.board_hand.rotations))
        used |= {h.font for h in (scene.board_hand, *scene.card_hands)}
    assert 12 < max(turns) <= 12 * reading.BEYOND_JITTER  # the splits' hands turn a character 12 degrees at most
    assert used <= set(reading.all_fonts())
    assert used & set(fonts.split_fonts("in_domain")) and used & set(fonts.split_fonts("open_world"))
    for name in reading.BEYOND_TABLES:  # every table top draws
        top = reading.table_texture(name, Camera(28, 42), np.random.default_rng(0))
        assert top.shape == (28, 42, 3) and top.dtype == np.uint8 and top.std() > 1


def test_streams_are_not_the_robot_episodes():
    default_tag = inspect.signature(math_game.make_scene).parameters["tag"].default
    toy_tag = inspect.signature(toy_placement.make_scene).parameters["tag"].default
    taken = {default_tag, toy_tag, image_text.TAG_KIND, image_text.TAG_MATH, image_text.TAG_TOY}
    assert len(set(reading.TAGS)) == len(reading.TAGS) and not set(reading.TAGS) & taken
    for look in reading.LOOKS:
        for kind in ("board", "scene_reasoning"):
            assert reading.make_scene(0, look, kind).tag in reading.TAGS


def test_beyond_board_is_drawn_as_the_splits_boards():
    # ReadingScene.draw_furniture mirrors MathScene's: given a split board's colours it draws the same frame.
    for seed, look in [(0, "in_domain"), (1, "open_world"), (2, "open_world")]:
        scene = reading.make_scene(seed, look, "board")
        mirrored = reading.ReadingScene(
            **{f.name: getattr(scene, f.name) for f in fields(scene)}, board_colours=reading.board_colours(scene)
        )
        np.testing.assert_array_equal(still_world(mirrored, 56, 84)[0], still_world(scene, 56, 84)[0])


def test_the_text_layout_is_handwritings():
    for seed in range(12):
        scene = reading.make_scene(seed, reading.LOOKS[seed % 3], "board")
        for text, hand, height in [(scene.expression + "=", scene.board_hand, 6 + seed), (scene.cards[0], scene.card_hands[0], 4 + seed)]:
            size, points = reading._text_points(text, hand, height)
            assert size == handwriting(text, hand, height).size and len(points) == len(text)


@pytest.mark.parametrize("size", [(56, 84), (112, 140), (224, 280)])
def test_char_boxes_cover_the_ink(size):
    height, width = size
    seeds = {56: range(6), 112: range(8), 224: range(2)}[height]
    for look in reading.LOOKS:
        for seed in seeds:
            for kind in ("board", "scene_reasoning"):
                scene = reading.make_scene(seed, look, kind)
                diff = np.abs(reading.image(scene, height, width).astype(int) - reading.image(reading.blanked(scene), height, width))
                ink = diff.sum(-1) > 30  # what reads as writing (the rest: the antialiased rim)
                boxes = reading.char_boxes(scene, height, width)
                assert [c for c, _ in boxes] == list(scene.expression + "=" + "".join(scene.cards))
                covered = np.zeros((height, width), bool)
                for _, (u1, v1, u2, v2) in boxes:
                    assert 0 <= u1 < u2 <= width and 0 <= v1 < v2 <= height
                    assert diff[v1:v2, u1:u2].any()  # a box around something written
                    covered[v1:v2, u1:u2] = True
                assert ink.sum() > 10 and (ink & covered).sum() >= 0.9 * ink.sum(), (look, seed, kind)


@pytest.mark.parametrize("args", [{"look": "indomain"}, {"kind": "whiteboard_ocr"}, {"look": None, "kind": "cardz"}])
def test_unknown_look_or_kind(args):
    with pytest.raises(UnknownChoice) as caught:
        reading.sample(0, 56, 84, **args)
    assert isinstance(caught.value, LookupError) and "\n" not in str(caught.value)
    assert "did you mean" in str(caught.value)
