"""Bimanual control benchmark: two simulated ARX arms (each its own process behind its own pty,
like two USB adapters), driven by `BimanualARX` at the target rate while a 50 Hz "policy" sends a
sine trajectory. Prints a table, then one JSON line.

    .venv/bin/python benchmarks/arm_control.py --duration 60 --rate 500
    .venv/bin/python benchmarks/arm_control.py --duration 10 --rates 250,500,600,800
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time

import numpy as np

from chatvla2.drivers.arm import ArmConfig, ARXArm
from chatvla2.drivers.bimanual import BimanualARX
from chatvla2.drivers.controller import ControllerConfig

BASE = np.array([0.0, 0.8, 0.8, 0.0, 0.0, 0.0, 0.04])  # mid-range pose (gripper width in m)
AMPLITUDE = np.array([0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.02])
PHASE = np.arange(7) * 0.7


def start_sim(profile: str, seed: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatvla2.cli", "sim-arm", "--profile", profile, "--seed", str(seed)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    return proc, proc.stdout.readline().strip()


def run(rate: float, duration: float, profile: str, sine_hz: float, warmup: float = 2.0) -> dict:
    sims = [start_sim(profile, seed) for seed in (0, 1)]
    try:
        config = ControllerConfig(rate_hz=rate, feedback_timeout_s=0.1)
        arms = [ARXArm(ArmConfig(path, profile=profile, controller=config, disconnect_damping_s=0.2)) for _, path in sims]
        robot = BimanualARX(*arms)
        with robot:
            t_end_warm = time.monotonic() + warmup
            while time.monotonic() < t_end_warm:  # move to the base pose; excluded from the figures
                robot.send_action(np.concatenate([BASE, BASE]))
                time.sleep(0.02)
            marks = [(len(a.controller.cycle_times), a.controller.cycles, dict(a.interventions)) for a in arms]
            errors = []
            t0 = time.monotonic()
            next_step = t0
            while (now := time.monotonic()) - t0 < duration:
                t = now - t0
                target = BASE + AMPLITUDE * np.sin(2 * math.pi * sine_hz * t + PHASE)
                obs = robot.get_observation()
                measured = np.concatenate([obs["left_joint_positions"], obs["right_joint_positions"]])
                if t > 0.5:
                    errors.append(measured - np.concatenate([target[:6], target[:6]]))
                robot.send_action(np.concatenate([target, target]))
                next_step += 0.02  # the policy's 50 Hz
                time.sleep(max(0.0, next_step - time.monotonic()))
            elapsed = time.monotonic() - t0
            results = []
            for arm, (n_times, n_cycles, counts0) in zip(arms, marks):
                c = arm.controller
                times = np.array(list(c.cycle_times)[n_times:]) * 1000
                starts = np.array(list(c.cycle_starts)[n_times:])
                periods = np.diff(starts) * 1000
                counts = arm.interventions
                k = c.cycles - n_cycles  # the per-cycle deques below are appended once per cycle
                fresh = np.array(list(c.cycle_fresh)[-k:])
                age = np.array(list(c.feedback_age)[-k:]) * 1000
                reply = np.array(list(c.reply_times)[-k:]) * 1000
                results.append({
                    "rate_hz": k / elapsed,
                    "cycle_ms_p50": float(np.percentile(times, 50)),
                    "cycle_ms_p99": float(np.percentile(times, 99)),
                    "period_ms_p99": float(np.percentile(periods, 99)),
                    # honest feedback figures: only replies to this cycle's own commands count
                    "cycles_complete_pct": float(100 * np.mean(fresh == 7)),
                    "reply_ms_p50": float(np.percentile(reply, 50)),  # send -> last own reply (or window end)
                    "reply_ms_p99": float(np.percentile(reply, 99)),
                    "feedback_age_ms_p50": float(np.percentile(age, 50)),  # oldest motor's data, at cycle end
                    "feedback_age_ms_p99": float(np.percentile(age, 99)),
                    "feedback_age_ms_max": float(age.max()),
                    "missed_feedback": counts["feedback_missed"] - counts0["feedback_missed"],
                    "frames_expected": 7 * (c.cycles - n_cycles),
                    "faults": counts["faults"],
                    "fault": None if arm.fault is None else str(arm.fault),
                    "interventions": {k: counts[k] - counts0[k] for k in counts},
                })
        err = np.abs(np.array(errors))
        print("per-joint mean abs error (rad):", np.round(err.mean(0), 4).tolist(), file=sys.stderr)
        return {
            "target_hz": rate,
            "duration_s": round(elapsed, 1),
            "arms": results,
            "tracking_rms_rad": float(np.sqrt(np.mean(err**2))),
            "tracking_max_rad": float(err.max()),
        }
    finally:
        for proc, _ in sims:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--rates", default="", help="comma-separated rates to sweep (overrides --rate)")
    p.add_argument("--profile", default="x5")
    p.add_argument("--sine-hz", type=float, default=0.5)
    args = p.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r] or [args.rate]
    runs = [run(rate, args.duration, args.profile, args.sine_hz) for rate in rates]
    print(f"bimanual ARX {args.profile.upper()} x2, two simulated arms on two ptys, {os.cpu_count()} CPU cores, "
          f"{platform.processor() or platform.machine()}, {args.duration:.0f} s per rate, sine {args.sine_hz} Hz")
    print(f"{'target Hz':>9} {'arm':>5} {'achieved Hz':>11} {'cycle p50/p99 ms':>16} {'period p99':>10} "
          f"{'complete %':>10} {'age p50/p99/max ms':>18} {'missed/expected':>17} {'late':>6} {'lost':>5} {'BEL':>5} "
          f"{'stiff':>6} {'track rms/max rad':>18}  fault")
    for r in runs:
        for side, a in zip(("left", "right"), r["arms"]):
            iv = a["interventions"]
            print(f"{r['target_hz']:9.0f} {side:>5} {a['rate_hz']:11.1f} {a['cycle_ms_p50']:7.2f}/{a['cycle_ms_p99']:<8.2f} "
                  f"{a['period_ms_p99']:10.2f} {a['cycles_complete_pct']:10.1f} "
                  f"{a['feedback_age_ms_p50']:6.2f}/{a['feedback_age_ms_p99']:.2f}/{a['feedback_age_ms_max']:<6.1f} "
                  f"{a['missed_feedback']:>8}/{a['frames_expected']:<8} {iv['replies_late']:6} {iv['replies_lost']:5} "
                  f"{iv['adapter_rejections']:5} {iv['stiff_refused']:6} "
                  f"{r['tracking_rms_rad']:8.4f}/{r['tracking_max_rad']:<8.4f}  {a['fault'] or '-'}")
    print(json.dumps({"benchmark": "arm_control", "profile": args.profile, "cpu_count": os.cpu_count(), "runs": runs}))


if __name__ == "__main__":
    main()
