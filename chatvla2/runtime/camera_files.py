"""Recorded views (`file:PATH[?fps=F&loop=1]`): a video file (OpenCV) or a folder of frames
(.png/.jpg/.jpeg through OpenCV, .npy RGB uint8 (H, W, 3) through numpy, no OpenCV needed) read in
natural name order (frame2 before frame10). Tests and offline runs use them through the same
capture thread and `MultiCamera` as live cameras.

A frame's capture time is when it was read. `fps` paces the reads (absolute schedule, no burst
after a late read; 0 or None: as fast as they decode); a video's default is its own rate. Without
`loop`, `read()` raises `EndOfStream` after the last frame (and the view then goes stale); with
it, the recording starts again and the frame counter keeps counting.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np

from chatvla2.runtime.camera_opencv import import_cv2, quiet_opencv, to_rgb
from chatvla2.runtime.camera_source import CameraError, EndOfStream, Frame, FrameSource, Pacer, make_frame

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")
DEFAULT_FOLDER_FPS = 30.0
DEFAULT_VIDEO_FPS = 30.0  # when the container has no frame rate


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"([0-9]+)", name)]


def checked_path(path: str | Path, spec: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise CameraError(f"camera {spec}: no such file or folder {path}")
    return path


class _Recording(FrameSource):
    """Pacing, looping, the frame counter and interruption, shared by both recordings."""

    def __init__(self, path: str | Path, fps: float | None, loop: bool, spec: str | None):
        super().__init__(spec or f"file:{path}")
        self.path = Path(path).expanduser()
        self.fps, self.loop = fps, loop
        self._interrupted = threading.Event()
        self._pacer = Pacer(fps)
        self._count = 0
        self._opened = False

    def open(self) -> None:
        if not self._opened:
            checked_path(self.path, self.spec)
            self._open()
            self._interrupted.clear()
            self._pacer = Pacer(self.fps)
            self._opened = True

    def read(self) -> Frame:
        if not self._opened:
            raise CameraError(f"camera {self.spec}: not open")
        if not self._pacer.wait(self._interrupted):
            raise CameraError(f"camera {self.spec}: interrupted")
        image = self._next_image()
        if image is None and self.loop and self._count:
            self._rewind()
            image = self._next_image()
        if image is None:
            raise EndOfStream(f"camera {self.spec}: end of the recording after {self._count} frame(s)")
        frame = make_frame(image, time.monotonic(), self._count)
        self._count += 1
        return frame

    def interrupt(self) -> None:
        self._interrupted.set()

    def close(self) -> None:
        if self._opened:
            self._opened = False
            self._close()

    # one recording kind: open, the next RGB image or None at the end, back to the start, close
    def _open(self) -> None: ...
    def _next_image(self) -> np.ndarray | None: ...
    def _rewind(self) -> None: ...
    def _close(self) -> None: ...


class VideoFileSource(_Recording):
    """A video file OpenCV decodes (FFmpeg). `fps` None: the file's own rate (30 if it has none)."""

    def __init__(self, path: str | Path, fps: float | None = None, loop: bool = False, spec: str | None = None):
        super().__init__(path, fps, loop, spec)
        self._capture = None
        self._cv2 = None

    def _open(self) -> None:
        self._cv2 = import_cv2(self.spec)
        if not self.path.is_file():
            raise CameraError(f"camera {self.spec}: {self.path} is not a file")
        self._capture = self._open_capture()
        if self.fps is None:
            native = self._capture.get(self._cv2.CAP_PROP_FPS)
            self.fps = native if 0 < native < 1000 else DEFAULT_VIDEO_FPS

    def _open_capture(self):
        cv2 = self._cv2
        with quiet_opencv(cv2):
            capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise CameraError(f"camera {self.spec}: OpenCV cannot decode {self.path}")
        return capture

    def _next_image(self) -> np.ndarray | None:
        ok, image = self._capture.read()
        return to_rgb(self._cv2, image, self.spec) if ok else None

    def _rewind(self) -> None:
        self._capture.release()  # reopening rewinds every container, unlike seeking
        self._capture = self._open_capture()

    def _close(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()


class FrameFolderSource(_Recording):
    """A folder of .png/.jpg/.jpeg/.npy frames, natural name order. `fps` None: 30."""

    def __init__(self, path: str | Path, fps: float | None = None, loop: bool = False, spec: str | None = None):
        super().__init__(path, DEFAULT_FOLDER_FPS if fps is None else fps, loop, spec)
        self.files: list[Path] = []
        self._position = 0
        self._cv2 = None

    def _open(self) -> None:
        if not self.path.is_dir():
            raise CameraError(f"camera {self.spec}: {self.path} is not a folder")
        self.files = sorted((p for p in self.path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()),
                            key=lambda p: natural_key(p.name))
        if not self.files:
            raise CameraError(f"camera {self.spec}: no {'/'.join(FRAME_SUFFIXES)} frames in {self.path}")
        if any(p.suffix.lower() != ".npy" for p in self.files):
            self._cv2 = import_cv2(self.spec)
        self._position = 0

    def _next_image(self) -> np.ndarray | None:
        if self._position >= len(self.files):
            return None
        path = self.files[self._position]
        self._position += 1
        if path.suffix.lower() == ".npy":
            try:
                image = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise CameraError(f"camera {self.spec}: cannot read {path.name}: {exc}") from None
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise CameraError(f"camera {self.spec}: {path.name} is {image.dtype} {image.shape}, expected RGB uint8 (H, W, 3)")
            return np.array(image)  # an owned copy (the frame is made read-only)
        image = self._cv2.imread(str(path), self._cv2.IMREAD_COLOR)
        if image is None:
            raise CameraError(f"camera {self.spec}: OpenCV cannot read {path.name}")
        return to_rgb(self._cv2, image, self.spec)

    def _rewind(self) -> None:
        self._position = 0


def open_recording_source(path: str | Path, fps: float | None = None, loop: bool = False, spec: str | None = None) -> FrameSource:
    """A folder or a video file at `path`, not opened yet (`open()` says if it is missing)."""
    kind = FrameFolderSource if Path(path).expanduser().is_dir() else VideoFileSource
    return kind(path, fps=fps, loop=loop, spec=spec)
