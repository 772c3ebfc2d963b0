"""`chatvla2 sim show` and `chatvla2 sim generate`, through the real command."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from chatvla2.sim.dataset import DatasetReader


def _sim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chatvla2", "sim", *args], capture_output=True, text=True, timeout=300)


def test_show_writes_the_scene_a_person_can_check(tmp_path):
    out = tmp_path / "scene.png"
    result = _sim("show", "--task", "math_game", "--split", "open_world", "--seed", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    image = np.asarray(Image.open(out))
    assert image.shape == (252, 308, 3) and image.std() > 10  # a picture, not a blank
    assert "On the whiteboard is" in result.stdout  # the expert's reasoning for it


def test_generate_writes_a_dataset_that_reads_back(tmp_path):
    out = tmp_path / "data"
    result = _sim("generate", "--task", "toy_placement", "--split", "in_domain", "--episodes", "2", "--image-text", "3",
                  "--seed", "5", "--size", "56x84", "--out", str(out))
    assert result.returncode == 0, result.stderr
    reader = DatasetReader(out)
    assert reader.num_episodes == 2 and reader.num_samples == 3
    episode = reader.episode(1)
    assert (episode.task, episode.split, episode.seed) == ("toy_placement", "in_domain", 6)
    assert episode.frames.shape[1:] == (56, 84, 3) and episode.state.shape[1] == 14
    assert episode.reasoning[0].startswith("The ")  # the toy reasoning names the object and its box


def test_generate_image_text_alone_of_one_task(tmp_path):
    out = tmp_path / "it"
    result = _sim("generate", "--split", "open_world", "--episodes", "0", "--image-text", "6", "--image-text-kinds", "math",
                  "--size", "56x84", "--out", str(out))
    assert result.returncode == 0, result.stderr
    reader = DatasetReader(out)
    assert reader.num_episodes == 0 and reader.num_samples == 6
    kinds = [sample["kind"] for sample in reader.samples()]
    assert kinds == ["whiteboard_ocr", "arithmetic", "card_values"] * 2  # seed s: kind s % 3
    assert {sample["split"] for sample in reader.samples()} == {"open_world"}


@pytest.mark.parametrize("args, message", [
    (["generate", "--episodes", "0", "--out", "x"], "nothing to generate"),
    (["generate", "--episodes", "-1", "--out", "x"], "--episodes must be >= 0"),
    (["show", "--size", "12x12", "--out", "x.png"], "--size '12x12'"),
    (["show", "--out", "scene.jpg"], "write a .png"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "chatvla2", "sim", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
