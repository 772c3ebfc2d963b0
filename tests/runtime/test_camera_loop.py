"""A camera that stops delivering frames holds the plan, then damps and stops the loop (issue 9):
a real frame-folder source through `open_cameras`, the real `ControlLoop`, a fake robot and
policy (tests/runtime/test_loop.py's)."""

from __future__ import annotations

import itertools
import json

import numpy as np

from chatvla2.runtime.camera import open_cameras
from chatvla2.runtime.loop import ControlLoop, LoopConfig, Telemetry
from chatvla2.runtime.safety import ActionSafety
from tests.runtime.test_loop import FakePolicy, FakeRobot

FPS = 20
FRAMES = 20  # one second of frames, then the recording ends (no loop): the view goes stale


def test_a_camera_that_stops_holds_then_damps(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(FRAMES):
        np.save(folder / f"frame{i}.npy", np.full((24, 32, 3), i, np.uint8))
    cameras = open_cameras([f"file:{folder}?fps={FPS}&loop=0"], num_views=1, max_age_s=0.3)
    loop_ref: list = []
    robot = FakeRobot()
    policy = FakePolicy(itertools.repeat(0.02), loop_ref)
    seen = []

    def observe(state):
        images = cameras.images()
        seen.append(int(images[0][0, 0, 0]))
        return {"images": images, "instruction": "go", "state": state}

    telemetry = Telemetry(tmp_path / "run.jsonl")
    loop = ControlLoop(policy, robot, observe, LoopConfig(rate_hz=50, duration_s=10.0, hold_s=0.3),
                       ActionSafety.bimanual_arx(50), telemetry)
    loop_ref.append(loop)
    try:
        summary = loop.run()
    finally:
        cameras.close()
        telemetry.close()
    # it ran on fresh frames first, then starved: the watchdog held, damped and stopped the loop
    assert max(seen) >= FRAMES // 2
    assert summary["stop_reason"].startswith("watchdog: no action"), summary["stop_reason"]
    assert "camera view 0" in summary["stop_reason"] and "end of the recording" in summary["stop_reason"]
    assert summary["damped"] and robot.damped_at is not None
    assert summary["stale_observations"] >= 1
    # well before the 10 s duration: frames end at ~1 s, + max age 0.3 s, + the plan's 0.5 s, + hold 0.3 s
    assert summary["duration_s"] < 4.0, summary["duration_s"]
    events = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    stale = [e for e in events if e["event"] == "camera_stale"]
    assert len(stale) == 1 and "camera view 0" in stale[0]["error"]
