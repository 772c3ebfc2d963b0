"""How fast a checkpoint's language model learns sums from text alone (issue 22; the measurement
behind `--text-arithmetic`, training/text_arithmetic.py).

From the checkpoint's language model (or a fresh one of its preset, `--fresh`), train on text sums
only ("What is 56-42?\\n" -> "56-42=14.", `--batch` per step, AdamW at `--lr`, one torch thread) and
every `--every` steps write the held-out rate: the share of `--held-out` sums (their own generator,
never a training step's) whose result the model writes exactly, greedily, after the expression and
"=" given. The checkpoint is not changed. A table, then one JSON line.

    .venv/bin/python benchmarks/text_arithmetic_curve.py runs/reader/stage0/checkpoint [--steps 1000]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from chatvla2.models.checkpoint import load_checkpoint
from chatvla2.models.vla import ChatVLA2
from chatvla2.sim.tasks import reading
from chatvla2.sim.tasks.math_game import evaluate
from chatvla2.training import text_arithmetic

HELD_OUT_SEED = 123456  # [HELD_OUT_SEED] is not a [seed, step, TEXT_ARITHMETIC_TAG] generator's words


def result_rate(language, tokenizer, drawn, prompt_format: str) -> float:
    """Share of sums whose result is written exactly (greedy; expression and "=" given)."""
    right = 0
    with torch.no_grad():
        for a, op, b in drawn:
            question, answer = text_arithmetic.question_and_answer(a, op, b)
            ids = text_arithmetic.prompt_ids(tokenizer, question, prompt_format) + tokenizer.encode(answer.split("=")[0] + "=")
            written = ""
            for _ in range(4):
                x = torch.tensor([ids])
                hidden, _, _ = language(language.embed_tokens(x), torch.arange(len(ids)).expand(3, 1, -1))
                token = int(language.logits(hidden[0, -1]).argmax())
                if token == tokenizer.eos_id or tokenizer.decode([token]) == ".":
                    break
                written += tokenizer.decode([token])
                ids.append(token)
            right += written == str(evaluate(a, op, b))
    return right / len(drawn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--fresh", action="store_true", help="a new language model of the checkpoint's preset")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--held-out", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_checkpoint(args.checkpoint)
    if args.fresh:
        torch.manual_seed(0)
        model = ChatVLA2(model.cfg)
    language, tokenizer = model.language, model.tokenizer
    language.set_moe_implementation("grouped")
    rng = np.random.default_rng([HELD_OUT_SEED])
    held_out = [reading.expression(rng, bounded=True) for _ in range(args.held_out)]
    optimizer = torch.optim.AdamW(language.parameters(), lr=args.lr, weight_decay=0.01)
    started = time.perf_counter()
    rows = [{"step": 0, "loss": None, "exact": result_rate(language, tokenizer, held_out, model.cfg.prompt_format), "seconds": 0.0}]
    for step in range(args.steps):
        loss = text_arithmetic.loss(
            language, text_arithmetic.text_batch(tokenizer, text_arithmetic.sums(0, step, args.batch), model.cfg.prompt_format)
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(language.parameters(), 1.0)
        optimizer.step()
        if (step + 1) % args.every == 0 or step + 1 == args.steps:
            exact = result_rate(language, tokenizer, held_out, model.cfg.prompt_format)
            rows.append(
                {"step": step + 1, "loss": round(loss.item(), 4), "exact": exact, "seconds": round(time.perf_counter() - started, 1)}
            )
    print(f"| step | sums seen | loss | results exact ({args.held_out} held out) | s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['step']:,} | {r['step'] * args.batch:,} | {r['loss'] if r['loss'] is not None else '-'} | {r['exact']:.2f} | {r['seconds']} |"
        )
    print(json.dumps({"checkpoint": args.checkpoint, "fresh": args.fresh, "batch": args.batch, "lr": args.lr, "curve": rows}))


if __name__ == "__main__":
    main()
