"""`chatvla2 run`: a bundle's policy driving the arms, from load to a safe stop.

    policy (hashes verified) -> 3 warm-up inferences (excluded from every figure; they seed the
    loop's latency estimate) -> the robot connects (enables) -> the control loop until the
    duration, Ctrl-C, a watchdog stop or a fault -> damping, disable, close (the `finally`) ->
    summary table, telemetry path, one JSON line last.

Exit codes: 0 the duration was reached, 130 Ctrl-C, 1 any other stop (watchdog, robot fault,
inference error), 2 bad arguments or a bad bundle (one line, nothing started).

`main` runs real arms (`--robot arx`); `sim.robot.run_main` runs the same `run_policy` on
simulated arms behind ptys.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path
from typing import Callable

import numpy as np

from runtime.camera import StaticCamera
from runtime.loop import ControlLoop, LoopConfig, Telemetry, format_summary
from runtime.policy import Policy
from runtime.robots import BimanualRobot, open_robot
from runtime.safety import ActionSafety


def loop_config(args: argparse.Namespace) -> LoopConfig:
    return LoopConfig(
        rate_hz=args.rate, duration_s=args.duration, chunk_mode=args.chunk_mode, ensemble_decay=args.ensemble_decay,
        reasoning=args.reasoning, reasoning_reuse_s=args.reasoning_reuse, latency_margin_s=args.latency_margin,
        latency_headroom=args.latency_headroom, hold_s=args.hold,
    )


def bundle_argument(args: argparse.Namespace) -> Path:
    """The bundle, given as the positional argument or as --bundle (not two different ones)."""
    if args.bundle and args.bundle_option and args.bundle != args.bundle_option:
        raise ValueError(f"two bundles given ({args.bundle} and --bundle {args.bundle_option}): give one")
    bundle = args.bundle or args.bundle_option
    if not bundle:
        raise ValueError("no bundle given: chatvla2 run --bundle DIR (a directory written by chatvla2 export)")
    return Path(bundle)


def robot_ports(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """--port given twice (left, right), or --left-port / --right-port."""
    if not args.port:
        return args.left_port, args.right_port
    if len(args.port) != 2 or args.left_port or args.right_port:
        raise ValueError(f"--port is given twice, left then right (got {len(args.port)}), and not with --left-port/--right-port")
    return args.port[0], args.port[1]


def main(args: argparse.Namespace) -> int:
    """`chatvla2 run --robot arx`: two real arms on their SLCAN adapters."""
    if args.sim_faults:
        raise ValueError("simulated faults are for the simulated robot (--robot sim)")
    left, right = robot_ports(args)
    if not left or not right:
        raise ValueError("--robot arx needs two adapters: --port LEFT --port RIGHT (or --left-port/--right-port)")
    return run_policy(args, lambda: open_robot(left, right, args.profile))


def run_policy(args: argparse.Namespace, connect_robot: Callable[[], BimanualRobot]) -> int:
    config = loop_config(args)
    bundle = bundle_argument(args)
    if args.max_tokens is not None and args.max_tokens < 0:
        raise ValueError(f"--max-tokens must be >= 0, got {args.max_tokens}")
    policy = Policy.from_bundle(bundle, backend=args.backend, engines_dir=args.engines, threads=args.threads)
    if args.max_tokens is not None:
        policy.max_reasoning_tokens = min(policy.max_reasoning_tokens, args.max_tokens)
    camera = StaticCamera(policy.num_views)

    def observe(state):
        return {"images": camera.read(), "instruction": args.instruction, "state": state, "seed": args.seed}

    print(f"policy: {bundle} ({policy.backend}: {', '.join(sorted(set(policy.providers.values())))})", flush=True)
    warm = observe(np.zeros(policy.state_dim, np.float32))
    warmup_latencies = []
    for _ in range(3):
        started = time.perf_counter()
        policy.infer(warm)
        warmup_latencies.append(time.perf_counter() - started)
    telemetry_path = args.telemetry or f"runs/run-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    telemetry = Telemetry(telemetry_path)
    try:
        robot = connect_robot()
    except BaseException:
        telemetry.write({"event": "robot_failed_to_connect"})
        telemetry.close()
        policy.close()
        raise
    safety = ActionSafety.bimanual_arx(args.rate, args.max_joint_speed, profile=args.profile)
    loop = ControlLoop(policy, robot, observe, config, safety, telemetry)
    loop.latencies.append(warmup_latencies[-1])  # earlier runs include one-off allocations

    def on_sigint(signum, frame):
        loop.stop("SIGINT")
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts the shutdown

    previous = signal.signal(signal.SIGINT, on_sigint)
    summary = None
    try:
        print(f"running on {args.robot} at {args.rate:g} Hz ({config.chunk_mode}, reasoning {config.reasoning}); Ctrl-C stops", flush=True)
        summary = loop.run()
    finally:
        try:
            robot.disconnect()  # damping, then disable, then close (then the simulators)
        finally:
            signal.signal(signal.SIGINT, previous)
            if summary is not None:
                summary["interventions"] = _interventions_or_none(robot)
                telemetry.write({"event": "disconnected", "interventions": summary["interventions"]})
            telemetry.close()
            policy.close()
    print(format_summary(summary))
    print(f"telemetry: {telemetry_path}")
    print(json.dumps(summary, default=str), flush=True)
    if summary["stop_reason"] == "SIGINT":
        return 130
    return 0 if summary["stop_reason"] == "duration reached" else 1


def _interventions_or_none(robot):
    try:
        return robot.interventions
    except Exception:  # noqa: BLE001 - the robot may already be gone
        return None
