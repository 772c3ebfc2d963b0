"""`chatvla2 sim generate` and `chatvla2 sim show`: the simulated tasks from the command line.

    chatvla2 sim generate --task math_game --split in_domain --episodes 100 --out data/math_in_domain
        [--seed 0] [--image-text N] [--image-text-kinds all|math|toy] [--size 252x308]
    chatvla2 sim show --task math_game --split open_world --seed 3 --out scene.png [--size 252x308]

`generate` runs the scripted expert on episodes seed, seed+1, ... of the split (fast kinematic
mode) and writes them, with N image-text samples of the same split, as a dataset
(`sim/dataset.py`), with a progress bar; the directory is complete or absent. `show` writes the
first camera frame of one episode as a PNG a person can check.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from PIL import Image

from chatvla2.sim.dataset import DatasetWriter
from chatvla2.sim.tasks.env import TASKS, TaskEnv
from chatvla2.sim.tasks.episode import generate_episode
from chatvla2.sim.tasks.image_text import samples
from chatvla2.sim.tasks.splits import check_split


def parse_size(text: str) -> tuple[int, int]:
    """"252x308" -> (height, width)."""
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip())
    if not match or min(int(match[1]), int(match[2])) < 16:
        raise ValueError(f"--size {text!r}: expected HEIGHTxWIDTH, each at least 16 pixels (e.g. 252x308)")
    return int(match[1]), int(match[2])


def _check(args: argparse.Namespace) -> tuple[int, int]:
    if args.task not in TASKS:
        raise ValueError(f"unknown task {args.task!r}: {', '.join(TASKS)}")
    check_split(args.split)
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    return parse_size(args.size)


def generate_main(args: argparse.Namespace) -> int:
    height, width = _check(args)
    if args.episodes < 0:
        raise ValueError(f"--episodes must be >= 0, got {args.episodes}")
    if args.image_text < 0:
        raise ValueError(f"--image-text must be >= 0, got {args.image_text}")
    if args.episodes == 0 and args.image_text == 0:
        raise ValueError("nothing to generate: give --episodes N or --image-text N (or both)")
    seeds = range(args.seed, args.seed + args.episodes)
    episodes = (generate_episode(args.task, args.split, seed, height, width) for seed in seeds)
    with DatasetWriter(args.out, overwrite=args.force) as writer:
        writer.add_episodes(episodes, total=args.episodes)
        if args.image_text:
            writer.add_samples(samples(args.split, range(args.seed, args.seed + args.image_text), height, width,
                                      kinds=args.image_text_kinds),
                               total=args.image_text)
    episodes = (f"{args.episodes} {args.task} episodes of {args.split}, seeds {seeds.start}..{seeds.stop - 1}"
                if args.episodes else "no episodes")
    print(f"dataset written: {args.out} ({episodes}; {args.image_text} image-text samples of {args.split})")
    return 0


def show_main(args: argparse.Namespace) -> int:
    height, width = _check(args)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: write a .png")
    env = TaskEnv(args.task, args.split, height, width)
    observation, _ = env.reset(seed=args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(observation["images"][0]).save(out)
    print(f"{out}: {args.task} {args.split} seed {args.seed}: {observation['instruction']}")
    print(f"expert reasoning: {env.expert_reasoning()}")
    return 0


def main(args: argparse.Namespace) -> int:
    return generate_main(args) if args.action == "generate" else show_main(args)

