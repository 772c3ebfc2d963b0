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

from pathlib import Path

from PIL import Image

from chatvla2.sim.dataset import DatasetWriter
from chatvla2.sim.task_config import SimTaskConfig
from chatvla2.sim.tasks.env import TaskEnv
from chatvla2.sim.tasks.episode import generate_episode
from chatvla2.sim.tasks.image_text import samples


def generate_main(config: SimTaskConfig) -> int:
    height, width = config.height_width
    seeds = range(config.seed, config.seed + config.episodes)
    episodes = (generate_episode(config.task, config.split, seed, height, width) for seed in seeds)
    with DatasetWriter(config.out, overwrite=config.force) as writer:
        writer.add_episodes(episodes, total=config.episodes)
        if config.image_text:
            writer.add_samples(
                samples(config.split, range(config.seed, config.seed + config.image_text), height, width, kinds=config.image_text_kinds),
                total=config.image_text,
            )
    episodes = (
        f"{config.episodes} {config.task} episodes of {config.split}, seeds {seeds.start}..{seeds.stop - 1}"
        if config.episodes
        else "no episodes"
    )
    print(f"dataset written: {config.out} ({episodes}; {config.image_text} image-text samples of {config.split})")
    return 0


def show_main(config: SimTaskConfig) -> int:
    height, width = config.height_width
    out = Path(config.out)
    env = TaskEnv(config.task, config.split, height, width)
    observation, _ = env.reset(seed=config.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(observation["images"][0]).save(out)
    print(f"{out}: {config.task} {config.split} seed {config.seed}: {observation['instruction']}")
    print(f"expert reasoning: {env.expert_reasoning()}")
    return 0


def main(config: SimTaskConfig) -> int:
    """The options checked themselves (sim/task_config.py)."""
    return generate_main(config) if config.action == "generate" else show_main(config)
