"""Camera sources (issue 9) on real files: videos written with cv2.VideoWriter and folders of PNG/npy
frames made in tmp_path, read back through the same sources, capture threads and MultiCamera the
robot uses. No camera device here: only the failure to open one is exercised."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="the camera extra: pip install 'chatvla2-edge[camera]'")

from chatvla2.contract.scene import sample_observation  # noqa: E402
from chatvla2.runtime.camera import (  # noqa: E402
    CameraError,
    EndOfStream,
    Frame,
    FrameFolderSource,
    FrameSource,
    MultiCamera,
    StaleCamera,
    StaticCamera,
    VideoFileSource,
    open_cameras,
    parse_camera_spec,
)

REPO = Path(__file__).resolve().parents[2]
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
H, W = 48, 64


@pytest.fixture(autouse=True)
def _threads_stopped(no_threads_left_behind):
    yield


def solid(rgb, h=H, w=W) -> np.ndarray:
    image = np.empty((h, w, 3), np.uint8)
    image[:] = rgb
    return image


def write_video(path: Path, colors, fps=30.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened()
    for rgb in colors:
        writer.write(cv2.cvtColor(solid(rgb), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_folder(folder: Path, frames: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rgb_image in frames.items():
        if name.endswith(".npy"):
            np.save(folder / name, rgb_image)
        else:
            assert cv2.imwrite(str(folder / name), cv2.cvtColor(rgb_image, cv2.COLOR_RGB2BGR))
    return folder


def dominant(frame: Frame) -> int:
    """The channel (0 R, 1 G, 2 B) of a solid colour frame, checking it is clearly that colour."""
    mean = frame.image.reshape(-1, 3).mean(axis=0)
    channel = int(np.argmax(mean))
    assert mean[channel] > 200 and np.delete(mean, channel).max() < 60, mean
    return channel


def camera_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("camera ")]


def stale_within(cameras: MultiCamera, seconds: float) -> StaleCamera:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            cameras.read()
        except StaleCamera as exc:
            return exc
        time.sleep(0.01)
    pytest.fail(f"no StaleCamera within {seconds} s")


# -- the SPEC ------------------------------------------------------------------------------------


def test_specs_parse():
    assert parse_camera_spec("static").kind == "static"
    v = parse_camera_spec("v4l2:0")
    assert (v.kind, v.device, v.width, v.fps) == ("v4l2", 0, None, None)
    v = parse_camera_spec("v4l2:/dev/video2@1280x720@30@mjpg")
    assert (v.device, v.width, v.height, v.fps, v.fourcc) == ("/dev/video2", 1280, 720, 30.0, "MJPG")
    assert parse_camera_spec("v4l2:1@15").fps == 15.0
    g = parse_camera_spec("gst:nvarguscamerasrc ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! appsink drop=true max-buffers=1")
    assert g.kind == "gst" and g.pipeline.startswith("nvarguscamerasrc")
    f = parse_camera_spec("file:runs/top.avi")
    assert (f.path, f.fps, f.loop) == ("runs/top.avi", None, False)
    f = parse_camera_spec("file:/data/frames?fps=12.5&loop=1")
    assert (f.path, f.fps, f.loop) == ("/data/frames", 12.5, True)
    assert parse_camera_spec("file:x.avi?fps=0").fps == 0.0


@pytest.mark.parametrize("spec", [
    "", "usb:0", "webcam", "static:1", "v4l2:", "v4l2:video0", "v4l2:0@640x", "v4l2:0@30@25", "v4l2:0@0",
    "v4l2:0@640x480@800x600", "gst:videotestsrc", "gst:", "gst:appsink ! videoconvert", "file:", "file:?fps=3",
    "file:x.avi?fps=-1", "file:x.avi?fps=abc", "file:x.avi?fps=inf", "file:x.avi?speed=2", "file:x.avi?loop=maybe",
    "file:x.avi?loop", "file:x.avi?loop=1&loop=0", "static\nv4l2:0",
])
def test_a_bad_spec_is_a_one_line_value_error_naming_it(spec):
    with pytest.raises(ValueError) as info:
        parse_camera_spec(spec)
    message = str(info.value)
    assert repr(spec) in message and "\n" not in message


def test_sim_is_reserved():
    with pytest.raises(ValueError, match="not available yet"):
        parse_camera_spec("sim")
    with pytest.raises(ValueError, match="not available yet"):
        open_cameras(["static", "sim:table"], num_views=2)


def test_the_number_of_specs_must_match_the_views():
    with pytest.raises(ValueError, match=r"model has 2 camera view\(s\) but 1 --camera"):
        open_cameras(["static"], num_views=2)


def test_every_spec_is_checked_before_a_camera_opens(tmp_path):
    folder = write_folder(tmp_path / "f", {"0.npy": solid(RED)})
    with pytest.raises(ValueError, match="bad camera SPEC 'v4l2:x'"):
        open_cameras([f"file:{folder}?loop=1", "v4l2:x"], num_views=2)
    assert camera_threads() == []


# -- static --------------------------------------------------------------------------------------


def test_static_camera_is_the_sample_scene():
    frames = StaticCamera(2).read()
    for got, want in zip(frames, sample_observation(2)[0]):
        np.testing.assert_array_equal(got, want)


def test_static_views_are_the_sample_scene_and_never_stale():
    with open_cameras(["static", "static"], num_views=2, max_age_s=0.05) as cameras:
        first = cameras.read()
        time.sleep(0.08)
        second = cameras.read()
    for view, want in enumerate(sample_observation(2)[0]):
        np.testing.assert_array_equal(second[view].image, want)
        assert second[view].index == first[view].index + 1 and second[view].time > first[view].time
        assert not second[view].image.flags.writeable


# -- video files and folders ---------------------------------------------------------------------


def test_a_video_file_reads_back_rgb_in_order(tmp_path):
    video = write_video(tmp_path / "v.avi", [RED, GREEN, BLUE])
    with VideoFileSource(video, fps=0) as source:
        frames = [source.read() for _ in range(3)]
        with pytest.raises(EndOfStream, match="after 3 frame"):
            source.read()
    assert [dominant(f) for f in frames] == [0, 1, 2]  # red read as red: BGR converted
    assert all(f.image.shape == (H, W, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[0].time < frames[1].time < frames[2].time


def test_a_video_loops_and_the_counter_keeps_counting(tmp_path):
    video = write_video(tmp_path / "v.avi", [RED, GREEN, BLUE], fps=20)
    with VideoFileSource(video, fps=0, loop=True) as source:
        frames = [source.read() for _ in range(7)]
    assert [dominant(f) for f in frames] == [0, 1, 2, 0, 1, 2, 0]
    assert [f.index for f in frames] == list(range(7))
    with VideoFileSource(video) as source:
        assert source.fps == pytest.approx(20.0)  # paced at the file's own rate by default


def test_a_folder_is_read_in_natural_name_order_png_and_npy(tmp_path):
    frames = {"frame_10.png": solid(BLUE), "frame_2.npy": solid(GREEN), "frame_1.png": solid(RED), "frame_3.jpg": solid((255, 255, 255))}
    folder = write_folder(tmp_path / "frames", frames)
    (folder / "notes.txt").write_text("not a frame")
    with FrameFolderSource(folder, fps=0) as source:
        assert [p.name for p in source.files] == ["frame_1.png", "frame_2.npy", "frame_3.jpg", "frame_10.png"]
        got = [source.read() for _ in range(4)]
        with pytest.raises(EndOfStream):
            source.read()
    np.testing.assert_array_equal(got[0].image, solid(RED))  # PNG and npy are exact
    np.testing.assert_array_equal(got[1].image, solid(GREEN))
    assert got[2].image.min() > 240  # JPEG: near white
    np.testing.assert_array_equal(got[3].image, solid(BLUE))


def test_a_folder_is_paced_and_loops(tmp_path):
    folder = write_folder(tmp_path / "frames", {"a.npy": solid(RED), "b.png": solid(GREEN)})
    with FrameFolderSource(folder, fps=50, loop=True) as source:
        frames = [source.read() for _ in range(6)]
    assert [dominant(f) for f in frames] == [0, 1, 0, 1, 0, 1]
    assert [f.index for f in frames] == list(range(6))
    intervals = np.diff([f.time for f in frames])
    assert 0.018 <= intervals.mean() <= 0.06, intervals  # 1/50 s apart, not as fast as they load


# -- through the capture thread and MultiCamera --------------------------------------------------


def test_a_recording_without_loop_goes_stale_after_its_end(tmp_path):
    folder = write_folder(tmp_path / "frames", {f"{i}.npy": solid(RED) for i in range(3)})
    spec = f"file:{folder}?fps=50"
    started = time.monotonic()
    with open_cameras(["static", spec], num_views=2, max_age_s=0.15) as cameras:
        assert cameras.specs == ["static", spec]
        frames = cameras.read()
        assert frames[1].index in (0, 1, 2) and dominant(frames[1]) == 0
        error = stale_within(cameras, 2.0)
    assert time.monotonic() - started >= 0.15 + 2 / 50
    assert isinstance(error, CameraError) and isinstance(error, OSError)
    assert (error.view, error.spec) == (1, spec) and error.age_s > 0.15
    message = str(error)
    assert message.startswith(f"camera view 1 ({spec}): the newest frame is") and "end of the recording" in message
    assert "\n" not in message


def test_a_looping_recording_stays_fresh(tmp_path):
    video = write_video(tmp_path / "v.avi", [RED, GREEN, BLUE])
    with open_cameras([f"file:{video}?fps=60&loop=1"], num_views=1, max_age_s=0.15) as cameras:
        seen, deadline = [], time.monotonic() + 0.4
        while time.monotonic() < deadline:
            frame, = cameras.read()
            assert time.monotonic() - frame.time <= 0.15
            seen.append(frame.index)
            time.sleep(0.01)
    assert seen == sorted(seen) and seen[-1] - seen[0] >= 10  # more than the 3 frames of the file


class PausableSource(FrameSource):
    """A live-like source: a new frame every 10 ms while running; `read()` waits while paused."""

    def __init__(self):
        super().__init__("pausable")
        self.running, self._interrupted, self._count = threading.Event(), threading.Event(), 0
        self.running.set()
        self.closed = False

    def read(self) -> Frame:
        while not self.running.wait(0.01):
            if self._interrupted.is_set():
                raise CameraError("camera pausable: interrupted")
        time.sleep(0.01)
        self._count += 1
        return Frame(solid(RED), time.monotonic(), self._count)

    def interrupt(self):
        self._interrupted.set()

    def close(self):
        self.closed = True


def test_a_source_that_stops_delivering_goes_stale_and_recovers():
    source = PausableSource()
    with MultiCamera([source], max_age_s=0.1).open() as cameras:
        assert camera_threads() == ["camera pausable"]
        cameras.read()
        source.running.clear()
        error = stale_within(cameras, 2.0)
        assert "camera view 0 (pausable): the newest frame is" in str(error)
        source.running.set()
        time.sleep(0.05)
        cameras.read()  # fresh again
    assert source.closed and camera_threads() == []


class FrozenSource(FrameSource):
    """A driver that re-stamps the same frame: fresh capture times, the counter stuck."""

    blocking = False

    def read(self) -> Frame:
        return Frame(solid(GREEN), time.monotonic(), 7)


def test_a_frozen_source_is_stale():
    with MultiCamera([FrozenSource("stuck")], max_age_s=0.1) as cameras:
        cameras.read()
        time.sleep(0.12)
        with pytest.raises(StaleCamera, match=r"camera view 0 \(stuck\): frozen, frame 7 unchanged for") as info:
            cameras.read()
    assert info.value.view == 0


def test_the_capture_thread_stops_on_close(tmp_path):
    video = write_video(tmp_path / "v.avi", [RED, GREEN])
    spec = f"file:{video}?loop=1"
    cameras = open_cameras([spec, "static"], num_views=2)
    assert camera_threads() == [f"camera {spec}"]
    cameras.close()
    assert camera_threads() == []
    with pytest.raises(CameraError, match=re.escape(f"camera {spec}: not open")):
        cameras.read()
    cameras.close()  # twice is fine


def test_max_age_must_be_positive():
    with pytest.raises(ValueError, match="max_age_s"):
        open_cameras(["static"], num_views=1, max_age_s=0)


# -- cameras that do not open --------------------------------------------------------------------


def _unopenable(tmp_path) -> list[str]:
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage.avi").write_bytes(b"not a video" * 100)
    (tmp_path / "bad").mkdir()
    np.save(tmp_path / "bad" / "0.npy", np.zeros((4, 4), np.float32))
    return ["v4l2:/dev/nonexistent", "v4l2:/dev/null", "v4l2:63", f"file:{tmp_path}/missing.avi",
            f"file:{tmp_path}/empty", f"file:{tmp_path}/garbage.avi", f"file:{tmp_path}/bad"]


def test_a_camera_that_does_not_open_is_a_one_line_camera_error_naming_it(tmp_path):
    for spec in _unopenable(tmp_path):
        with pytest.raises(CameraError) as info:
            open_cameras([spec], num_views=1, first_frame_timeout_s=2.0)
        message = str(info.value)
        assert message.startswith(f"camera {spec}: ") and "\n" not in message, message
    assert camera_threads() == []


def test_a_failing_camera_closes_the_ones_already_open(tmp_path):
    video = write_video(tmp_path / "v.avi", [RED])
    with pytest.raises(CameraError, match="camera v4l2:/dev/nonexistent: no such device"):
        open_cameras([f"file:{video}?loop=1", "static", "v4l2:/dev/nonexistent"], num_views=3)
    assert camera_threads() == []


def test_gstreamer_opens_or_says_opencv_has_none():
    spec = "gst:videotestsrc num-buffers=5 ! video/x-raw,width=64,height=48 ! videoconvert ! appsink"
    from chatvla2.runtime.camera_opencv import has_gstreamer

    if has_gstreamer(cv2):
        with open_cameras([spec], num_views=1) as cameras:
            assert cameras.read()[0].image.shape == (48, 64, 3)
    else:
        with pytest.raises(CameraError, match=r"has no GStreamer: .*JetPack's OpenCV"):
            open_cameras([spec], num_views=1)


def test_without_opencv_the_error_names_the_extra(tmp_path, monkeypatch):
    video = write_video(tmp_path / "v.avi", [RED])
    folder = write_folder(tmp_path / "npy", {"0.npy": solid(BLUE)})
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` now raises ImportError
    for spec in ("v4l2:0", f"file:{video}"):
        with pytest.raises(CameraError, match=r"needs OpenCV .*pip install 'chatvla2-edge\[camera\]'"):
            open_cameras([spec], num_views=1)
    with open_cameras([f"file:{folder}"], num_views=1) as cameras:  # .npy frames need no OpenCV
        np.testing.assert_array_equal(cameras.read()[0].image, solid(BLUE))


def test_importing_the_cameras_does_not_import_opencv():
    script = "import sys, chatvla2.runtime.camera; assert 'cv2' not in sys.modules, 'cv2 imported'; print('ok')"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
