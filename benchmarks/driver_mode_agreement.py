"""How closely the driver mode (two simulated arms behind ptys, through the real drivers, real time at
50 Hz) follows the kinematic mode for the same expert actions: the joints' lag along the trajectory,
the grippers' gap, the events' delays, and the ticks' timing. A table, then one JSON line.

These depend on how busy the machine is (starved simulators lag), so they are measured here, not
asserted by the test suite; tests/sim/tasks/test_driver_backend.py asserts the outcome and the rest
state, and its docstring derives the bounds below.

    python benchmarks/driver_mode_agreement.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from chatvla2.contract.embodiment import JOINT_INDICES
from chatvla2.sim.tasks.driver_backend import DriverBackend
from chatvla2.sim.tasks.mode_comparison import compare_modes

JOINT_LAG_RAD = 0.12  # PD lag at the expert's peak speed + half a tick of the controller's ramp
EVENT_DELAY_MAX = 15  # ticks a grasp, lift or release may come after the kinematic mode's
LATE_SHARE_MAX = 0.15  # of the ticks: a loaded shared machine gave up to 6 %


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="run the six cases this many times")
    args = parser.parse_args()
    joints = list(JOINT_INDICES)
    rows = []
    with DriverBackend() as backend:
        for _ in range(args.repeat):
            for run in compare_modes(backend, time.perf_counter):
                k, d = run.kinematic, run.driver
                delays = [de[0] - ke[0] for ke, de in zip(k.events, d.events)]
                rows.append(
                    {
                        "case": run.case,
                        "steps": run.steps,
                        "success_both": bool(k.info["success"] and d.info["success"]),
                        "joint_lag_max_rad": round(float(np.abs(d.states - k.states)[:, joints].max()), 4),
                        "gripper_gap_max_mm": round(float(np.linalg.norm(d.gripper_points - k.gripper_points, axis=2).max()) * 1000, 1),
                        "event_delay_max_ticks": max(delays, default=0),
                        "ticks_per_s": run.timing["ticks_per_s"],
                        "late_share": round(run.timing["late"] / max(run.steps, 1), 3),
                        "lateness_p99_ms": run.timing["lateness_p99_ms"],
                        "retried": run.retried,
                    }
                )
        restarts = list(backend.restarts)
    print(
        f"{'case':36s} {'steps':>5s} {'ok':>3s} {'lag rad':>8s} {'grip mm':>8s} {'delay':>5s} {'ticks/s':>8s} {'late':>5s} {'p99 ms':>7s}"
    )
    for r in rows:
        print(
            f"{r['case']:36s} {r['steps']:5d} {'yes' if r['success_both'] else 'NO':>3s} {r['joint_lag_max_rad']:8.4f} "
            f"{r['gripper_gap_max_mm']:8.1f} {r['event_delay_max_ticks']:5d} {r['ticks_per_s']:8.2f} "
            f"{r['late_share']:5.1%} {r['lateness_p99_ms']:7.2f}"
        )
    summary = {
        "benchmark": "driver_mode_agreement",
        "episodes": len(rows),
        "all_succeeded": all(r["success_both"] for r in rows),
        "joint_lag_max_rad": max(r["joint_lag_max_rad"] for r in rows),
        "joint_lag_bound_rad": JOINT_LAG_RAD,
        "event_delay_max_ticks": max(r["event_delay_max_ticks"] for r in rows),
        "event_delay_bound_ticks": EVENT_DELAY_MAX,
        "late_share_max": max(r["late_share"] for r in rows),
        "late_share_bound": LATE_SHARE_MAX,
        "restarts": restarts,
        "rows": rows,
    }
    summary["within_bounds"] = (
        summary["joint_lag_max_rad"] <= JOINT_LAG_RAD
        and summary["event_delay_max_ticks"] <= EVENT_DELAY_MAX
        and summary["late_share_max"] <= LATE_SHARE_MAX
    )
    print(
        f"within the bounds (lag {JOINT_LAG_RAD} rad, delay {EVENT_DELAY_MAX} ticks, late {LATE_SHARE_MAX:.0%}): "
        f"{'yes' if summary['within_bounds'] else 'NO'}"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
