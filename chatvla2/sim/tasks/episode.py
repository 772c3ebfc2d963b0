"""Scripted demonstrations as `Episode` records (the record itself: `sim/episode.py`).

The expert's reasoning[t] is the text in force at frames[t] (math_game.py, toy_placement.py: which
form when). T is the length of the expert's plan; the observation after the last action is not stored. The
next state follows the action under the kinematic backend's rate limit (backend.py); the expert
stays under it, so state[t + 1] == action[t] to float32 precision.
"""

from __future__ import annotations

import numpy as np

from chatvla2.contract.embodiment import STATE_DIM
from chatvla2.sim.episode import FPS, Episode
from chatvla2.sim.tasks.env import DEFAULT_SIZE, TaskEnv


class ExpertFailed(RuntimeError):
    pass


def generate_episode(task: str, split: str, seed: int, height: int = DEFAULT_SIZE[0], width: int = DEFAULT_SIZE[1],
                     **options) -> Episode:
    """Run the scripted expert on the episode of (task, split, seed) in the fast kinematic mode.

    Raises ExpertFailed if the demonstration does not end in success (never seen: the tests run
    the expert on every task and split). `options` go to the scene (e.g. steps=2, place="top").
    """
    env = TaskEnv(task, split, height, width)
    observation, info = env.reset(seed=seed, options=options or None)
    actions = env.expert_actions()
    frames = np.empty((len(actions), height, width, 3), dtype=np.uint8)
    states = np.empty((len(actions), STATE_DIM), dtype=np.float32)
    reasoning: list[str] = []
    for t, action in enumerate(actions):
        frames[t] = observation["images"][0]
        states[t] = observation["state"]
        reasoning.append(info["reasoning"])
        observation, _, _, _, info = env.step(action)
    if not info["success"]:
        raise ExpertFailed(f"the expert failed {task} {split} seed {seed}: picked {info['picked']}")
    return Episode(task, split, int(seed), observation["instruction"], frames, states, actions.astype(np.float32),
                   reasoning, FPS)
