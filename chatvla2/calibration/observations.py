"""Where calibration's observations come from, each with an id, so that the observations that set
the quantization scales and those that measure accuracy can be checked to be disjoint.

A source is one of:
- `sim:TASK:SPLIT:FIRST-LAST` (or `sim:TASK:SPLIT:SEED`): the first observation of each simulated
  episode with those seeds (the scene as the policy meets it when the task starts; the camera
  rendered at the model's image size). Ids: `sim:math_game:in_domain:7`.
- a dataset directory written by `chatvla2 sim generate` (recorded episodes; sim/dataset.py):
  every `--stride`-th frame of each episode, with its state and instruction. Ids:
  `DIR/episode_000003/frame_40` (the directory as given, resolved).
Several sources may be joined with `+`.

Each observation is {"images": [frame] * views, "instruction", "state"} (the top camera replicated
into every view, as `chatvla2 eval` does).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chatvla2.contract.config import ModelConfig
from chatvla2.contract.errors import InvalidInput, MissingFile
from chatvla2.contract.names import UnknownChoice

SIM_PREFIX = "sim:"


@dataclass(frozen=True)
class Observation:
    id: str
    data: dict[str, Any]


def parse_seed_range(text: str, source: str) -> range:
    first, sep, last = text.partition("-")
    try:
        a = int(first)
        b = int(last) if sep else a
    except ValueError:
        raise InvalidInput(f"observation source {source!r}: seeds must be FIRST-LAST or one seed, got {text!r}") from None
    if a < 0 or b < a:
        raise InvalidInput(f"observation source {source!r}: seeds {text!r} are not an increasing range of seeds >= 0")
    return range(a, b + 1)


def observations(source: str, cfg: ModelConfig, stride: int = 25, limit: int | None = None) -> list[Observation]:
    """The observations of `source` (module docstring) at the model's image size; at most `limit`."""
    if not source or not source.strip():
        raise InvalidInput("no observation source given")
    found: list[Observation] = []
    for part in source.split("+"):
        found.extend(_one_source(part.strip(), cfg, stride))
    if not found:
        raise InvalidInput(f"observation source {source!r} gave no observations")
    return found[:limit] if limit else found


def _one_source(source: str, cfg: ModelConfig, stride: int) -> Iterator[Observation]:
    if source.startswith(SIM_PREFIX):
        yield from _simulated(source, cfg)
    else:
        yield from _recorded(source, cfg, stride)


def _simulated(source: str, cfg: ModelConfig) -> Iterator[Observation]:
    from chatvla2.sim.tasks.env import TASKS, TaskEnv
    from chatvla2.sim.tasks.splits import SPLITS

    fields = source[len(SIM_PREFIX):].split(":")
    if len(fields) != 3:
        raise InvalidInput(f"observation source {source!r}: write sim:TASK:SPLIT:FIRST-LAST (e.g. sim:math_game:in_domain:0-15)")
    task, split, seeds = fields
    if task not in TASKS:
        raise UnknownChoice(f"observation source {source!r}: unknown task {task!r}; tasks: {', '.join(TASKS)}")
    if split not in SPLITS:
        raise UnknownChoice(f"observation source {source!r}: unknown split {split!r}; splits: {', '.join(SPLITS)}")
    env = TaskEnv(task, split, cfg.vision.image_height, cfg.vision.image_width)
    for seed in parse_seed_range(seeds, source):
        observation, _ = env.reset(seed=seed)
        yield Observation(f"sim:{task}:{split}:{seed}", _policy_input(observation["images"][0], observation["instruction"],
                                                                      observation["state"], cfg))


def _recorded(source: str, cfg: ModelConfig, stride: int) -> Iterator[Observation]:
    from chatvla2.sim.dataset_reader import DatasetReader

    path = Path(source)
    if not path.is_dir():
        raise MissingFile(f"observation source {source!r}: not sim:TASK:SPLIT:SEEDS and no such dataset directory")
    if stride < 1:
        raise InvalidInput(f"--stride must be >= 1, got {stride}")
    reader = DatasetReader(path)
    root = path.resolve()
    for i in range(reader.num_episodes):
        episode = reader.episode(i)
        for t in range(0, len(episode.frames), stride):
            yield Observation(f"{root}/episode_{i:06d}/frame_{t}",
                              _policy_input(episode.frames[t], episode.instruction, episode.state[t], cfg))


def _policy_input(frame: np.ndarray, instruction: str, state: np.ndarray, cfg: ModelConfig) -> dict[str, Any]:
    return {"images": [np.ascontiguousarray(frame)] * cfg.vision.num_views, "instruction": str(instruction),
            "state": np.asarray(state, np.float32)}


def check_disjoint(calibration_ids: list[str], evaluation_ids: list[str]) -> None:
    """Accuracy measured on observations the scales were calibrated on would flatter a plan."""
    shared = sorted(set(calibration_ids) & set(evaluation_ids))
    if shared:
        more = f" and {len(shared) - 3} more" if len(shared) > 3 else ""
        raise InvalidInput(f"calibration and evaluation observations overlap: {', '.join(shared[:3])}{more}; "
                         "measure accuracy on other seeds or episodes")
