"""`chatvla2 sim-arm --profile x5 [--faults ...] [--seed N]`: start a simulated arm on a pty.

The first line printed is the device path alone (for scripts); the simulator runs until Ctrl-C
(SIGINT), SIGTERM, SIGHUP (its terminal closed), or until an `unplug` fault closes the pty.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from chatvla2.drivers.arm_command_config import ArmCommandConfig
from chatvla2.sim.arm_sim import SimulatedArm
from chatvla2.sim.sim_arm_config import SimArmConfig


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _install_stop_signals() -> dict[int, object]:
    """Make SIGINT, SIGTERM and SIGHUP stop the simulator, whatever this process inherited.

    A process started as a background job of a non-interactive shell (`chatvla2 sim-arm &` in a
    script, CI runners, nohup'ed jobs) inherits SIGINT *ignored*, and Python then leaves it ignored
    (it installs its KeyboardInterrupt handler only over SIG_DFL): Ctrl-C and `kill -INT` did
    nothing and the simulator ran forever. Returns the previous handlers, to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # signal.signal works in the main thread only; an embedding caller owns signals
    return {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}


def sim_arm_main(config: SimArmConfig) -> int:
    sim = SimulatedArm(config.profile, config.faults, seed=config.seed)
    previous = _install_stop_signals()
    try:
        sim.start()
        print(sim.device_path, flush=True)
        faults = f" with faults {config.faults}" if config.faults else ""
        print(
            f"simulated ARX {sim.profile.name.upper()} arm{faults} on {sim.device_path} (SLCAN, 1 Mbit/s bus)\n"
            f"try:  chatvla2 arm --port {sim.device_path} status\n"
            "Ctrl-C stops it.",
            file=sys.stderr,
            flush=True,
        )
        while not sim.unplugged.is_set():
            time.sleep(0.1)
        print("the cable was pulled (unplug fault): pty closed", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        try:
            sim.stop()
            if config.mode_log:
                _write_mode_log(Path(config.mode_log), sim.mode_record())
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _write_mode_log(path: Path, record: dict) -> None:
    """Whole or not at all: written beside, then renamed over (a reader never sees half a file)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record) + "\n")
    os.replace(partial, path)


def arm_with_sim_main(config: ArmCommandConfig) -> int:
    """`chatvla2 arm --sim ACTION`: a simulated arm in this process, then the driver's command on
    its pty (the drivers never import the simulator)."""
    from chatvla2.drivers.cli import arm_main
    from chatvla2.sim.robot import SIM_FEEDBACK_TIMEOUT_S

    # The simulated arm's feedback timeout, as `run --robot sim` uses: the simulator shares the
    # machine's cores, and a busy machine runs it late (the drivers' 50 ms is for real motors).
    with SimulatedArm(config.profile) as sim:
        return arm_main(replace(config, port=sim.device_path, sim=False, feedback_timeout_s=SIM_FEEDBACK_TIMEOUT_S))
