"""training/held_out.py and training/curves.py: the held-out metrics are bounded, repeatable, can
reach 1 (a scripted policy that reads perfectly) and fall exactly where a text is wrong; held-out
scenes are not evaluation or training scenes; the curves draw. The tiny preset, at its image size."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from chatvla2.contract.config import get_config
from chatvla2.contract.normalization import NormalizationStats
from chatvla2.models.vla import ActOutput, ChatVLA2
from chatvla2.sim.tasks import math_game, scoring, toy_placement
from chatvla2.sim.tasks.env import still_world
from chatvla2.sim.tasks.image_text import sample
from chatvla2.sim.tasks.splits import SPLITS
from chatvla2.training import held_out
from chatvla2.training.curves import plot_curves, read_log, write_eval_record

CFG = get_config("tiny")
H, W = CFG.vision.image_height, CFG.vision.image_width
TASKS = (held_out.MATH, held_out.TOY)


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return ChatVLA2(CFG)


def expected_keys(scenes: int, frames: int, teacher_forced: bool) -> set[str]:
    keys = {f"math/{s}/{k}" for s in SPLITS for k in held_out.MATH_READS} | {f"toy/{s}/{k}" for s in SPLITS for k in held_out.TOY_READS}
    if frames:
        keys |= {"action/l1", "action/l1_teacher_forced"} if teacher_forced else {"action/l1"}
    return keys if scenes else keys - {k for k in keys if not k.startswith("action/")}


def check_ranges(metrics: dict) -> None:
    for key, value in metrics.items():
        top = 4.0 if key.endswith("/ocr") else 2.0 if key.endswith("/math") else np.inf if key.startswith("action/") else 1.0
        assert isinstance(value, float) and 0.0 <= value <= top, (key, value)


def test_random_tiny_model_scores_zero_within_bounds_and_repeats(tiny):
    # Stage 2's modes (the VLM in eval mode, the head training) must survive a measurement.
    tiny.train()
    tiny.vision.eval()
    tiny.language.eval()
    modes = [m.training for m in tiny.modules()]
    first = held_out.measure(tiny, scenes_per_split=1, height=H, width=W, action_frames=2, seed=0)
    assert set(first) == expected_keys(1, 2, teacher_forced=True)
    check_ranges(first)
    assert all(v == 0.0 for k, v in first.items() if not k.startswith("action/"))  # random weights write garbage
    assert first["action/l1"] > 0
    assert held_out.measure(tiny, scenes_per_split=1, height=H, width=W, action_frames=2, seed=0) == first
    assert [m.training for m in tiny.modules()] == modes


def test_teacher_forcing_is_the_act_path_with_another_reasoning():
    """With its own reasoning forced, the chunk is act's; with the expert's, it differs (the head's
    AdaLN-Zero start ignores o and r, so its weights are scrambled to make them matter)."""
    torch.manual_seed(1)
    model = ChatVLA2(CFG).eval()
    with torch.no_grad():
        for p in model.action_head.parameters():
            p.normal_(0.0, 0.2)
    frame = held_out.expert_frame(held_out.MATH, 0, H, W)
    views = [frame["image"]] * CFG.vision.num_views
    noise = held_out._noise(model, 5)
    own = model.act(views, frame["instruction"], frame["state"], noise=noise)
    with torch.no_grad():
        forced_own = held_out.teacher_forced_actions(model, views, frame["instruction"], own.reasoning, frame["state"], noise)
        forced = held_out.teacher_forced_actions(model, views, frame["instruction"], frame["reasoning"], frame["state"], noise)
    np.testing.assert_allclose(forced_own, own.actions, atol=1e-4)
    assert np.abs(forced - own.actions).max() > 1e-3


# --- a scripted policy: not a mock of what is measured, a reader whose answers are known --------------------


class ScriptedReader:
    """Writes, for each held-out scene's first frame, the text `write(scene, world)`; "" for any other image."""

    def __init__(self, write, scenes: int):
        self.cfg = CFG
        self.stats = NormalizationStats.arx_bimanual(14)
        self.texts = {}
        for task in TASKS:
            for split in SPLITS:
                for i in range(scenes):
                    scene = held_out.held_out_scene(task, split, i)
                    image, world = still_world(scene, H, W)
                    self.texts[image.tobytes()] = write(scene, world)

    def act(self, images, prompt, state, noise=None, seed=0, max_new_tokens=None):
        assert len(images) == CFG.vision.num_views and max_new_tokens == CFG.language.max_reasoning_tokens
        text = self.texts.get(images[0].tobytes(), "")
        return ActOutput(text, [], np.zeros((CFG.action_head.chunk_size, 14), np.float32))


def expert_text(scene, world) -> str:
    return scene.reasoning(world)


def wrong_card_text(scene, world) -> str:
    """The expert's text with the left card misread (and the rest right)."""
    if scene.task != held_out.MATH:
        return scene.reasoning(world)
    truth = scene.truth()
    misread = str((int(truth.cards[0]) + 1) % 10)
    return scoring.math_text(dataclasses.replace(truth, cards=(misread, *truth.cards[1:])))


def test_a_perfect_reader_scores_one_everywhere():
    metrics = held_out.measure(ScriptedReader(expert_text, 2), scenes_per_split=2, height=H, width=W, action_frames=0)
    assert set(metrics) == expected_keys(2, 0, teacher_forced=False)
    for key, value in metrics.items():
        assert value == (4.0 if key.endswith("/ocr") else 2.0 if key.endswith("/math") else 1.0), key


def test_a_misread_card_fails_only_the_card_reads():
    metrics = held_out.measure(
        ScriptedReader(wrong_card_text, 2), scenes_per_split=2, tasks=(held_out.MATH,), height=H, width=W, action_frames=0
    )
    for split in SPLITS:
        m = {k.split("/")[-1]: v for k, v in metrics.items() if f"/{split}/" in k}
        assert m["read_cards"] == 0.0 and m["ocr"] == 3.0
        assert m["read_each_card"] == pytest.approx(2 / 3)
        assert m["read_board"] == m["arithmetic"] == m["arithmetic_given_read"] == m["chosen_card"] == m["parses"] == 1.0


def test_math_reads_of_single_texts():
    truth = math_game.make_scene("open_world", 3).truth()
    right = scoring.math_text(truth)
    assert held_out.math_reads(right, truth)["chosen_card"] == 1.0
    assert set(held_out.math_reads("not a reasoning", truth).values()) == {0.0}
    # Misreading the board but computing what it read: arithmetic wrong, arithmetic_given_read right.
    misread = dataclasses.replace(truth, a=truth.a + 1, result=math_game.evaluate(truth.a + 1, truth.op, truth.b))
    reads = held_out.math_reads(scoring.math_text(misread), truth)
    assert (reads["read_board"], reads["arithmetic"], reads["arithmetic_given_read"]) == (0.0, 0.0, 1.0)


def test_held_out_scenes_are_not_evaluation_or_training_scenes():
    makers = {held_out.MATH: math_game.make_scene, held_out.TOY: toy_placement.make_scene}
    other_tags = {held_out.MATH: (1, 21), held_out.TOY: (2, 22)}  # evaluation (the default), training streams
    for task, make_scene in makers.items():
        for split in SPLITS:
            for i in range(2):
                mine, _ = still_world(held_out.held_out_scene(task, split, i), H, W)
                for tag in other_tags[task]:
                    theirs, _ = still_world(make_scene(split, i, tag=tag), H, W)
                    assert not np.array_equal(mine, theirs), (task, split, i, tag)
    assert toy_placement.make_scene("in_domain", 0).tag == other_tags[held_out.TOY][0]  # the default tags are what evaluation uses
    assert math_game.make_scene("in_domain", 0).tag == other_tags[held_out.MATH][0]


def test_measure_reading_exact_match_per_kind():
    samples = [sample("in_domain", seed, H, W, kind=kind) for seed in range(2) for kind in ("whiteboard_ocr", "card_values")]

    class Answers:  # right on the whiteboard, wrong on the cards
        cfg, stats = CFG, NormalizationStats.arx_bimanual(14)

        def act(self, images, prompt, state, noise=None, seed=0, max_new_tokens=None):
            s = next(s for s in samples if s["image"] is images[0])
            assert max_new_tokens == len(s["answer"]) + held_out.READING_MARGIN  # no tokenizer: one token a character
            return ActOutput(s["answer"] if s["kind"] == "whiteboard_ocr" else "There are: 1.", [], np.zeros((1, 14)))

    metrics = held_out.measure_reading(Answers(), samples)
    assert {k: v for k, v in metrics.items() if k.endswith("/exact")} == {
        "reading/card_values/exact": 0.0,
        "reading/whiteboard_ocr/exact": 1.0,
    }
    assert metrics["reading/whiteboard_ocr/chars"] == 1.0
    assert 0.0 < metrics["reading/card_values/chars"] < 1.0  # "There are: 1." shares its opening with the truth


def test_plot_curves_from_a_log_with_eval_records(tmp_path):
    log = tmp_path / "train_log.jsonl"
    with log.open("w") as f:
        for step in range(1, 21):
            f.write(json.dumps({"step": step, "loss": 3.0 / step, "lm_loss": 2.0 / step, "action_loss": 1.0 / step}) + "\n")
            if step % 5 == 0:
                metrics = {f"math/{s}/{k}": step / 20 for s in SPLITS for k in held_out.MATH_READS}
                metrics |= {f"toy/{s}/{k}": step / 40 for s in SPLITS for k in held_out.TOY_READS}
                metrics |= {"action/l1": 1.0 / step, "action/l1_teacher_forced": 0.5 / step, "reading/arithmetic/exact": 0.5}
                write_eval_record(f, step, metrics)
        f.write('{"step": 21, "lm_lo')  # a line being written as the plot is drawn
    train, evals = read_log(log)
    assert (len(train), len(evals), evals[0]["eval"]["action/l1"]) == (20, 4, 0.2)
    out = plot_curves(log, tmp_path / "plots" / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]  # no partial file left behind
