"""Episode records for datasets (sim/tasks/episode.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from chatvla2.sim.tasks.episode import Episode, generate_episode


def test_the_record_has_exactly_the_agreed_fields():
    assert [f.name for f in dataclasses.fields(Episode)] == [
        "task", "split", "seed", "instruction", "frames", "state", "action", "reasoning", "fps"]


@pytest.mark.parametrize("task,split", [("math_game", "open_world"), ("toy_placement", "in_domain")])
def test_generate_episode(task, split):
    episode = generate_episode(task, split, 3, height=56, width=84)
    t = len(episode)
    assert (episode.task, episode.split, episode.seed, episode.fps) == (task, split, 3, 50)
    assert episode.frames.shape == (t, 56, 84, 3) and episode.frames.dtype == np.uint8
    assert episode.state.shape == (t, 14) and episode.state.dtype == np.float32
    assert episode.action.shape == (t, 14) and episode.action.dtype == np.float32
    assert len(episode.reasoning) == t and all(isinstance(r, str) and r for r in episode.reasoning)
    np.testing.assert_array_equal(episode.state[0], 0.0)  # the SDK's home, grippers closed
    # The expert stays under the rate limit: the next state is the action (up to the grippers'
    # stops on the props they hold).
    joints = [i for i in range(14) if i not in (6, 13)]
    np.testing.assert_allclose(episode.state[1:, joints], episode.action[:-1, joints], atol=1e-5)
    assert 3 < t / episode.fps < 15
    again = generate_episode(task, split, 3, height=56, width=84)
    np.testing.assert_array_equal(again.frames, episode.frames)
    assert again.reasoning == episode.reasoning and again.instruction == episode.instruction
