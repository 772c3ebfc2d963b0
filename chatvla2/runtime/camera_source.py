"""What every camera source is: `FrameSource` (`open()`, `read() -> Frame`, `close()`), the
`Frame` it gives, and the camera errors.

A `Frame` is an RGB uint8 image (H, W, 3), read-only (the same frame may be handed out several
times), its capture time (`time.monotonic()` at capture) and the source's frame counter (0, 1,
2, ...: it stops moving when the source delivers nothing new, which is how a frozen camera shows).

Errors are `CameraError` (an `OSError`: the command line prints it as one line and exits 2), with
two kinds: `EndOfStream` (a recording without `loop` is over) and `StaleCamera` (a view's newest
frame is too old, or no new frame came: `runtime.camera.MultiCamera.read`).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from chatvla2.contract.errors import DeviceError


class CameraError(DeviceError):
    """A camera that cannot be opened or read; the message is one line and names the SPEC."""

    def __init__(self, message: str):
        super().__init__(message)  # one argument: no (errno, strerror) unpacking


class EndOfStream(CameraError):
    """A recording (video file or folder of frames, without `loop`) has no more frames."""


class StaleCamera(CameraError):
    """A view's newest frame is older than `max_age_s`, or the view delivered no new frame within
    `max_age_s` (a frozen camera). The control loop treats it like any fault that stops actions."""

    def __init__(self, message: str, view: int, spec: str, age_s: float):
        super().__init__(message)
        self.view, self.spec, self.age_s = view, spec, age_s


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # (H, W, 3) uint8 RGB, read-only
    time: float  # time.monotonic() at capture
    index: int  # the source's frame counter: 0, 1, 2, ...


def make_frame(image: np.ndarray, capture_time: float, index: int) -> Frame:
    """A `Frame` owning a read-only (H, W, 3) uint8 image (`image` must not be written afterwards)."""
    image.flags.writeable = False
    return Frame(image, capture_time, index)


class FrameSource(ABC):
    """One camera view. `read()` returns the next frame: it may wait for it (`blocking`: V4L2,
    GStreamer, paced recordings), so the control loop reads these through a capture thread
    (`runtime.camera_thread.CaptureThread`, which `MultiCamera` adds) that keeps the latest one.

    `open()` raises `CameraError` naming `spec` when the source cannot be used; `read()` raises
    `CameraError` when it fails and `EndOfStream` when a recording is over; `close()` may be called
    more than once. `interrupt()` may be called from another thread to end a waiting `read()`
    early (it then raises `CameraError`); sources that cannot, ignore it."""

    blocking = True

    def __init__(self, spec: str):
        self.spec = spec

    def open(self) -> None:
        pass

    @abstractmethod
    def read(self) -> Frame:
        ...

    def close(self) -> None:
        pass

    def interrupt(self) -> None:
        pass

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


class Pacer:
    """Paces reads at `fps` (None or 0: no pacing) on an absolute schedule (frame k at t0 + k/fps);
    a late read is not followed by a burst: the schedule restarts from it."""

    def __init__(self, fps: float | None):
        self.period = 1.0 / fps if fps else 0.0
        self._next: float | None = None

    def wait(self, interrupted: threading.Event) -> bool:
        """Waits for the next slot; False if `interrupted` was set meanwhile."""
        if not self.period:
            return not interrupted.is_set()
        now = time.monotonic()
        slot = now if self._next is None else max(self._next, now)
        self._next = slot + self.period
        if slot > now:
            return not interrupted.wait(slot - now)
        return not interrupted.is_set()
