"""`chatvla2 run --robot sim` for each bundle and reasoning cadence; one markdown table of the runs'
summaries (the runtime table of docs/benchmarks.md). Each run is the real command: two simulated arms over
their ptys, the 50 Hz loop, the policy on ONNX Runtime.

    .venv/bin/python benchmarks/run_table.py BUNDLE [BUNDLE ...] [--duration 30] [-- extra run args]

Prints each run's own summary, then the table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_once(bundle: str, cadence: str, args: argparse.Namespace, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "chatvla2", "run", "--bundle", bundle, "--robot", "sim", "--duration", str(args.duration),
               "--reasoning", cadence, "--telemetry", str(Path(args.telemetry_dir) / f"{Path(bundle).name}-{cadence}.jsonl"), *extra]
    print("$ " + " ".join(command[1:]), flush=True)
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    print(result.stdout.rstrip() or result.stderr.rstrip(), flush=True)
    lines = result.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        return {"bundle": bundle, "cadence": cadence, "exit": result.returncode, "error": result.stderr.strip()[-300:]}
    return {"bundle": bundle, "cadence": cadence, "exit": result.returncode, **json.loads(lines[-1])}


def table(rows: list[dict]) -> str:
    out = ["| bundle | reasoning | inference p50 / p99 ms | tokens p50 | decode ms/token | steps sent / held | longest starvation ms | stale actions | control Hz | tick lateness p99 ms | stop |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {Path(r['bundle']).name} | {r['cadence']} | failed: {r['error']} |" + " |" * 8)
            continue
        p50 = r["stages_p50_s"]
        per_token = p50.get("decode_per_token") or 0.0  # 0 when most inferences reused the reasoning
        tokens = "-" if r.get("tokens_p50") is None else f"{r['tokens_p50']:.0f}"
        out.append(
            f"| {Path(r['bundle']).name} | {r['cadence']} | {r['latency_p50_s'] * 1000:.0f} / {r['latency_p99_s'] * 1000:.0f} "
            f"| {tokens} | {f'{per_token * 1000:.1f}' if per_token else '-'} | {r['steps_sent']} / {r['steps_held']} "
            f"| {r['longest_starvation_s'] * 1000:.0f} | {r['stale_actions']} | {r['achieved_hz']:.1f} "
            f"| {r['tick_lateness_p99_ms']:.1f} | {r['stop_reason']} |")
    return "\n".join(out)


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--cadences", default="every,reuse")
    parser.add_argument("--telemetry-dir", default="runs/table")
    args = parser.parse_args(argv)
    rows = [run_once(b, c, args, extra) for b in args.bundles for c in args.cadences.split(",")]
    print(table(rows))
    print(json.dumps({"runs": rows, "extra_args": extra}, default=str), flush=True)
    return 0 if all(r.get("exit") in (0, 1) and "error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
