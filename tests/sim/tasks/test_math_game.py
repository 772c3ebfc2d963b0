"""The math matching game: splits, determinism, cards, and what the camera shows (sim/tasks/math_game.py)."""

from __future__ import annotations

import numpy as np
import pytest

from chatvla2.sim.tasks import fonts, math_game
from chatvla2.sim.tasks.env import TaskEnv, still_world
from chatvla2.sim.tasks.math_game import BOARD, IN_OPERANDS, OPEN_OPERANDS, make_scene
from chatvla2.sim.tasks.render import BACKGROUNDS

SEEDS = range(300)


def test_the_splits_share_no_operand():
    assert not set(IN_OPERANDS) & set(OPEN_OPERANDS)


def test_in_domain_is_addition_of_training_numbers_only():
    for seed in SEEDS:
        s = make_scene("in_domain", seed)
        assert s.op == "+" and s.a in IN_OPERANDS and s.b in IN_OPERANDS, (seed, s.expression)
        assert s.board_hand.font in fonts.NAMED["in_domain"]
        assert all(h.font in fonts.NAMED["in_domain"] for h in s.card_hands)
        assert s.background in BACKGROUNDS["in_domain"] and s.board in math_game.BOARDS["in_domain"]


def test_open_world_has_unseen_numbers_signs_fonts_and_backgrounds():
    ops = set()
    for seed in SEEDS:
        s = make_scene("open_world", seed)
        ops.add(s.op)
        assert s.a in OPEN_OPERANDS and s.b in OPEN_OPERANDS
        assert s.board_hand.font in fonts.split_fonts("open_world")
        assert s.board_hand.font not in fonts.NAMED["in_domain"]
        assert s.background in BACKGROUNDS["open_world"] and s.board in math_game.BOARDS["open_world"]
    assert ops == {"+", "-", "x"}


@pytest.mark.parametrize("split", ["in_domain", "open_world"])
def test_cards_hold_the_answer(split):
    steps = set()
    for seed in range(100):
        s = make_scene(split, seed)
        steps.add(s.steps)
        assert len(set(s.cards)) == 3 and s.result >= 0
        picked = "".join(s.cards[math_game.SLOTS.index(slot)] for slot in s.answer)
        assert picked == str(s.result)
        if s.steps == 2:
            assert 10 <= s.result <= 99 and len(s.answer) == 2 and s.answer[0] != s.answer[1]
            assert set(s.arms) == {0, 1}  # each arm picks one card
        for slot, arm in zip(s.answer, s.arms):  # the nearer arm: left card left arm, right card right arm
            assert (slot, arm) not in (("left", 1), ("right", 0))
    assert steps == {1, 2}


def test_a_seed_is_always_the_same_episode():
    a, b = make_scene("open_world", 11), make_scene("open_world", 11)
    assert a == b and make_scene("open_world", 12) != a
    fa, _ = still_world(a, 252, 308)
    fb, _ = still_world(b, 252, 308)
    np.testing.assert_array_equal(fa, fb)


def _board_pixels(scene, world, frame):
    x1, x2, y1, y2 = BOARD
    dx, dy = scene.board_offset
    (u1, v1), (u2, v2) = world.camera.project(np.array([[x2 + dx, y2 + dy, 0.0], [x1 + dx, y1 + dy, 0.0]]))
    m = 3  # stay inside the frame
    return frame[int(v1) + m : int(v2) - m, int(u1) + m : int(u2) - m].reshape(-1, 3).astype(int)


def test_the_frame_shows_the_board_its_ink_the_cards_and_the_table():
    scene = make_scene("in_domain", 4)
    frame, world = still_world(scene, 252, 308)
    assert frame.shape == (252, 308, 3) and frame.dtype == np.uint8
    board = _board_pixels(scene, world, frame)
    # Mostly whiteboard white (244 under the in-domain light, gain 0.88..1.08), some marker ink.
    white = (board.min(axis=1) > 190).mean()
    ink = ((board.max(axis=1) < 120) | (board[:, 2] - board[:, 0] > 60)).mean()
    assert white > 0.6 and 0.03 < ink < 0.4, (white, ink)
    for i, prop in enumerate(world.props):  # each card: a bright tile with a dark digit in its middle
        u1, v1, u2, v2 = world.sprites.box(i, prop)
        card = frame[v1 + 2 : v2 - 2, u1 + 2 : u2 - 2].reshape(-1, 3).astype(int)
        assert (card.min(axis=1) > 180).mean() > 0.5
        assert (card.max(axis=1) < 90).mean() > 0.03
    # Between the cards and the board: only table.
    table = frame[60:70, 140:170].reshape(-1, 3).astype(float).mean(axis=0)
    expected = {"oak": (176, 128, 84), "grey laminate": (152, 152, 158)}[scene.background]
    assert np.abs(table - expected).max() < 40, (table, scene.background)


def test_the_frame_follows_the_state():
    env = TaskEnv("math_game", "in_domain", 252, 308)
    observation, _ = env.reset(seed=0, options={"steps": 2})
    first = observation["images"][0]
    for action in env.expert_actions():
        observation, _, _, _, info = env.step(action)
    assert info["success"] and len(info["picked"]) == 2
    last = observation["images"][0]
    world, cam = env.world, env.world.camera
    for index in world.lifted_order():
        prop = world.props[index]
        assert prop.held_by is not None and prop.position[2] > 0.05
        u1, v1, u2, v2 = world.sprites.box(index, prop)
        # The carried card: bright, between the orange finger tips.
        card = last[v1 + 3 : v2 - 3, u1 + 3 : u2 - 3].reshape(-1, 3).astype(int)
        assert (card.min(axis=1) > 180).mean() > 0.3
        g = cam.project(world.poses[prop.held_by].position).astype(int)
        around = last[g[1] - 12 : g[1] + 13, g[0] - 16 : g[0] + 17].reshape(-1, 3).astype(int)
        assert ((around[:, 0] > 170) & (around[:, 1] > 70) & (around[:, 1] < 170) & (around[:, 2] < 90)).any()
        # Its shadow on the table, below and right of it: darker than the table was.
        strip = (slice(v2 + 1, v2 + 4), slice(u1 + 8, u2))
        assert last[strip].mean() < first[strip].mean() - 15
    # The card left behind is where it was, untouched.
    (rest,) = [i for i in range(3) if i not in world.lifted_order()]
    u1, v1, u2, v2 = world.sprites.box(rest, world.props[rest])
    np.testing.assert_allclose(last[v1:v2, u1:u2].mean(), first[v1:v2, u1:u2].mean(), atol=3)


def test_tiny_size_renders():
    frame, _ = still_world(make_scene("open_world", 3), 56, 84)
    assert frame.shape == (56, 84, 3) and frame.std() > 10
