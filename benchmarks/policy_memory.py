"""Resident memory a bundle's `Policy` adds: what loading the engines costs on the robot's computer.

Each bundle is loaded in a fresh interpreter (one process per bundle, so nothing one bundle mapped
is counted for the next): VmRSS once the runtime is imported (the floor), after
`Policy.from_bundle`, and after one inference (ONNX Runtime allocates its activations' arenas on
the first run); the bundle's graph bytes on disk beside them. A table, then one JSON line.

    python benchmarks/policy_memory.py bundles/small-cpu-fp32 bundles/small-cpu-auto [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
import numpy as np
from chatvla2.runtime.policy import Policy
from chatvla2.contract.scene import sample_observation
floor = rss()
policy = Policy.from_bundle(sys.argv[1], backend="onnxruntime", threads=int(sys.argv[2]))
loaded = rss()
frames, instruction, state = sample_observation(policy.num_views)
policy.max_reasoning_tokens = 8
policy.infer({"images": frames, "instruction": instruction, "state": state, "seed": 0})
print(json.dumps({"floor": floor, "loaded": loaded, "after_inference": rss(),
                  "sessions": len({id(e) for e in policy.engines.values()})}))
"""


def measure(bundle: Path, threads: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(bundle), str(threads)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise SystemExit(f"{bundle}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'failed'}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    manifest = json.loads((bundle / "manifest.json").read_text())
    graphs = {e["file"] for e in manifest["engines"].values()} | {f for e in manifest["engines"].values() for f in e.get("data_files", [])}
    files = {e: manifest["engines"][e]["file"] for e in ("prefill", "decode")}
    return {"bundle": str(bundle), "plan": manifest.get("plan"), "language_files": files,
            "graph_bytes": sum((bundle / g).stat().st_size for g in graphs), **result,
            "policy_bytes": result["loaded"] - result["floor"], "policy_bytes_after_inference": result["after_inference"] - result["floor"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    rows = [measure(bundle, args.threads) for bundle in args.bundles]
    print(f"{'bundle':<36} {'prefill / decode graph':<28} {'sessions':>8} {'graphs on disk MB':>18} {'Policy load MB':>15} {'after 1 inference MB':>21}")
    for row in rows:
        files = " / ".join(row["language_files"].values())
        print(f"{Path(row['bundle']).name:<36} {files:<28} {row['sessions']:>8} {row['graph_bytes'] / 1e6:>18.1f} "
              f"{row['policy_bytes'] / 1e6:>15.1f} {row['policy_bytes_after_inference'] / 1e6:>21.1f}")
    print(json.dumps({"benchmark": "policy_memory", "threads": args.threads, "bundles": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
