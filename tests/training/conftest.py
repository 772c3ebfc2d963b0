from __future__ import annotations

import pytest

from chatvla2.sim.dataset import DatasetWriter
from chatvla2.sim.tasks.episode import generate_episode
from chatvla2.sim.tasks.image_text import samples


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """Two math-game episodes at 56x84 (the tiny preset's size) and four image-text samples."""
    path = tmp_path_factory.mktemp("data") / "math"
    with DatasetWriter(path) as writer:
        writer.add_episodes([generate_episode("math_game", "in_domain", seed, 56, 84) for seed in (0, 1)])
        writer.add_samples(samples("in_domain", range(4), 56, 84))
    return path
