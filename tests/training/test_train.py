"""`chatvla2 train` (training/): both stages through the command, checkpoints, exact resume,
reproducibility, and one clear error per bad input. The tiny preset on a two-episode dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from chatvla2.contract.command_config import parse_config
from chatvla2.models.checkpoint import load_checkpoint
from chatvla2.training.cli import main
from chatvla2.training.config import TrainConfig
from chatvla2.training.data import TrainingData, draw_step
from chatvla2.training.trainer import CHECKPOINT_DIR, LOG_FILE, STATE_FILE

REPO = Path(__file__).resolve().parents[2]


def _args(*argv: str) -> TrainConfig:
    return parse_config(TrainConfig, list(argv))


def _train(dataset, out, *extra: str, steps: int = 2) -> list[dict]:
    assert main(_args("--data", str(dataset), "--out", str(out), "--steps", str(steps), "--batch-size", "2",
                      "--no-progress", *extra)) == 0
    return [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def stage1(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "stage1"
    return out, _train(dataset, out, "--config", "tiny", "--stage", "1")


def test_defaults_come_from_train_config():
    config = _args("--data", "d", "--out", "o")
    assert config == TrainConfig(data=("d",), out="o")
    assert (config.stage, config.steps, config.batch_size, config.lr, config.seed, config.resume, config.progress) == (
        1, 2000, 8, None, 0, False, True)


def test_stage1_through_the_command_writes_a_loadable_checkpoint(dataset, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "chatvla2.training.cli", "--config", "tiny", "--stage", "1", "--data",
                             str(dataset), "--out", str(out), "--steps", "2", "--batch-size", "4"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "samples/s" in result.stderr
    log = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    for record in log:
        assert np.isfinite([record["loss"], record["lm_loss"], record["action_loss"]]).all()
        assert record["samples_per_s"] > 0 and record["image_text"] == 1  # 1 of every 4 samples: 1:3
    model = load_checkpoint(out / CHECKPOINT_DIR)
    assert model.cfg.name == "tiny"
    data = TrainingData([dataset])
    expected = data.normalization_stats()
    np.testing.assert_array_equal(model.stats.action_min, expected.action_min)
    np.testing.assert_array_equal(model.stats.state_std, expected.state_std)
    assert (out / STATE_FILE).is_file()


def test_stage2_trains_only_the_action_head(dataset, stage1, tmp_path):
    out1, _ = stage1
    out = tmp_path / "stage2"
    log = _train(dataset, out, "--stage", "2", "--init", str(out1))
    assert all(r["image_text"] == 0 for r in log)
    before = load_checkpoint(out1 / CHECKPOINT_DIR).state_dict()
    after = load_checkpoint(out / CHECKPOINT_DIR).state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("action_head.") for name in changed)
    assert all(torch.equal(before[n], after[n]) for n in before if not n.startswith("action_head."))


def test_same_seed_same_losses_other_seed_other_losses(dataset, stage1, tmp_path):
    _, log = stage1
    again = _train(dataset, tmp_path / "again", "--config", "tiny")
    assert [r["loss"] for r in again] == [r["loss"] for r in log]
    other = _train(dataset, tmp_path / "other", "--config", "tiny", "--seed", "1")
    assert [r["loss"] for r in other] != [r["loss"] for r in log]


def test_resume_continues_exactly(dataset, tmp_path):
    straight = _train(dataset, tmp_path / "straight", "--config", "tiny", steps=4)
    out = tmp_path / "interrupted"
    first = _train(dataset, out, "--config", "tiny", "--stop-after", "2", steps=4)
    assert [r["step"] for r in first] == [1, 2]
    resumed = _train(dataset, out, "--config", "tiny", "--resume", steps=4)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]  # the log: one run
    assert [r["image_text"] for r in straight] == [0, 1, 0, 1]  # batches of 2: every 4th sample
    np.testing.assert_allclose([r["loss"] for r in resumed], [r["loss"] for r in straight], rtol=1e-6)
    a = load_checkpoint(tmp_path / "straight" / CHECKPOINT_DIR).state_dict()
    b = load_checkpoint(out / CHECKPOINT_DIR).state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7)


def test_frame_stride_keeps_every_nth_frame_with_its_full_rate_action_chunk(dataset):
    from chatvla2.sim.dataset import DatasetReader

    reader = DatasetReader(dataset)
    full = TrainingData([dataset], frame_stride=1)
    strided = TrainingData([dataset], frame_stride=3)
    lengths = [len(e.state) for e in full.episodes]
    assert full.num_frames == sum(lengths)
    assert strided.num_frames == sum(-(-n // 3) for n in lengths)
    episode = reader.episode(1)
    k = 5  # the 6th kept frame of episode 1: its frame 15
    frame = -(-lengths[0] // 3) + k
    example = strided.robot_example(frame, chunk_size=50, num_views=2)
    np.testing.assert_array_equal(example.frames[0], episode.frames[3 * k])
    assert len(example.frames) == 2 and example.frames[1] is example.frames[0]
    np.testing.assert_array_equal(example.actions, episode.action[3 * k:3 * k + 50])
    np.testing.assert_array_equal(example.state, episode.state[3 * k])
    assert example.reasoning == episode.reasoning[3 * k]
    # Statistics use every frame, whatever the stride.
    np.testing.assert_array_equal(strided.normalization_stats().action_max, full.normalization_stats().action_max)


def test_the_o_only_ablation_is_recorded_in_the_checkpoint(dataset, stage1, tmp_path):
    out1, _ = stage1
    out = tmp_path / "o_only"
    _train(dataset, out, "--stage", "2", "--init", str(out1), "--reason-start-layer", "4")
    model = load_checkpoint(out / CHECKPOINT_DIR)
    assert model.cfg.action_head.reason_start == model.cfg.action_head.depth == 4
    assert model.action_head.cfg.reason_start == 4
    assert load_checkpoint(out1 / CHECKPOINT_DIR).cfg.action_head.reason_start == 2
    with pytest.raises(ValueError, match="settings differ"):  # a resume must keep the ablation
        main(_args("--data", str(dataset), "--out", str(out), "--steps", "2", "--batch-size", "2", "--stage", "2",
                   "--no-progress", "--resume"))


def test_draw_step_mixes_one_image_text_to_three_robot_samples():
    kinds = [k for step in range(10) for k, _ in draw_step(0, step, 6, 100, 5, True)]
    assert kinds.count("image_text") * 3 == kinds.count("robot")
    assert draw_step(0, 3, 6, 100, 5, True) == draw_step(0, 3, 6, 100, 5, True)
    assert all(k == "robot" for k, _ in draw_step(0, 0, 8, 100, 5, False))


@pytest.mark.parametrize("argv, message", [
    (["--config", "tiny", "--data", "{missing}"], "no such dataset directory"),
    (["--stage", "2", "--data", "{data}"], "give --init CHECKPOINT"),
    (["--config", "tinny", "--data", "{data}"], "unknown model preset 'tinny' (did you mean 'tiny'?)"),
    (["--config", "tiny", "--data", "{data}", "--frame-stride", "0"], "--frame-stride must be at least 1"),
    (["--config", "tiny", "--data", "{data}", "--reason-start-layer", "9"], "the action head has 4 blocks"),
])
def test_bad_input_is_one_clear_error(dataset, tmp_path, argv, message):
    argv = [a.format(missing=tmp_path / "nope", data=dataset) for a in argv]
    result = subprocess.run([sys.executable, "-m", "chatvla2.training.cli", *argv, "--out", str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_an_existing_run_is_not_overwritten(dataset, stage1):
    out1, _ = stage1
    with pytest.raises(FileExistsError, match="--resume"):
        main(_args("--config", "tiny", "--data", str(dataset), "--out", str(out1), "--no-progress"))
