"""`StopSignals`: SIGINT, SIGTERM and SIGHUP as a stop request the command polls.

Ctrl-C, `kill`, systemd's stop and a closed terminal must all end an arm command the same way:
damping, then disable, then a non-zero exit (130 for SIGINT, 128 + signal number otherwise). Left
alone, SIGTERM and SIGHUP kill the process with the motors enabled, and SIGINT's KeyboardInterrupt
can land anywhere, even in the middle of the disable. Here a signal only sets `signum`: the command
checks `requested` at its own safe points and shuts the arm down itself; a second signal changes
nothing (the shutdown is bounded, so waiting for it is always finite).
"""

from __future__ import annotations

import signal
import threading
import time

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopSignals:
    def __init__(self) -> None:
        self.signum: int | None = None  # the first stop signal received
        self.received_at: float | None = None  # time.monotonic() when it came
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        # signal.signal works in the main thread only; elsewhere the embedding program owns signals
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
            self.received_at = time.monotonic()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        """130 for SIGINT (as the shell reports Ctrl-C), 128 + the signal number otherwise."""
        return 128 + self.signum if self.signum is not None else 0

    def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`, less if a stop is requested; returns `requested`."""
        end = time.monotonic() + seconds
        while self.signum is None:
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.01))
        return self.requested
