"""TaskEnv: the gymnasium interface, the scripted expert's success on both tasks and splits, the
reasoning it gives at each step, failure and truncation (sim/tasks/env.py, expert.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from chatvla2.sim.tasks import expert, math_game, scoring
from chatvla2.sim.tasks.backend import STEP_MAX, KinematicBackend
from chatvla2.sim.tasks.env import START_STATE, TaskEnv

TASKS = ("math_game", "toy_placement")
SPLITS = ("in_domain", "open_world")


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("split", SPLITS)
def test_the_expert_succeeds_on_every_episode(task, split):
    env = TaskEnv(task, split, render_images=False)
    for seed in range(20):
        _, info = env.reset(seed=seed)
        first_text = info["reasoning"]
        rewards = 0.0
        for action in env.expert_actions():
            _, reward, terminated, truncated, info = env.step(action)
            rewards += reward
            assert not truncated and not info["failed"]
        assert info["success"] and terminated and rewards == 1.0, (task, split, seed, info["picked"])
        # The expert's own first reasoning earns every point.
        env.reset(seed=seed)
        s = env.score_reasoning(first_text)
        if task == "math_game":
            assert (s["ocr"], s["math"]) == (4, 2)
        else:
            assert (s["object_recognition"], s["spatial_affordance"]) == (1, 1)


def test_observation_and_spaces():
    env = TaskEnv("toy_placement", "open_world", 56, 84)
    observation, info = env.reset(seed=2)
    assert set(observation) == {"images", "state", "instruction"}
    (frame,) = observation["images"]
    assert frame.shape == (56, 84, 3) and frame.dtype == np.uint8
    assert observation["state"].shape == (14,) and observation["state"].dtype == np.float32
    assert observation["instruction"].startswith("Pick the ")
    assert env.observation_space.contains(observation)
    assert env.action_space.shape == (14,)
    assert env.action_space.high[6] == pytest.approx(0.088)  # gripper width, drivers/profiles.py
    assert info["success"] is False and info["scores"] is None


def test_gymnasium_env_checker_accepts_it():
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(TaskEnv("math_game", "in_domain", 56, 84), skip_render_check=True)


def test_two_step_reasoning_switches_after_the_first_pick():
    env = TaskEnv("math_game", "in_domain", render_images=False)
    _, info = env.reset(seed=0, options={"steps": 2})
    truth = env.scene.truth()
    texts = [info["reasoning"]]
    picked_at = None
    for action in env.expert_actions():
        _, _, _, _, info = env.step(action)
        texts.append(info["reasoning"])
        if picked_at is None and info["picked"]:
            picked_at = len(texts) - 1
    first, second = scoring.math_text(truth), scoring.math_text(truth, picked_first=True)
    assert all(t == first for t in texts[:picked_at]) and all(t == second for t in texts[picked_at:])
    assert "First, pick" in first and "Already picked" in second


def test_a_wrong_card_fails_the_episode():
    env = TaskEnv("math_game", "in_domain", render_images=False)
    env.reset(seed=1, options={"steps": 1})
    scene = env.scene
    wrong = next(s for s in math_game.SLOTS if s not in scene.answer)
    # The expert's plan for a scene that is the same but for its answer: it picks the wrong card.
    bad = math_game.MathScene(**{**scene.__dict__, "answer": (wrong,), "arms": math_game._arms((wrong,))})
    for action in expert.plan(bad, START_STATE):
        _, reward, terminated, _, info = env.step(action)
        if terminated:
            break
    assert info["failed"] and not info["success"] and reward == 0.0
    assert info["picked"] == [scene.cards[math_game.SLOTS.index(wrong)]]


def test_standing_still_truncates():
    env = TaskEnv("toy_placement", "in_domain", render_images=False, max_steps=30)
    observation, _ = env.reset(seed=0)
    for _ in range(30):
        observation, reward, terminated, truncated, info = env.step(observation["state"])
    assert truncated and not terminated and not info["success"]


def test_a_closed_gripper_pushed_onto_a_card_holds_nothing():
    env = TaskEnv("math_game", "in_domain", render_images=False)
    env.reset(seed=0)
    actions = env.expert_actions().copy()
    actions[:, [6, 13]] = 0.0  # never open the grippers
    for action in actions:
        _, _, _, _, info = env.step(action)
    assert info["picked"] == [] and not info["success"]


def test_kinematic_backend_rate_limit_and_finger_stop():
    backend = KinematicBackend()
    state = backend.reset(np.zeros(14))
    target = np.full(14, 1.0)
    target[[6, 13]] = 0.08
    state = backend.apply(target, np.zeros(2))
    np.testing.assert_allclose(state, np.minimum(target, STEP_MAX))
    backend.reset(np.r_[np.zeros(6), 0.08, np.zeros(6), 0.08])
    for _ in range(50):
        state = backend.apply(np.zeros(14), np.array([0.07, 0.0]))
    assert state[6] == pytest.approx(0.07) and state[13] == 0.0


def test_score_reasoning_keeps_the_first_score():
    env = TaskEnv("math_game", "open_world", render_images=False)
    env.reset(seed=4)
    assert env.score_reasoning("garbage")["ocr"] == 0
    env.score_reasoning(env.expert_reasoning())
    _, _, _, _, info = env.step(env.world.state)
    assert info["first_scores"]["parsed"] is False and info["scores"]["ocr"] == 4
