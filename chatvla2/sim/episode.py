"""Episode records: one demonstration, the structure the tasks produce (`sim/tasks/episode.py`)
and the dataset stores (`sim/dataset.py`). numpy only.

    Episode(
        task: str,                  # "math_game" or "toy_placement"
        split: str,                 # "in_domain" or "open_world"
        seed: int,                  # (task, split, seed) -> always the same episode
        instruction: str,           # the prompt (math game: the authors' own, docs/reference/model.md)
        frames: (T, H, W, 3) uint8, # top camera, frames[t] = the observation before action t
        state: (T, 14) float32,     # state[t] at frames[t]: left 6 joints (rad), left gripper width (m),
                                    # then the right arm the same way
        action: (T, 14) float32,    # action[t]: the joint targets sent after observing frames[t]
        reasoning: list of T str,   # reasoning[t]: the reasoning in force at frames[t]
        fps: int = 50,              # the control rate (contract/embodiment.py; docs/reference/model.md)
    )
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chatvla2.contract.embodiment import CONTROL_HZ

FPS = CONTROL_HZ  # an episode's frame rate: one frame per control step


@dataclass(eq=False)
class Episode:
    task: str
    split: str
    seed: int
    instruction: str
    frames: np.ndarray
    state: np.ndarray
    action: np.ndarray
    reasoning: list[str]
    fps: int = FPS

    def __len__(self) -> int:
        return len(self.action)
