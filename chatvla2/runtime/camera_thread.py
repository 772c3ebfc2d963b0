"""`CaptureThread`: one thread per camera reads its source as fast as it delivers and keeps the
newest frame, so `read()` never waits (the control loop must not block on a camera).

`open()` opens the source in the caller's thread (so a camera that cannot open fails there, before
the arms are enabled), starts the thread, and waits for the first frame (`first_frame_timeout_s`,
5 s: a Jetson CSI camera takes 1-2 s to start). When the source fails or a recording ends, the
thread stops and keeps the reason in `error`; the last frame then ages, and `MultiCamera.read`
raises `StaleCamera` once it is older than its `max_age_s`. `close()` stops and joins the thread,
then closes the source; a source stuck in a read past `join_timeout_s` is closed by its thread
when the read returns (a daemon thread: it never keeps the process alive).
"""

from __future__ import annotations

import threading

from chatvla2.runtime.camera_source import CameraError, Frame, FrameSource

DEFAULT_FIRST_FRAME_TIMEOUT_S = 5.0
DEFAULT_JOIN_TIMEOUT_S = 2.0


def one_line(exc: BaseException, spec: str) -> CameraError:
    """`exc` as a one-line CameraError naming `spec` (OpenCV's errors span several lines)."""
    if isinstance(exc, CameraError):
        return exc
    return CameraError(f"camera {spec}: {type(exc).__name__}: {' '.join(str(exc).split())}")


class CaptureThread(FrameSource):
    blocking = False

    def __init__(self, source: FrameSource, first_frame_timeout_s: float = DEFAULT_FIRST_FRAME_TIMEOUT_S,
                 join_timeout_s: float = DEFAULT_JOIN_TIMEOUT_S):
        super().__init__(source.spec)
        self.source = source
        self.first_frame_timeout_s, self.join_timeout_s = first_frame_timeout_s, join_timeout_s
        self.error: CameraError | None = None  # why the capture stopped by itself (EndOfStream, a failure)
        self._latest: Frame | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._first = threading.Event()
        self._lock = threading.Lock()
        self._exited = self._abandoned = False

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._exited

    def open(self) -> None:
        if self._thread is not None:
            return
        self.source.open()
        self.error, self._latest = None, None
        self._exited = self._abandoned = False
        self._stop.clear()
        self._first.clear()
        self._thread = threading.Thread(target=self._run, name=f"camera {self.spec}", daemon=True)
        self._thread.start()
        if not self._first.wait(self.first_frame_timeout_s):
            self.close()
            raise CameraError(f"camera {self.spec}: opened, but no frame within {self.first_frame_timeout_s:g} s")
        if self._latest is None:
            error = self.error or CameraError(f"camera {self.spec}: no frame")
            self.close()
            raise error

    def read(self) -> Frame:
        """The newest frame (possibly the one returned last time: compare `index`); never waits."""
        frame = self._latest
        if frame is None:
            raise CameraError(f"camera {self.spec}: not open")
        return frame

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                frame = self.source.read()
                self._latest = frame  # one reference assignment: readers see the old or the new frame
                self._first.set()
        except BaseException as exc:  # noqa: BLE001 - kept for the reader; the thread just ends
            if not self._stop.is_set():
                self.error = one_line(exc, self.spec)
        finally:
            with self._lock:
                self._exited = True
                abandoned = self._abandoned
            self._first.set()
            if abandoned:
                self.source.close()

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self.source.interrupt()
        thread.join(self.join_timeout_s)
        with self._lock:
            self._abandoned = not self._exited
            close_now = self._exited
        self._latest = None  # read() after close is an error, not an old frame
        if close_now:
            self.source.close()
