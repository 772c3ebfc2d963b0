"""Image-text co-training samples (sim/tasks/image_text.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from chatvla2.sim.tasks import image_text, math_game


def test_samples_are_deterministic_and_complete():
    a = image_text.sample("in_domain", 7, 56, 84)
    b = image_text.sample("in_domain", 7, 56, 84)
    assert set(a) == {"image", "question", "answer", "kind", "split", "seed"}
    np.testing.assert_array_equal(a["image"], b["image"])
    assert (a["question"], a["answer"], a["kind"]) == (b["question"], b["answer"], b["kind"])
    assert a["image"].shape == (56, 84, 3) and a["image"].dtype == np.uint8
    assert (a["split"], a["seed"]) == ("in_domain", 7)


@pytest.mark.parametrize("split", ["in_domain", "open_world"])
@pytest.mark.parametrize("kind", image_text.KINDS)
def test_every_kind(split, kind):
    s = image_text.sample(split, 1, 56, 84, kind=kind)
    assert s["kind"] == kind and s["question"].endswith(("?", "."))
    answer = s["answer"]
    if kind == "arithmetic":
        a, op, b, r = re.fullmatch(r"(\d+)([+\-x])(\d+)=(\d+)\.", answer).groups()
        assert math_game.evaluate(int(a), op, int(b)) == int(r)
    elif kind == "object_box":
        assert re.fullmatch(r"The [a-z ]+ is at \[\d+, \d+, \d+, \d+\]\.", answer)
    elif kind == "spatial_yes_no":
        assert answer in ("Yes.", "No.")
    elif kind == "placement_point":
        assert re.fullmatch(r"\[\d+, \d+\]", answer)


def test_co_training_shows_every_operator_in_the_in_domain_look():
    ops = set()
    for seed in range(60):
        answer = image_text.sample("in_domain", seed, 56, 84, kind="whiteboard_ocr")["answer"]
        ops.add(re.fullmatch(r"\d+([+\-x])\d+", answer).group(1))
    assert ops == {"+", "-", "x"}


def test_the_kind_mix_covers_all_kinds():
    kinds = {image_text.sample("open_world", seed, 56, 84)["kind"] for seed in range(40)}
    assert kinds == set(image_text.KINDS)
