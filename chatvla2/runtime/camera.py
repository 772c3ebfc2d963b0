"""Cameras the control loop reads: one `FrameSource` per view, read together by `MultiCamera`.

    cameras = open_cameras(["v4l2:/dev/video0@640x480@30", "file:recordings/wrist?loop=1"], num_views=2)
    try:
        frames = cameras.read()            # [Frame(image RGB uint8 (H, W, 3), time, index), ...] or StaleCamera
        images = [f.image for f in frames]
    finally:
        cameras.close()                    # threads stopped and joined, devices released

The SPEC syntax is in `runtime/camera_spec.py` (static, v4l2:, gst:, file:; sim reserved). The
sources: `StaticSource` (here: the sample scene), `runtime/camera_opencv.py` (V4L2, GStreamer),
`runtime/camera_files.py` (a video file or a folder of frames); `runtime/camera_thread.py` gives
the blocking ones a capture thread that keeps the newest frame.

Freshness: `MultiCamera.read` raises `StaleCamera` (a `CameraError`, an `OSError`) naming the view
when a view's newest frame is older than `max_age_s`, or when its frame counter has not moved for
`max_age_s` (a frozen camera). Default 0.5 s: 15 frame periods at 30 fps, half the horizon of a
50-step chunk at 50 Hz; an observation that old no longer shows where the arms are. It must be
longer than a source's frame period (a 1 fps recording is always stale at 0.5 s).

`StaticCamera(num_views).read()` (a list of the sample scene's arrays) stays for the bench and
tests that need no freshness checks.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence

import numpy as np

from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.scene import sample_observation
from chatvla2.runtime.camera_files import FrameFolderSource, VideoFileSource, open_recording_source
from chatvla2.runtime.camera_opencv import OpenCVCamera
from chatvla2.runtime.camera_source import CameraError, EndOfStream, Frame, FrameSource, StaleCamera, make_frame
from chatvla2.runtime.camera_spec import CAMERA_SPEC_HELP, CameraSpec, parse_camera_spec
from chatvla2.runtime.camera_thread import DEFAULT_FIRST_FRAME_TIMEOUT_S, CaptureThread

__all__ = [
    "CAMERA_SPEC_HELP", "DEFAULT_MAX_AGE_S", "CameraError", "CameraSpec", "CaptureThread", "EndOfStream", "Frame",
    "FrameFolderSource", "FrameSource", "MultiCamera", "OpenCVCamera", "StaleCamera", "StaticCamera", "StaticSource",
    "VideoFileSource", "open_cameras", "parse_camera_spec", "source_for",
]

DEFAULT_MAX_AGE_S = 0.5


class StaticCamera:
    """`num_views` fixed 240 x 320 RGB frames of the sample scene."""

    def __init__(self, num_views: int):
        self.frames: list[np.ndarray] = sample_observation(num_views)[0]

    def read(self) -> list[np.ndarray]:
        return self.frames


class StaticSource(FrameSource):
    """One fixed image as a live view: every `read()` is a new frame (fresh time, next index)."""

    blocking = False

    def __init__(self, image: np.ndarray, spec: str = "static"):
        super().__init__(spec)
        self.image = np.array(image, dtype=np.uint8)
        self.image.flags.writeable = False
        self._count = 0

    def read(self) -> Frame:
        frame = make_frame(self.image, time.monotonic(), self._count)
        self._count += 1
        return frame


def source_for(spec: CameraSpec | str, view: int = 0, num_views: int = 1) -> FrameSource:
    """The (unopened) source of one SPEC for view `view` of `num_views` (static: that view's scene)."""
    if isinstance(spec, str):
        spec = parse_camera_spec(spec)
    if spec.kind == "static":
        return StaticSource(sample_observation(num_views)[0][view], spec.text)
    if spec.kind in ("v4l2", "gst"):
        return OpenCVCamera(spec)
    if spec.kind == "file":
        return open_recording_source(spec.path, fps=spec.fps, loop=spec.loop, spec=spec.text)
    raise ValueError(f"camera SPEC {spec.text!r}: no source for kind {spec.kind!r}")


class MultiCamera:
    """Several views read together. Blocking sources get a `CaptureThread` each. `open()` opens
    them in order (closing those already open if one fails); `read()` never waits."""

    def __init__(self, sources: Sequence[FrameSource], max_age_s: float = DEFAULT_MAX_AGE_S,
                 first_frame_timeout_s: float = DEFAULT_FIRST_FRAME_TIMEOUT_S):
        if not sources:
            raise ValueError("MultiCamera needs at least one source")
        if not (isinstance(max_age_s, (int, float)) and math.isfinite(max_age_s) and max_age_s > 0):
            raise InvalidInput(f"max_age_s must be a number of seconds > 0, got {max_age_s!r}")
        self.sources = [CaptureThread(s, first_frame_timeout_s) if s.blocking else s for s in sources]
        self.max_age_s = float(max_age_s)
        self._last_index: list[int | None] = [None] * len(self.sources)
        self._last_new = [0.0] * len(self.sources)  # when read() first saw that index

    @property
    def specs(self) -> list[str]:
        return [s.spec for s in self.sources]

    @property
    def num_views(self) -> int:
        return len(self.sources)

    def open(self) -> MultiCamera:
        opened: list[FrameSource] = []
        try:
            for source in self.sources:
                source.open()
                opened.append(source)
        except BaseException:
            for source in reversed(opened):
                with contextlib.suppress(Exception):
                    source.close()
            raise
        return self

    def read(self) -> list[Frame]:
        """The newest frame of every view, or `StaleCamera` naming the first view that is too old
        or frozen."""
        frames = []
        for view, source in enumerate(self.sources):
            frame = source.read()
            now = time.monotonic()
            if frame.index != self._last_index[view]:
                self._last_index[view], self._last_new[view] = frame.index, now
            age, unchanged = now - frame.time, now - self._last_new[view]
            if age > self.max_age_s or unchanged > self.max_age_s:
                raise self._stale(view, source, frame, age, unchanged)
            frames.append(frame)
        return frames

    def images(self) -> list[np.ndarray]:
        """`read()`'s RGB images, the policy's `observation["images"]`."""
        return [frame.image for frame in self.read()]

    def _stale(self, view: int, source: FrameSource, frame: Frame, age: float, unchanged: float) -> StaleCamera:
        where = f"camera view {view} ({source.spec})"
        if age > self.max_age_s:
            message = f"{where}: the newest frame is {age:.2f} s old (max_age_s {self.max_age_s:g})"
        else:
            message = f"{where}: frozen, frame {frame.index} unchanged for {unchanged:.2f} s (max_age_s {self.max_age_s:g})"
        error = getattr(source, "error", None)
        if error is not None:
            message += f"; the capture stopped: {error}"
        return StaleCamera(message, view=view, spec=source.spec, age_s=max(age, unchanged))

    def close(self) -> None:
        errors = []
        for source in self.sources:
            try:
                source.close()
            except Exception as exc:  # noqa: BLE001 - close the others, then report the first
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> MultiCamera:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def open_cameras(specs: Sequence[str], num_views: int, max_age_s: float = DEFAULT_MAX_AGE_S,
                 first_frame_timeout_s: float = DEFAULT_FIRST_FRAME_TIMEOUT_S) -> MultiCamera:
    """`--camera SPEC` x num_views -> an open `MultiCamera`, each view delivering frames. Every
    SPEC is checked before any camera opens (ValueError); a camera that fails to open is a
    one-line CameraError naming its SPEC, the cameras opened before it closed again."""
    specs = list(specs)
    if len(specs) != num_views:
        raise InvalidInput(f"the model has {num_views} camera view(s) but {len(specs)} --camera SPEC(s) were given: "
                         "give one --camera per view, in the model's view order")
    parsed = [parse_camera_spec(spec) for spec in specs]
    sources = [source_for(spec, view, num_views) for view, spec in enumerate(parsed)]
    return MultiCamera(sources, max_age_s, first_frame_timeout_s).open()
