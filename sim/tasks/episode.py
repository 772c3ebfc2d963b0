"""Scripted demonstrations as `Episode` records (the record itself: `sim/episode.py`).

    Episode(
        task: str,                  # "math_game" or "toy_placement"
        split: str,                 # "in_domain" or "open_world"
        seed: int,                  # (task, split, seed) -> always the same episode
        instruction: str,           # the prompt (math game: the authors' own, model.md)
        frames: (T, H, W, 3) uint8, # top camera, frames[t] = the observation before action t
        state: (T, 14) float32,     # state[t] at frames[t]: left 6 joints (rad), left gripper width (m),
                                    # then the right arm the same way
        action: (T, 14) float32,    # action[t]: the joint targets sent after observing frames[t]
        reasoning: list of T str,   # reasoning[t]: the expert's reasoning for frames[t]
                                    # (math_game.py, toy_placement.py: which form when)
        fps: int = 50,              # model.md: the ARX setup runs at 50 Hz
    )

T is the length of the expert's plan; the observation after the last action is not stored. The
next state follows the action under the kinematic backend's rate limit (backend.py); the expert
stays under it, so state[t + 1] == action[t] to float32 precision.
"""

from __future__ import annotations


import numpy as np

from sim.episode import FPS, Episode
from sim.tasks.env import DEFAULT_SIZE, TaskEnv

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
    states = np.empty((len(actions), 14), dtype=np.float32)
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
