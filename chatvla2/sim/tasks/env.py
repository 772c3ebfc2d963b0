"""One environment for both tasks, in gymnasium's style (`gymnasium.Env`).

    env = TaskEnv("math_game", "open_world", height=252, width=308)
    observation, info = env.reset(seed=3)     # the episode of (split, seed): always the same
    observation, reward, terminated, truncated, info = env.step(action)   # action: 14-D joint targets
    env.score_reasoning(text)                 # a policy's reasoning, scored the paper's way

Observation: {"images": [RGB uint8 (H, W, 3)] (the top camera; an empty list with
render_images=False), "state": (14,) float32 (left 6 joints rad + gripper width m, then right),
"instruction": str}. Action: (14,) joint targets in the same layout, clipped to the X5's limits
(drivers/profiles.py). One step is 1/50 s (docs/reference/model.md: 50 Hz). The arms move through an
`ArmBackend` (backend.py): `KinematicBackend` by default (fast: faster than real time, no ptys),
or `DriverBackend` (driver_backend.py: simulated arms on ptys through the drivers, in real time);
the environment reads both the same way and judges grasps on the state the backend returns.

reward: 1.0 on the step the task succeeds, else 0. terminated: success, or a wrong card picked
(math game). truncated: `max_steps` reached. The environment keeps stepping after `terminated`
(the expert's demonstrations end with a short hold), with success and failure latched.

info: success, failed, step, picked (names of the lifted props, in order), events (this step's
grasp events), reasoning (the expert's reasoning for this observation: math_game.py and
toy_placement.py say which text at which step), scores (the last `score_reasoning` result, or
None) and first_scores (the first of the episode: the paper scores the reasoning the model
writes when it starts the task).
"""

from __future__ import annotations

import string

import gymnasium
import numpy as np
from gymnasium import spaces

from chatvla2.contract.embodiment import CONTROL_HZ, DIM, GRIPPER_INDICES
from chatvla2.contract.names import UnknownChoice
from chatvla2.sim.tasks import expert, math_game, toy_placement
from chatvla2.sim.tasks.backend import HIGH, LOW, ArmBackend, KinematicBackend
from chatvla2.sim.tasks.camera import Camera
from chatvla2.sim.tasks.props import Grasping
from chatvla2.sim.tasks.render import Renderer, SpriteBook
from chatvla2.sim.tasks.splits import check_split
from chatvla2.sim.tasks.world import World, arm_poses

TASKS = {math_game.TASK: math_game.make_scene, toy_placement.TASK: toy_placement.make_scene}
DEFAULT_SIZE = (252, 308)  # the small preset's image (contract/config.py: 308x252, 99 tokens)
MAX_STEPS = 15 * CONTROL_HZ  # 15 s (750 steps at 50 Hz): about twice the expert's longest episode
START_STATE = np.zeros(DIM)  # both arms at the SDK's all-zero home (docs/reference/arx.md), grippers closed


def make_scene(task: str, split: str, seed: int, **options):
    if task not in TASKS:
        raise UnknownChoice(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    return TASKS[task](check_split(split), int(seed), **options)


def still_world(scene, height: int, width: int, state: np.ndarray = START_STATE) -> tuple[np.ndarray, World]:
    """The scene as the camera sees it before anything moves (arms at `state`): (frame, world)."""
    camera = Camera(height, width)
    props = scene.make_props()
    state = np.array(state, dtype=float)
    world = World(scene, props, Grasping(props, scene.support, state[list(GRIPPER_INDICES)]), state, arm_poses(state),
                  camera, SpriteBook(camera))
    frame = Renderer(scene, height, width, world.sprites).render(props, world.poses, world.widths)
    return frame, world


class TaskEnv(gymnasium.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(self, task: str = math_game.TASK, split: str = "in_domain", height: int = DEFAULT_SIZE[0],
                 width: int = DEFAULT_SIZE[1], backend: ArmBackend | None = None, render_images: bool = True,
                 max_steps: int = MAX_STEPS, render_mode: str | None = "rgb_array"):
        if task not in TASKS:
            raise UnknownChoice(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
        self.task, self.split = task, check_split(split)
        self.height, self.width = int(height), int(width)
        self.backend = backend or KinematicBackend()
        self.render_images = render_images
        self.max_steps = max_steps
        self.render_mode = render_mode
        self.camera = Camera(self.height, self.width)
        self.observation_space = spaces.Dict({
            "images": spaces.Tuple((spaces.Box(0, 255, (self.height, self.width, 3), np.uint8),)),
            "state": spaces.Box(LOW.astype(np.float32), HIGH.astype(np.float32), dtype=np.float32),
            "instruction": spaces.Text(max_length=256, charset=string.printable),
        })
        self.action_space = spaces.Box(LOW.astype(np.float32), HIGH.astype(np.float32), dtype=np.float32)
        self.scene = None
        self.world: World | None = None
        self._next_seed = 0

    # --- gymnasium ---------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start the episode of (split, seed); without a seed, the one after the last. options:
        "scene" (a ready scene) or the task's make_scene options ("steps" for the math game,
        "place" for toy placement)."""
        super().reset(seed=seed)
        options = dict(options or {})
        seed = self._next_seed if seed is None else int(seed)
        self._next_seed = seed + 1
        self.scene = options.pop("scene", None) or make_scene(self.task, self.split, seed, **options)
        props = self.scene.make_props()
        state = self.backend.reset(START_STATE.copy())
        self.world = World(self.scene, props, Grasping(props, self.scene.support, state[list(GRIPPER_INDICES)]), state,
                           arm_poses(state), self.camera, SpriteBook(self.camera))
        self._renderer = Renderer(self.scene, self.height, self.width, self.world.sprites) if self.render_images else None
        self._success = self._failed = False
        self.scores = self.first_scores = None
        return self._observation(), self._info([])

    def step(self, action):
        if self.world is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=float).reshape(DIM)
        if not np.all(np.isfinite(action)):
            raise ValueError("action has NaN or infinite values")
        w = self.world
        stops = w.grasping.finger_stops([p.position for p in w.poses], w.widths)
        state = self.backend.apply(action, stops)
        for arm, g in enumerate(GRIPPER_INDICES):  # a held prop keeps the fingers apart, whatever the backend reports
            held = w.grasping.held(arm)
            if held is not None:
                state[g] = max(state[g], w.props[held].grasp_width)
        w.state = state
        w.poses = arm_poses(state)
        w.step += 1
        events = w.grasping.update([p.position for p in w.poses], w.widths, w.step)
        success, failed = self.scene.outcome(w)
        reward = 1.0 if success and not self._success else 0.0
        self._success |= success
        self._failed |= failed and not self._success
        terminated = self._success or self._failed
        truncated = w.step >= self.max_steps and not terminated
        return self._observation(), reward, terminated, truncated, self._info(events)

    def render(self):
        w = self.world
        if self._renderer is None:
            self._renderer = Renderer(self.scene, self.height, self.width, w.sprites)
        return self._renderer.render(w.props, w.poses, w.widths, w.step)

    # --- reasoning, expert ---------------------------------------------------------------------------------
    def expert_reasoning(self) -> str:
        """The expert's reasoning for the current observation."""
        return self.scene.reasoning(self.world)

    def expert_actions(self) -> np.ndarray:
        """(T, 14) the scripted expert's joint targets for this episode, from the reset state."""
        return expert.plan(self.scene, START_STATE)

    def score_reasoning(self, text: str) -> dict:
        """Score a reasoning text against what the current observation shows (scoring.py)."""
        result = self.scene.score(text, self.world)
        self.scores = result
        if self.first_scores is None:
            self.first_scores = result
        return result

    # --- helpers ---------------------------------------------------------------------------------------------
    def _observation(self) -> dict:
        w = self.world
        images = [self._renderer.render(w.props, w.poses, w.widths, w.step)] if self.render_images else []
        return {"images": images, "state": w.state.astype(np.float32), "instruction": self.scene.instruction}

    def _info(self, events) -> dict:
        w = self.world
        return {
            "success": self._success,
            "failed": self._failed,
            "step": w.step,
            "picked": [w.props[i].name for i in w.lifted_order()],
            "events": [(e.kind, w.props[e.prop].name, e.arm) for e in events],
            "reasoning": self.scene.reasoning(w),
            "scores": self.scores,
            "first_scores": self.first_scores,
        }
