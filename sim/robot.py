"""`chatvla2 run --robot sim`: the runtime's `run_policy` on two simulated ARX arms.

Each arm is a `chatvla2 sim-arm` process behind its own pty (`sim.processes`), driven through the
real serial path (`ARXArm` -> SLCAN -> pty) with a 200 ms feedback timeout: a 2-core machine
running inference, two simulators and two 500 Hz controllers misses 100 ms now and then. The
simulators stop after the arms are damped and disabled.
"""

from __future__ import annotations

import argparse

from runtime.robots import BimanualRobot, open_robot
from runtime.run import robot_ports, run_policy
from sim.faults import parse_faults
from sim.processes import SIDES, start_sim_arms, stop_sim_arms

SIM_FEEDBACK_TIMEOUT_S = 0.2


def parse_sim_faults(items: list[str]) -> dict[str, str]:
    """["left:SPEC", "right:SPEC", ...] -> {"left": SPEC, ...}, each SPEC checked by the simulator's parser."""
    faults: dict[str, str] = {}
    for item in items:
        side, sep, spec = item.partition(":")
        if not sep or side not in SIDES:
            raise ValueError(f"--sim-faults {item!r}: expected left:SPEC or right:SPEC, e.g. left:unplug=5")
        parse_faults(spec)  # a bad spec fails here, before anything starts
        faults[side] = ",".join(filter(None, [faults.get(side, ""), spec]))
    return faults


def open_sim_robot(profile: str = "x5", faults: dict[str, str] | None = None) -> BimanualRobot:
    sims = start_sim_arms(profile, faults)
    return open_robot(sims[0].device_path, sims[1].device_path, profile, feedback_timeout_s=SIM_FEEDBACK_TIMEOUT_S,
                      after_disconnect=[lambda: stop_sim_arms(sims)])


def run_main(args: argparse.Namespace) -> int:
    if any(robot_ports(args)):
        raise ValueError("--port is for --robot arx; --robot sim starts its own simulated arms")
    faults = parse_sim_faults(args.sim_faults)
    return run_policy(args, lambda: open_sim_robot(args.profile, faults))
