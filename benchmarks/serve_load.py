"""Robots against the policy server (issue 25): N simulated robots, each a process that sends one
observation every `--every` seconds (its query cadence) through `runtime.remote_policy`, against
`chatvla2 serve` with 1 and 2 replicas on this machine; the same bundle in-process is the baseline.
A table, then one JSON line.

    .venv/bin/python benchmarks/serve_load.py BUNDLE [--robots 1,2,4] [--replicas 1,2] [--queries 20] [--every 0.4]

Per configuration: end-to-end latency p50/p99 (request encoded -> reply decoded, on the robot),
replies per second, errors, and the serialisation's share of the latency: the client's encoding and
decoding (timed in each robot) plus the server's decoding and encoding of the same bodies (timed
here on the same payloads, the same functions), over the end-to-end p50.
`--kill-replica`: one more run with 2 replicas and the robots, in which one replica is killed
(ray.kill) a third of the way in; Serve restarts it. Reported: the requests that failed (each
within its 2-s deadline) and the longest gap between two good replies of one robot, against the
watchdog's hold (0.5 s) plus the chunk's horizon (1 s): the time a robot can go without a new chunk
before its arms hold, then damp.
Not measured here yet: the server stopped, a client gone mid-request (the tests cover the first:
the client's deadline error).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from chatvla2.contract.scene import sample_observation
from chatvla2.contract.wire import RequestLimits, decode_reply, decode_request, encode_reply, encode_request

TOKEN = "serve-load-token-0123456789"


def _observation(views: int, seed: int) -> dict:
    frames, instruction, state = sample_observation(views)
    return {"images": frames, "instruction": instruction, "state": state, "seed": seed}


def _robot(url: str, views: int, queries: int, every: float, index: int, out, deadline_s: float = 60.0) -> None:
    """One robot: `queries` requests at its cadence; (end-to-end s, encode+decode s, error) each."""
    from chatvla2.runtime.remote_policy import RemotePolicy

    client = RemotePolicy(url, token=TOKEN, deadline_s=60.0).connect()
    records = []
    next_at = time.monotonic() + 0.05 * index  # robots out of phase
    for q in range(queries):
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += every
        observation = _observation(views, 1000 * index + q)
        started = time.perf_counter()
        try:
            body = encode_request(observation)
            encoded = time.perf_counter()
            status, reply = client._request("POST", "/infer", body, time.monotonic() + deadline_s)
            received = time.perf_counter()
            if status != 200:
                raise RuntimeError(f"{status}: {reply[:200]!r}")
            decode_reply(reply)
            done = time.perf_counter()
            records.append((done - started, (encoded - started) + (done - received), None, done))
        except Exception as exc:  # noqa: BLE001 - counted, not fatal
            records.append((time.perf_counter() - started, 0.0, repr(exc), time.perf_counter()))
    client.close()
    out.put(records)


def _server_serialisation_s(bundle: str, views: int) -> float:
    """The server's decode + encode of one request and its reply (the same functions it runs)."""
    from chatvla2.runtime.policy import Policy

    policy = Policy.from_bundle(bundle, backend="onnxruntime", threads=1)
    try:
        observation = _observation(views, 0)
        result = policy.infer(observation)
        limits = RequestLimits.for_model(policy.config)
        body = encode_request(observation)
        times = []
        for _ in range(20):
            started = time.perf_counter()
            decode_request(body, limits)
            encode_reply(result)
            times.append(time.perf_counter() - started)
        return float(np.median(times))
    finally:
        policy.close()


def _in_process(bundle: str, views: int, queries: int) -> list[float]:
    from chatvla2.runtime.policy import Policy

    policy = Policy.from_bundle(bundle, backend="onnxruntime", threads=1)
    try:
        policy.infer(_observation(views, 0))  # warm-up
        times = []
        for q in range(queries):
            started = time.perf_counter()
            policy.infer(_observation(views, q))
            times.append(time.perf_counter() - started)
        return times
    finally:
        policy.close()


def _kill_replica_run(args, token_file: Path, port: int, views: int) -> dict:
    """2 replicas, the largest robot count, one replica killed a third of the way in."""
    import ray

    from chatvla2.serve.serve_config import ServeConfig
    from chatvla2.serve.server import start

    url = start(ServeConfig(bundle=args.bundle, port=port, token_file=str(token_file), replicas=2, threads=1))
    robots = max(int(v) for v in args.robots.split(","))
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    processes = [context.Process(target=_robot, args=(url, views, args.queries, args.every, i, out, 2.0)) for i in range(robots)]
    for p in processes:
        p.start()
    time.sleep(5.0 + args.queries * args.every / 3)  # robots started (imports), then a third of their queries
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"]]
    killed = replicas[0]["name"] if replicas else None
    if killed:
        ray.kill(ray.get_actor(killed, namespace=replicas[0]["namespace"]), no_restart=False)
    per_robot = [out.get(timeout=900) for _ in processes]
    for p in processes:
        p.join()
    records = [r for robot in per_robot for r in robot]
    gaps = []
    for robot in per_robot:
        good = [r[3] for r in robot if r[2] is None]
        gaps += list(np.diff(good))
    ok = [r for r in records if r[2] is None]
    return {
        "config": f"2 replicas, {robots} robot(s), one replica killed",
        "replicas": 2,
        "robots": robots,
        "killed": killed,
        "p50_ms": 1000 * float(np.median([r[0] for r in ok])),
        "p99_ms": 1000 * float(np.percentile([r[0] for r in ok], 99)),
        "replies_per_s": None,
        "errors": len(records) - len(ok),
        "serialisation_share": None,
        "longest_gap_s": float(max(gaps)) if gaps else None,
        "hold_plus_horizon_s": 1.5,
        "first_error": next((r[2] for r in records if r[2]), None),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--robots", default="1,2,4")
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--every", type=float, default=0.4, help="each robot's query cadence, seconds (20 steps at 50 Hz)")
    parser.add_argument("--kill-replica", action="store_true", help="also: kill one of 2 replicas mid-run (module docstring)")
    args = parser.parse_args()
    from chatvla2.contract.bundle import bundle_model_config, load_manifest
    from chatvla2.serve.serve_config import ServeConfig
    from chatvla2.serve.server import start, stop

    config = bundle_model_config(args.bundle, load_manifest(args.bundle, verify_hashes=False))
    views = config.vision.num_views
    baseline = _in_process(args.bundle, views, args.queries)
    server_s = _server_serialisation_s(args.bundle, views)
    token_file = Path(tempfile.mkdtemp()) / "token"
    token_file.write_text(TOKEN)
    port = _free_port()
    rows = [
        {
            "config": "in-process",
            "replicas": 0,
            "robots": 1,
            "p50_ms": 1000 * float(np.median(baseline)),
            "p99_ms": 1000 * float(np.percentile(baseline, 99)),
            "replies_per_s": None,
            "errors": 0,
            "serialisation_share": 0.0,
        }
    ]
    try:
        for replicas in (int(v) for v in args.replicas.split(",")):
            url = start(ServeConfig(bundle=args.bundle, port=port, token_file=str(token_file), replicas=replicas, threads=1))
            for robots in (int(v) for v in args.robots.split(",")):
                out = multiprocessing.get_context("spawn").Queue()
                processes = [
                    multiprocessing.get_context("spawn").Process(target=_robot, args=(url, views, args.queries, args.every, i, out))
                    for i in range(robots)
                ]
                started = time.perf_counter()
                for p in processes:
                    p.start()
                records = [r for _ in processes for r in out.get(timeout=900)]
                wall = time.perf_counter() - started
                for p in processes:
                    p.join()
                ok = [r for r in records if r[2] is None]
                e2e = [r[0] for r in ok]
                client_s = float(np.median([r[1] for r in ok])) if ok else 0.0
                p50 = float(np.median(e2e)) if e2e else float("nan")
                rows.append(
                    {
                        "config": f"{replicas} replica(s), {robots} robot(s)",
                        "replicas": replicas,
                        "robots": robots,
                        "p50_ms": 1000 * p50,
                        "p99_ms": 1000 * float(np.percentile(e2e, 99)) if e2e else float("nan"),
                        "replies_per_s": len(ok) / wall,
                        "errors": len(records) - len(ok),
                        "serialisation_share": (client_s + server_s) / p50 if e2e else None,
                        "first_error": next((r[2] for r in records if r[2]), None),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        if args.kill_replica:
            rows.append(_kill_replica_run(args, token_file, port, views))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        stop()
    print(
        f"\n{args.bundle}: {config.name}, {views} view(s); each robot one query every {args.every:g} s, {args.queries} queries; "
        f"server-side decode + encode {1000 * server_s:.2f} ms"
    )
    print("| configuration | end-to-end p50 ms | p99 ms | replies/s | errors | serialisation share |\n|---|---|---|---|---|---|")
    for r in rows:
        rate = "-" if r["replies_per_s"] is None else f"{r['replies_per_s']:.2f}"
        share = "-" if r["serialisation_share"] is None else f"{100 * r['serialisation_share']:.1f}%"
        print(f"| {r['config']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {rate} | {r['errors']} | {share} |")
    print(
        json.dumps(
            {
                "serve_load": {
                    "bundle": args.bundle,
                    "model": config.name,
                    "every_s": args.every,
                    "queries": args.queries,
                    "server_serialisation_ms": 1000 * server_s,
                    "rows": rows,
                }
            }
        )
    )


if __name__ == "__main__":
    main()
