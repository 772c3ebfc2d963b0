"""Sums in text alone, for the language model (stages 0 and 1, `--text-arithmetic N`).

Qwen2-VL brings arithmetic from its language pre-training; stage 0 stands in for that pre-training,
so the language model is taught sums here too. Taught through images only, it did not learn them:
at step 13,000 of stage 0 the reader read boards it could not compute (0.38 of the robot view's
sums right), and samples that ask a board's sum in words (`arithmetic_drill`, one in five) had not
changed that 900 steps later. Text is far cheaper: no image, ~25 tokens instead of ~100. Measured
(benchmarks/text_arithmetic_curve.py, docs/training-and-demo-model.md): the stage-0 language model,
given 128 text sums per step, wrote 0.03 -> 0.57 -> 0.93 -> 0.91 -> 0.99 of 300 held-out results
exactly at 0 / 250 / 500 / 750 / 1,000 steps.

A sample is the `arithmetic_drill` source's question and answer without its image, in the model's
prompt layout (contract/prompt.py, no views): "What is 56-42?" -> "56-42=14." and the end of text
(loss on the answer). The sums are reading.py's arithmetic: operands
0..99, + - x, results 0..99, drawn from the generator of [seed, step, TEXT_ARITHMETIC_TAG], so a
resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from chatvla2.contract.prompt import mrope_position_ids, prompt_token_ids
from chatvla2.contract.tokenizer import TextTokenizer
from chatvla2.models.vla import IGNORE_INDEX
from chatvla2.sim.tasks import reading
from chatvla2.sim.tasks.math_game import evaluate

# The last word of the sums' generator [seed, step, TEXT_ARITHMETIC_TAG]: a stream of its own
# (training/scene_stream.py keeps the other tags).
TEXT_ARITHMETIC_TAG = 51


def sums(seed: int, step: int, n: int) -> list[tuple[int, str, int]]:
    """The `n` sums (a, op, b) of training step `step`."""
    rng = np.random.default_rng([int(seed), int(step), TEXT_ARITHMETIC_TAG])
    return [reading.expression(rng, bounded=True) for _ in range(n)]


def question(expression: str) -> str:
    """The drill's question (the instruction) for an expression: "What is 56-42?"."""
    return f"What is {expression}?"


def question_and_answer(a: int, op: str, b: int) -> tuple[str, str]:
    expression = f"{a}{op}{b}"
    return question(expression), f"{expression}={evaluate(a, op, b)}."


def prompt_ids(tokenizer: TextTokenizer, instruction: str, prompt_format: str) -> list[int]:
    """The prompt of a text-only sample: the model's layout with no camera views."""
    return prompt_token_ids(tokenizer, instruction, num_views=0, tokens_per_view=0, prompt_format=prompt_format)


def text_batch(tokenizer: TextTokenizer, drawn: list[tuple[int, str, int]], prompt_format: str = "plain") -> dict[str, torch.Tensor]:
    """Token ids, labels (the answer and its end of text), attention mask and position ids of the sums."""
    sequences, starts = [], []
    for a, op, b in drawn:
        instruction, answer = question_and_answer(a, op, b)
        prompt = prompt_ids(tokenizer, instruction, prompt_format)
        sequences.append(prompt + tokenizer.encode(answer) + [tokenizer.eos_id])
        starts.append(len(prompt))
    length = max(map(len, sequences))
    input_ids = torch.full((len(drawn), length), tokenizer.pad_id, dtype=torch.long)
    labels = torch.full((len(drawn), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(drawn), length), dtype=torch.bool)
    position_ids = torch.zeros((3, len(drawn), length), dtype=torch.long)
    for i, (sequence, start) in enumerate(zip(sequences, starts)):
        n = len(sequence)
        input_ids[i, :n] = torch.tensor(sequence)
        labels[i, start:n] = input_ids[i, start:n]
        attention_mask[i, :n] = True
        position_ids[:, i, :n] = torch.from_numpy(mrope_position_ids(sequence, tokenizer.image_pad_id, (1, 1)))
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, "position_ids": position_ids}


def loss(language, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The language model's cross-entropy on the answers (nats per token)."""
    hidden, _, _ = language(language.embed_tokens(batch["input_ids"]), batch["position_ids"], batch["attention_mask"])
    logits = language.logits(hidden)
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch["labels"][:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
