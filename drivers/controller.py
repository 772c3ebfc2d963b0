"""The per-arm control thread: at `rate_hz` (500 Hz) it steps the command towards the latest
target, sends one frame per motor, reads the replies, and watches the arm.

It owns the link while it runs. Host-side watchdog:
- no new target for `target_timeout_s` -> hold (the command stops moving; counted);
- no reply from a motor for `feedback_timeout_s` -> CommunicationLost fault -> damping;
- a motor error code, or a safety emergency (see `safety.py`) -> typed fault -> damping;
- the link gone -> LinkLost fault, the thread ends (nothing can be sent any more).
A fault latches: the arm damps (kp = 0, raised kd) until disconnect.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from drivers.faults import ArmFault, CommunicationLost, LinkLost, fault_from_damiao_state, fault_from_ec_error
from drivers.motor_frames import JOINT_NAMES, MotorFrames, MotorReading
from drivers.safety import Interventions, SafetyLimits
from drivers.slcan_link import AdapterRejected, LinkDisconnected, SlcanLink

TRACKING, DAMPING = "tracking", "damping"


@dataclass(frozen=True)
class ControllerConfig:
    rate_hz: float = 500.0  # arx.md: the public SDK's controller runs at 500 Hz
    target_timeout_s: float = 0.2
    feedback_timeout_s: float = 0.05  # 25 cycles at 500 Hz
    reply_window: float = 0.95  # wait for replies up to this fraction of the period
    cycle_times_kept: int = 200_000

    def __post_init__(self) -> None:
        if not 1.0 <= self.rate_hz <= 2000.0:
            raise ValueError(f"rate_hz must be within 1..2000, got {self.rate_hz}")
        if self.target_timeout_s <= 0 or self.feedback_timeout_s <= 0:
            raise ValueError("watchdog timeouts must be positive")


class ArmController:
    def __init__(
        self,
        link: SlcanLink,
        frames: MotorFrames,
        limits: SafetyLimits,
        initial: list[MotorReading],
        config: ControllerConfig = ControllerConfig(),
        counts: Interventions | None = None,
    ) -> None:
        self.link, self.frames, self.limits, self.config = link, frames, limits, config
        self.counts = counts or Interventions()
        n = len(frames.ids)
        self.n = n
        self.position = np.array([r.position for r in initial])
        self.velocity = np.array([r.velocity or 0.0 for r in initial])
        self.torque = np.array([r.torque for r in initial])
        self.temperature = np.array([r.temperature_c for r in initial])
        self.states = [r.state for r in initial]
        self.command = self.position.copy()
        self._target = self.position.copy()
        now = time.monotonic()
        self._target_time = now
        self._holding = False
        self.last_feedback = np.full(n, now)
        self.mode = TRACKING
        self.fault: ArmFault | None = None
        self.faults: list[ArmFault] = []
        self.fault_time: float | None = None
        self._overcurrent_streak = [0] * n
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cycles = 0
        self.cycle_times: deque[float] = deque(maxlen=config.cycle_times_kept)  # seconds of work per cycle
        self.cycle_starts: deque[float] = deque(maxlen=config.cycle_times_kept)
        self.overruns = 0
        self.started_at = 0.0
        self.link_lost = False

    # -- control from other threads ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="arm-controller", daemon=True)
        self.started_at = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def set_target(self, target: np.ndarray) -> None:
        with self._lock:
            self._target = target.copy()
            self._target_time = time.monotonic()
            self._holding = False

    def damp(self) -> None:
        with self._lock:
            self.mode = DAMPING

    def resume(self) -> None:
        """Back to tracking from damping, holding the measured position (not after a fault)."""
        with self._lock:
            if self.fault is not None:
                raise self.fault
            self.command = self.position.copy()
            self._target = self.position.copy()
            self._target_time = time.monotonic()
            self.mode = TRACKING

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "position": self.position.copy(),
                "velocity": self.velocity.copy(),
                "torque": self.torque.copy(),
                "temperature": self.temperature.copy(),
                "states": tuple(self.states),
                "mode": self.mode,
                "fault": self.fault,
                "holding": self._holding,
                "command": self.command.copy(),
            }

    def _raise_fault(self, fault: ArmFault) -> None:
        self.faults.append(fault)
        self.counts.faults += 1
        if self.fault is None:
            self.fault = fault
            self.fault_time = time.monotonic()
        self.mode = DAMPING

    # -- the loop -------------------------------------------------------------------------------------
    def _run(self) -> None:
        period = 1.0 / self.config.rate_hz
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                start = time.monotonic()
                self._cycle(start, period)
                end = time.monotonic()
                self.cycle_times.append(end - start)
                self.cycle_starts.append(start)
                self.cycles += 1
                next_tick += period
                delay = next_tick - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -period:  # more than a whole cycle late: do not try to catch up
                    self.overruns += 1
                    next_tick = time.monotonic()
        except LinkDisconnected as exc:
            self.link_lost = True
            with self._lock:
                self._raise_fault(LinkLost(f"link to the arm lost: {exc}"))

    def _cycle(self, now: float, period: float) -> None:
        lim, counts = self.limits, self.counts
        with self._lock:
            if self.mode == TRACKING:
                target = self._target
                if now - self._target_time > self.config.target_timeout_s:
                    if not self._holding:
                        counts.target_timeouts += 1
                        self._holding = True
                    target = self.command  # hold: stop moving towards a stale target
                command = lim.step_towards(self.command, target, period, counts)
                command = lim.refuse_stiff(command, self.position, counts)
                self.command = command
                kp, kd, position = lim.kp, lim.kd, command
            else:
                kp, kd, position = np.zeros(self.n), lim.damping_kd, self.position
        frames = [self.frames.command(i, float(position[i]), 0.0, float(kp[i]), float(kd[i]), 0.0) for i in range(self.n)]
        self.link.send_many(frames)

        # replies: one per motor, until all arrived or the window closes
        deadline = now + self.config.reply_window * period
        heard = [False] * self.n
        missing = self.n
        readings: list[MotorReading] = []
        while missing:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                frame = self.link.receive(left)
            except AdapterRejected:
                counts.adapter_rejections += 1
                continue
            if frame is None:
                break
            try:
                reading = self.frames.read(*frame)
            except ValueError:
                counts.bad_replies += 1
                continue
            if reading is None:
                continue
            readings.append(reading)
            if not heard[reading.index]:
                heard[reading.index] = True
                missing -= 1
        counts.feedback_missed += missing
        self._apply(readings, time.monotonic())

    def _apply(self, readings: list[MotorReading], now: float) -> None:
        with self._lock:
            for r in readings:
                i = r.index
                self.position[i] = r.position
                if r.velocity is not None:
                    self.velocity[i] = r.velocity
                self.torque[i] = r.torque
                self.temperature[i] = r.temperature_c
                self.states[i] = r.state
                self.last_feedback[i] = now
                name = JOINT_NAMES[i]
                if r.family == "damiao":
                    fault = fault_from_damiao_state(r.motor_id, name, r.error_code)
                else:
                    fault = fault_from_ec_error(r.motor_id, name, r.error_code)
                fault = fault or self.limits.check_reading(r, self._overcurrent_streak)
                if fault is not None:
                    self._raise_fault(fault)
            stale = now - self.last_feedback > self.config.feedback_timeout_s
            if np.any(stale):
                for i in np.flatnonzero(stale):
                    if self.states[i] != "silent":
                        self.states[i] = "silent"
                        self._raise_fault(
                            CommunicationLost(
                                f"{JOINT_NAMES[i]} (motor {self.frames.ids[i]}) silent for more than "
                                f"{self.config.feedback_timeout_s * 1000:.0f} ms",
                                self.frames.ids[i],
                            )
                        )
