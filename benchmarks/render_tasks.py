"""Simulated tasks (sim/tasks/): time to render one observation, and scripted-expert episodes and
frames per second in the fast kinematic mode, per task. Prints a table, then one JSON line.

    .venv/bin/python benchmarks/render_tasks.py [--episodes 10] [--renders 200] [--size 252x308]

"render" is `TaskEnv.render()` on a mid-episode state (arms out, a prop in the gripper where the
task has one): the per-frame cost, the static layer already built. "episodes/s" and "frames/s"
run `generate_episode` (reset, expert plan, one rendered observation per 50 Hz step), seeds
0..episodes-1, split in_domain and open_world alternately; "steps/s (no images)" is the same
without rendering (what evaluating actions alone costs). Target: a render under 20 ms.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from chatvla2.sim.tasks.env import TaskEnv
from chatvla2.sim.tasks.episode import generate_episode

TASKS = ("math_game", "toy_placement")
SPLITS = ("in_domain", "open_world")


def render_ms(task: str, height: int, width: int, renders: int) -> dict:
    env = TaskEnv(task, "open_world", height, width)
    env.reset(seed=0)
    actions = env.expert_actions()
    for action in actions[: len(actions) // 2]:  # mid-episode: a prop in a gripper
        env.step(action)
    env.render()  # the static layer
    times = []
    for _ in range(renders):
        start = time.perf_counter()
        env.render()
        times.append(time.perf_counter() - start)
    t = np.array(times) * 1e3
    return {"median_ms": round(float(np.median(t)), 3), "p90_ms": round(float(np.percentile(t, 90)), 3)}


def episodes_per_s(task: str, height: int, width: int, episodes: int) -> dict:
    frames = 0
    start = time.perf_counter()
    for seed in range(episodes):
        frames += len(generate_episode(task, SPLITS[seed % 2], seed, height, width))
    elapsed = time.perf_counter() - start
    steps = 0
    env = TaskEnv(task, "in_domain", height, width, render_images=False)
    start_plain = time.perf_counter()
    for seed in range(episodes):
        env.reset(seed=seed)
        for action in env.expert_actions():
            env.step(action)
            steps += 1
    plain = time.perf_counter() - start_plain
    return {"episodes_per_s": round(episodes / elapsed, 3), "frames_per_s": round(frames / elapsed, 1),
            "mean_frames": round(frames / episodes, 1), "steps_per_s_no_images": round(steps / plain, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--renders", type=int, default=200)
    parser.add_argument("--size", default="252x308", help="HEIGHTxWIDTH (the small preset's; tiny is 56x84)")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))

    results = {}
    for task in TASKS:
        results[task] = {"render": render_ms(task, height, width, args.renders),
                         **episodes_per_s(task, height, width, args.episodes)}

    print(f"Simulated tasks at {height}x{width}, fast kinematic mode, {args.episodes} expert episodes and "
          f"{args.renders} renders per task")
    print("| task | render median ms | render p90 ms | episodes/s | frames/s | frames/episode | steps/s (no images) |")
    print("|---|---|---|---|---|---|---|")
    for task, r in results.items():
        print(f"| {task} | {r['render']['median_ms']:.2f} | {r['render']['p90_ms']:.2f} | {r['episodes_per_s']:.2f} | "
              f"{r['frames_per_s']:.0f} | {r['mean_frames']:.0f} | {r['steps_per_s_no_images']:.0f} |")
    print(json.dumps({"height": height, "width": width, "episodes": args.episodes, "renders": args.renders,
                      "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                      "tasks": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
