"""`chatvla2 train` without --data: fresh samples on the fly (training/scene_stream.py) drawn by
worker processes, stage 0 (the VLM learns to read), exact resume, the held-out measurements and
their curves. The tiny preset, a few steps each."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from chatvla2.contract.command_config import parse_config
from chatvla2.contract.config import get_config
from chatvla2.contract.errors import InvalidInput
from chatvla2.models.checkpoint import load_checkpoint
from chatvla2.models.vla import ChatVLA2
from chatvla2.training.cli import main
from chatvla2.training.config import TrainConfig
from chatvla2.training.held_out_plan import READING_SEED_BASE, HeldOutPlan
from chatvla2.training.scene_stream import SCENE_SEED_BITS
from chatvla2.training.trainer import CHECKPOINT_DIR, CURVES_PNG, LOG_FILE, STATE_FILE

FAST = ("--config", "tiny", "--batch-size", "2", "--no-progress", "--eval-every", "0")


def _train(out, *extra: str, steps: int = 2) -> list[dict]:
    assert main(parse_config(TrainConfig, ["--out", str(out), "--steps", str(steps), *FAST, *extra])) == 0
    return [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def stage0(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "stage0"
    return out, _train(out, "--stage", "0", "--workers", "0", "--reading-attention-weight", "1")


def test_stage0_trains_the_vlm_only(stage0):
    out, log = stage0
    assert [r["step"] for r in log] == [1, 2]
    assert all(np.isfinite(r["lm_loss"]) and r["action_loss"] == 0.0 and r["image_text"] == 2 for r in log)
    # the auxiliary reading loss, where a step drew a sample with written characters
    assert any(np.isfinite(r.get("reading_loss", np.nan)) and 0 <= r["reading_probe_accuracy"] <= 1 for r in log)
    # and the reading-attention loss, where it drew an answer copied from the image
    assert any(r.get("reading_attention_loss", -1) > 0 and 0 <= r["reading_attention_hit"] <= 1 for r in log)
    assert all(0 < r["utilisation"] <= 1 and r["wait_s"] >= 0 for r in log)
    trained = load_checkpoint(out / CHECKPOINT_DIR).state_dict()
    torch.manual_seed(0)  # a new model of the run's seed, as the trainer builds it
    initial = ChatVLA2(get_config("tiny")).state_dict()
    changed = {name for name in trained if not torch.equal(trained[name], initial[name])}
    assert any(n.startswith("vision.") for n in changed) and any(n.startswith("language.") for n in changed)
    assert not any(n.startswith("action_head.") for n in changed)


def test_stage1_on_the_fly_draws_robot_and_text_samples_from_a_stage0_model(stage0, tmp_path):
    out0, _ = stage0
    log = _train(
        tmp_path / "stage1", "--stage", "1", "--init", str(out0), "--mix", "robot_math=1,robot_toy=1,reading=1", "--workers", "0", steps=3
    )
    assert any(r["action_loss"] > 0 for r in log)  # robot samples reach the head
    assert sum(r["image_text"] for r in log) < 6  # and not every sample is text


def test_stage1_continues_the_reading_probe_of_the_stage0_run(stage0, tmp_path, capsys):
    out0, _ = stage0
    probe = torch.load(out0 / STATE_FILE, weights_only=True)["reading_probe"]
    assert probe  # stage 0 trained one
    _train(tmp_path / "from_run", "--stage", "1", "--init", str(out0), "--workers", "0", steps=1)
    assert f"reading probe: continued from {out0 / STATE_FILE}" in capsys.readouterr().err
    _train(tmp_path / "from_checkpoint", "--stage", "1", "--init", str(out0 / CHECKPOINT_DIR), "--workers", "0", steps=1)
    assert "reading probe: continued" in capsys.readouterr().err  # the run's checkpoint/ leads to its state too
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copytree(out0 / CHECKPOINT_DIR, bare / "ckpt")  # a checkpoint alone: the probe starts anew
    _train(tmp_path / "from_bare", "--stage", "1", "--init", str(bare / "ckpt"), "--workers", "0", steps=1)
    assert "reading probe: continued" not in capsys.readouterr().err


def test_stage2_trains_the_head_to_continue_a_committed_prefix(stage0, tmp_path):
    out0, _ = stage0
    out = tmp_path / "rtc"
    log = _train(out, "--stage", "2", "--init", str(out0), "--max-prefix", "10", "--workers", "0", steps=3)
    assert all(np.isfinite(r["action_loss"]) and r["action_loss"] > 0 for r in log)
    model = load_checkpoint(out / CHECKPOINT_DIR)
    assert model.cfg.action_head.max_prefix == 10  # the checkpoint says what the head was trained for
    # and its prefix marker learns (from step 3: the AdaLN-Zero head passes no gradient back before)
    assert model.action_head.prefix_embedding.abs().sum() > 0
    with pytest.raises(InvalidInput, match="--max-prefix 50: the action chunk has 50 steps"):
        _train(tmp_path / "too_long", "--stage", "2", "--init", str(out0), "--max-prefix", "50", "--workers", "0")


def test_prefix_lengths_are_none_for_half_and_up_to_the_maximum_for_the_rest():
    from chatvla2.training.trainer import _prefix_lengths

    assert _prefix_lengths(0, 8, torch.Generator().manual_seed(0)) is None
    lengths = _prefix_lengths(30, 4000, torch.Generator().manual_seed(0))
    assert 0.45 < float((lengths == 0).float().mean()) < 0.55
    assert int(lengths.max()) == 30 and set(lengths.tolist()) == set(range(31))


def test_resume_on_the_fly_continues_exactly_with_or_without_workers(tmp_path):
    straight = _train(tmp_path / "straight", "--stage", "1", "--workers", "0", steps=3)
    out = tmp_path / "interrupted"
    _train(out, "--stage", "1", "--workers", "1", "--stop-after", "1", steps=3)
    resumed = _train(out, "--stage", "1", "--workers", "1", "--resume", steps=3)
    assert [r["step"] for r in resumed] == [1, 2, 3]
    np.testing.assert_allclose([r["loss"] for r in resumed], [r["loss"] for r in straight], rtol=1e-6)
    assert [r["image_text"] for r in resumed] == [r["image_text"] for r in straight]


def test_bf16_autocast_trains_close_to_float32_and_resumes_exactly(tmp_path):
    straight = _train(tmp_path / "straight", "--stage", "1", "--workers", "0", "--autocast", "bf16", steps=3)
    full = _train(tmp_path / "fp32", "--stage", "1", "--workers", "0", steps=3)
    assert all(np.isfinite(r["loss"]) for r in straight)
    # step 1: the same weights, batch and noise, only the arithmetic differs
    assert straight[0]["lm_loss"] != full[0]["lm_loss"] and straight[0]["lm_loss"] == pytest.approx(full[0]["lm_loss"], rel=0.02)
    out = tmp_path / "interrupted"
    _train(out, "--stage", "1", "--workers", "0", "--autocast", "bf16", "--stop-after", "1", steps=3)
    with pytest.raises(InvalidInput, match="autocast"):  # the arithmetic is part of the run
        _train(out, "--stage", "1", "--workers", "0", "--resume", steps=3)
    resumed = _train(out, "--stage", "1", "--workers", "0", "--autocast", "bf16", "--resume", steps=3)
    np.testing.assert_allclose([r["loss"] for r in resumed], [r["loss"] for r in straight], rtol=1e-6)


def test_a_run_saved_before_a_setting_existed_resumes_with_the_settings_default(tmp_path):
    out = tmp_path / "older"
    _train(out, "--stage", "1", "--workers", "0", "--stop-after", "1", steps=2)
    state = torch.load(out / STATE_FILE, weights_only=True)
    for key in ("reading_attention_weight", "reading_attention_head"):  # settings added later
        del state["schedule"][key]
    torch.save(state, out / STATE_FILE)
    with pytest.raises(InvalidInput, match="reading_attention_weight"):  # it ran without the loss
        _train(out, "--stage", "1", "--workers", "0", "--resume", "--reading-attention-weight", "1", steps=2)
    assert [r["step"] for r in _train(out, "--stage", "1", "--workers", "0", "--resume", steps=2)] == [1, 2]


def test_sigterm_saves_a_resumable_state(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "chatvla2", "train", "--out", str(out), "--steps", "500", *FAST, "--stage", "1", "--workers", "0",
         "--save-every", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (out / LOG_FILE).is_file() and len((out / LOG_FILE).read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "interrupted: saving step" in stderr and "interrupted (SIGTERM)" in stderr
    saved = torch.load(out / STATE_FILE, weights_only=True)["step"]
    assert saved >= 2 and saved == len((out / LOG_FILE).read_text().splitlines())  # the state is the log's last step
    resumed = _train(out, "--stage", "1", "--workers", "0", "--resume", "--stop-after", "1", "--save-every", "500", steps=500)
    assert resumed[-1]["step"] == saved + 1


def test_held_out_measurements_go_to_the_log_and_the_curves(tmp_path):
    out = tmp_path / "measured"
    main(
        parse_config(
            TrainConfig,
            [
                "--out",
                str(out),
                "--steps",
                "1",
                "--config",
                "tiny",
                "--batch-size",
                "1",
                "--no-progress",
                "--stage",
                "0",
                "--workers",
                "0",
                "--eval-every",
                "1",
                "--eval-scenes",
                "1",
            ],
        )
    )
    records = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    evals = [r for r in records if "eval" in r]
    assert [r["step"] for r in evals] == [0, 1]  # before training, and at the end
    metrics = evals[-1]["eval"]
    assert {"math/in_domain/read_board", "math/open_world/read_cards", "reading/board_beyond/exact"} <= set(metrics)
    assert all(0.0 <= v <= 4.0 for k, v in metrics.items() if k != "seconds")
    assert (out / CURVES_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_held_out_reading_seeds_are_never_training_seeds():
    # Training draws scene seeds below 2**SCENE_SEED_BITS; the held-out reading samples start there.
    assert READING_SEED_BASE == 2**SCENE_SEED_BITS
    plan = HeldOutPlan.for_stage(0, get_config("tiny"), scenes=1)
    assert all(s["seed"] >= READING_SEED_BASE for s in plan.reading_samples)
    assert len({s["seed"] for s in plan.reading_samples}) == len(plan.reading_samples)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--stage", "0", "--data", "d"], "leave out --data"),
        (["--mix", "robot_math"], "expected SOURCE=WEIGHT"),
        (["--mix", "robot_math=0"], "at least one source a positive weight"),
        (["--stage", "2", "--init", "x", "--mix", "reading=1"], "robot sources only"),
        (["--data", "d", "--mix", "reading=1"], "does not apply to --data"),
    ],
)
def test_bad_on_the_fly_options_are_one_clear_error(argv, message):
    with pytest.raises(InvalidInput, match=message):
        parse_config(TrainConfig, ["--out", "o", *argv])


def test_an_unknown_source_is_named(tmp_path):
    with pytest.raises(LookupError, match="robot_mth"):
        _train(tmp_path / "x", "--mix", "robot_mth=1", "--workers", "0")
    assert not (tmp_path / "x" / CHECKPOINT_DIR).exists()
