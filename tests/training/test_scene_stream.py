"""Fresh training scenes on the fly (training/scene_stream.py) and the worker processes that draw them
ahead of the trainer (training/sample_workers.py): pure in (seed, step, slot), the same frame, state,
reasoning and actions as a stored demonstration, the training tags only, and no process left behind."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import multiprocessing
import os
import re

import numpy as np
import pytest

from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.names import UnknownChoice
from chatvla2.sim.tasks import math_game, toy_placement
from chatvla2.sim.tasks.env import TASKS
from chatvla2.sim.tasks.episode import generate_episode
from chatvla2.sim.tasks.splits import IN_DOMAIN, SPLITS
from chatvla2.training import scene_stream
from chatvla2.training.sample_workers import BatchPrefetcher, WorkerFailed
from chatvla2.training.scene_stream import (
    EVALUATION_TAGS,
    HELD_OUT_TAGS,
    IMAGE_TEXT_TAGS,
    ROBOT_MATH,
    ROBOT_SOURCES,
    ROBOT_TOY,
    SOURCES,
    TRAINING_TAGS,
    Mixture,
    expert_normalization_stats,
    expert_trajectory,
    held_out_scene,
    robot_example,
    sample,
    slot_draw,
    step_examples,
    training_scene,
)

SIZE = (56, 84)  # the tiny preset's image: cheap to draw
ALL_SOURCES = {"robot_math": 1, "robot_toy": 1, "image_text": 1}
MIXTURE = Mixture(weights=ALL_SOURCES, height=SIZE[0], width=SIZE[1], chunk_size=10, text_state=np.arange(14) / 10)


def _same(a, b) -> bool:
    return (
        len(a.frames) == len(b.frames)
        and all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
        and (a.instruction, a.reasoning) == (b.instruction, b.reasoning)
        and np.array_equal(a.state, b.state)
        and np.array_equal(a.actions, b.actions)
        and a.actions.dtype == b.actions.dtype
    )


def _same_batches(a, b) -> bool:
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))


def _robot_slots(mixture, task, count, seed=0):
    """The first `count` (step, slot) of the stream whose source is `task`'s robot source."""
    found = []
    for step in range(100):
        for slot in range(4):
            if ROBOT_SOURCES.get(slot_draw(mixture, seed, step, slot)[0]) == task:
                found.append((step, slot))
                if len(found) == count:
                    return found
    raise AssertionError(f"no {task} slots in 400")


# --- the pure function ----------------------------------------------------------------------------------------
def test_the_sample_of_seed_step_slot_is_always_the_same():
    for step, slot in ((0, 0), (0, 1), (3, 2)):
        assert _same(sample(MIXTURE, 7, step, slot), sample(MIXTURE, 7, step, slot))


def test_steps_slots_and_seeds_draw_different_scenes():
    seeds = {slot_draw(MIXTURE, seed, step, slot)[1] for seed in (0, 1) for step in range(20) for slot in range(4)}
    assert len(seeds) == 2 * 20 * 4
    first, second = step_examples(MIXTURE, 0, 0, 2), step_examples(MIXTURE, 0, 1, 2)
    assert not any(np.array_equal(a.frames[0], b.frames[0]) for a in first for b in second)


def test_every_weighted_source_is_drawn_in_about_its_share():
    mixture = dataclasses.replace(MIXTURE, weights={"robot_math": 2, "robot_toy": 1, "image_text": 1})
    drawn = [slot_draw(mixture, 0, step, slot)[0] for step in range(200) for slot in range(4)]
    shares = {name: drawn.count(name) / len(drawn) for name in mixture.sources}
    assert abs(shares["robot_math"] - 0.5) < 0.07 and abs(shares["robot_toy"] - 0.25) < 0.07
    # The weights' order does not matter: they are kept sorted by name.
    reordered = {"robot_toy": 1, "robot_math": 2, "image_text": 1}
    assert dataclasses.replace(mixture, weights=reordered) == mixture


def test_text_samples_carry_the_given_state_and_no_actions():
    mixture = dataclasses.replace(MIXTURE, weights={"image_text": 1}, num_views=2)
    for slot in range(3):
        example = sample(mixture, 0, 0, slot)
        assert len(example.frames) == 2 and example.frames[0].shape == (*SIZE, 3)
        assert example.instruction.endswith("?") and example.reasoning
        assert np.array_equal(example.state, np.arange(14, dtype=np.float32) / 10)
        assert example.actions.shape == (0, 14)


def test_a_mixture_rejects_what_it_cannot_draw():
    size = {"height": 56, "width": 84, "chunk_size": 10}
    with pytest.raises(UnknownChoice, match="robot_maths"):
        Mixture(weights={"robot_maths": 1}, **size)
    with pytest.raises(InvalidInput, match="non-negative"):
        Mixture(weights={"robot_math": -1}, **size)
    with pytest.raises(InvalidInput, match="positive weight"):
        Mixture(weights={"robot_math": 0}, **size)
    with pytest.raises(InvalidInput, match="text_state"):
        Mixture(weights={"image_text": 1}, **size)
    with pytest.raises(UnknownChoice, match="image-text kind"):
        Mixture(weights={"robot_math": 1}, image_text_kinds=("ocr",), **size)
    with pytest.raises(InvalidInput, match="step must be non-negative"):
        sample(MIXTURE, 0, -1, 0)


# --- robot samples: training tags, in domain, exactly a demonstration's frame ---------------------------------
def test_robot_samples_are_new_in_domain_training_scenes(monkeypatch):
    drawn = []

    def spy(task, scene_seed):
        scene = training_scene(task, scene_seed)
        drawn.append((task, scene))
        return scene

    monkeypatch.setattr(scene_stream, "training_scene", spy)
    mixture = dataclasses.replace(MIXTURE, weights={ROBOT_MATH: 1, ROBOT_TOY: 1})
    step_examples(mixture, 3, 0, 6)
    assert {task for task, _ in drawn} == {math_game.TASK, toy_placement.TASK}
    for task, scene in drawn:
        assert scene.split == IN_DOMAIN and scene.tag == TRAINING_TAGS[task]
        assert scene.tag not in EVALUATION_TAGS.values()


@pytest.fixture(scope="module")
def demonstrations():
    """(task, step, slot, the episode generate_episode stores for that slot's scene), two per task, 112x140."""
    mixture = dataclasses.replace(MIXTURE, weights={ROBOT_MATH: 1, ROBOT_TOY: 1}, height=112, width=140)
    found = []
    for task in TASKS:
        for step, slot in _robot_slots(mixture, task, 2):
            scene_seed = slot_draw(mixture, 0, step, slot)[1]
            found.append((task, step, slot, generate_episode(task, IN_DOMAIN, scene_seed, 112, 140, tag=TRAINING_TAGS[task])))
    return mixture, found


def test_a_robot_sample_is_frame_t_of_the_stored_demonstration(demonstrations):
    mixture, found = demonstrations
    for task, step, slot, episode in found:
        _, _, rng = slot_draw(mixture, 0, step, slot)
        t = int(rng.integers(len(episode.action)))  # the frame index is the slot generator's next draw
        example = sample(mixture, 0, step, slot)
        assert np.array_equal(example.frames[0], episode.frames[t]), (task, step, slot, t)
        assert example.instruction == episode.instruction and example.reasoning == episode.reasoning[t]
        assert np.array_equal(example.state, episode.state[t])
        assert np.array_equal(example.actions, episode.action[t : t + mixture.chunk_size])


class _LateFrame:
    """A generator stand-in that always picks the third frame from the end: a shorter action chunk."""

    def integers(self, n):
        return n - 3


def test_the_chunk_is_shorter_at_the_end_of_the_demonstration(demonstrations):
    mixture, found = demonstrations
    for task, _, _, episode in found[::2]:
        example = robot_example(task, mixture, episode.seed, _LateFrame())
        t = len(episode.action) - 3
        assert example.actions.shape == (3, 14) and np.array_equal(example.actions, episode.action[t:])
        assert np.array_equal(example.frames[0], episode.frames[t])
        assert example.reasoning == episode.reasoning[t]


# --- scenes that are neither trained on nor evaluated -------------------------------------------------------
def test_training_held_out_evaluation_and_image_text_tags_are_disjoint():
    groups = [set(EVALUATION_TAGS.values()), set(TRAINING_TAGS.values()), set(HELD_OUT_TAGS.values()), set(IMAGE_TEXT_TAGS)]
    if importlib.util.find_spec("chatvla2.sim.tasks.reading") is not None:
        from chatvla2.sim.tasks import reading

        groups.append(set(reading.TAGS))
    assert sum(map(len, groups)) == len(set().union(*groups))
    for task, make_scene in TASKS.items():  # evaluation plays make_scene(split, seed): the default tags
        assert make_scene(IN_DOMAIN, 0).tag == EVALUATION_TAGS[task]


def test_a_held_out_scene_is_not_the_evaluation_scene_of_its_index():
    for task, make_scene in TASKS.items():
        for split in SPLITS:
            for index in range(3):
                held, evaluated = held_out_scene(task, split, index), make_scene(split, index)
                assert held.tag == HELD_OUT_TAGS[task] and held.split == split
                assert dataclasses.replace(held, tag=evaluated.tag) != evaluated
    with pytest.raises(InvalidInput):
        held_out_scene(math_game.TASK, IN_DOMAIN, -1)


# --- normalisation statistics ----------------------------------------------------------------------------------
def test_expert_trajectories_are_the_stored_states_and_actions(demonstrations):
    _, found = demonstrations
    task, _, _, episode = found[0]
    states, actions = expert_trajectory(task, training_scene(task, episode.seed))
    assert np.array_equal(states, episode.state) and np.array_equal(actions, episode.action)


def test_normalization_stats_are_finite_and_deterministic():
    tasks = (math_game.TASK, toy_placement.TASK)
    stats = expert_normalization_stats(tasks, n_scenes=2, seed=5)
    again = expert_normalization_stats(tasks, n_scenes=2, seed=5)
    assert stats.to_dict() == again.to_dict()
    assert (stats.action_dim, stats.state_dim) == (14, 14)
    assert all(np.isfinite(v).all() for v in stats.to_dict().values())
    assert np.all(stats.action_min <= stats.action_max) and np.all(stats.state_std >= 0)
    assert stats.to_dict() != expert_normalization_stats(tasks, n_scenes=2, seed=6).to_dict()


# --- the prefetcher ------------------------------------------------------------------------------------------------
def _gone(pids) -> bool:
    """Every worker joined (reaped: not even a zombie) and none left among this process's children."""
    return (
        bool(pids)
        and not any(os.path.exists(f"/proc/{pid}") for pid in pids)
        and not any(child.pid in pids for child in multiprocessing.active_children())
    )


def test_workers_draw_what_the_pure_function_draws_and_resume_where_asked():
    in_process = BatchPrefetcher(MIXTURE, 1, 3, workers=0)
    expected = [in_process.next() for _ in range(4)]
    assert [step for step, _, _ in expected] == [0, 1, 2, 3]
    with BatchPrefetcher(MIXTURE, 1, 3, workers=1, prefetch=2) as batches:
        for step, examples, waited in expected[:3]:
            got_step, got, waited = batches.next()
            assert got_step == step and waited >= 0 and _same_batches(got, examples)
        pids = batches.worker_pids
    assert _gone(pids)
    # A resumed run (two workers: the batches come back in order however they finish).
    with BatchPrefetcher(MIXTURE, 1, 3, start_step=2, workers=2, end_step=4) as batches:
        resumed = list(batches)
    assert _gone(batches.worker_pids) and len(batches.worker_pids) == 2
    assert [step for step, _, _ in resumed] == [2, 3]
    assert all(_same_batches(got, examples) for (_, got, _), (_, examples, _) in zip(resumed, expected[2:]))


def test_a_failing_worker_raises_and_leaves_no_process(monkeypatch):
    # A source that fails in the worker: a module-level function (it travels by name) with a bad task.
    monkeypatch.setitem(SOURCES, "broken", functools.partial(robot_example, "no_such_task"))
    mixture = dataclasses.replace(MIXTURE, weights={"broken": 1})
    with pytest.raises(WorkerFailed, match="no_such_task"):
        with BatchPrefetcher(mixture, 0, 2, workers=1) as batches:
            batches.next()
    assert _gone(batches.worker_pids)


def test_a_source_that_cannot_travel_is_refused(monkeypatch):
    monkeypatch.setitem(SOURCES, "local", lambda mixture, seed, rng: None)
    mixture = dataclasses.replace(MIXTURE, weights={"local": 1})
    with pytest.raises(InvalidInput, match="module-level"):
        BatchPrefetcher(mixture, 0, 2, workers=1)


def test_reading_is_a_source_when_its_module_exists():
    pytest.importorskip("chatvla2.sim.tasks.reading")
    mixture = dataclasses.replace(MIXTURE, weights={"reading": 1})
    example = sample(mixture, 0, 0, 0)
    assert example.frames[0].shape == (*SIZE, 3) and example.actions.shape == (0, 14)


def test_reading_digits_draws_only_the_kinds_read_digit_by_digit():
    pytest.importorskip("chatvla2.sim.tasks.reading")
    mixture = dataclasses.replace(MIXTURE, weights={"reading_digits": 1})
    drawn = [sample(mixture, 3, step, slot) for step in range(6) for slot in range(2)]
    questions = {e.instruction for e in drawn}
    assert all(e.chars for e in drawn)  # every one has characters to read
    assert len(questions) >= 3
    assert not any("colour" in q or "How many" in q or "Where is" in q for q in questions)
    again = sample(mixture, 3, 5, 1)
    assert again.instruction == drawn[-1].instruction and np.array_equal(again.frames[0], drawn[-1].frames[0])


def test_a_seed_without_a_toy_layout_is_redrawn_the_same_way_every_time(monkeypatch):
    """One toy seed in millions has no layout (toy_placement.NoLayout): the slot draws its next seed,
    so a run goes on and still draws the same sample for the same (seed, step, slot)."""
    real = scene_stream.robot_toy_example
    refused = []

    def first_seed_unplaceable(mixture, scene_seed, rng):
        if not refused or refused[0] == scene_seed:
            refused.append(scene_seed)
            raise toy_placement.NoLayout(f"no toy-placement layout for in_domain seed {scene_seed}")
        return real(mixture, scene_seed, rng)

    sources = {scene_stream.ROBOT_TOY: first_seed_unplaceable}
    mixture = scene_stream.Mixture(weights={scene_stream.ROBOT_TOY: 1}, height=56, width=84, chunk_size=10)
    a = scene_stream.sample(mixture, 0, 0, 0, sources)
    b = scene_stream.sample(mixture, 0, 0, 0, sources)
    assert len(set(refused)) == 1 and len(refused) == 2  # the same seed refused both times, the next one used
    np.testing.assert_array_equal(a.frames[0], b.frames[0])
    np.testing.assert_array_equal(a.actions, b.actions)


def test_arithmetic_drills_ask_a_sum_and_answer_it_right():
    """The drill gives the expression in the question; the answer is the expression and its value,
    checked here by Python's own arithmetic, in every look (multiplication too)."""
    pytest.importorskip("chatvla2.sim.tasks.reading")
    mixture = dataclasses.replace(MIXTURE, weights={"arithmetic_drill": 1})
    drawn = [sample(mixture, 5, step, slot) for step in range(12) for slot in range(2)]
    operators = set()
    for example in drawn:
        expression = example.instruction.removeprefix("What is ").removesuffix("?")
        assert example.instruction == f"What is {expression}?" and example.chars
        a, op, b = re.fullmatch(r"(\d+)([-+x])(\d+)", expression).groups()
        value = {"+": int(a) + int(b), "-": int(a) - int(b), "x": int(a) * int(b)}[op]
        assert example.reasoning == f"{expression}={value}.", example.reasoning
        operators.add(op)
    assert operators == {"+", "-", "x"}


def test_scene_reasoning_samples_are_the_robots_first_reasoning_on_every_look_and_operator():
    """The instruction and the expert's reasoning for a math scene (image-text: no actions), its sum
    right, over both splits' operands and every operator."""
    pytest.importorskip("chatvla2.sim.tasks.reading")
    from chatvla2.contract.scene import INSTRUCTION

    mixture = dataclasses.replace(MIXTURE, weights={"scene_reasoning": 1})
    drawn = [sample(mixture, 5, step, slot) for step in range(12) for slot in range(2)]
    operators = set()
    for example in drawn:
        assert example.instruction == INSTRUCTION and len(example.actions) == 0 and example.chars
        expression = re.match(r"On the whiteboard is (\d+)([-+x])(\d+)\. ", example.reasoning)
        a, op, b = expression.groups()
        value = {"+": int(a) + int(b), "-": int(a) - int(b), "x": int(a) * int(b)}[op]
        assert f" {a}{op}{b}={value}." in example.reasoning, example.reasoning
        operators.add(op)
    assert operators == {"+", "-", "x"}
