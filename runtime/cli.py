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
    from runtime.robots import StaticCamera, check_robot_arguments, open_robot
    from runtime.safety import ActionSafety

    config = LoopConfig(
        rate_hz=args.rate, duration_s=args.duration, chunk_mode=args.chunk_mode, ensemble_decay=args.ensemble_decay,
        reasoning=args.reasoning, reasoning_hold_s=args.reasoning_hold, latency_margin_s=args.latency_margin,
        latency_headroom=args.latency_headroom, hold_s=args.hold,
    )
    bundle = _one_bundle(args)
    left_port, right_port = _ports(args)
    sim_faults = _sim_faults(args)
    check_robot_arguments(args.robot, left_port, right_port, sim_faults)
    policy = Policy.from_bundle(bundle, backend=args.backend, engines_dir=args.engines, threads=args.threads)
    if args.max_tokens is not None:
        if args.max_tokens < 0:
            raise ValueError(f"--max-tokens must be >= 0, got {args.max_tokens}")
        policy.max_reasoning_tokens = min(policy.max_reasoning_tokens, args.max_tokens)
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
        parse_faults(spec)  # a bad spec fails here, before anything starts
        faults[side] = ",".join(filter(None, [faults.get(side, ""), spec]))
    return faults


def _safe_interventions(robot):
    try:
        return robot.interventions
    except Exception:  # noqa: BLE001 - the robot may already be gone
        return None


# --- bench -----------------------------------------------------------------------------------------


def latency_stats(values) -> dict:
    """Seconds -> {p50_ms, p99_ms} (the bench's figures, the runtime's and the reference's)."""
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
    stages = {k: latency_stats([r["timings"][k] for r in runs]) for k in runs[0]["timings"]}
    policy.close()
    return {"backend": policy.backend, "providers": sorted(set(policy.providers.values())), "tokens": runs[0]["tokens"], "stages": stages}


STEP_STAGES = ("preprocess", "vision", "prefill", "action_head")


def composed_step_ms(stages: dict, tokens: int) -> dict:
    """The policy step at a fixed reasoning length, from the per-stage medians: untrained (or
    differently quantized) models stop reasoning at different lengths, so whole-step figures are
    compared at the same N. every = stages + N decode tokens; hold = no decoding (reasoning kept)."""
    hold = sum(stages[k]["p50_ms"] for k in STEP_STAGES)
    return {"every": round(hold + tokens * stages["decode_per_token"]["p50_ms"], 3), "hold": round(hold, 3)}


def bench_main(args: argparse.Namespace) -> int:
    from calibration.roofline import decode_traffic, measure_bandwidth
    from export.manifest import load_manifest

    bundles = [*args.bundles, *args.bundle_options]
    if not bundles:
        raise ValueError("no bundle given: chatvla2 bench --bundle DIR [--bundle DIR ...]")
    bandwidth = measure_bandwidth()
    if args.bandwidth:
        bandwidth["given"] = args.bandwidth
    roof_gbs = args.bandwidth or bandwidth["gemv"]
    results, references = [], {}
    for bundle in map(Path, bundles):
        manifest = load_manifest(bundle)
        entry = {"bundle": str(bundle), "model": manifest["model_config"]["name"], "plan": manifest.get("plan"),
                 "runtime": bench_policy(bundle, args)}
        entry["runtime"]["step_ms"] = composed_step_ms(entry["runtime"]["stages"], args.tokens)
        if args.reference:
            # The PyTorch reference lives outside runtime/ (the robot never imports torch); one per model.
            from calibration.reference_timing import time_reference

            key = (args.config or entry["model"], args.checkpoint)
            if key not in references:
                references[key] = time_reference(manifest, args)
                references[key]["step_ms"] = composed_step_ms(references[key]["stages"], args.tokens)
            entry["reference"] = references[key]
            entry["speedup"] = {k: round(entry["reference"]["step_ms"][k] / v, 3) for k, v in entry["runtime"]["step_ms"].items()}
        roof = decode_traffic(bundle, manifest)
        per_token_s = entry["runtime"]["stages"]["decode_per_token"]["p50_ms"] / 1000
        roof["bandwidth_gbs"] = roof_gbs
        roof["roofline_ms"] = round(roof["total_bytes"] / (roof_gbs * 1e9) * 1000, 4)
        roof["measured_ms"] = round(per_token_s * 1000, 4)
        roof["achieved_gbs"] = round(roof["total_bytes"] / per_token_s / 1e9, 3) if per_token_s else None
        roof["times_roofline"] = round(roof["measured_ms"] / roof["roofline_ms"], 3) if per_token_s else None
        entry["decode_roofline"] = roof
        results.append(entry)
    print(format_bench(results, args.tokens))
    line = json.dumps({"bench": results, "tokens": args.tokens, "bandwidth_gbs": bandwidth})
    if args.json_out:
        Path(args.json_out).write_text(line + "\n")
    print(line, flush=True)
    return 0


def format_bench(results: list[dict], tokens: int) -> str:
    lines = []
    for r in results:
        plan = r["plan"] or {}
        precision = ",".join(f"{k}={v}" for k, v in sorted(plan.items())) if plan else "?"
        lines.append(f"{r['bundle']} ({r['model']}: {precision}); {r['runtime']['backend']} "
                     f"[{', '.join(r['runtime']['providers'])}], {r['runtime']['tokens']} reasoning tokens")
        has_ref = "reference" in r
        header = f"  {'stage':<22}{'runtime p50':>13}{'p99':>12}" + (f"{'torch p50':>13}{'p99':>12}{'speed-up':>10}" if has_ref else "")
        lines.append(header)
        for stage, s in r["runtime"]["stages"].items():
            row = f"  {stage:<22}{s['p50_ms']:>11.2f}ms{s['p99_ms']:>10.2f}ms"
            if has_ref and stage in r["reference"]["stages"]:
                ref = r["reference"]["stages"][stage]
                speed = ref["p50_ms"] / s["p50_ms"] if s["p50_ms"] else float("nan")
                ref_p99 = f"{ref['p99_ms']:>10.2f}ms" if ref.get("p99_ms") is not None else f"{'-':>12}"
                row += f"{ref['p50_ms']:>11.2f}ms{ref_p99}{speed:>9.2f}x"
            lines.append(row)
        if has_ref and r["reference"].get("moe_form_per_stage"):
            forms = r["reference"]["moe_form_per_stage"]
            lines.append(f"  (torch: the faster MoE form per stage: prefill {forms.get('prefill')}, decode {forms.get('decode')}; total = sum of stages)")
        for cadence, label in (("every", f"step, {tokens} tokens"), ("hold", "step, reasoning held")):
            row = f"  {label:<22}{r['runtime']['step_ms'][cadence]:>11.2f}ms{'':>12}"
            if has_ref:
                row += f"{r['reference']['step_ms'][cadence]:>11.2f}ms{'':>12}{r['speedup'][cadence]:>9.2f}x"
            lines.append(row)
        roof = r["decode_roofline"]
        lines.append(f"  decode roofline: {roof['total_bytes'] / 1e6:.2f} MB/token (weights {roof['weight_bytes'] / 1e6:.2f} MB "
                     f"[{roof['precision']}, moe {roof['moe_form']}, from the {roof['counted_from']}], KV cache {roof['cache_bytes'] / 1e6:.2f} MB) "
                     f"at {roof['bandwidth_gbs']} GB/s -> {roof['roofline_ms']:.3f} ms; measured {roof['measured_ms']:.3f} ms "
                     f"= {roof['times_roofline']:.2f}x the roofline ({roof['achieved_gbs']} GB/s)")
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
