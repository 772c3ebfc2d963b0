"""The auxiliary reading-attention loss (training/reading_attention.py): its targets put the query on
the token before each copied character and the key on the visual token of the cell that holds it;
its loss and hit rate read the chosen head's attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chatvla2.contract.config import get_config
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.normalization import NormalizationStats
from chatvla2.contract.tokenizer import character_tokenizer
from chatvla2.models.training_batch import Example, make_batch
from chatvla2.sim.tasks import reading
from chatvla2.training.reading_attention import ReadingAttention

CFG = get_config("tiny")  # 56x84 images, 28-pixel cells: a 2 x 3 grid


def _examples():
    out = []
    for seed, kind in ((1, "board"), (2, "cards"), (3, "where_is"), (4, "scene_reasoning")):
        s = reading.sample(seed, 56, 84, look="in_domain", kind=kind)
        out.append(
            Example(
                [s["image"]] * CFG.vision.num_views,
                s["question"],
                s["answer"],
                np.zeros(14),
                np.zeros((0, 14)),
                s["chars"],
                s["answer_boxes"] or None,
            )
        )
    return out


def test_targets_are_the_token_before_each_copied_character_and_its_cell():
    tokenizer = character_tokenizer()
    examples = _examples()
    batch = make_batch(examples, CFG, tokenizer, NormalizationStats(-np.ones(14), np.ones(14), np.zeros(14), np.ones(14)))
    targets = ReadingAttention(CFG, tokenizer).targets(examples)
    ids = batch["input_ids"]
    assert set(targets[:, 0]) == {0, 1, 3}  # the where_is answer copies nothing
    per_sample = {i: [row for row in targets if row[0] == i] for i in (0, 1, 3)}
    for i, rows in per_sample.items():
        assert len(rows) == len(examples[i].answer_boxes)
        first_visual = int((ids[i] == tokenizer.image_pad_id).nonzero()[0])
        for (_, query, key), (char_index, (u1, v1, u2, v2)) in zip(rows, examples[i].answer_boxes):
            start = int(batch["reasoning_mask"][i].nonzero()[0])
            assert query + 1 == start + char_index  # the query predicts the copied character
            assert tokenizer.decode([int(ids[i, query + 1])]) == examples[i].reasoning[char_index]
            row, col = int((v1 + v2) / 2 // 28), int((u1 + u2) / 2 // 28)
            assert key == first_visual + row * 3 + col and ids[i, key] == tokenizer.image_pad_id


def test_the_loss_is_the_log_attention_on_the_target_and_the_hit_rate_its_argmax():
    attention = ReadingAttention(CFG, character_tokenizer(), head=3)  # tiny: 4 heads on 2 kv heads
    assert (attention.kv_head, attention.group) == (1, 1)
    targets = np.array([[0, 5, 1], [1, 6, 2]])
    uniform = torch.full((2, 2, 2, 8, 8), 1 / 8)
    loss, hit = attention.loss(uniform, targets)
    assert float(loss) == pytest.approx(np.log(8), rel=1e-5)
    sharp = uniform.clone()
    sharp[0, 1, 1, 5] = torch.eye(8)[1]  # head 3 of sample 0 looks at key 1: right
    sharp[1, 1, 1, 6] = torch.eye(8)[3]  # of sample 1 at key 3: wrong
    loss, hit = attention.loss(sharp, targets)
    assert hit == 0.5 and float(loss) == pytest.approx(-np.log(1e-6) / 2, rel=1e-4)
    assert attention.loss(uniform, np.zeros((0, 3), np.int64)) is None
    with pytest.raises(InvalidInput, match="--reading-attention-head 4"):
        ReadingAttention(CFG, character_tokenizer(), head=4)
