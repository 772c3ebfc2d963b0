"""`chatvla2 run`'s options: the runtime's RunConfig (runtime/run_config.py) and the simulated
robot's (sim/robot.py runs `--robot sim`): faults for the simulated arms, and `--task NAME`, a
simulated task whose scene is the camera."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chatvla2.contract.command_config import check_integer, option
from chatvla2.contract.config import field_default
from chatvla2.contract.errors import InvalidInput
from chatvla2.drivers.controller import ControllerConfig
from chatvla2.runtime.robots import MAX_FEEDBACK_TIMEOUT_S
from chatvla2.runtime.run_config import RunConfig
from chatvla2.sim.robot import DEFAULT_EPISODE_SEED, DEFAULT_SPLIT, SIM_FEEDBACK_TIMEOUT_S, SIM_TASKS, parse_sim_faults
from chatvla2.sim.tasks.splits import SPLITS, check_split


@dataclass(frozen=True, kw_only=True)
class RunCommandConfig(RunConfig):
    # RunConfig's option, its help naming the simulated robot's default too
    feedback_timeout: float | None = option(
        "no reply from a motor for S seconds is a communication fault (the arm damps); default "
        f"{field_default(ControllerConfig, 'feedback_timeout_s'):g} s for --robot arx (the drivers' "
        f"ControllerConfig), {SIM_FEEDBACK_TIMEOUT_S:g} s for --robot sim (a loaded machine runs the "
        f"simulators late); at most {MAX_FEEDBACK_TIMEOUT_S:g} s",
        None,
        metavar="S",
    )
    sim_faults: tuple[str, ...] = option(
        "--robot sim: faults for one simulated arm, e.g. 'left:unplug=5' (see chatvla2 sim-arm --help)", (), metavar="SIDE:SPEC"
    )
    sim_log: str | None = option(
        "--robot sim: a folder where each simulated arm writes what its motors saw when it stops (mode "
        "changes and holds, on time.monotonic(): left.json, right.json; chatvla2 sim-arm --mode-log)",
        None,
        metavar="DIR",
    )
    task: str | None = option(
        f"--task NAME, a simulated task ({', '.join(SIM_TASKS)}), with --robot sim: the task's scene is every "
        "camera view (rendered from the arms' measured state) and its instruction the instruction; the "
        "outcome and the reasoning's scores are printed at the end. Any other --task TEXT is the "
        "instruction text, as --instruction TEXT",
        None,
        metavar="NAME|TEXT",
    )
    split: str | None = option(f"--task NAME: the scene's split (default {DEFAULT_SPLIT})", None, choices=SPLITS)
    episode_seed: int | None = option(
        f"--task NAME: the scene's seed (default {DEFAULT_EPISODE_SEED}); (task, split, seed) is always the same scene", None, metavar="N"
    )

    def __post_init__(self) -> None:
        task = self.sim_task
        if task is not None and self.robot != "sim":
            raise InvalidInput(
                f"--task {task} is a simulated task: it runs with --robot sim (on --robot {self.robot}, "
                "give the instruction text: --instruction TEXT)"
            )
        if self.sim_faults and self.robot != "sim":
            raise InvalidInput("simulated faults are for the simulated robot (--robot sim)")
        parse_sim_faults(self.sim_faults)
        if self.sim_log is not None:
            if self.robot != "sim":
                raise InvalidInput("--sim-log is the simulated arms' own log: it is for --robot sim")
            if not Path(self.sim_log).is_dir():
                raise InvalidInput(f"--sim-log {self.sim_log}: not a folder (create it first)")
        if task is None and (self.split is not None or self.episode_seed is not None):
            raise InvalidInput(
                f"--split and --episode-seed choose a simulated task's scene: give --task NAME "
                f"({', '.join(SIM_TASKS)}); {self.instruction_text!r} is not one: it is the instruction text"
            )
        if task is not None:
            if self.camera:
                raise InvalidInput(f"--camera is not used with --task {task}: every camera view is the task scene's top camera")
            if self.instruction is not None:
                raise InvalidInput(f"--task {task} runs with its scene's instruction: give --task NAME or --instruction TEXT, not both")
            check_split(self.scene_split)
            check_integer("--episode-seed", self.scene_seed, 0)
        elif self.task is not None and self.instruction is not None:
            raise InvalidInput("--task TEXT and --instruction TEXT both give the instruction: give one")
        super().__post_init__()

    @property
    def sim_task(self) -> str | None:
        """--task NAME, a simulated task; None for none or for an instruction text."""
        return self.task if self.task in SIM_TASKS else None

    @property
    def instruction_text(self) -> str:
        if self.task is not None and self.sim_task is None:
            return self.task  # --task TEXT: the instruction
        return super().instruction_text

    @property
    def scene_split(self) -> str:
        return DEFAULT_SPLIT if self.split is None else self.split

    @property
    def scene_seed(self) -> int:
        return DEFAULT_EPISODE_SEED if self.episode_seed is None else self.episode_seed
