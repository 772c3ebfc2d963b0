"""`chatvla2 run --robot sim`: the runtime's `run_policy` on two simulated ARX arms.

Each arm is a `chatvla2 sim-arm` process behind its own pty (`sim.processes`), driven through the
real serial path (`ARXArm` -> SLCAN -> pty) with a 200 ms feedback timeout by default
(`SIM_FEEDBACK_TIMEOUT_S`; `--feedback-timeout S` sets it): a 2-core machine running inference,
two simulators and two 500 Hz controllers misses 100 ms now and then. The simulators stop after
the arms are damped and disabled, and none is left running if starting fails or is interrupted.
"""

from __future__ import annotations

import argparse

from runtime.robots import BimanualRobot, check_feedback_timeout, open_robot
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
        if not any(part.strip() for part in spec.split(",")):
            raise ValueError(f"--sim-faults {item!r}: no fault after '{side}:', e.g. {side}:unplug=5")
        parse_faults(spec)  # a bad spec fails here, before anything starts
        faults[side] = ",".join(filter(None, [faults.get(side, ""), spec]))
    return faults


def open_sim_robot(profile: str = "x5", faults: dict[str, str] | None = None,
                   feedback_timeout_s: float = SIM_FEEDBACK_TIMEOUT_S) -> BimanualRobot:
    sims: list = []  # filled as each process starts: whatever happens, every one is stopped
    try:
        start_sim_arms(profile, faults, started=sims)
        return open_robot(sims[0].device_path, sims[1].device_path, profile, feedback_timeout_s=feedback_timeout_s,
                          after_disconnect=[lambda: stop_sim_arms(sims)])
    except BaseException:
        stop_sim_arms(sims)
        raise


def run_main(args: argparse.Namespace) -> int:
    if any(robot_ports(args)):
        raise ValueError("--port is for --robot arx; --robot sim starts its own simulated arms")
    faults = parse_sim_faults(args.sim_faults)
    timeout = SIM_FEEDBACK_TIMEOUT_S if args.feedback_timeout is None else check_feedback_timeout(args.feedback_timeout)
    return run_policy(args, lambda: open_sim_robot(args.profile, faults, timeout), feedback_timeout_s=timeout)
