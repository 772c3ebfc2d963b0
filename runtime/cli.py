"""`chatvla2 run` (the policy on a robot) and `chatvla2 bench` (per-stage timings, decode roofline).

The arguments are parsed by the front door (`chatvla2/cli.py`); `main_run` / `main_bench` parse
them the same way for scripts (`benchmarks/policy_bench.py`). Everything heavy is imported inside
the *_main functions.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path


# --- run -------------------------------------------------------------------------------------------


def run_main(args: argparse.Namespace) -> int:
    from runtime.loop import ControlLoop, LoopConfig, Telemetry, format_summary
    from runtime.policy import Policy
    from runtime.robots import StaticCamera, open_robot
    from runtime.safety import ActionSafety

    config = LoopConfig(
        rate_hz=args.rate, duration_s=args.duration, chunk_mode=args.chunk_mode, ensemble_decay=args.ensemble_decay,
        reasoning=args.reasoning, reasoning_hold_s=args.reasoning_hold, latency_margin_s=args.latency_margin,
        latency_headroom=args.latency_headroom, hold_s=args.hold,
    )
    bundle = _one_bundle(args)
    left_port, right_port = _ports(args)
    sim_faults = _sim_faults(args)
    policy = Policy.from_bundle(bundle, backend=args.backend, engines_dir=args.engines, threads=args.threads)
    camera = StaticCamera(policy.image_spec.num_views)

    def observe(state):
        return {"images": camera.read(), "instruction": args.instruction, "state": state, "seed": args.seed}

    print(f"policy: {bundle} ({policy.backend}: {', '.join(sorted(set(policy.providers.values())))})", flush=True)
    warm = observe(__import__("numpy").zeros(policy.state_dim, "float32"))
    warmup_latencies = []
    for _ in range(3):  # excluded from every figure; seeds the loop's latency estimate
        started = time.perf_counter()
        policy.infer(warm)
        warmup_latencies.append(time.perf_counter() - started)
    telemetry_path = args.telemetry or f"runs/run-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    telemetry = Telemetry(telemetry_path)
    try:
        robot = open_robot(args.robot, left_port, right_port, args.profile, sim_faults=sim_faults)
    except BaseException:
        telemetry.write({"event": "robot_failed_to_connect"})
        telemetry.close()
        policy.close()
        raise
    loop = ControlLoop(policy, robot, observe, config, ActionSafety.bimanual_arx(args.rate, args.max_joint_speed), telemetry)
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
                summary["interventions"] = _safe_interventions(robot)
                telemetry.write({"event": "disconnected", "interventions": summary["interventions"]})
            telemetry.close()
            policy.close()
    print(format_summary(summary))
    print(f"telemetry: {telemetry_path}")
    print(json.dumps(summary, default=str), flush=True)
    if summary["stop_reason"] == "SIGINT":
        return 130
    return 0 if summary["stop_reason"] == "duration reached" else 1


def _one_bundle(args: argparse.Namespace) -> Path:
    if args.bundle and args.bundle_option and args.bundle != args.bundle_option:
        raise ValueError(f"two bundles given ({args.bundle} and --bundle {args.bundle_option}): give one")
    bundle = args.bundle or args.bundle_option
    if not bundle:
        raise ValueError("no bundle given: chatvla2 run --bundle DIR (a directory written by chatvla2 export)")
    return Path(bundle)


def _ports(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """--port given twice (left, right), or --left-port / --right-port."""
    if not args.port:
        return args.left_port, args.right_port
    if len(args.port) != 2 or args.left_port or args.right_port:
        raise ValueError(f"--port is given twice, left then right (got {len(args.port)}), and not with --left-port/--right-port")
    return args.port[0], args.port[1]


def _sim_faults(args: argparse.Namespace) -> dict[str, str]:
    """--sim-faults left:SPEC / right:SPEC -> {"left": SPEC, ...}, each SPEC checked by the simulator's parser."""
    from sim.faults import parse_faults

    faults: dict[str, str] = {}
    for item in args.sim_faults:
        side, sep, spec = item.partition(":")
        if not sep or side not in ("left", "right"):
            raise ValueError(f"--sim-faults {item!r}: expected left:SPEC or right:SPEC, e.g. left:unplug=5")
        if args.robot != "sim":
            raise ValueError("--sim-faults is for --robot sim")
        parse_faults(spec)  # a bad spec fails here, before anything starts
        faults[side] = ",".join(filter(None, [faults.get(side, ""), spec]))
    return faults


def _safe_interventions(robot):
    try:
        return robot.interventions
    except Exception:  # noqa: BLE001 - the robot may already be gone
        return None


# --- bench -----------------------------------------------------------------------------------------


def measure_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """Host memory bandwidth from a large numpy copy (read + write bytes per second)."""
    import numpy as np

    src = np.ones(megabytes << 18, dtype=np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best / 1e9


def decode_bytes_per_token(bundle: Path, manifest: dict) -> dict:
    """Bytes one decode step reads: the decode graph's weights (file sizes: an upper bound, every
    expert counted even in the gather form, which reads top-k of them) and the whole KV cache."""
    import numpy as np

    entry = manifest["engines"]["decode"]
    files = [entry["file"], *entry.get("data_files", [])]
    weights = sum((bundle / f).stat().st_size for f in files)
    cache = next(t for t in entry["inputs"] if t["name"] == "key_cache")
    cache_bytes = 2 * int(np.prod(cache["shape"])) * np.dtype(cache["dtype"]).itemsize
    return {"weight_bytes": weights, "cache_bytes": cache_bytes, "total_bytes": weights + cache_bytes,
            "moe_form": manifest.get("moe_implementation", {}).get("decode"), "precision": entry.get("precision")}


def _stats(values) -> dict:
    import numpy as np

    a = np.asarray(values, dtype=float)
    return {"p50_ms": round(float(np.median(a)) * 1000, 3), "p99_ms": round(float(np.percentile(a, 99)) * 1000, 3)}


def bench_policy(bundle: Path, args: argparse.Namespace) -> dict:
    from runtime.policy import Policy
    from runtime.robots import StaticCamera

    policy = Policy.from_bundle(bundle, backend=args.backend, engines_dir=args.engines, threads=args.threads)
    import numpy as np

    observation = {"images": StaticCamera(policy.image_spec.num_views).read(),
                   "instruction": "Answer the question and pick the card with the correct answer.",
                   "state": np.zeros(policy.state_dim, np.float32), "seed": 0}
    policy.warmup(observation, args.warmup)
    runs = [policy.infer(observation) for _ in range(args.runs)]
    stages = {k: _stats([r["timings"][k] for r in runs]) for k in runs[0]["timings"]}
    policy.close()
    return {"backend": policy.backend, "providers": sorted(set(policy.providers.values())), "tokens": runs[0]["tokens"], "stages": stages}


def bench_main(args: argparse.Namespace) -> int:
    bundles = [*args.bundles, *args.bundle_options]
    if not bundles:
        raise ValueError("no bundle given: chatvla2 bench --bundle DIR [--bundle DIR ...]")
    bandwidth = args.bandwidth or measure_bandwidth_gbs()
    results = []
    for bundle in map(Path, bundles):
        from export.manifest import load_manifest

        manifest = load_manifest(bundle)
        entry = {"bundle": str(bundle), "model": manifest["model_config"]["name"], "plan": manifest.get("plan"),
                 "runtime": bench_policy(bundle, args)}
        if args.reference:
            # The PyTorch reference lives outside runtime/ (the robot never imports torch).
            from calibration.reference_timing import time_reference

            entry["reference"] = time_reference(manifest, args)
        roof = decode_bytes_per_token(bundle, manifest)
        per_token_s = entry["runtime"]["stages"]["decode_per_token"]["p50_ms"] / 1000
        roof["bandwidth_gbs"] = round(bandwidth, 2)
        roof["roofline_ms"] = round(roof["total_bytes"] / (bandwidth * 1e9) * 1000, 4)
        roof["measured_ms"] = round(per_token_s * 1000, 4)
        roof["achieved_gbs"] = round(roof["total_bytes"] / per_token_s / 1e9, 3) if per_token_s else None
        roof["fraction_of_roofline"] = round(roof["roofline_ms"] / roof["measured_ms"], 4) if per_token_s else None
        entry["decode_roofline"] = roof
        results.append(entry)
    print(format_bench(results))
    line = json.dumps({"bench": results, "bandwidth_gbs": round(bandwidth, 2)})
    if args.json_out:
        Path(args.json_out).write_text(line + "\n")
    print(line, flush=True)
    return 0


def format_bench(results: list[dict]) -> str:
    lines = []
    for r in results:
        plan = r["plan"] or {}
        precision = ",".join(sorted(set(plan.values()))) if plan else "?"
        lines.append(f"{r['bundle']} ({r['model']}, {precision}); {r['runtime']['backend']} "
                     f"[{', '.join(r['runtime']['providers'])}], {r['runtime']['tokens']} reasoning tokens")
        has_ref = "reference" in r
        header = f"  {'stage':<18}{'runtime p50':>13}{'p99':>12}" + (f"{'torch p50':>13}{'p99':>12}{'speed-up':>10}" if has_ref else "")
        lines.append(header)
        for stage, s in r["runtime"]["stages"].items():
            row = f"  {stage:<18}{s['p50_ms']:>11.2f}ms{s['p99_ms']:>10.2f}ms"
            if has_ref and stage in r["reference"]["stages"]:
                ref = r["reference"]["stages"][stage]
                speed = ref["p50_ms"] / s["p50_ms"] if s["p50_ms"] else float("nan")
                row += f"{ref['p50_ms']:>11.2f}ms{ref['p99_ms']:>10.2f}ms{speed:>9.2f}x"
            lines.append(row)
        roof = r["decode_roofline"]
        lines.append(f"  decode roofline: {roof['total_bytes'] / 1e6:.2f} MB/token (weights {roof['weight_bytes'] / 1e6:.2f} MB "
                     f"[{roof['precision']}, moe {roof['moe_form']}, upper bound], KV cache {roof['cache_bytes'] / 1e6:.2f} MB) "
                     f"at {roof['bandwidth_gbs']} GB/s -> {roof['roofline_ms']:.3f} ms; measured {roof['measured_ms']:.3f} ms "
                     f"({roof['achieved_gbs']} GB/s, {roof['fraction_of_roofline']:.1%} of roofline)")
    return "\n".join(lines)


def main_run(argv=None) -> int:
    from chatvla2.cli import add_run_arguments

    parser = argparse.ArgumentParser(prog="chatvla2 run")
    add_run_arguments(parser)
    return run_main(parser.parse_args(argv))


def main_bench(argv=None) -> int:
    from chatvla2.cli import add_bench_arguments

    parser = argparse.ArgumentParser(prog="chatvla2 bench")
    add_bench_arguments(parser)
    return bench_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main_run())
