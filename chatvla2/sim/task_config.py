"""`chatvla2 sim generate|show`'s options (sim/task_cli.py runs them)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from chatvla2.contract.command_config import option
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.names import UnknownChoice
from chatvla2.sim.tasks.env import DEFAULT_SIZE, TASKS
from chatvla2.sim.tasks.splits import SPLITS, check_split

ACTIONS = ("generate", "show")
IMAGE_TEXT_KINDS = ("all", "math", "toy")


def parse_size(text: str) -> tuple[int, int]:
    """ "252x308" -> (height, width)."""
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip())
    if not match or min(int(match[1]), int(match[2])) < 16:
        raise InvalidInput(f"--size {text!r}: expected HEIGHTxWIDTH, each at least 16 pixels (e.g. 252x308)")
    return int(match[1]), int(match[2])


@dataclass(frozen=True, kw_only=True)
class SimTaskConfig:
    action: str = option(
        "generate: expert episodes (+ image-text samples) as a dataset; show: one scene as a PNG", choices=ACTIONS, positional=True
    )
    task: str = option("the simulated task", next(iter(TASKS)), choices=tuple(TASKS))
    split: str = option("the split", SPLITS[0], choices=SPLITS)
    seed: int = option("the (first) episode's seed: any seed gives a fresh episode of the split", 0)
    episodes: int = option("generate: how many episodes", 10)
    image_text: int = option("generate: also N image-text samples of the split", 0, metavar="N")
    image_text_kinds: str = option(
        "generate: the image-text kinds drawn (math: whiteboard, arithmetic, cards)", "all", choices=IMAGE_TEXT_KINDS
    )
    size: str = option("camera image size", f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}", metavar="HxW")
    out: str = option("generate: the dataset directory; show: a .png file")
    force: bool = option("generate: replace an existing dataset", False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise UnknownChoice(f"unknown action {self.action!r}: {', '.join(ACTIONS)}")
        if self.task not in TASKS:
            raise UnknownChoice(f"unknown task {self.task!r}: {', '.join(TASKS)}")
        check_split(self.split)
        if self.seed < 0:
            raise InvalidInput(f"--seed must be >= 0, got {self.seed}")
        parse_size(self.size)
        if self.action == "generate":
            if self.episodes < 0:
                raise InvalidInput(f"--episodes must be >= 0, got {self.episodes}")
            if self.image_text < 0:
                raise InvalidInput(f"--image-text must be >= 0, got {self.image_text}")
            if self.episodes == 0 and self.image_text == 0:
                raise InvalidInput("nothing to generate: give --episodes N or --image-text N (or both)")
        elif Path(self.out).suffix.lower() != ".png":
            raise InvalidInput(f"--out {self.out}: write a .png")

    @property
    def height_width(self) -> tuple[int, int]:
        return parse_size(self.size)
