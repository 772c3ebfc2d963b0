"""Episodes -> a padded training batch for `ChatVLA2.forward`.

Each sequence is the inference prompt followed by the reasoning text and EOS, so the positions
pooled into `o` (prompt and images) and `r` (reasoning tokens, EOS excluded) are exactly those
that `ChatVLA2.act` pools at inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from chatvla2.contract.config import ModelConfig
from chatvla2.contract.normalization import NormalizationStats
from chatvla2.contract.preprocess import preprocess_images
from chatvla2.contract.prompt import mrope_position_ids, prompt_token_ids
from chatvla2.contract.tokenizer import TextTokenizer
from chatvla2.models.vla import IGNORE_INDEX


@dataclass
class Example:
    frames: list  # num_views RGB frames (H, W, 3) uint8
    instruction: str
    reasoning: str
    state: np.ndarray  # (state_dim,), unnormalised
    actions: np.ndarray  # (steps <= chunk_size, action_dim), unnormalised
    # Where the text in the image is, for training's auxiliary reading loss (training/reading_probe.py):
    # (character, (u1, v1, u2, v2) pixel box in the frame); None when unknown. Not part of the batch.
    chars: list | None = None
    # [(index of a reasoning character copied from the image, its pixel box)], for the auxiliary
    # reading-attention loss (training/reading_attention.py); None when unknown. Not part of the batch.
    answer_boxes: list | None = None


def make_batch(examples: list[Example], cfg: ModelConfig, tokenizer: TextTokenizer, stats: NormalizationStats) -> dict[str, torch.Tensor]:
    chunk, action_dim = cfg.action_head.chunk_size, cfg.action_head.action_dim
    sequences, reasoning_spans = [], []
    for example in examples:
        prompt = prompt_token_ids(tokenizer, example.instruction, cfg.vision.num_views, cfg.vision.tokens_per_view, cfg.prompt_format)
        reasoning = tokenizer.encode(example.reasoning)
        sequences.append(prompt + reasoning + [tokenizer.eos_id])
        reasoning_spans.append((len(prompt), len(prompt) + len(reasoning)))
    length = max(map(len, sequences))
    batch = len(examples)
    input_ids = torch.full((batch, length), tokenizer.pad_id, dtype=torch.long)
    position_ids = torch.zeros((3, batch, length), dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.bool)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    observation_mask = torch.zeros((batch, length), dtype=torch.bool)
    reasoning_mask = torch.zeros((batch, length), dtype=torch.bool)
    actions = torch.zeros((batch, chunk, action_dim))
    is_pad = torch.ones((batch, chunk), dtype=torch.bool)
    for i, (sequence, (start, end)) in enumerate(zip(sequences, reasoning_spans)):
        n = len(sequence)
        input_ids[i, :n] = torch.tensor(sequence)
        position_ids[:, i, :n] = torch.from_numpy(mrope_position_ids(sequence, tokenizer.image_pad_id, cfg.vision.merged_grid))
        attention_mask[i, :n] = True
        labels[i, start:n] = input_ids[i, start:n]  # the reasoning and its EOS are learned
        observation_mask[i, :start] = True
        reasoning_mask[i, start:end] = True
        steps = np.asarray(examples[i].actions)[:chunk]
        actions[i, : len(steps)] = torch.from_numpy(stats.normalize_actions(steps))
        is_pad[i, : len(steps)] = False
    pixel_values = torch.from_numpy(np.stack([preprocess_images(e.frames, cfg.vision) for e in examples]))
    state = torch.from_numpy(np.stack([stats.normalize_state(e.state) for e in examples]))
    return {
        "pixel_values": pixel_values,
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "observation_mask": observation_mask,
        "reasoning_mask": reasoning_mask,
        "state": state,
        "actions": actions,
        "is_pad": is_pad,
    }
