"""SceneCamera: a task scene as a live camera, rendered from the arms' measured state
(sim/tasks/live_camera.py; `chatvla2 run --robot sim --task NAME`)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from chatvla2.runtime.camera import MultiCamera
from chatvla2.sim.robot import DEFAULT_SPLIT, SIM_TASKS
from chatvla2.sim.tasks.env import START_STATE, TASKS, TaskEnv
from chatvla2.sim.tasks.expert import grasp_height
from chatvla2.sim.tasks.kinematics import inverse_world
from chatvla2.sim.tasks.live_camera import SceneCamera, format_outcome, open_scene_views
from chatvla2.sim.tasks.splits import SPLITS

FAST = 1000.0  # fps for tests that call read() themselves: no waiting


class MeasuredRobot:
    """What the camera reads from the connected robot: `get_state()`, float32 (14,)."""

    def __init__(self, state=START_STATE):
        self.state = np.array(state, dtype=float)
        self.reads = 0

    def get_state(self) -> np.ndarray:
        self.reads += 1
        return self.state.astype(np.float32)

    def move_left_arm(self, point, width=None, q0=None) -> np.ndarray:
        q = inverse_world(0, point, q0)
        self.state[:6] = q
        if width is not None:
            self.state[6] = width
        return q


def test_the_run_options_name_the_tasks_and_splits_of_sim_tasks():
    # chatvla2/cli.py builds `run`'s options from sim/robot.py, which must not import gymnasium
    assert SIM_TASKS == tuple(TASKS)
    assert DEFAULT_SPLIT == SPLITS[0]


def _pixels(camera: SceneCamera, box) -> tuple[slice, slice]:
    """Rows and columns of a 0..1000 box (World.box) in the camera's image."""
    cam = camera.env.camera
    (u1, v1), (u2, v2) = cam.from_norm(np.array(box[:2])), cam.from_norm(np.array(box[2:]))
    return slice(int(v1), int(v2)), slice(int(u1), int(u2))


def _difference(a: np.ndarray, b: np.ndarray, region) -> float:
    return float(np.abs(a[region].astype(int) - b[region].astype(int)).mean())


@pytest.mark.parametrize("close", [True, False], ids=["gripper closes: the card goes along", "gripper open: it stays"])
def test_a_card_the_gripper_closes_on_moves_with_it_in_the_frames(close):
    camera = SceneCamera("math_game", "in_domain", seed=0, fps=FAST)
    camera.open()
    robot = camera.attach(MeasuredRobot())
    world = camera.env.world
    card = world.props[0]  # the left card: the left arm's
    first = camera.read().image
    start_box, other_boxes = world.box(0), [world.box(1), world.box(2)]
    x, y, z0 = card.position
    grasp = (x, y, z0 + grasp_height(card))
    q = robot.move_left_arm((x, y, card.top + 0.04), width=0.086)  # above it, open wider than the card
    camera.read()
    q = robot.move_left_arm(grasp, q0=q)
    camera.read()
    # The simulated gripper has nothing between its fingers: it reads 0 m when closed
    q = robot.move_left_arm(grasp, width=0.0 if close else 0.086, q0=q)
    camera.read()
    q = robot.move_left_arm((x, y, 0.12), q0=q)  # lift
    camera.read()
    robot.move_left_arm((x, 0.25, 0.12), q0=q)  # carry it towards the left arm's base, off the card row
    last = camera.read().image
    end_box = world.box(0)
    noise = max(_difference(first, last, _pixels(camera, box)) for box in other_boxes)  # the other cards: untouched
    assert noise < 5
    if close:
        assert camera.info["picked"] == [card.name] and card.held_by == 0
        assert end_box != start_box
        assert _difference(first, last, _pixels(camera, start_box)) > 8 * noise  # the card left its place
        assert _difference(first, last, _pixels(camera, end_box)) > 8 * noise  # and shows where the gripper is
    else:
        assert camera.info["picked"] == [] and card.held_by is None
        assert end_box == start_box
        assert _difference(first, last, _pixels(camera, start_box)) < 5


def test_frames_follow_the_measured_state_and_show_the_start_state_before_the_robot_connects():
    camera = SceneCamera("toy_placement", "open_world", seed=3, fps=FAST)
    camera.open()
    before = [camera.read() for _ in range(3)]
    assert [f.index for f in before] == [0, 1, 2]
    assert before[0].time <= before[1].time <= before[2].time
    np.testing.assert_array_equal(camera.env.world.state, START_STATE)
    reference = TaskEnv("toy_placement", "open_world")  # the start state, stepped the same way
    reference.reset(seed=3)
    np.testing.assert_array_equal(before[0].image, reference.step(START_STATE)[0]["images"][0])
    assert not before[0].image.flags.writeable
    robot = camera.attach(MeasuredRobot())
    robot.move_left_arm((0.3, 0.2, 0.1), width=0.05)
    moved = camera.read()
    assert robot.reads == 1 and moved.index == 3
    np.testing.assert_allclose(camera.env.world.state, robot.state.astype(np.float32), atol=1e-6)
    assert _difference(before[2].image, moved.image, np.s_[:, :]) > 2  # the arm is elsewhere in the picture
    assert camera.instruction == camera.env.scene.instruction and camera.instruction.startswith("Pick the ")


@pytest.mark.parametrize("task", SIM_TASKS)
def test_arms_that_follow_the_experts_targets_succeed_in_the_cameras_world(task):
    """The expert's joint targets as measured states (arms that track them, grippers that close
    through the props as the simulated ones do), one frame per two 50 Hz steps (25 fps):
    the world the camera keeps sees the task done."""
    planner = TaskEnv(task, "in_domain", render_images=False)
    planner.reset(seed=1)
    camera = SceneCamera(task, "in_domain", seed=1, fps=FAST, height=56, width=84)
    camera.open()
    robot = camera.attach(MeasuredRobot())
    for target in planner.expert_actions()[::2]:
        robot.state = np.array(target, dtype=float)
        camera.read()
    outcome = camera.outcome(None)
    assert outcome["success"] and not outcome["failed"], outcome
    if task == "math_game":
        assert outcome["picked"] == outcome["answer"] and len(outcome["answer"]) == camera.scene.steps
    else:
        assert outcome["picked"] == [camera.scene.obj] and outcome["grasped"]
    assert outcome["camera"]["size"] == [56, 84] and outcome["camera"]["frames"] > 50


@pytest.mark.parametrize("task", SIM_TASKS)
def test_the_outcome_scores_the_last_reasoning_the_paper_way(task):
    camera = SceneCamera(task, "in_domain", seed=2, fps=FAST)
    camera.open()
    camera.read()
    expert = camera.env.expert_reasoning()
    full = camera.outcome(expert)
    assert full["reasoning"] == expert and full["scores"]["parsed"]
    garbled = camera.outcome("\n\n\n")
    assert not garbled["scores"]["parsed"] and not garbled["success"]
    assert camera.outcome(None)["scores"] is None
    outcome_line, scores_line = format_outcome(full)
    assert outcome_line.startswith(f"task {task} (in_domain, episode seed 2): not done; picked nothing")
    if task == "math_game":
        assert (full["scores"]["ocr"], full["scores"]["math"]) == (4, 2)
        assert scores_line.startswith("task scores (last reasoning): ocr 4/4, math 2/2 (form ")
        assert format_outcome(garbled)[1] == "task scores (last reasoning): ocr 0/4, math 0/2 (the text matches no form)"
    else:
        assert (full["scores"]["object_recognition"], full["scores"]["spatial_affordance"]) == (1, 1)
        assert scores_line == "task scores (last reasoning): object recognition 1/1, spatial affordance 1/1 (form 1)"
    assert format_outcome(camera.outcome(None))[1] == "task scores: no reasoning was decoded"


def test_every_view_is_the_one_camera_stepped_once_per_frame_at_its_rate():
    camera = SceneCamera("math_game", "in_domain", seed=0)  # 30 fps
    views = open_scene_views(camera, num_views=3, max_age_s=0.5)
    try:
        assert isinstance(views, MultiCamera) and views.specs == [camera.spec] * 3
        assert camera.spec == "sim math_game/in_domain seed 0"
        robot = camera.attach(MeasuredRobot())
        time.sleep(0.5)
        frames = views.read()
        assert len(frames) == 3 and all(f.image.shape == (252, 308, 3) for f in frames)
        assert frames[0].index > 0 and robot.reads > 0
    finally:
        views.close()
    # one environment step per frame, whatever the number of views; about 30 of them a second
    assert camera.frames == camera.env.world.step
    assert 8 <= camera.frames <= 25, camera.frames
    count = camera.frames
    time.sleep(0.1)
    assert camera.frames == count  # closed: no more frames


def test_a_state_that_cannot_be_read_stops_the_capture_and_the_views_go_stale():
    class Gone:
        def get_state(self):
            raise ConnectionError("left arm is not connected")

    camera = SceneCamera("math_game", "in_domain", seed=0, fps=100)
    views = open_scene_views(camera, num_views=2, max_age_s=0.1)
    try:
        camera.attach(Gone())
        time.sleep(0.3)
        with pytest.raises(OSError, match="camera view 0 .*sim math_game/in_domain seed 0.*left arm is not connected"):
            views.read()
    finally:
        views.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "math"}, "unknown task 'math'"),
    ({"task": "math_game", "split": "open"}, "unknown split 'open'"),
    ({"task": "math_game", "seed": -1}, "episode seed must be an integer >= 0"),
    ({"task": "math_game", "fps": 0}, "fps must be a number > 0"),
])
def test_bad_scene_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SceneCamera(**kwargs)
