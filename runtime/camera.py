"""Cameras the control loop reads: `read() -> list of RGB frames`, one per view.

`StaticCamera` is the only source today (a real camera driver is issue 9): the sample scene of
the math game (`contract.scene`), the same frames every call.
"""

from __future__ import annotations

import numpy as np

from contract.scene import sample_observation


class StaticCamera:
    """`num_views` fixed 240 x 320 RGB frames of the sample scene."""

    def __init__(self, num_views: int):
        self.frames: list[np.ndarray] = sample_observation(num_views)[0]

    def read(self) -> list[np.ndarray]:
        return self.frames
