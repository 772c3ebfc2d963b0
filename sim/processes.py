"""Simulated arms as processes: each `chatvla2 sim-arm` runs in its own process behind its own
pty, like a USB adapter (in-process simulators would share the GIL with inference and the two
500 Hz controllers, and fall silent on a 2-core machine).

    sims = start_sim_arms("x5", {"left": "unplug=2"})   # [left, right]; each has .device_path
    ...
    stop_sim_arms(sims)
"""

from __future__ import annotations

import signal
import subprocess
import sys

SIDES = ("left", "right")


class SimArmProcess:
    def __init__(self, process: subprocess.Popen, device_path: str):
        self.process, self.device_path = process, device_path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_sim_arm(profile: str, seed: int, faults: str = "") -> SimArmProcess:
    command = [sys.executable, "-m", "chatvla2", "sim-arm", "--profile", profile, "--seed", str(seed)]
    process = subprocess.Popen(
        command + (["--faults", faults] if faults else []),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        # its own process group: the operator's Ctrl-C goes to `run`, which stops the sims itself
        # after damping and disabling the arms
        start_new_session=True,
    )
    path = process.stdout.readline().strip()
    if not path:
        process.kill()
        process.wait()
        raise OSError("the simulated arm did not start (chatvla2 sim-arm printed no pty path)")
    return SimArmProcess(process, path)


def start_sim_arms(profile: str, faults: dict[str, str] | None = None) -> list[SimArmProcess]:
    """Two simulated arms, left then right (seeds 0 and 1); none is left running on failure."""
    faults = faults or {}
    sims: list[SimArmProcess] = []
    try:
        for seed, side in enumerate(SIDES):
            sims.append(start_sim_arm(profile, seed, faults.get(side, "")))
    except BaseException:
        stop_sim_arms(sims)
        raise
    return sims


def stop_sim_arms(sims) -> None:
    for sim in sims:
        sim.stop()
