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

# The signals an operator or a supervisor sends to stop a process (each ends it by default; SIGKILL
# cannot be caught): Ctrl-C, systemd/docker stop and `timeout`, a closed terminal, Ctrl-\. `chatvla2
# arm`, `chatvla2 run` and the simulators' start-up (sim/processes.py) all handle these.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, name))


def exit_code(signum: int) -> int:
    """128 + the signal's number, as a shell reports a process a signal ended (130 for SIGINT)."""
    return 128 + int(signum)


def install_handlers(handler) -> dict[int, object]:
    """`handler` for every stop signal; returns the previous handlers, for `restore_handlers`.
    Main thread only (elsewhere the embedding program owns signals: nothing is installed). A
    signal that is ignored stays ignored: `nohup` asked to survive the terminal's hangup."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in STOP_SIGNALS:
        current = signal.getsignal(sig)
        if current is signal.SIG_IGN or current is None:
            continue
        previous[sig] = signal.signal(sig, handler)
    return previous


def restore_handlers(previous: dict[int, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


class StopSignals:
    def __init__(self) -> None:
        self.signum: int | None = None  # the first stop signal received
        self.received_at: float | None = None  # time.monotonic() when it came
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        self._previous = install_handlers(self._handle)
        return self

    def __exit__(self, *exc) -> None:
        restore_handlers(self._previous)
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
        return exit_code(self.signum) if self.signum is not None else 0

    def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`, less if a stop is requested; returns `requested`."""
        end = time.monotonic() + seconds
        while self.signum is None:
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.01))
        return self.requested
