"""Where a reading model's mistakes come from: the vision side or the language side (issue 22).

For fresh held-out reading samples (seeds far from training's, the held-out plan's and any
evaluation's), each character the answer copies from the image (`reading.answer_boxes`) is
checked twice on the same forward pass:
- the language model, teacher-forced: is the character the argmax at the position that predicts it;
- the vision side: does the run's own reading probe (training/reading_probe.py, from
  training_state.pt) name that character in the slot of its cell.
The table crosses the two, per kind: if most language mistakes fall where the probe also fails,
the visual tokens do not hold the character (vision is the limit); if the probe names it and the
language model still misses it, the language model does not read what is there. Also the greedy
answers' exact rate on the same samples and the commonest character confusions. A table, then one
JSON line.

    .venv/bin/python benchmarks/reading_errors.py runs/reader/stage0 [--samples 192] [--seed 7]
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np
import torch

from chatvla2.models.checkpoint import load_checkpoint
from chatvla2.models.training_batch import Example, make_batch
from chatvla2.sim.tasks import reading
from chatvla2.training.held_out import measure_reading
from chatvla2.training.reading_probe import NONE, SLOTS, SYMBOLS, ReadingProbe

KINDS = ("board", "arithmetic", "cards", "card_at", "scene_reasoning")
SEED_BASE = 3 << 61  # above the held-out plan's 2**62 + its few hundred: no sample is shared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a training --out directory (checkpoint/ and training_state.pt)")
    parser.add_argument("--samples", type=int, default=192)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_checkpoint(args.run / "checkpoint").eval()
    cfg = model.cfg
    state = torch.load(args.run / "training_state.pt", map_location="cpu", weights_only=True)
    probe = ReadingProbe(cfg)
    probe.load_state_dict(state["reading_probe"])
    height, width = cfg.vision.image_height, cfg.vision.image_width

    samples = []
    for i in range(args.samples):
        kind = KINDS[i % len(KINDS)]
        look = reading.LOOKS[(i // len(KINDS)) % len(reading.LOOKS)]
        samples.append(reading.sample(SEED_BASE + 1000 * args.seed + i, height, width, look=look, kind=kind))

    crossed = collections.defaultdict(collections.Counter)  # kind -> (lm right, probe right) -> count
    confusions = collections.Counter()
    for start in range(0, len(samples), 16):
        chunk = samples[start : start + 16]
        examples = [
            Example(
                [s["image"]] * cfg.vision.num_views,
                s["question"],
                s["answer"],
                model.stats.state_mean,
                np.zeros((0, cfg.action_head.action_dim)),
                s["chars"],
                s["answer_boxes"],
            )
            for s in chunk
        ]
        batch = make_batch(examples, cfg, model.tokenizer, model.stats)
        with torch.no_grad():
            visual = model.vision(batch["pixel_values"].flatten(0, 1))
            embeddings = model.embed(batch["input_ids"], batch["pixel_values"], visual)
            hidden, _, _ = model.language(embeddings, batch["position_ids"], batch["attention_mask"])
            predicted = model.language.logits(hidden).argmax(-1)
            named = probe.linear(visual).view(len(chunk), cfg.vision.num_views, -1, SLOTS, NONE + 1).argmax(-1)[:, 0]
        for i, s in enumerate(chunk):
            start_token = int(batch["reasoning_mask"][i].nonzero()[0])
            targets = probe.targets(s["chars"], s["image"].shape[:2])  # (cells, SLOTS) symbol per slot
            for char_index, box in s["answer_boxes"]:
                character = s["answer"][char_index]
                token = start_token + char_index
                lm_right = model.tokenizer.decode([int(predicted[i, token - 1])]) == character
                # the probe's slot for this character: its cell and its rank by u among the cell's symbols
                cell = _cell(probe, box, s["image"].shape[:2])
                slots = [k for k in range(SLOTS) if targets[cell, k] == SYMBOLS.index(character)]
                probe_right = any(int(named[i, cell, k]) == SYMBOLS.index(character) for k in slots)
                crossed[s["kind"]][(lm_right, probe_right)] += 1
                if not lm_right:
                    confusions[(character, model.tokenizer.decode([int(predicted[i, token - 1])]))] += 1
    exact = measure_reading(model, samples)

    print(f"{args.run}: {len(samples)} fresh reading samples ({', '.join(KINDS)}; the three looks), teacher-forced")
    header = ["kind", "copied chars", "LM right", "probe right", "LM wrong, probe right", "LM wrong, probe wrong", "greedy exact"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    rows = []
    for kind in KINDS:
        c = crossed[kind]
        n = sum(c.values())
        if not n:
            continue
        lm = (c[(True, True)] + c[(True, False)]) / n
        pr = (c[(True, True)] + c[(False, True)]) / n
        row = {
            "kind": kind,
            "chars": n,
            "lm_right": lm,
            "probe_right": pr,
            "lm_wrong_probe_right": c[(False, True)] / n,
            "lm_wrong_probe_wrong": c[(False, False)] / n,
            "greedy_exact": exact.get(f"reading/{kind}/exact"),
        }
        rows.append(row)
        print(
            f"| {kind} | {n} | {lm:.3f} | {pr:.3f} | {row['lm_wrong_probe_right']:.3f} | {row['lm_wrong_probe_wrong']:.3f} | "
            f"{row['greedy_exact']:.2f} |"
        )
    print("commonest confusions (truth -> written):", ", ".join(f"{a}->{b} {n}" for (a, b), n in confusions.most_common(8)))
    print(
        json.dumps(
            {
                "reading_errors": {
                    "run": str(args.run),
                    "samples": len(samples),
                    "rows": rows,
                    "confusions": [[a, b, n] for (a, b), n in confusions.most_common(20)],
                }
            }
        )
    )


def _cell(probe: ReadingProbe, box, shape) -> int:
    u = (box[0] + box[2]) / 2 * probe.width / shape[1]
    v = (box[1] + box[3]) / 2 * probe.height / shape[0]
    row, col = min(probe.rows - 1, int(v // probe.cell)), min(probe.cols - 1, int(u // probe.cell))
    return row * probe.cols + col


if __name__ == "__main__":
    main()
