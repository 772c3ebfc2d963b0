"""`chatvla2 sim-arm --profile x5 [--faults ...] [--seed N]`: start a simulated arm on a pty.

The first line printed is the device path alone (for scripts); the simulator runs until Ctrl-C or
until an `unplug` fault closes the pty.
"""

from __future__ import annotations

import sys
import time

from sim.arm_sim import SimulatedArm


def sim_arm_main(args) -> int:
    sim = SimulatedArm(args.profile, args.faults, seed=args.seed).start()
    try:
        print(sim.device_path, flush=True)
        faults = f" with faults {args.faults}" if args.faults else ""
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
        sim.stop()
