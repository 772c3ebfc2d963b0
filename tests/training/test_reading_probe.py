"""The auxiliary reading loss's targets (training/reading_probe.py): each visual token's cell holds
the symbols whose box centres lie in it, left to right, and a probe can learn them."""

from __future__ import annotations

import numpy as np
import torch

from chatvla2.contract.config import get_config
from chatvla2.models.training_batch import Example
from chatvla2.training.reading_probe import IGNORE, NONE, SLOTS, SYMBOLS, ReadingProbe


def _example(chars, shape=(56, 84)):
    return Example([np.zeros((*shape, 3), np.uint8)], "q", "a", np.zeros(14), np.zeros((0, 14)), chars=chars)


def test_targets_put_each_symbol_in_its_cell_left_to_right():
    cfg = get_config("tiny")  # 56x84, patch 14, merge 2: a 2 x 3 grid of 28-pixel cells
    probe = ReadingProbe(cfg)
    chars = [("7", (40, 2, 46, 12)), ("1", (30, 2, 36, 12)), ("+", (60, 30, 66, 40)), ("?", (0, 0, 4, 4))]
    targets = probe.targets(chars, (56, 84))
    assert targets.shape == (6, SLOTS)
    assert list(targets[1]) == [SYMBOLS.index("1"), SYMBOLS.index("7"), NONE, NONE]  # row 0, column 1, by u
    assert targets[5, 0] == SYMBOLS.index("+")  # row 1, column 2
    assert (targets[[0, 2, 3, 4]] == NONE).all()  # no written symbol ("?" is not one)
    # a frame at twice the model's size: boxes scale to the model's cells
    doubled = probe.targets([(c, tuple(2 * v for v in box)) for c, box in chars], (112, 168))
    np.testing.assert_array_equal(doubled, targets)
    assert (probe.targets(None, (56, 84)) == IGNORE).all()


def test_the_loss_ignores_samples_without_boxes_and_can_be_learned():
    cfg = get_config("tiny")
    probe = ReadingProbe(cfg, seed=0)
    views, cells, hidden = cfg.vision.num_views, 6, cfg.language.hidden
    examples = [_example([("3", (2, 2, 8, 12))]), _example(None)]
    assert probe.loss(torch.zeros(views * cells, hidden), [_example(None)]) is None
    visual = torch.randn(2 * views * cells, hidden, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(probe.parameters(), lr=0.05)
    first = float(probe.loss(visual, examples)[0])
    for _ in range(100):
        optimizer.zero_grad()
        probe.loss(visual, examples)[0].backward()
        optimizer.step()
    loss, accuracy = probe.loss(visual, examples)
    assert float(loss) < 0.1 * first
    assert accuracy == 1.0
