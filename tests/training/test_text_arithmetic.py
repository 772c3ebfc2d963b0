"""Sums in text alone (training/text_arithmetic.py, `--text-arithmetic N`): what a sample holds and
what it teaches, drawn by (seed, step), and taken up by a resumed run from a later step exactly as an
uninterrupted run with the setting would have trained. The tiny preset, a few steps each."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chatvla2.contract.command_config import parse_config
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.tokenizer import character_tokenizer
from chatvla2.models.vla import IGNORE_INDEX
from chatvla2.sim.tasks.math_game import evaluate
from chatvla2.training import text_arithmetic
from chatvla2.training.cli import main
from chatvla2.training.config import TrainConfig
from chatvla2.training.trainer import LOG_FILE

FAST = ("--config", "tiny", "--batch-size", "2", "--no-progress", "--eval-every", "0", "--stage", "0", "--workers", "0")


def _train(out, *extra: str, steps: int = 4) -> list[dict]:
    assert main(parse_config(TrainConfig, ["--out", str(out), "--steps", str(steps), *FAST, *extra])) == 0
    return [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]


def test_sums_are_drawn_by_seed_and_step_and_stay_within_what_the_reasoning_writes():
    drawn = text_arithmetic.sums(0, 7, 2000)
    assert drawn == text_arithmetic.sums(0, 7, 2000)
    assert drawn != text_arithmetic.sums(0, 8, 2000) and drawn != text_arithmetic.sums(1, 7, 2000)
    assert {op for _, op, _ in drawn} == {"+", "-", "x"}
    assert all(0 <= a <= 99 and 0 <= b <= 99 and 0 <= evaluate(a, op, b) <= 99 for a, op, b in drawn)
    assert text_arithmetic.question_and_answer(56, "-", 42) == ("What is 56-42?", "56-42=14.")


def test_a_batch_learns_the_answer_and_its_end_only():
    tokenizer = character_tokenizer()  # the small presets'
    batch = text_arithmetic.text_batch(tokenizer, [(56, "-", 42), (7, "x", 8)])
    # the plain prompt layout with no views: the instruction and a newline, then the answer
    for i, (question, answer) in enumerate([("What is 56-42?\n", "56-42=14."), ("What is 7x8?\n", "7x8=56.")]):
        learned = batch["labels"][i][batch["labels"][i] != IGNORE_INDEX].tolist()
        assert learned == tokenizer.encode(answer) + [tokenizer.eos_id]
        n = len(tokenizer.encode(question + answer)) + 1
        assert int(batch["attention_mask"][i].sum()) == n and batch["input_ids"][i, :n].tolist()[:-1] == tokenizer.encode(question + answer)
        np.testing.assert_array_equal(batch["position_ids"][:, i, :n].numpy(), np.tile(np.arange(n), (3, 1)))  # text: one position each


def test_the_sums_start_at_their_step_and_a_resumed_run_may_take_them_up_later(tmp_path):
    straight = _train(tmp_path / "straight", "--text-arithmetic", "3", "--text-arithmetic-from", "2")
    assert ["text_arithmetic_loss" in r for r in straight] == [False, False, True, True]  # steps 0-1 without, 2-3 with
    assert all(r["text_arithmetic_loss"] > 0 and r["loss"] > r["lm_loss"] for r in straight[2:])
    out = tmp_path / "interrupted"
    _train(out, "--stop-after", "2")  # saved at step 2 without the sums
    with pytest.raises(InvalidInput, match="settings differ"):  # from step 1: it would change a step already trained
        _train(out, "--resume", "--text-arithmetic", "3", "--text-arithmetic-from", "1")
    resumed = _train(out, "--resume", "--text-arithmetic", "3", "--text-arithmetic-from", "2")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["loss"] for r in resumed], [r["loss"] for r in straight], rtol=1e-6)
    with pytest.raises(InvalidInput, match="settings differ"):  # and once taken up, they stay
        _train(out, "--resume", "--stop-after", "1", steps=4)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--text-arithmetic", "-1"], "must be at least 0"),
        (["--stage", "2", "--init", "x", "--text-arithmetic", "8"], "stage 2 freezes"),
    ],
)
def test_bad_text_arithmetic_options_are_one_clear_error(argv, message):
    with pytest.raises(InvalidInput, match=message):
        parse_config(TrainConfig, ["--out", "o", *argv])
