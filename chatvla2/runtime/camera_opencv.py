"""Live cameras through OpenCV: V4L2 (USB cameras, `v4l2:0`, `v4l2:/dev/video0@640x480@30`) and
GStreamer pipelines (`gst:... ! appsink`, the Jetson's CSI cameras through nvarguscamerasrc).

OpenCV is the optional `camera` extra, imported when a camera opens (`import_cv2`), never at
import time. OpenCV gives BGR; frames leave here as RGB uint8 (H, W, 3).

Capture time: V4L2 buffers carry the driver's CLOCK_MONOTONIC timestamp (the clock of
`time.monotonic()` on Linux), read through CAP_PROP_POS_MSEC and used when it lies within the
last second; otherwise (GStreamer, other drivers) the time `grab()` returned.

GStreamer needs an OpenCV built with it: the opencv-python(-headless) wheels are not; JetPack's
OpenCV (apt python3-opencv) is. `open()` says so instead of failing to open the pipeline.
"""

from __future__ import annotations

import contextlib
import os
import re
import time

import numpy as np

from chatvla2.runtime.camera_source import CameraError, Frame, FrameSource, make_frame
from chatvla2.runtime.camera_spec import CameraSpec

INSTALL_HINT = "pip install 'chatvla2-edge[camera]'"
GSTREAMER_HINT = (
    "the opencv-python wheels have none; on a Jetson use JetPack's OpenCV (apt install python3-opencv), "
    "e.g. in a venv made with --system-site-packages without opencv-python-headless"
)
# A driver timestamp is used as the capture time when it is this recent (seconds).
DRIVER_TIMESTAMP_WINDOW_S = 1.0


def import_cv2(spec: str):
    """OpenCV, or a one-line CameraError naming `spec` and the extra to install."""
    try:
        import cv2
    except ImportError as exc:
        raise CameraError(f"camera {spec}: needs OpenCV ({exc}): {INSTALL_HINT}") from None
    return cv2


@contextlib.contextmanager
def quiet_opencv(cv2):
    """OpenCV's own warnings off while a device opens: the CameraError says what failed, in one line."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    try:
        previous = logging.getLogLevel()
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    except Exception:  # noqa: BLE001 - an OpenCV without the logging API: keep its messages
        yield
        return
    try:
        yield
    finally:
        logging.setLogLevel(previous)


def to_rgb(cv2, image: np.ndarray, what: str) -> np.ndarray:
    """An OpenCV image (BGR, BGRA or gray, uint8) -> a new RGB uint8 (H, W, 3) array."""
    if image is None or image.dtype != np.uint8 or image.ndim not in (2, 3) or image.size == 0:
        shape = None if image is None else (image.dtype, image.shape)
        raise CameraError(f"camera {what}: expected 8-bit BGR or gray frames, got {shape}")
    channels = 1 if image.ndim == 2 else image.shape[2]
    code = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}.get(channels)
    if code is None:
        raise CameraError(f"camera {what}: frames with {channels} channels")
    return cv2.cvtColor(image, code)  # releases the GIL, unlike a numpy channel flip


def has_gstreamer(cv2) -> bool:
    registry = getattr(cv2, "videoio_registry", None)
    if registry is not None and hasattr(registry, "hasBackend"):
        return bool(registry.hasBackend(cv2.CAP_GSTREAMER))
    return re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()) is not None


def v4l2_device(spec: CameraSpec) -> int | str:
    """The device to open: an index; a path to /dev/videoN (a /dev/v4l/by-id link too) becomes N,
    which every OpenCV version opens; another existing path stays a path."""
    path = f"/dev/video{spec.device}" if isinstance(spec.device, int) else spec.device
    if not os.path.exists(path):
        raise CameraError(f"camera {spec.text}: no such device {path}")
    if not os.access(path, os.R_OK | os.W_OK):
        raise CameraError(f"camera {spec.text}: no permission to open {path} (is the user in group video?)")
    if isinstance(spec.device, int):
        return spec.device
    match = re.fullmatch(r"/dev/video([0-9]+)", os.path.realpath(path))
    return int(match.group(1)) if match else path


class OpenCVCamera(FrameSource):
    """A live V4L2 or GStreamer camera (`spec.kind` "v4l2" or "gst"). `read()` waits for the next
    frame (up to one frame period), so it runs in a capture thread."""

    def __init__(self, spec: CameraSpec):
        if spec.kind not in ("v4l2", "gst"):
            raise ValueError(f"OpenCVCamera opens v4l2: and gst: cameras, not {spec.text!r}")
        super().__init__(spec.text)
        self.camera_spec = spec
        self._cv2 = None
        self._capture = None
        self._count = 0
        self.size: tuple[int, int] | None = None  # (width, height) the camera gives
        self.fps: float | None = None  # what the driver reports

    def open(self) -> None:
        if self._capture is not None:
            return
        spec = self.camera_spec
        cv2 = self._cv2 = import_cv2(spec.text)
        if spec.kind == "gst":
            if not has_gstreamer(cv2):
                raise CameraError(f"camera {spec.text}: this OpenCV ({cv2.__version__}) has no GStreamer: {GSTREAMER_HINT}")
            with quiet_opencv(cv2):
                capture = cv2.VideoCapture(spec.pipeline, cv2.CAP_GSTREAMER)
        else:
            device = v4l2_device(spec)
            with quiet_opencv(cv2):
                capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
                if capture.isOpened():
                    if spec.fourcc:
                        capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*spec.fourcc))
                    if spec.width:
                        capture.set(cv2.CAP_PROP_FRAME_WIDTH, spec.width)
                        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, spec.height)
                    if spec.fps:
                        capture.set(cv2.CAP_PROP_FPS, spec.fps)
        if not capture.isOpened():
            capture.release()
            what = "the pipeline did not start" if spec.kind == "gst" else "not a V4L2 capture device, or busy"
            raise CameraError(f"camera {spec.text}: cannot open: {what}")
        self.size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.fps = float(capture.get(cv2.CAP_PROP_FPS)) or None
        if spec.width and self.size != (spec.width, spec.height):
            capture.release()
            raise CameraError(f"camera {spec.text}: the camera gives {self.size[0]}x{self.size[1]}, not {spec.width}x{spec.height} "
                              "(v4l2-ctl --list-formats-ext lists its modes)")
        self._capture = capture

    def read(self) -> Frame:
        capture, cv2 = self._capture, self._cv2
        if capture is None:
            raise CameraError(f"camera {self.spec}: not open")
        if not capture.grab():
            raise CameraError(f"camera {self.spec}: no frame (disconnected, or the pipeline ended)")
        captured = time.monotonic()
        if self.camera_spec.kind == "v4l2":
            driver = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if 0.0 <= captured - driver <= DRIVER_TIMESTAMP_WINDOW_S:
                captured = driver
        ok, image = capture.retrieve()
        if not ok:
            raise CameraError(f"camera {self.spec}: a frame could not be decoded")
        frame = make_frame(to_rgb(cv2, image, self.spec), captured, self._count)
        self._count += 1
        return frame

    def close(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()
