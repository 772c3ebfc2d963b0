"""An auxiliary reading loss on the visual tokens: which characters each token's image cell holds.

A small ViT trained only through the language model's cross-entropy learns the layout of a scene
long before the digits in it (docs/training-and-demo-model.md: the shipped model named two-digit
cards as two-digit but not which). The renderer knows where every character is
(sim/tasks/reading.py `char_boxes`), so each visual token can be told directly: the token of the
merged cell (patch_size x spatial_merge_size pixels square) predicts, in SLOTS slots, the symbols
whose box centres lie in its cell, left to right, then "none". A linear layer on the token does it,
so the symbols must be linearly readable from what the language model receives.

Only for training: the probe is not part of the model, its checkpoint or the exported graphs.
Samples without character boxes (robot frames, toy questions) add nothing to it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chatvla2.contract.config import ModelConfig

SYMBOLS = "0123456789+-x="
SLOTS = 4  # a 28-pixel cell holds at most 3-4 handwritten board characters at 112x140
NONE = len(SYMBOLS)  # the class of an empty slot
# Most slots are empty: their class counts 0.2 of a written one, so "none everywhere" is not the
# cheapest answer.
NONE_WEIGHT = 0.2
IGNORE = -100


class ReadingProbe(nn.Module):
    def __init__(self, cfg: ModelConfig, seed: int = 0):
        super().__init__()
        vision = cfg.vision
        self.cell = vision.patch_size * vision.spatial_merge_size
        self.rows, self.cols = vision.merged_grid
        self.height, self.width = vision.image_height, vision.image_width
        self.views = vision.num_views
        self.linear = nn.Linear(cfg.language.hidden, SLOTS * (NONE + 1))
        generator = torch.Generator().manual_seed(seed)
        nn.init.normal_(self.linear.weight, std=0.02, generator=generator)
        nn.init.zeros_(self.linear.bias)

    def targets(self, chars: list | None, frame_shape: tuple[int, int]) -> np.ndarray:
        """(cells, SLOTS) class indices of one view; all IGNORE when chars is None."""
        out = np.full((self.rows * self.cols, SLOTS), IGNORE if chars is None else NONE, np.int64)
        if chars is None:
            return out
        scale_v, scale_u = self.height / frame_shape[0], self.width / frame_shape[1]
        per_cell: dict[int, list[tuple[float, int]]] = {}
        for character, (u1, v1, u2, v2) in chars:
            if character not in SYMBOLS:
                continue
            u, v = (u1 + u2) / 2 * scale_u, (v1 + v2) / 2 * scale_v
            row, col = min(self.rows - 1, int(v // self.cell)), min(self.cols - 1, int(u // self.cell))
            per_cell.setdefault(row * self.cols + col, []).append((u, SYMBOLS.index(character)))
        for cell, found in per_cell.items():
            for slot, (_, symbol) in enumerate(sorted(found)[:SLOTS]):
                out[cell, slot] = symbol
        return out

    def loss(self, visual: torch.Tensor, examples) -> tuple[torch.Tensor, float | None] | None:
        """(the weighted cross-entropy over the batch's cells and slots, the share of written slots
        whose symbol the probe names: a reading curve of the vision side, None when nothing is
        written), from one set of targets and logits; None when no example has character boxes.
        visual: (B * views * cells, hidden), the vision encoder's output."""
        if all(e.chars is None for e in examples):
            return None
        targets = np.stack([self.targets(e.chars, np.asarray(e.frames[0]).shape[:2]) for e in examples for _ in range(self.views)])
        targets = torch.from_numpy(targets).to(visual.device).view(-1)
        logits = self.linear(visual).view(-1, NONE + 1).float()
        weights = torch.where(targets == NONE, NONE_WEIGHT, 1.0) * (targets != IGNORE)
        losses = F.cross_entropy(logits, targets.clamp(min=0), reduction="none")
        written = (targets != NONE) & (targets != IGNORE)
        named = logits.detach().argmax(-1)[written] == targets[written]
        accuracy = float(named.float().mean()) if bool(written.any()) else None
        return (losses * weights).sum() / weights.sum().clamp(min=1e-6), accuracy
