"""An episode through the runtime's control loop (runtime/loop.py): the arms keep moving while the
policy thinks.

`task_eval.run_episode` queries the policy synchronously: the simulated world waits for every
inference. A robot does not wait: `ControlLoop`'s execution thread sends an action every 1/rate s
while its inference thread computes the next chunk, and the chunk mode (`switch`, `ensemble`,
`rtc`) joins the new chunk to what is planned. Here the task environment is that robot
(`EpisodeRobot`: `send_action` is `env.step`), in real time, with an optional extra latency per
inference (`LatencyInjection`), so a Jetson's delays are reproduced on this machine: the extra
time passes after the inference's own compute, with the arms moving, as it would on a slower chip.

An episode ends when the environment terminates (success or a wrong pick) or truncates, when an arm
faults (the driver mode: the driver has damped it), or when the loop stops on its own (its watchdog:
no planned action for `hold_s`, "starved").

Either of the environment's arms will do: kinematic, or the drivers on simulated arms
(`DriverBackend(paced=False)`: the loop keeps the 50 Hz schedule, the backend sends and reads).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from chatvla2.contract.errors import InvalidInput
from chatvla2.drivers.faults import ArmFault
from chatvla2.evaluation.join_smoothness import join_jumps
from chatvla2.runtime.loop import ControlLoop, InferenceStopped, LoopConfig, Telemetry
from chatvla2.runtime.safety import ActionSafety
from chatvla2.sim.tasks.env import TaskEnv

# How finely an injected delay checks whether the loop is stopping.
_DELAY_SLICE_S = 0.005


@dataclass(frozen=True)
class LatencyInjection:
    """Extra milliseconds per inference: fixed ("300") or uniform between two values ("200-400")."""

    low_ms: float = 0.0
    high_ms: float = 0.0

    @classmethod
    def parse(cls, text: str | float | None) -> LatencyInjection:
        if text is None:
            return cls()
        spec = str(text).strip()
        low, sep, high = spec.partition("-")
        try:
            values = (float(low), float(high) if sep else float(low))
        except ValueError:
            raise InvalidInput(f"--latency-ms {spec!r}: expected milliseconds, fixed (300) or a uniform range (200-400)") from None
        if not all(np.isfinite(values)) or values[0] < 0 or values[1] < values[0]:
            raise InvalidInput(f"--latency-ms {spec!r}: expected 0 <= LOW <= HIGH milliseconds")
        return cls(*values)

    def draw(self, rng: np.random.Generator) -> float:
        """One inference's extra seconds."""
        return (self.low_ms if self.high_ms == self.low_ms else rng.uniform(self.low_ms, self.high_ms)) / 1000.0

    def __str__(self) -> str:
        return f"{self.low_ms:g}" if self.high_ms == self.low_ms else f"{self.low_ms:g}-{self.high_ms:g}"


class DelayedPolicy:
    """A policy whose every inference takes `injection`'s extra time after its own compute; the delay
    gives up at once when the loop stops (`should_stop`), as a real inference does."""

    def __init__(self, policy, injection: LatencyInjection, seed: int):
        self.policy, self.injection = policy, injection
        self.rng = np.random.default_rng(seed)
        self.max_prefix = getattr(policy, "max_prefix", 0)

    def infer(self, observation, reuse=None, should_stop=None) -> dict:
        result = self.policy.infer(observation, reuse=reuse, should_stop=should_stop)
        until = time.perf_counter() + self.injection.draw(self.rng)
        while (left := until - time.perf_counter()) > 0:
            if should_stop is not None and should_stop():
                raise InferenceStopped("inference given up: the loop is stopping")
            time.sleep(min(_DELAY_SLICE_S, left))
        return result


class EpisodeRobot:
    """The task environment as the loop's robot: each action sent is one `env.step`; the episode's
    end, or an arm fault, stops the loop (`on_end`). `on_frame(step, image)` sees the camera frame of
    the reset (at the first action) and after every step. Thread-safe: the execution thread steps,
    the inference thread observes."""

    def __init__(self, env: TaskEnv, observation: dict, info: dict, on_frame=None):
        self.env = env
        self.lock = threading.Lock()
        self.observation, self.info = observation, info
        self.ended: str | None = None
        self.fault: str | None = None
        self.on_end = lambda reason: None
        self.on_frame = on_frame
        self.sent: list[np.ndarray] = []
        self.damped = False

    def get_state(self) -> np.ndarray:
        with self.lock:
            return np.array(self.observation["state"], dtype=np.float32)

    def frame(self) -> tuple[np.ndarray, str]:
        with self.lock:
            return self.observation["images"][0], self.observation["instruction"]

    def send_action(self, action: np.ndarray) -> np.ndarray:
        with self.lock:
            if self.ended is not None:
                return action  # the loop is stopping: the episode's world stays as it ended
            if self.on_frame is not None and not self.sent:
                self.on_frame(int(self.info["step"]), self.observation["images"][0])
            try:
                self.observation, _, terminated, truncated, self.info = self.env.step(action)
            except ArmFault as exc:  # the driver has damped the arm; the next reset restarts it
                self.fault, self.ended = f"{type(exc).__name__}: {exc}", "arm fault"
            else:
                self.sent.append(np.array(action, dtype=np.float32))
                if self.on_frame is not None:
                    self.on_frame(int(self.info["step"]), self.observation["images"][0])
                if terminated or truncated:
                    self.ended = "success" if self.info["success"] else "wrong pick" if self.info["failed"] else "truncated"
        if self.ended is not None:
            self.on_end(f"episode ended: {self.ended}")
        return action

    def damping(self) -> None:
        self.damped = True


class StepLog(Telemetry):
    """The loop's telemetry kept in memory: which control step each action sent belongs to (a late
    tick skips steps, so the n-th action sent is not always step n)."""

    def __init__(self):
        super().__init__(None)
        self.sent_steps: list[int] = []

    def write(self, record: dict) -> None:
        if record.get("event") == "step" and "watchdog" not in record:
            self.sent_steps.append(int(record["step"]))


def run_async_episode(
    env: TaskEnv,
    policy,
    seed: int,
    loop: LoopConfig,
    injection: LatencyInjection = LatencyInjection(),
    query_seed=None,
    on_step=None,
) -> dict[str, Any]:
    """One episode through ControlLoop (module docstring). `query_seed(seed, query)` seeds each
    inference's diffusion noise (task_eval.query_seed); `on_step(seed, step, image, reasoning)` sees
    every frame with the reasoning in force (task_eval.StepHook). Returns the outcome, the first
    query's reasoning, every action sent, the steps where a new chunk took over (joins) and the
    loop's summary."""
    started = time.perf_counter()
    observation, info = env.reset(seed=seed)
    control: ControlLoop | None = None

    def on_frame(step: int, image: np.ndarray) -> None:
        done = control.inferences if control is not None else []
        on_step(seed, step, image, done[-1]["reasoning"] if done else "")

    robot = EpisodeRobot(env, observation, info, on_frame if on_step is not None else None)
    views = policy.num_views
    queries = 0

    def observe(state: np.ndarray) -> dict:
        nonlocal queries
        image, instruction = robot.frame()
        feed = {"images": [image] * views, "instruction": instruction, "state": state}
        if query_seed is not None:
            feed["seed"] = query_seed(seed, queries)
        queries += 1
        return feed

    steps = StepLog()
    control = ControlLoop(DelayedPolicy(policy, injection, seed), robot, observe, loop, ActionSafety.bimanual_arx(loop.rate_hz), steps)
    robot.on_end = control.stop
    summary = control.run()
    records = control.inferences
    ended = robot.ended or ("starved" if (summary["stop_reason"] or "").startswith("watchdog") else "stopped")
    actions = np.asarray(robot.sent, np.float32).reshape(len(robot.sent), -1)
    # a join: the first action sent from a new chunk, as an index into the actions sent
    sent_steps = np.asarray(steps.sent_steps[: len(actions)])
    joins = sorted({int(np.searchsorted(sent_steps, r["arrive_step"])) for r in records[1:]} - {len(sent_steps)})
    return {
        "seed": seed,
        "instruction": robot.observation["instruction"],
        "expected": info["reasoning"],
        "reasoning": records[0]["reasoning"] if records else "",
        "success": robot.ended == "success",
        "outcome": ended,
        "arm_fault": robot.fault,
        "picked": list(robot.info["picked"]),
        "steps": int(robot.info["step"]),
        "actions": actions,
        "joins": joins,
        "join_smoothness": join_jumps(actions, joins, loop.rate_hz),
        "prefix_steps": [r.get("prefix_steps") for r in records],
        "queries": [{"step": int(r["obs_step"]), "reasoning": r["reasoning"], "tokens": r["tokens"]} for r in records],
        "_timings": [r["timings"] for r in records],
        "loop": {k: summary[k] for k in ("stop_reason", "steps_held", "stale_actions", "inferences", "latency_p50_s", "latency_p99_s")},
        "wall_s": round(time.perf_counter() - started, 3),
    }
