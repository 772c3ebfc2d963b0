"""`chatvla2 run --robot sim`: the runtime's `run_policy` on two simulated ARX arms.

Each arm is a `chatvla2 sim-arm` process behind its own pty (`sim.processes`), driven through the
real serial path (`ARXArm` -> SLCAN -> pty) with a 200 ms feedback timeout by default
(`SIM_FEEDBACK_TIMEOUT_S`; `--feedback-timeout S` sets it): a 2-core machine running inference,
two simulators and two 500 Hz controllers misses 100 ms now and then. The simulators stop after
the arms are damped and disabled, and none is left running if starting fails or is interrupted.

`--task NAME` (a simulated task, `SIM_TASKS`): the same run, with the task's scene
(`--split`, `--episode-seed`: sim/tasks) as the camera. Every camera view the model has is the
scene's top camera (`sim.tasks.live_camera.SceneCamera`), rendered at 30 fps from the arms'
measured state (the robot the loop drives, shared with the camera once it connects; the start
state before), so grasps, carried cards and placed toys follow what the arms did. The instruction
is the scene's. At the end the task's outcome (success, what was picked, in which order) and the
paper's scores of the last reasoning the policy decoded are printed, one line each, and are
`summary["task"]` in the JSON line. `--task TEXT` (anything else) stays the instruction text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatvla2.contract.errors import InvalidInput
from chatvla2.runtime.robots import BimanualRobot, open_robot
from chatvla2.runtime.run import run_policy
from chatvla2.sim.faults import parse_faults
from chatvla2.sim.processes import SIDES, start_sim_arms, stop_sim_arms
from chatvla2.sim.tasks.splits import SPLITS

if TYPE_CHECKING:  # it imports this module (the defaults below)
    from chatvla2.sim.run_command_config import RunCommandConfig

SIM_FEEDBACK_TIMEOUT_S = 0.2
# The simulated tasks `--task NAME` runs: sim/tasks/env.py's TASKS, named here so that building
# `chatvla2 run`'s arguments on the robot imports neither gymnasium nor pillow (the [sim] extra);
# tests/sim/tasks/test_live_camera.py checks that the two agree.
SIM_TASKS = ("math_game", "toy_placement")
DEFAULT_SPLIT = SPLITS[0]
DEFAULT_EPISODE_SEED = 0


def parse_sim_faults(items: list[str]) -> dict[str, str]:
    """["left:SPEC", "right:SPEC", ...] -> {"left": SPEC, ...}, each SPEC checked by the simulator's parser."""
    faults: dict[str, str] = {}
    for item in items:
        side, sep, spec = item.partition(":")
        if not sep or side not in SIDES:
            raise InvalidInput(f"--sim-faults {item!r}: expected left:SPEC or right:SPEC, e.g. left:unplug=5")
        if not any(part.strip() for part in spec.split(",")):
            raise InvalidInput(f"--sim-faults {item!r}: no fault after '{side}:', e.g. {side}:unplug=5")
        parse_faults(spec)  # a bad spec fails here, before anything starts
        faults[side] = ",".join(filter(None, [faults.get(side, ""), spec]))
    return faults


def open_sim_robot(profile: str = "x5", faults: dict[str, str] | None = None,
                   feedback_timeout_s: float = SIM_FEEDBACK_TIMEOUT_S, mode_logs: str | None = None) -> BimanualRobot:
    sims: list = []  # filled as each process starts: whatever happens, every one is stopped
    try:
        start_sim_arms(profile, faults, started=sims, mode_logs=mode_logs)
        return open_robot(sims[0].device_path, sims[1].device_path, profile, feedback_timeout_s=feedback_timeout_s,
                          after_disconnect=[lambda: stop_sim_arms(sims)])
    except BaseException:
        stop_sim_arms(sims)
        raise


def run_main(config: RunCommandConfig) -> int:
    """`chatvla2 run --robot sim` (the config refused what does not apply to simulated arms)."""
    faults = parse_sim_faults(config.sim_faults)
    timeout = SIM_FEEDBACK_TIMEOUT_S if config.feedback_timeout is None else config.feedback_timeout
    if config.sim_task is None:
        return run_policy(config, lambda: open_sim_robot(config.profile, faults, timeout, config.sim_log), feedback_timeout_s=timeout)
    return _run_task(config, config.sim_task, faults, timeout)


def _run_task(config: RunCommandConfig, task: str, faults: dict[str, str], timeout: float) -> int:
    """`run_policy` with the task scene as every camera view (module docstring)."""
    split, seed = config.scene_split, config.scene_seed
    try:
        from chatvla2.sim.tasks.live_camera import SceneCamera, format_outcome, open_scene_views
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in ("gymnasium", "PIL"):
            raise
        raise InvalidInput(f"--task {task} needs the '{top}' package of the simulated tasks: "
                         "pip install 'chatvla2-edge[sim]'") from None

    camera = SceneCamera(task, split, seed)  # the scene only (cheap); it renders once opened

    def open_views(num_views: int):
        print(f"task: {task} ({split}, episode seed {seed}): {camera.instruction}", flush=True)
        return open_scene_views(camera, num_views, max_age_s=config.camera_max_age)

    def connect() -> BimanualRobot:
        return camera.attach(open_sim_robot(config.profile, faults, timeout, config.sim_log))

    def on_summary(summary: dict, reasoning: str | None) -> list[str]:
        summary["task"] = camera.outcome(reasoning)
        return format_outcome(summary["task"])

    return run_policy(config, connect, feedback_timeout_s=timeout, open_views=open_views, on_summary=on_summary,
                      instruction=camera.instruction)
