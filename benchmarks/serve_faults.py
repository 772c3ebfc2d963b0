"""A served policy's faults, with robots under the real control loop (issue 25): a table and a JSON line.

    python benchmarks/serve_faults.py BUNDLE [--robots 2] [--duration 12] [--out runs/serve-faults]

Each robot is `chatvla2 run --robot sim --task math_game --policy-url URL` in its own process: two
simulated arms behind ptys driven through the real serial path, the real ControlLoop (asynchronous
inference, watchdog), its telemetry, and the arms' own logs (`--sim-log`: each motor's mode changes
and holds, i.e. stretches of at least 0.1 s with one unchanged target, on time.monotonic()). Each
scenario runs on a fresh local Ray Serve instance:

- **clients gone mid-request** (1 replica): once every robot has its second chunk, 20 connections
  each send half a request body, or a whole one, and close before the reply. The replica must go on
  serving the robots: no error, no hold, their latency unchanged.
- **a replica killed** (2 replicas): once every robot has its second chunk, `ray.kill` on one
  replica; Serve restarts it. A request in flight there is sent again by the client while its
  deadline (--deadline, 2 s) allows. Where a robot went longer than its plan's horizon plus the watchdog's hold
  without a chunk, its arms must show a hold, then damping.
- **the server stopped** (1 replica): once every robot has its second chunk, the server is shut down
  (`serve.shutdown()`, `ray.shutdown()`). Every robot's arms must hold, then damp within the
  watchdog's bound: the plan's horizon (chunk / rate, 1 s) plus the hold (0.5 s) after the fault.

Per robot: the run's stop reason, its inference errors, the longest time without a new chunk, the
steps the loop held, the holds its arms saw after the fault (their log), and the time from the fault
to the last motor's damping (their log). Fault times are time.monotonic(), the same clock in every
process on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TOKEN = "serve-faults-token-0123456789"
CHUNK_HORIZON_S = 1.0  # 50 actions at 50 Hz: the most a plan holds after its last chunk
HOLD_S = 0.5  # the loop's default watchdog hold (runtime/loop.py LoopConfig.hold_s)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(bundle: str, replicas: int, token_file: Path) -> str:
    from chatvla2.serve.serve_config import ServeConfig
    from chatvla2.serve.server import start

    return start(ServeConfig(bundle=bundle, port=_free_port(), token_file=str(token_file), replicas=replicas, threads=1))


def _start_robots(
    url: str, token_file: Path, robots: int, duration: float, deadline: float, out: Path
) -> list[tuple[subprocess.Popen, Path, Path]]:
    started = []
    for i in range(robots):
        arms = out / f"robot{i}-arms"
        arms.mkdir(parents=True, exist_ok=True)
        telemetry = out / f"robot{i}.jsonl"
        command = [sys.executable, "-m", "chatvla2", "run", "--robot", "sim", "--task", "math_game", "--episode-seed", str(i),
                   "--policy-url", url, "--token-file", str(token_file), "--request-deadline", str(deadline),
                   "--duration", str(duration), "--telemetry", str(telemetry), "--sim-log", str(arms)]  # fmt: skip
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append((process, telemetry, arms))
    return started


def _records(telemetry: Path) -> list[dict]:
    if not telemetry.is_file():
        return []
    records = []
    for line in telemetry.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # the line being written
    return records


def _wait_for_chunks(robots, count: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(sum(r.get("event") == "inference" for r in _records(t)) >= count for _, t, _ in robots):
            return
        if any(p.poll() is not None for p, _, _ in robots):
            raise SystemExit(
                "a robot stopped before the fault: " + " | ".join(p.stderr.read()[-500:] for p, _, _ in robots if p.poll() is not None)
            )
        time.sleep(0.1)
    raise SystemExit(f"the robots did not get {count} chunks within {timeout:.0f} s")


def _abort_requests(url: str, count: int) -> None:
    """Connections that send half a request body, or a whole one, and close before the reply."""
    import urllib.parse

    from chatvla2.contract.scene import sample_observation
    from chatvla2.contract.wire import encode_request

    frames, instruction, state = sample_observation(2)
    body = encode_request({"images": frames, "instruction": instruction, "state": state})
    from chatvla2.runtime.remote_policy import RemotePolicy

    def served() -> int:
        return RemotePolicy(url, token=TOKEN, deadline_s=10.0).connect().manifest["counts"].get("inferences", 0)

    before = served()
    parts = urllib.parse.urlsplit(url)
    head = (f"POST /infer HTTP/1.1\r\nHost: {parts.hostname}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/msgpack\r\nContent-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    for i in range(count):
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
            connection.sendall(head + (body if i % 2 else body[: len(body) // 2]))
        time.sleep(0.05)
    time.sleep(2.0)  # the robots' next requests, after the abandoned ones
    counts = RemotePolicy(url, token=TOKEN, deadline_s=10.0).connect().manifest["counts"]
    return {"aborted": count, "whole_bodies": count // 2, "replica_inferences_in_window": counts.get("inferences", 0) - before,
            "replica_counts": counts}  # fmt: skip


def _kill_one_replica() -> str:
    import ray

    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"]]
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=False)
    return replicas[0]["name"]


def _robot_report(process: subprocess.Popen, telemetry: Path, arms: Path, fault_at: float) -> dict:
    stdout, stderr = process.communicate(timeout=600)
    records = _records(telemetry)
    stop = next((r for r in records if r.get("event") == "stop"), None)
    summary = next((r for r in records if r.get("event") == "summary"), {})
    if stop is None:
        return {"exit": process.returncode, "stop_reason": None, "error": (stderr or stdout)[-300:]}
    to_monotonic = stop["t0_s"]  # loop time -> time.monotonic()
    arrivals = [r["t"] + to_monotonic for r in records if r.get("event") == "inference"]
    held = [r for r in records if r.get("event") == "step" and r.get("held")]
    held_after = [r["t"] + to_monotonic for r in held if r["t"] + to_monotonic >= fault_at]
    # the arms' own logs: holds that began after the fault, and when each motor damped after it
    arm_holds, damped = 0, []
    for side in ("left", "right"):
        log = arms / f"{side}.json"
        if not log.is_file():
            continue
        for motor in json.loads(log.read_text())["motors"].values():
            arm_holds += sum(1 for start, _ in motor["holds"] if start >= fault_at - 0.1)
            damped.append(next((t for t, mode in motor["modes"] if mode == "damping" and t >= fault_at), None))
    stop_reason = summary.get("stop_reason", stop.get("reason"))
    # a run that reached its duration damped at its end, not because of the fault
    faulted = stop_reason != "duration reached"
    last_damped = None if not faulted or not damped or None in damped else max(damped)
    chunks_after = [t for t in arrivals if t >= fault_at]
    gap_from = max([t for t in arrivals if t < fault_at], default=fault_at)
    return {
        "exit": process.returncode,
        "stop_reason": stop_reason,
        "errors": summary.get("errors", []),
        "chunks": len(arrivals),
        "longest_without_chunk_s": round(float(np.max(np.diff(arrivals))) if len(arrivals) > 1 else float("nan"), 3),
        "fault_to_next_chunk_s": round(chunks_after[0] - gap_from, 3) if chunks_after else None,
        "chunk_times": [round(t - fault_at, 3) for t in arrivals],  # seconds from the fault
        "steps_held_after_fault": len(held_after),
        "arm_holds_after_fault": arm_holds,
        "fault_to_damping_s": round(last_damped - fault_at, 3) if last_damped is not None else None,
        "latency_p50_ms": round(1000 * float(np.median([r["latency_s"] for r in records if r.get("event") == "inference"])), 1),
    }


def _scenario(name: str, args, replicas: int, fault, token_file: Path) -> dict:
    from chatvla2.serve.server import stop

    out = Path(args.out) / name.replace(" ", "-")
    shutil.rmtree(out, ignore_errors=True)  # a previous run's telemetry must not count as this one's
    out.mkdir(parents=True)
    url = _start_server(args.bundle, replicas, token_file)
    stopped = False
    try:
        robots = _start_robots(url, token_file, args.robots, args.duration, args.deadline, out)
        _wait_for_chunks(robots, 2)
        fault_at = time.monotonic()
        detail = fault(url)
        stopped = detail == "stopped"
        reports = [_robot_report(p, t, a, fault_at) for p, t, a in robots]
    finally:
        if not stopped:
            stop()
    return {"scenario": name, "replicas": replicas, "fault": detail, "robots": reports}


def _stop_server(url: str) -> str:
    from chatvla2.serve.server import stop

    stop()
    return "stopped"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--robots", type=int, default=2)
    parser.add_argument("--duration", type=float, default=12.0, help="each robot's run, seconds (the fault comes after its second chunk)")
    parser.add_argument("--deadline", type=float, default=2.0, help="each robot's --request-deadline (default %(default)s s)")
    parser.add_argument("--out", default="runs/serve-faults")
    parser.add_argument("--only", choices=("gone", "kill", "stop"), default=None, help="one scenario")
    args = parser.parse_args()
    token_file = Path(tempfile.mkdtemp()) / "token"
    token_file.write_text(TOKEN)
    os.chmod(token_file, 0o600)
    scenarios = {
        "gone": ("clients gone mid-request", 1, lambda url: _abort_requests(url, 20)),
        "kill": ("a replica killed", 2, lambda url: _kill_one_replica()),
        "stop": ("the server stopped", 1, _stop_server),
    }
    results = []
    for key, (name, replicas, fault) in scenarios.items():
        if args.only in (None, key):
            results.append(_scenario(name, args, replicas, fault, token_file))
    bound = CHUNK_HORIZON_S + HOLD_S
    print(f"\n{'scenario':<26} {'robot':>5} {'stop reason':<40} {'errors':>6} {'chunks':>6} {'no chunk max s':>14} "
          f"{'held steps':>10} {'arm holds':>9} {'fault->damped s':>15} {'p50 ms':>7}")  # fmt: skip
    for result in results:
        for i, robot in enumerate(result["robots"]):
            damped = robot.get("fault_to_damping_s")
            print(f"{result['scenario']:<26} {i:>5} {str(robot.get('stop_reason'))[:40]:<40} {len(robot.get('errors', [])):>6} "
                  f"{robot.get('chunks', 0):>6} {robot.get('longest_without_chunk_s', float('nan')):>14} "
                  f"{robot.get('steps_held_after_fault', 0):>10} {robot.get('arm_holds_after_fault', 0):>9} "
                  f"{'-' if damped is None else damped:>15} {robot.get('latency_p50_ms', float('nan')):>7}")  # fmt: skip
    print(f"watchdog bound after a fault: the plan's horizon {CHUNK_HORIZON_S:g} s + hold {HOLD_S:g} s = {bound:g} s")
    print(json.dumps({"bound_s": bound, "scenarios": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
