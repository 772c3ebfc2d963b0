"""`chatvla2 sim generate|show`'s options (sim/task_cli.py runs them)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

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
    action: str = field(
        metadata={
            "positional": True,
            "choices": ACTIONS,
            "help": "generate: expert episodes (+ image-text samples) as a dataset; show: one scene as a PNG",
        }
    )
    task: str = field(default=next(iter(TASKS)), metadata={"choices": tuple(TASKS), "help": "the simulated task"})
    split: str = field(default=SPLITS[0], metadata={"choices": SPLITS, "help": "the split"})
    seed: int = field(default=0, metadata={"help": "the (first) episode's seed: any seed gives a fresh episode of the split"})
    episodes: int = field(default=10, metadata={"help": "generate: how many episodes"})
    image_text: int = field(default=0, metadata={"metavar": "N", "help": "generate: also N image-text samples of the split"})
    image_text_kinds: str = field(
        default="all",
        metadata={"choices": IMAGE_TEXT_KINDS, "help": "generate: the image-text kinds drawn (math: whiteboard, arithmetic, cards)"},
    )
    size: str = field(default=f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}", metadata={"metavar": "HxW", "help": "camera image size"})
    out: str = field(metadata={"help": "generate: the dataset directory; show: a .png file"})
    force: bool = field(default=False, metadata={"help": "generate: replace an existing dataset"})

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
