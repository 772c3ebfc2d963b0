"""The same expert actions stepped in both modes, kinematic and driver (two simulated arms behind
ptys, driven through the real drivers in real time), and what each run left: states, grasp/lift/
release events, the outcome, where the props ended up, and the driver mode's tick timing.

tests/sim/tasks/test_driver_backend.py asserts what does not depend on the machine's speed (the
outcome, the events' order, the arms and props at rest); benchmarks/driver_mode_agreement.py
reports what does (the joints' lag along the trajectory, event delays, ticks late).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from chatvla2.drivers.faults import AdapterStalled, CommunicationLost
from chatvla2.sim.tasks.driver_backend import DriverBackend
from chatvla2.sim.tasks.env import TaskEnv
from chatvla2.sim.tasks.world import arm_poses

# Toy placement first: its expert returns the arm to the start (a short reset for the next one).
CASES: tuple[tuple[str, dict | None, int], ...] = (
    ("toy_placement", None, 0),
    ("toy_placement", None, 1),
    ("math_game", {"steps": 1}, 0),
    ("math_game", {"steps": 1}, 1),
    ("math_game", {"steps": 2}, 0),
    ("math_game", {"steps": 2}, 1),
)


@dataclass
class EpisodeRun:
    """One episode stepped through one mode."""

    states: np.ndarray  # (T, 14) the observed state after each step
    events: list[tuple]  # (step, kind, prop, arm)
    info: dict  # the last step's info: success, picked, ...
    props: list[np.ndarray]  # every prop's final position
    seconds: float
    scene: object  # the episode's scene (the task's own: its props, a toy placement's region, ...)

    @property
    def gripper_points(self) -> np.ndarray:
        """(T, 2, 3) both grippers' positions (forward kinematics) after each step."""
        return np.array([[pose.position for pose in arm_poses(s)] for s in self.states])


@dataclass
class ModeComparison:
    case: str
    steps: int
    kinematic: EpisodeRun
    driver: EpisodeRun
    timing: dict  # the driver mode's TickTiming summary for this episode
    retried: str | None  # why the driver run was retried once (a starved simulator), or None


def run_actions(env: TaskEnv, seed: int, options, actions: np.ndarray, clock) -> EpisodeRun:
    """Step `actions` from reset; the run's states, events, final info and props."""
    env.reset(seed=seed, options=options)
    started = clock()
    states, events = [], []
    info: dict = {}
    for step, action in enumerate(actions):
        observation, _, _, truncated, info = env.step(action)
        if truncated:
            raise RuntimeError(f"step {step}: the episode was truncated before its expert actions ran out")
        states.append(observation["state"].astype(float))
        events.extend((step,) + event for event in info["events"])
    props = [p.position.copy() for p in env.world.props]
    return EpisodeRun(np.array(states), events, info, props, clock() - started, env.scene)


def compare_modes(backend: DriverBackend, clock, cases=CASES) -> Iterator[ModeComparison]:
    """Each case's expert actions, stepped kinematically and then through `backend`.

    A simulator starved past the feedback timeout by other processes damps its arm (a fault the
    drivers raise); the next reset restarts the arms, so that episode is run again, once per call,
    and the comparison says so. A second such fault is raised."""
    retried_once = False
    for task, options, seed in cases:
        case = f"{task} {options} seed {seed}"
        kinematic_env = TaskEnv(task, "in_domain", render_images=False)
        kinematic_env.reset(seed=seed, options=options)
        actions = kinematic_env.expert_actions()
        kinematic = run_actions(kinematic_env, seed, options, actions, clock)
        driver_env = TaskEnv(task, "in_domain", render_images=False, backend=backend)
        retried = None
        try:
            driver = run_actions(driver_env, seed, options, actions, clock)
        except (CommunicationLost, AdapterStalled) as fault:
            if retried_once:
                raise
            retried_once, retried = True, f"{case}: {fault}"
            driver = run_actions(driver_env, seed, options, actions, clock)
        yield ModeComparison(case, len(actions), kinematic, driver, backend.timing.summary(), retried)
