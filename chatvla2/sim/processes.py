"""Simulated arms as processes: each `chatvla2 sim-arm` runs in its own process behind its own
pty, like a USB adapter (in-process simulators would share the GIL with inference and the two
500 Hz controllers, and fall silent on a 2-core machine).

    sims = start_sim_arms("x5", {"left": "unplug=2"})   # [left, right]; each has .device_path
    ...
    stop_sim_arms(sims)

No started process is left behind, whatever signal arrives while they start (SIGINT, SIGTERM,
SIGHUP, SIGQUIT): on the main thread, `start_sim_arms` holds those signals back while it spawns a
process and records it (a signal inside `subprocess.Popen`, after the fork, would otherwise lose
the only handle on the child), acts on one at once while it waits for a simulator's first line,
and stops every recorded process before the signal takes its course: the handler that was
installed before runs (a KeyboardInterrupt, `chatvla2 run`'s stop, or the default action, e.g.
SIGTERM ending the process), and if it returns, `StartupInterrupted` is raised. Stopping is
itself shielded from further signals. Off the main thread (where Python handles no signals)
the caller owns signal handling; a failure still stops whatever was started.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chatvla2.contract.embodiment import ARMS
from chatvla2.contract.errors import DeviceError
from chatvla2.drivers.stop_signals import install_handlers, restore_handlers

SIDES = ARMS  # one simulated arm per side, in the 14-D layout's order (contract/embodiment.py)


class StartupInterrupted(KeyboardInterrupt):
    """A stop signal arrived while the simulated arms started; every started one was stopped."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} while the simulated arms were starting")


class SimArmProcess:
    def __init__(self, process: subprocess.Popen, device_path: str | None = None):
        self.process, self.device_path = process, device_path

    def stop(self) -> None:
        """SIGINT (the simulator closes its pty), then SIGKILL after 5 s; the process is reaped.
        The kill runs even if the wait is interrupted."""
        if self.process.poll() is not None:
            return
        try:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


class _SignalGuard:
    """While starting, on the main thread: the stop signals are recorded by our handler. Inside
    `hold()` they wait; outside it the first one raises `StartupInterrupted` at once (only the
    first: a second signal cannot break the cleanup). `restore()` puts the previous handlers back,
    `deliver()` then hands a recorded signal to them (see the module docstring)."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.raised = False
        self.holding = 0
        self.previous: dict[int, object] = {}

    def install(self) -> _SignalGuard:
        self.previous = install_handlers(self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.pending is None:
            self.pending = signum
        self._raise_once()

    def _raise_once(self) -> None:
        if not self.holding and not self.raised and self.pending is not None:
            self.raised = True
            raise StartupInterrupted(self.pending)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Signals wait until the block ends; then one that came raises StartupInterrupted."""
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
        self._raise_once()

    def restore(self) -> None:
        self.holding += 1  # no raising any more
        restore_handlers(self.previous)

    def deliver(self) -> None:
        """The handler installed before decides what a recorded signal does: the default action
        ends the process (the cleanup is done by now), a Python handler may raise."""
        if self.pending is not None and self.previous:
            signal.raise_signal(self.pending)


def _spawn(profile: str, seed: int, faults: str, mode_log: str | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "chatvla2", "sim-arm", "--profile", profile, "--seed", str(seed)]
    return subprocess.Popen(
        command + (["--faults", faults] if faults else []) + (["--mode-log", mode_log] if mode_log else []),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        # its own process group: the operator's Ctrl-C goes to `run`, which stops the sims itself
        # after damping and disabling the arms
        start_new_session=True,
    )


def _read_device_path(sim: SimArmProcess) -> None:
    path = sim.process.stdout.readline().strip()
    if not path:
        raise DeviceError("the simulated arm did not start (chatvla2 sim-arm printed no pty path)")
    sim.device_path = path


def start_sim_arm(profile: str, seed: int, faults: str = "") -> SimArmProcess:
    """One simulated arm; see `start_sim_arms`."""
    return _start(profile, [(seed, faults, None)], [])[0]


def start_sim_arms(profile: str, faults: dict[str, str] | None = None,
                   started: list[SimArmProcess] | None = None, mode_logs: str | None = None) -> list[SimArmProcess]:
    """Two simulated arms, left then right (seeds 0 and 1); none is left running on failure or
    on a signal (see the module docstring). `started`: a list of the caller's that each process
    joins as it is spawned (returned too), so that a caller whose own code a signal interrupts
    right after this returns still holds every process to stop. `mode_logs`: a folder where each
    arm writes what its motors saw when it stops (`chatvla2 sim-arm --mode-log`): left.json, right.json."""
    faults = faults or {}
    sims = [] if started is None else started
    logs = {side: (str(Path(mode_logs) / f"{side}.json") if mode_logs else None) for side in SIDES}
    return _start(profile, [(seed, faults.get(side, ""), logs[side]) for seed, side in enumerate(SIDES)], sims)


def _start(profile: str, arms: list[tuple[int, str, str | None]], sims: list[SimArmProcess]) -> list[SimArmProcess]:
    first = len(sims)
    guard = _SignalGuard().install()
    try:
        for seed, faults, mode_log in arms:
            with guard.hold():  # spawned and recorded, or not spawned
                sims.append(SimArmProcess(_spawn(profile, seed, faults, mode_log)))
            _read_device_path(sims[-1])  # a signal here raises at once: the process is recorded
        guard.holding += 1  # started: from here on a signal waits (then undoes the start-up below)
    except BaseException:
        guard.holding += 1
        try:
            stop_sim_arms(sims[first:])
        finally:
            guard.restore()
        guard.deliver()
        raise
    guard.restore()  # from here on a signal goes to the handler installed before
    if guard.pending is not None:  # came after the last process started, before the restore
        stop_sim_arms(sims[first:])
        guard.deliver()
        raise StartupInterrupted(guard.pending)
    return sims


def stop_sim_arms(sims) -> None:
    """Stop every one, even if stopping one fails."""
    errors = []
    for sim in sims:
        try:
            sim.stop()
        except Exception as exc:  # noqa: BLE001 - the others must still stop
            errors.append(exc)
    if errors:
        raise errors[0]
