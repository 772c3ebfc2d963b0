"""A simulated task's top camera as a live camera of the runtime (`chatvla2 run --robot sim --task NAME`).

    camera = SceneCamera("math_game", "in_domain", seed=0)   # the scene of (task, split, seed)
    views = open_scene_views(camera, num_views=2)            # an open runtime MultiCamera: every view is this camera
    robot = camera.attach(open_sim_robot())                  # from now on: the arms' measured state
    ...                                                      # the control loop reads `views`, drives `robot`
    views.close()
    outcome = camera.outcome(reasoning)                      # success, what was picked, the paper's scores
    print("\\n".join(format_outcome(outcome)))

What the camera shows is the scene as `TaskEnv` (env.py) keeps it, with the arms where they were
measured: every frame (`fps`, 30 by default, on an absolute schedule) reads the robot's state
(`BimanualRobot.get_state()`: joints and gripper widths as the motors reported them), steps the
environment with it and renders the top camera. The environment's `MeasuredBackend` "moves" the
arms to the measured state in one step (the robot already did), so the world is updated exactly as
`TaskEnv.step` does it (props.py's grasp rules: a gripper that closes on a card grasps it, a held
card or toy follows its gripper, a released one lands on the surface below; success and failure
latched), and the image follows. The simulated grippers have no prop between their fingers: like
`DriverBackend` (driver_backend.py), a width is read no narrower than a prop the fingers closed
onto, and `TaskEnv` keeps a held prop's width. Before `attach` (the runtime opens the cameras,
then connects the arms) the camera shows the start state (both arms at home, `env.START_STATE`);
after the robot disconnects its state can no longer be read: the capture stops with that error
and the views go stale (nothing reads them by then).

Timing: a frame's `time` is when its state was read (`time.monotonic()`); its index counts frames.
`SceneCamera.read()` waits for the next slot (`blocking`), so `open_scene_views` gives it one
`CaptureThread` (runtime/camera_thread.py) shared by all views: the environment is stepped once
per frame whatever the number of views, and the views read the newest frame without waiting. A
frame takes about 1 ms to step and render at 252x308 (the `small` preset's size, `DEFAULT_SIZE`;
the policy resizes to its own), 3 % of one core at 30 fps. Grasps need no frame at the instant the
fingers reach the prop: at 30 fps a gripper closing at the X5's 0.3 m/s moves 1 cm per frame, and
the grasp rule only asks that it was open at least the prop's width one frame and closed to it the
next, while on it.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from chatvla2.contract.embodiment import DIM, GRIPPER_INDICES
from chatvla2.contract.errors import InvalidInput
from chatvla2.runtime.camera import MultiCamera
from chatvla2.runtime.camera_source import CameraError, Frame, FrameSource, Pacer, make_frame
from chatvla2.runtime.camera_thread import DEFAULT_FIRST_FRAME_TIMEOUT_S, CaptureThread
from chatvla2.runtime.numbers import is_finite_number, is_whole_number
from chatvla2.sim.tasks.env import DEFAULT_SIZE, START_STATE, TaskEnv, make_scene
from chatvla2.sim.tasks.math_game import SLOTS
from chatvla2.sim.tasks.math_game import TASK as MATH_GAME
from chatvla2.sim.tasks.scoring import PLACE_PHRASES

DEFAULT_FPS = 30.0


class MeasuredBackend:
    """`ArmBackend` (backend.py) for arms that move by themselves: `apply(measured, finger_stops)`
    takes the 14-D state the arms were measured at and reaches it at once, except that a gripper
    that was at least as wide as its finger stop reads no narrower than it (the fingers rest on
    the prop: DriverBackend's rule)."""

    def __init__(self) -> None:
        self.state = START_STATE.astype(float)

    def reset(self, state: np.ndarray) -> np.ndarray:
        self.state = np.array(state, dtype=float).reshape(DIM)
        return self.state.copy()

    def apply(self, measured: np.ndarray, finger_stops: np.ndarray) -> np.ndarray:
        state = np.array(measured, dtype=float).reshape(DIM)
        for arm, g in enumerate(GRIPPER_INDICES):
            stop = float(finger_stops[arm])
            if stop > 0 and self.state[g] >= stop:
                state[g] = max(state[g], stop)
        self.state = state
        return state.copy()


class SceneCamera(FrameSource):
    """The top camera of the scene of (task, split, seed), showing the arms' measured state
    (module docstring). `attach(robot)` shares the robot (anything with `get_state() -> (14,)`)."""

    blocking = True  # read() waits for the frame's slot: give it a CaptureThread (open_scene_views)

    def __init__(self, task: str, split: str = "in_domain", seed: int = 0, height: int = DEFAULT_SIZE[0],
                 width: int = DEFAULT_SIZE[1], fps: float = DEFAULT_FPS):
        if not is_whole_number(seed) or seed < 0:
            raise InvalidInput(f"the episode seed must be an integer >= 0, got {seed!r}")
        if not is_finite_number(fps) or fps <= 0:
            raise InvalidInput(f"fps must be a number > 0, got {fps!r}")
        self.task, self.split, self.seed = task, split, int(seed)
        self.scene = make_scene(task, split, self.seed)  # unknown task or split: a ValueError naming it
        super().__init__(f"sim {task}/{split} seed {self.seed}")
        self.fps = float(fps)
        self.env = TaskEnv(task, split, height, width, backend=MeasuredBackend())
        self.robot = None
        self.frames = 0
        self.first_frame_at: float | None = None
        self.last_frame_at: float | None = None
        self.info: dict | None = None  # TaskEnv's info after the last frame
        self._lock = threading.Lock()  # the environment: stepped by the capture thread, read by outcome()
        self._interrupted = threading.Event()
        self._pacer = Pacer(self.fps)

    @property
    def instruction(self) -> str:
        return self.scene.instruction

    def attach(self, robot):
        """From the next frame on, show `robot`'s measured state; returns `robot`."""
        self.robot = robot
        return robot

    # --- FrameSource ---------------------------------------------------------------------------
    def open(self) -> None:
        """The scene at its start (first opening only: reopening keeps the world as it is)."""
        self._interrupted.clear()
        self._pacer = Pacer(self.fps)
        with self._lock:
            if self.env.world is None:
                _, self.info = self.env.reset(seed=self.seed, options={"scene": self.scene})

    def read(self) -> Frame:
        if not self._pacer.wait(self._interrupted):
            raise CameraError(f"camera {self.spec}: closed")
        robot = self.robot
        state = START_STATE if robot is None else np.asarray(robot.get_state(), dtype=float)
        captured = time.monotonic()  # the runtime's clock of frame times (runtime/camera_source.py)
        with self._lock:
            if self.env.world is None:
                raise CameraError(f"camera {self.spec}: not open")
            observation, _, _, _, self.info = self.env.step(state)
            index = self.frames
            self.frames += 1
            if self.first_frame_at is None:
                self.first_frame_at = captured
            self.last_frame_at = captured
        return make_frame(observation["images"][0], captured, index)

    def interrupt(self) -> None:
        self._interrupted.set()

    def close(self) -> None:
        self._interrupted.set()

    # --- the task's result ---------------------------------------------------------------------------
    def outcome(self, reasoning: str | None) -> dict:
        """What happened in the scene so far, and the paper's scores of `reasoning` (a text the
        policy wrote; None: no scores) against what the camera shows now (TaskEnv.score_reasoning)."""
        with self._lock:
            env = self.env
            if env.world is None:
                _, self.info = env.reset(seed=self.seed, options={"scene": self.scene})
            world, scene, info = env.world, self.scene, self.info
            out = {
                "name": self.task, "split": self.split, "episode_seed": self.seed, "instruction": self.instruction,
                "success": bool(info["success"]), "failed": bool(info["failed"]),
            }
            lifted = world.lifted_order()
            if self.task == MATH_GAME:
                out["picked"] = [f"{world.props[i].name} ({world.props[i].slot})" for i in lifted]
                out["answer"] = [f"{scene.cards[SLOTS.index(slot)]} ({slot})" for slot in scene.answer]
            else:
                out["picked"] = [world.props[i].name for i in lifted]
                out["object"], out["place"] = scene.obj, PLACE_PHRASES[scene.place].format(scene.target)
                out["grasped"] = bool(world.ever_grasped(0))
            out["reasoning"] = reasoning
            out["scores"] = None if reasoning is None else env.score_reasoning(reasoning)
            span = (self.last_frame_at or 0.0) - (self.first_frame_at or 0.0)
            out["camera"] = {"frames": self.frames, "fps_target": self.fps,
                             "fps": round((self.frames - 1) / span, 2) if self.frames > 1 and span > 0 else None,
                             "size": [env.height, env.width]}
        return out


def open_scene_views(camera: SceneCamera, num_views: int, max_age_s: float | None = None,
                     first_frame_timeout_s: float = DEFAULT_FIRST_FRAME_TIMEOUT_S) -> MultiCamera:
    """`num_views` views of `camera`, opened: one capture thread steps and renders it, every view
    reads its newest frame (module docstring). `max_age_s`: MultiCamera's freshness limit."""
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    capture = CaptureThread(camera, first_frame_timeout_s)  # open/close: once, whatever the number of views
    options = {} if max_age_s is None else {"max_age_s": max_age_s}
    return MultiCamera([capture] * num_views, **options).open()


def format_outcome(outcome: dict) -> list[str]:
    """Two lines: the task's outcome, then the scores of the last reasoning."""
    state = "success" if outcome["success"] else "failed" if outcome["failed"] else "not done"
    head = f"task {outcome['name']} ({outcome['split']}, episode seed {outcome['episode_seed']}): {state}"
    picked = ", ".join(outcome["picked"]) or "nothing"
    if outcome["name"] == MATH_GAME:
        line = f"{head}; picked {picked}; the answer: {' then '.join(outcome['answer'])}"
    else:
        grasped = "grasped" if outcome["grasped"] else "not grasped"
        line = f"{head}; picked {picked}; the {outcome['object']} ({grasped}) goes {outcome['place']}"
    scores = outcome["scores"]
    if scores is None:
        return [line, "task scores: no reasoning was decoded"]
    if outcome["name"] == MATH_GAME:
        points = f"ocr {scores['ocr']}/4, math {scores['math']}/2"
    else:
        points = f"object recognition {scores['object_recognition']}/1, spatial affordance {scores['spatial_affordance']}/1"
    form = f"form {scores['form']}" if scores["parsed"] else "the text matches no form"
    return [line, f"task scores (last reasoning): {points} ({form})"]

