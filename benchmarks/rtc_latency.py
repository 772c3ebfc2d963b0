"""Success and smoothness under latency, per chunk mode (issue 24): the policy runs its episodes
through the runtime's ControlLoop in real time (`chatvla2 eval --loop async`) with an extra latency
injected after each inference, for `switch`, `ensemble` and `rtc`; a table and a JSON line last,
and a plot of one joint across chunk joins, one panel per mode.

    .venv/bin/python benchmarks/rtc_latency.py (--checkpoint DIR | --bundle DIR) [--tasks math_game,toy_placement]
        [--split in_domain] [--episodes 50] [--seed S] [--latencies 0,150,300,600] [--modes switch,ensemble,rtc]
        [--out runs/rtc_latency]

Smoothness (evaluation/join_smoothness.py): the largest joint-velocity jump and acceleration at a
chunk join over the episodes, arm joints only, beside the same quantities over the expert's own
trajectories of those episodes (the issue's target: join acceleration <= 2x the expert's largest).
`rtc` needs a head trained for it (`--max-prefix`); for one that is not, its rows are left out
and the table says so. Each (task, mode, latency) also writes its full eval record to OUT.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from chatvla2.evaluation.async_episode import LatencyInjection, run_async_episode
from chatvla2.evaluation.eval_config import EvalConfig
from chatvla2.evaluation.join_smoothness import ARM_JOINTS, largest_anywhere
from chatvla2.evaluation.rates import format_rate
from chatvla2.evaluation.task_eval import evaluate, load_policy, model_config, query_seed, write_record
from chatvla2.runtime.loop import LoopConfig
from chatvla2.sim.tasks.env import TaskEnv


def expert_reference(task: str, split: str, seeds) -> dict[str, float]:
    """The largest velocity jump and acceleration over the expert's trajectories of these episodes."""
    env = TaskEnv(task, split, 56, 84, render_images=False)
    largest = {"velocity_jump": 0.0, "acceleration": 0.0}
    for seed in seeds:
        env.reset(seed=seed)
        for key, value in largest_anywhere(env.expert_actions()).items():
            largest[key] = max(largest[key], value)
    return largest


def plot_joins(policy, task: str, split: str, seed: int, latency_ms: float, modes, height: int, width: int, path: Path) -> None:
    """One episode per mode at one latency: the joint the expert moves most, against time, with the joins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(modes), 1, figsize=(9, 2.6 * len(modes)), sharex=True, squeeze=False)
    env = TaskEnv(task, split, height, width)
    env.reset(seed=seed)
    joint = int(np.argmax(np.ptp(env.expert_actions()[:, ARM_JOINTS], axis=0)))  # the expert's busiest joint, in every panel
    for axis, mode in zip(axes[:, 0], modes):
        record = run_async_episode(
            env, policy, seed, LoopConfig(duration_s=16.0, chunk_mode=mode), LatencyInjection(latency_ms, latency_ms), query_seed
        )
        actions = record["actions"][:, ARM_JOINTS]
        joins = record["joins"][1:4] or record["joins"][:3]
        start = max(0, (joins[0] if joins else 0) - 25)
        stop = min(len(actions), (joins[-1] if joins else 100) + 25)
        t = np.arange(start, stop) / 50.0
        axis.plot(t, actions[start:stop, joint], lw=1.5)
        for j in joins:
            axis.axvline(j / 50.0, color="tab:red", lw=0.8, ls="--")
        axis.set_title(f"{mode}: arm joint {ARM_JOINTS[joint]} at {latency_ms:g} ms extra latency ({record['outcome']})", fontsize=9)
        axis.set_ylabel("target (rad)")
    axes[-1, 0].set_xlabel("time (s); dashed: the first step of a new chunk")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint")
    source.add_argument("--bundle")
    parser.add_argument("--tasks", default="math_game,toy_placement")
    parser.add_argument("--split", default="in_domain")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=900_000, help="the first episode's seed (not used by any test or document)")
    parser.add_argument("--latencies", default="0,150,300,600", help="extra milliseconds per inference")
    parser.add_argument("--modes", default="switch,ensemble,rtc")
    parser.add_argument("--out", type=Path, default=Path("runs/rtc_latency"))
    args = parser.parse_args()
    tasks, modes = args.tasks.split(","), args.modes.split(",")
    latencies = [float(v) for v in args.latencies.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)

    def config(task: str, mode: str, latency: float) -> EvalConfig:
        return EvalConfig(
            task=task,
            split=args.split,
            episodes=args.episodes,
            seed=args.seed,
            checkpoint=args.checkpoint,
            bundle=args.bundle,
            loop="async",
            chunk_mode=mode,
            latency_ms=f"{latency:g}",
            json_out=str(args.out / f"{task}_{mode}_{latency:g}ms.json"),
        )

    policy, name = load_policy(config(tasks[0], modes[0], latencies[0]))
    skipped = [] if getattr(policy, "max_prefix", 0) > 0 else [m for m in modes if m == "rtc"]
    modes = [m for m in modes if m not in skipped]
    rows, records = [], []
    try:
        for task in tasks:
            expert = expert_reference(task, args.split, range(args.seed, args.seed + args.episodes))
            for mode in modes:
                for latency in latencies:
                    cfg = config(task, mode, latency)
                    result = evaluate(cfg, policy=(policy, name))
                    write_record(cfg.json_out, {"task_eval": result})
                    s = result["summary"]
                    joins = s["join_smoothness"]
                    loop_latency = [r["loop"]["latency_p50_s"] for r in result["episode_records"] if r["loop"]["latency_p50_s"] is not None]
                    row = {
                        "task": task,
                        "mode": mode,
                        "latency_ms": latency,
                        "successes": s["successes"],
                        "episodes": s["episodes"],
                        "success_interval_95": s["success_interval_95"],
                        "starved": s["starved"],
                        "join_velocity_jump": joins["velocity_jump"],
                        "join_acceleration": joins["acceleration"],
                        "expert_velocity_jump": expert["velocity_jump"],
                        "expert_acceleration": expert["acceleration"],
                        "inference_p50_s": float(np.median(loop_latency)) if loop_latency else None,
                    }
                    records.append(row)
                    ratio = "-" if joins["acceleration"] is None else f"{joins['acceleration'] / expert['acceleration']:.2f}x"
                    rows.append(
                        [
                            task,
                            mode,
                            f"{latency:g}",
                            format_rate(s["successes"], s["episodes"]),
                            str(s["starved"]),
                            "-" if joins["velocity_jump"] is None else f"{joins['velocity_jump']:.2f}",
                            "-" if joins["acceleration"] is None else f"{joins['acceleration']:.1f}",
                            ratio,
                            "-" if row["inference_p50_s"] is None else f"{1000 * row['inference_p50_s']:.0f}",
                        ]
                    )
                    print(" | ".join(rows[-1]), flush=True)
            vision = model_config(config(task, modes[0], latencies[0])).vision
            plot_latency = max([v for v in latencies if v <= 300] or latencies[:1])
            plot_joins(
                policy,
                task,
                args.split,
                args.seed,
                plot_latency,
                modes,
                vision.image_height,
                vision.image_width,
                args.out / f"{task}_joins.png",
            )
    finally:
        policy.close()

    header = [
        "task",
        "mode",
        "extra latency ms",
        "success [95%]",
        "starved",
        "join vel. jump rad/s",
        "join accel. rad/s^2",
        "vs expert's largest accel.",
        "inference p50 ms",
    ]
    print(
        f"\npolicy: {name}; {args.split}, {args.episodes} episodes from seed {args.seed}; expert's largest acceleration per task:",
        ", ".join(f"{r['task']} {r['expert_acceleration']:.1f}" for r in records[:: max(1, len(modes) * len(latencies))]),
    )
    if skipped:
        print("rtc: left out, the head was not trained to continue a prefix (max_prefix 0)")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        json.dumps(
            {
                "rtc_latency": {
                    "policy": name,
                    "split": args.split,
                    "episodes": args.episodes,
                    "seed": args.seed,
                    "skipped_modes": skipped,
                    "rows": records,
                }
            }
        )
    )


if __name__ == "__main__":
    main()
