"""The control loop: an execution thread at the control rate and an inference thread ahead of it.

    loop = ControlLoop(policy, robot, observe, LoopConfig(rate_hz=50), safety, telemetry)
    summary = loop.run()          # until duration_s, stop(), a watchdog stop or an error

- **Execution thread** (`rate_hz`, default the robot's control rate, 50: contract/embodiment.py):
  at each tick k it pops the action planned for step k, passes it through `ActionSafety` and
  sends it. Ticks are on an absolute schedule (t0 + k dt); a late tick skips the steps whose time
  has passed (counted as `overruns`).
- **Inference thread**: starts the next inference early, when the actions left in the plan cover
  no more than the expected latency (the largest of the last `latency_window` latencies times
  `latency_headroom`, plus `latency_margin_s`; the CLI seeds the window with the warm-up runs),
  so the new action chunk arrives before the plan runs out while latencies stay within that
  estimate. One inference runs at a time and a chunk's first L_n / dt actions are stale when it
  arrives, so the hard bound is L_n + L_(n+1) <= chunk horizon (chunk_size / rate_hz) for any
  two consecutive latencies: a steady latency below half the horizon never starves; a spike
  beyond every latency in the window, or two long ones in a row, can leave the plan empty for a
  while: the watchdog holds. An action chunk computed from the observation taken
  before step s applies to steps s, s+1, ...; the actions whose time passed during inference are
  dropped (`stale_actions`).
- **Chunk modes**: `switch` replaces the plan from the current step on with the new chunk;
  `ensemble` is ACT's temporal ensembling: every prediction for a step is averaged with weights
  exp(-m i), i = 0 for the oldest (m = `ensemble_decay`); `rtc` is real-time chunking (Black et
  al. 2025, arXiv 2506.07339, by prefix conditioning): when an inference starts at step s, the
  planned actions for the steps the expected latency will cover (s .. s+d-1, d = ceil((latency
  estimate + margin) / dt), at most the head's `max_prefix`) are committed and passed to the
  policy as the observation's "prefix"; the new chunk starts with them exactly and continues them,
  and replaces the plan as `switch` does (the committed rows are the plan's own actions, so
  nothing that has been planned for those steps changes). It needs a head trained for it
  (`policy.max_prefix` > 0).
- **Reasoning cadence**: `every` decodes a new reasoning at every inference; `reuse` reuses the
  last reasoning (text and its pooled state r, no decoding) for `reasoning_reuse_s` seconds, the
  "keep it until the step is done" mode; there is no task-step signal yet, so a timer stands in.
- **Watchdog**: a tick with no planned action holds: the last safe action is re-sent and the arm
  keeps its target ("hold" means only this, here and in the drivers' controller); a plan empty
  for longer than `hold_s` damps the robot and stops the loop.
- **Camera**: an observation that raises `StaleCamera` (a view too old or frozen) gives no new
  chunk: the inference is retried every tick, a `camera_stale` record is written, and the plan
  runs dry like any other starvation (hold, then damping; the stop reason names the camera).
- **Stop**: duration reached, `stop(reason)` (from any thread), `request_stop(reason)` (from a
  signal handler: it takes no lock, the main thread acts on it within `STOP_POLL_S`), a watchdog
  stop, an inference error or a robot fault: the robot is damped at once; an inference in flight
  is asked to stop (`should_stop`, checked between stages and decode tokens) and `run()` joins the
  inference thread (bounded) before it returns, so the caller may close the engines after it;
  disconnecting (damping for the driver's disconnect_damping_s, then disable) is the caller's
  `finally`.
- **Telemetry**: one JSON line per step and per inference (`Telemetry`), and `summary()`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from chatvla2.contract.embodiment import CONTROL_HZ
from chatvla2.contract.errors import InvalidInput
from chatvla2.runtime.camera_source import StaleCamera
from chatvla2.runtime.numbers import is_finite_number, is_whole_number
from chatvla2.runtime.safety import ActionSafety

CHUNK_MODES = ("switch", "ensemble", "rtc")
REASONING_CADENCES = ("every", "reuse")


class Robot(Protocol):
    def get_state(self) -> np.ndarray: ...
    def send_action(self, action: np.ndarray) -> np.ndarray: ...
    def damping(self) -> None: ...


class InferencePolicy(Protocol):
    def infer(self, observation: dict, reuse: dict | None = None, should_stop: Callable[[], bool] | None = None) -> dict:
        """`should_stop()` true: give up early by raising `InferenceStopped` (the result is not wanted)."""


class InferenceStopped(Exception):
    """An inference given up because the loop is stopping (not an error)."""


# How often the main thread looks at a stop requested by a signal handler (request_stop).
STOP_POLL_S = 0.01
# Bound on joining an inference still in flight at a stop: the larger of this and 3x the longest
# inference seen. A policy that honours should_stop returns within one stage or one token; the
# bound is for one that cannot (a single engine call on a loaded machine).
INFERENCE_JOIN_MIN_S = 10.0


@dataclass(frozen=True)
class LoopConfig:
    rate_hz: float = float(CONTROL_HZ)  # contract/embodiment.py: 50
    duration_s: float | None = None
    chunk_mode: str = "switch"
    ensemble_decay: float = 0.1
    reasoning: str = "every"
    reasoning_reuse_s: float = 5.0
    latency_margin_s: float = 0.02
    latency_headroom: float = 1.5
    hold_s: float = 0.5
    latency_window: int = 20

    def __post_init__(self) -> None:
        check_loop_settings(asdict(self))


def check_loop_settings(settings: dict[str, Any], name: Callable[[str], str] = str) -> None:
    """LoopConfig's fields (`settings`, by field name): every number finite and in range (a NaN or an
    infinity would reach the JSON summary, which strict parsers reject, and NaN passes every `<`
    test). Each message starts with `name(field)`: the field's own name, or for `chatvla2 run` the
    option that sets it (runtime/run_config.py)."""
    s = settings
    for key in ("rate_hz", "ensemble_decay", "reasoning_reuse_s", "latency_margin_s", "latency_headroom", "hold_s"):
        if not is_finite_number(s[key]):
            raise InvalidInput(f"{name(key)} must be a finite number, got {s[key]!r}")
    if not 1.0 <= s["rate_hz"] <= 1000.0:
        raise InvalidInput(f"{name('rate_hz')} must be within 1..1000 Hz, got {s['rate_hz']:g}")
    if s["duration_s"] is not None:
        if not is_finite_number(s["duration_s"]):
            raise InvalidInput(f"{name('duration_s')} must be a finite number of seconds, got {s['duration_s']!r} "
                               "(none: run until stopped)")
        if s["duration_s"] <= 0:
            raise InvalidInput(f"{name('duration_s')} must be positive, got {s['duration_s']:g}")
    if s["chunk_mode"] not in CHUNK_MODES:
        raise InvalidInput(f"{name('chunk_mode')} must be one of {CHUNK_MODES}, got {s['chunk_mode']!r}")
    if s["reasoning"] not in REASONING_CADENCES:
        raise InvalidInput(f"{name('reasoning')} must be one of {REASONING_CADENCES}, got {s['reasoning']!r}")
    if s["hold_s"] <= 0:
        raise InvalidInput(f"{name('hold_s')} must be positive, got {s['hold_s']:g}")
    for key in ("ensemble_decay", "reasoning_reuse_s", "latency_margin_s"):
        if s[key] < 0:
            raise InvalidInput(f"{name(key)} must not be negative, got {s[key]:g}")
    if s["latency_headroom"] < 1:
        raise InvalidInput(f"{name('latency_headroom')} must be >= 1, got {s['latency_headroom']:g}")
    if not is_whole_number(s["latency_window"]) or s["latency_window"] < 1:
        raise InvalidInput(f"{name('latency_window')} must be an integer >= 1, got {s['latency_window']!r}")


class ActionPlan:
    """Actions by absolute control step; thread-safe."""

    def __init__(self, mode: str = "switch", decay: float = 0.1):
        self.mode, self.decay = mode, decay
        self._lock = threading.Lock()
        self._sum: dict[int, np.ndarray] = {}
        self._weight: dict[int, float] = {}
        self._count: dict[int, int] = {}

    def add(self, chunk: np.ndarray, first_step: int, current_step: int) -> int:
        """Add a chunk whose row i is the action for step first_step + i; rows before
        current_step are stale and dropped. Returns how many were dropped."""
        chunk = np.asarray(chunk, dtype=np.float64)
        stale = max(0, current_step - first_step)
        with self._lock:
            if self.mode in ("switch", "rtc"):
                for step in [s for s in self._sum if s >= current_step]:
                    del self._sum[step], self._weight[step], self._count[step]
            for i in range(stale, len(chunk)):
                step = first_step + i
                n = self._count.get(step, 0)
                w = math.exp(-self.decay * n)
                self._sum[step] = self._sum.get(step, 0.0) + w * chunk[i]
                self._weight[step] = self._weight.get(step, 0.0) + w
                self._count[step] = n + 1
        return min(stale, len(chunk))

    def pop(self, step: int) -> np.ndarray | None:
        with self._lock:
            for old in [s for s in self._sum if s < step]:
                del self._sum[old], self._weight[old], self._count[old]
            if step not in self._sum:
                return None
            action = self._sum.pop(step) / self._weight.pop(step)
            self._count.pop(step)
            return action

    def committed(self, start: int, count: int) -> np.ndarray:
        """(k, action_dim): the planned actions of steps start, start+1, ... for up to `count`
        consecutive planned steps (k = 0 when step `start` has none)."""
        rows = []
        with self._lock:
            for step in range(start, start + count):
                if step not in self._sum:
                    break
                rows.append(self._sum[step] / self._weight[step])
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), -1) if rows else np.zeros((0, 0), np.float32)

    def end(self) -> int:
        """One past the last planned step (0 when empty)."""
        with self._lock:
            return max(self._sum) + 1 if self._sum else 0


class Telemetry:
    """JSON lines, one object per event; `close()` flushes. Path None keeps nothing on disk."""

    def __init__(self, path: str | Path | None):
        self._lock = threading.Lock()
        self._file = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "w", buffering=1 << 16)
        self.path = path

    def write(self, record: dict) -> None:
        if self._file is None:
            return
        line = json.dumps(record, default=_jsonable)
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()
                self._file.close()
                self._file = None


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return [round(float(x), 6) for x in value.reshape(-1)]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


class ControlLoop:
    def __init__(
        self,
        policy: InferencePolicy,
        robot: Robot,
        observe: Callable[[np.ndarray], dict],
        config: LoopConfig,
        safety: ActionSafety,
        telemetry: Telemetry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """observe(state) -> the policy's observation (images, instruction, state)."""
        self.max_prefix = int(getattr(policy, "max_prefix", 0) or 0)
        if config.chunk_mode == "rtc" and self.max_prefix <= 0:
            raise InvalidInput(
                "chunk mode rtc needs an action head trained to continue a committed prefix (this policy's max_prefix is 0): "
                "train stage 2 with --max-prefix, or use switch or ensemble"
            )
        self.policy, self.robot, self.observe = policy, robot, observe
        self.config, self.safety = config, safety
        self.telemetry = telemetry or Telemetry(None)
        self.clock = clock
        self.dt = 1.0 / config.rate_hz
        self.plan = ActionPlan(config.chunk_mode, config.ensemble_decay)
        self._stop = threading.Event()
        self._requested: str | None = None  # set by request_stop (a signal handler), acted on by run()
        self._inference_thread_handle: threading.Thread | None = None
        self.inference_finished = True  # False while an inference thread outlived its bound
        self.stop_reason: str | None = None
        self.next_step = 0  # the next step the execution thread will execute
        self.latencies: deque[float] = deque(maxlen=config.latency_window)
        self.inferences: list[dict] = []
        self.chunk_size: int | None = None
        self.steps_sent = 0
        self.steps_held = 0
        self.overruns = 0
        self.stale_actions = 0
        self.longest_starvation_s = 0.0
        self.tick_lateness: list[float] = []
        self.errors: list[str] = []
        self.camera_fault: str | None = None  # the last StaleCamera while it lasts
        self.stale_observations = 0  # inferences skipped for a stale camera
        self._last_reasoning: dict | None = None
        self._last_reasoning_at = -math.inf
        self.t0 = 0.0
        self.ended_at = 0.0
        self.damped = False

    # -- control --------------------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    def request_stop(self, reason: str) -> None:
        """Stop from a signal handler. `stop()` sets a threading.Event, whose lock the interrupted
        main thread may be holding (inside Event.wait): setting it from the handler could deadlock.
        This only assigns an attribute; run()'s main thread calls stop() within STOP_POLL_S."""
        if self._requested is None:
            self._requested = reason

    def _take_request(self) -> None:
        if self._requested is not None:
            self.stop(self._requested)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or self._requested is not None

    def join_inference(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the inference thread to end; True when no inference is running."""
        thread = self._inference_thread_handle
        if thread is not None:
            thread.join(timeout=max(0.0, timeout))
            self.inference_finished = not thread.is_alive()
        return self.inference_finished

    def inference_join_bound(self) -> float:
        return max(INFERENCE_JOIN_MIN_S, 3.0 * max(self.latencies, default=0.0))

    def latency_estimate(self) -> float:
        if not self.latencies:
            return 0.0
        return max(self.latencies) * self.config.latency_headroom

    def committed_prefix(self, first_step: int) -> np.ndarray:
        """The actions an inference starting before step `first_step` passes as its prefix (rtc):
        the planned ones of the steps its expected latency covers, at most max_prefix."""
        expected = math.ceil((self.latency_estimate() + self.config.latency_margin_s) / self.dt - 1e-9)
        return self.plan.committed(first_step, min(self.max_prefix, max(0, expected)))

    def _infer(self, first_step: int) -> None:
        state = np.asarray(self.robot.get_state(), dtype=np.float32)
        observation = self.observe(state)
        prefix_steps = None
        if self.config.chunk_mode == "rtc":
            prefix = self.committed_prefix(first_step)
            prefix_steps = len(prefix)
            if prefix_steps:
                observation = {**observation, "prefix": prefix}
        now = self.clock()
        reuse = None
        if self.config.reasoning == "reuse" and self._last_reasoning is not None and now - self._last_reasoning_at < self.config.reasoning_reuse_s:
            reuse = self._last_reasoning
        started = time.perf_counter()
        result = self.policy.infer(observation, reuse=reuse, should_stop=lambda: self.stopping)
        latency = time.perf_counter() - started
        self.latencies.append(latency)
        if reuse is None:
            self._last_reasoning, self._last_reasoning_at = result, now
        chunk = np.asarray(result["action_chunk"])
        self.chunk_size = len(chunk)
        arrive = self.next_step
        stale = self.plan.add(chunk, first_step, arrive)
        self.stale_actions += stale
        record = {
            "event": "inference", "t": round(self.clock() - self.t0, 6), "obs_step": first_step, "arrive_step": arrive,
            "latency_s": round(latency, 6), "stale_actions": stale, "tokens": result.get("tokens"), "prefix_steps": prefix_steps,
            "reused_reasoning": reuse is not None, "reasoning": result.get("reasoning"),
            "timings": {k: round(v, 6) for k, v in result.get("timings", {}).items()},
        }
        self.inferences.append(record)
        self.telemetry.write(record)

    def _inference_thread(self) -> None:
        try:
            while not self._stop.is_set():
                remaining = (self.plan.end() - self.next_step) * self.dt
                if remaining > self.latency_estimate() + self.config.latency_margin_s:
                    self._stop.wait(min(self.dt / 2, max(0.0, remaining - self.latency_estimate() - self.config.latency_margin_s)))
                    continue
                try:
                    self._infer(self.next_step)
                    self.camera_fault = None
                except StaleCamera as exc:
                    # No observation to act on: no new chunk. The plan runs dry, the watchdog
                    # holds, then damps and stops, unless the camera comes back in time.
                    if self.camera_fault is None:
                        self.telemetry.write({"event": "camera_stale", "t": round(self.clock() - self.t0, 6), "error": str(exc)})
                    self.camera_fault = str(exc)
                    self.stale_observations += 1
                    self._stop.wait(self.dt)
        except InferenceStopped:
            pass  # given up because the loop is stopping
        except Exception as exc:  # noqa: BLE001 - any inference failure stops the robot
            self.errors.append(f"inference: {exc!r}")
            self.stop(f"inference error: {exc}")

    def _execution_thread(self) -> None:
        starved_since = None
        try:
            while not self._stop.is_set():
                step = self.next_step
                due = self.t0 + step * self.dt
                wait = due - self.clock()
                if wait > 0 and self._stop.wait(wait):
                    break
                now = self.clock()
                late = now - due
                if late > self.dt:  # a tick ran late: skip the steps whose time has passed
                    skipped = int(late / self.dt)
                    self.overruns += skipped
                    step += skipped
                    due = self.t0 + step * self.dt
                self.tick_lateness.append(now - due)
                action = self.plan.pop(step)
                record: dict[str, Any] = {"event": "step", "t": round(now - self.t0, 6), "step": step}
                if action is None:
                    starved_since = now if starved_since is None else starved_since
                    starved = now - starved_since
                    self.longest_starvation_s = max(self.longest_starvation_s, starved)
                    self.steps_held += 1
                    record["held"] = True
                    if starved > self.config.hold_s:
                        self.telemetry.write({**record, "watchdog": "damping"})
                        cause = f"; {self.camera_fault}" if self.camera_fault else ""
                        self.stop(f"watchdog: no action for {starved:.3f} s (> hold {self.config.hold_s} s){cause}")
                        break
                    sent = self.robot.send_action(self.safety.last.copy())
                else:
                    if starved_since is not None:
                        self.longest_starvation_s = max(self.longest_starvation_s, now - starved_since)
                    starved_since = None
                    safe, changed = self.safety.filter(action)
                    sent = self.robot.send_action(safe)
                    self.steps_sent += 1
                    record["planned"] = action
                    if changed:
                        record["safety"] = changed
                record["sent"] = np.asarray(sent)
                self.telemetry.write(record)
                self.next_step = step + 1
        except Exception as exc:  # noqa: BLE001 - a robot fault stops the loop
            self.errors.append(f"execution: {exc!r}")
            self.stop(f"robot error: {exc}")

    def run(self) -> dict:
        """Blocking: warm-up excluded (the caller warms the policy up), the first chunk computed
        before the first tick, then both threads until a stop. Returns summary() once the robot is
        damped and no inference is running any more (or the join bound passed: `inference_finished`
        False, an error in the summary, and the caller must not close the engines)."""
        self.t0 = self.clock()
        threads = [threading.Thread(target=self._execution_thread, name="execution", daemon=True),
                   threading.Thread(target=self._inference_thread, name="inference", daemon=True)]
        self._take_request()
        if self._stop.is_set():  # stopped before it started (a signal while the robot connected)
            threads = []
        else:
            try:
                self.safety.reset(self.robot.get_state())
                self._infer(0)  # the first chunk: execution starts when it exists
            except InferenceStopped:
                threads = []
            except Exception as exc:  # noqa: BLE001 - a bad observation or a robot fault before the first step
                self.errors.append(f"first inference: {exc!r}")
                self.stop(f"first inference failed: {exc}")
                threads = []
            self._take_request()
            if self._stop.is_set():
                threads = []
        # time restarts at the first chunk's arrival: step 0 executes now
        self.t0 = self.clock()
        self.next_step = 0
        for thread in threads:
            thread.start()
        if threads:
            self._inference_thread_handle = threads[1]
        deadline = None if self.config.duration_s is None else self.t0 + self.config.duration_s
        while not self._stop.is_set():
            self._take_request()
            timeout = STOP_POLL_S if deadline is None else max(0.0, min(STOP_POLL_S, deadline - self.clock()))
            if self._stop.wait(timeout):
                break
            if deadline is not None and self.clock() >= deadline:
                self.stop("duration reached")
        self.ended_at = self.clock()
        if threads:
            threads[0].join(timeout=2.0)
        try:
            self.robot.damping()
            self.damped = True
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"damping: {exc!r}")
        # t0_s: the clock at step 0 (time.monotonic() unless the loop was given another clock): every
        # record's t plus t0_s is a time another process on this machine can compare with its own
        self.telemetry.write({"event": "stop", "t": round(self.ended_at - self.t0, 6), "reason": self.stop_reason,
                              "damped": self.damped, "monotonic_s": round(time.monotonic(), 6), "t0_s": round(self.t0, 6)})
        bound = self.inference_join_bound()
        if not self.join_inference(bound):
            self.errors.append(f"inference still running {bound:.1f} s after the stop: engines must not be closed")
        summary = self.summary()
        self.telemetry.write({"event": "summary", **summary})
        self.telemetry.flush()
        return summary

    # -- report ---------------------------------------------------------------------------------
    def summary(self) -> dict:
        elapsed = max(self.ended_at - self.t0, 1e-9)
        latencies = [r["latency_s"] for r in self.inferences]
        stages: dict[str, list[float]] = {}
        for r in self.inferences:
            for k, v in r["timings"].items():
                stages.setdefault(k, []).append(v)
        lateness = np.asarray(self.tick_lateness) if self.tick_lateness else np.zeros(1)
        return {
            "stop_reason": self.stop_reason,
            "duration_s": round(elapsed, 3),
            "rate_hz": self.config.rate_hz,
            "achieved_hz": round((self.steps_sent + self.steps_held) / elapsed, 2),
            "steps_sent": self.steps_sent,
            "steps_held": self.steps_held,
            "longest_starvation_s": round(self.longest_starvation_s, 4),
            "overruns": self.overruns,
            "tick_lateness_p99_ms": round(float(np.percentile(lateness, 99)) * 1000, 3),
            "inferences": len(self.inferences),
            "chunk_size": self.chunk_size,
            "chunk_horizon_s": None if self.chunk_size is None else round(self.chunk_size * self.dt, 3),
            "stale_actions": self.stale_actions,
            "reasoning_reused": sum(bool(r["reused_reasoning"]) for r in self.inferences),
            "tokens_p50": _pct([r["tokens"] for r in self.inferences if r["tokens"] is not None and not r["reused_reasoning"]], 50),
            "latency_p50_s": _pct(latencies, 50),
            "latency_p99_s": _pct(latencies, 99),
            "stages_p50_s": {k: _pct(v, 50) for k, v in stages.items()},
            "stages_p99_s": {k: _pct(v, 99) for k, v in stages.items()},
            "safety": self.safety.counts.as_dict(),
            "damped": self.damped,
            "errors": self.errors,
            "stale_observations": self.stale_observations,
            "config": asdict(self.config),
        }


def _pct(values, q) -> float | None:
    return round(float(np.percentile(np.asarray(values), q)), 6) if len(values) else None


def format_summary(summary: dict) -> str:
    rows = [
        ("stop reason", summary["stop_reason"]),
        ("duration", f"{summary['duration_s']:.2f} s"),
        ("control rate", f"{summary['achieved_hz']:.1f} Hz (target {summary['rate_hz']:.0f})"),
        ("steps sent / held", f"{summary['steps_sent']} / {summary['steps_held']} (longest starvation {summary['longest_starvation_s'] * 1000:.0f} ms)"),
        ("overruns / tick lateness p99", f"{summary['overruns']} / {summary['tick_lateness_p99_ms']:.2f} ms"),
        ("inferences", f"{summary['inferences']} (chunk {summary['chunk_size']}, horizon {summary['chunk_horizon_s']} s, stale actions {summary['stale_actions']})"),
        ("reasoning", f"{summary['tokens_p50']} tokens p50 when decoded; reused {summary['reasoning_reused']} times"),
        ("latency p50 / p99", f"{_ms(summary['latency_p50_s'])} / {_ms(summary['latency_p99_s'])}"),
    ]
    for stage, p50 in summary["stages_p50_s"].items():
        rows.append((f"  {stage} p50 / p99", f"{_ms(p50)} / {_ms(summary['stages_p99_s'][stage])}"))
    rows.append(("safety", ", ".join(f"{k} {v}" for k, v in summary["safety"].items())))
    rows.append(("damped", str(summary["damped"])))
    robot = summary.get("robot")  # added by `chatvla2 run`
    if robot:
        timeout = robot.get("feedback_timeout_s")
        rows.append(("robot", f"{robot.get('kind')} ({robot.get('profile')}), feedback timeout "
                              + ("-" if timeout is None else f"{timeout * 1000:g} ms")))
    for error in summary["errors"]:
        rows.append(("error", error))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"
