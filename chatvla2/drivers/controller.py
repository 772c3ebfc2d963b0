"""The per-arm control thread: at `rate_hz` (500 Hz) it steps the command towards the latest
target, sends one frame per motor, reads the replies, and watches the arm.

It owns the link while it runs. Host-side watchdog:
- no new target for `target_timeout_s` -> hold (the command stops moving; counted);
- no reply from a motor for `feedback_timeout_s` -> CommunicationLost fault -> damping;
- a motor error code, or a safety emergency (see `safety.py`) -> typed fault -> damping;
- the adapter not taking a cycle's frames within the link's write deadline -> AdapterStalled fault
  -> damping; the loop goes on (a stalled adapter may recover, and then gets damping commands);
- the link gone -> LinkLost fault, the thread ends (nothing can be sent any more).
A fault latches: the arm damps (kp = 0, raised kd) until disconnect.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from chatvla2.drivers.faults import (
    AdapterStalled,
    ArmFault,
    CommunicationLost,
    LinkLost,
    fault_from_damiao_state,
    fault_from_ec_error,
    named,
)
from chatvla2.drivers.motor_frames import JOINT_NAMES, MotorFrames, MotorReading
from chatvla2.drivers.safety import Interventions, SafetyLimits
from chatvla2.drivers.slcan_link import AdapterRejected, LinkDisconnected, LinkStalled, SlcanLink

TRACKING, DAMPING = "tracking", "damping"

# No reply from a motor for this long -> CommunicationLost -> damping. 25 cycles at 500 Hz: long
# enough for USB and scheduling hiccups on the robot's computer, short enough that an arm under a
# stiff command is damped within a few tens of ms of losing a motor. Loaded or simulated setups raise
# it per arm (`ControllerConfig(feedback_timeout_s=0.2)`, the runtime's --feedback-timeout).
DEFAULT_FEEDBACK_TIMEOUT_S = 0.05
FEEDBACK_TIMEOUT_MAX_S = 2.0  # beyond this the watchdog no longer protects anything (seconds, not ms)


@dataclass(frozen=True)
class ControllerConfig:
    rate_hz: float = 500.0  # docs/reference/arx.md: the public SDK's controller runs at 500 Hz
    target_timeout_s: float = 0.2
    feedback_timeout_s: float = DEFAULT_FEEDBACK_TIMEOUT_S
    reply_window: float = 0.95  # wait for this cycle's replies up to this fraction of the period
    # Back-pressure: before sending, wait up to this fraction of the period for replies still owed
    # by earlier cycles (each reply follows its command on the bus, so an owed reply means the bus
    # is still busy with the previous cycle: sending now would only queue frames in the adapter).
    settle_window: float = 0.5
    reply_lost_s: float = 0.008  # a reply owed for longer is counted lost and no longer expected
    cycle_times_kept: int = 200_000

    def __post_init__(self) -> None:
        if not 1.0 <= self.rate_hz <= 2000.0:
            raise ValueError(f"rate_hz must be within 1..2000, got {self.rate_hz}")
        if self.target_timeout_s <= 0:
            raise ValueError("watchdog timeouts must be positive")
        lowest = 2.0 / self.rate_hz  # one cycle's reply may come a cycle late: less trips every cycle
        if not lowest <= self.feedback_timeout_s <= FEEDBACK_TIMEOUT_MAX_S:
            raise ValueError(
                f"feedback_timeout_s must be within {lowest:g}..{FEEDBACK_TIMEOUT_MAX_S:g} s (two control periods "
                f"at {self.rate_hz:g} Hz up to {FEEDBACK_TIMEOUT_MAX_S:g} s), got {self.feedback_timeout_s:g}"
            )


class ArmController:
    def __init__(
        self,
        link: SlcanLink,
        frames: MotorFrames,
        limits: SafetyLimits,
        initial: list[MotorReading],
        config: ControllerConfig = ControllerConfig(),
        counts: Interventions | None = None,
        name: str = "",
    ) -> None:
        self.link, self.frames, self.limits, self.config = link, frames, limits, config
        self.name = name  # the arm's name, in front of every fault message ("left arm: ...")
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
        # Per motor, the send times of commands whose reply has not arrived yet (oldest first). A motor
        # answers each command once, in order, so a reply answers the oldest owed command: it is
        # this cycle's feedback only if nothing else is owed after it.
        self._owed: list[deque[float]] = [deque() for _ in range(n)]
        self.feedback_sent_at = np.full(n, now)  # send time of the command the latest reading answered
        self.cycle_fresh: deque[int] = deque(maxlen=config.cycle_times_kept)  # motors answered in-cycle
        self.feedback_age: deque[float] = deque(maxlen=config.cycle_times_kept)  # oldest motor, at cycle end
        self.reply_times: deque[float] = deque(maxlen=config.cycle_times_kept)  # send -> last in-cycle reply
        # Damping is timed from when the arm first answered a damping command (not when one was
        # written: a stalled adapter may sit on it, or the OS discard it).
        self.damping_since: float | None = None
        self._damping_first_sent: float | None = None  # send time of the first damping command
        self.overruns = 0
        self.started_at = 0.0
        self.link_lost = ""  # why the link is gone ("" while it is there): nothing can be sent any more
        self._stalled = False

    # -- control from other threads ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"arm-controller {self.name}".strip(), daemon=True)
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

    def wait_damping_sent(self, timeout_s: float) -> float | None:
        """When the arm first answered a damping command (None if not within `timeout_s` or not running)."""
        end = time.monotonic() + timeout_s
        while self.damping_since is None and self.running and time.monotonic() < end:
            time.sleep(0.002)
        return self.damping_since

    def resume(self) -> None:
        """Back to tracking from damping, holding the measured position (not after a fault)."""
        with self._lock:
            if self.fault is not None:
                raise self.fault
            self.command = self.position.copy()
            self._target = self.position.copy()
            self._target_time = time.monotonic()
            self.mode = TRACKING
            self.damping_since = self._damping_first_sent = None

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
        named(fault, self.name)
        self.faults.append(fault)
        self.counts.faults += 1
        if self.fault is None:
            self.fault = fault
            self.fault_time = time.monotonic()
        self.mode = DAMPING

    @property
    def replies_owed(self) -> int:
        return sum(len(q) for q in self._owed)

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
            # leave the bus quiet for whoever talks next (disconnect's disable): collect the replies
            # still owed, so they are not taken for answers to later requests
            readings: list[MotorReading] = []
            self._collect(readings, time.monotonic() + self.config.reply_lost_s, settle=True)
            self._apply(readings, time.monotonic())
        except LinkDisconnected as exc:
            self.link_lost = f"link lost: {exc}"
            with self._lock:
                self._raise_fault(LinkLost(f"link to the arm lost: {exc}"))

    def _cycle(self, now: float, period: float) -> None:
        lim, counts = self.limits, self.counts
        self._settle(now, period)
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
                damping = False
            else:
                kp, kd, position = np.zeros(self.n), lim.damping_kd, self.position
                damping = True
        frames = [self.frames.command(i, float(position[i]), 0.0, float(kp[i]), float(kd[i]), 0.0) for i in range(self.n)]
        try:
            self.link.send_many(frames)
        except LinkStalled as exc:
            # nothing owed (what the OS held was discarded); keep cycling: a recovered adapter
            # then gets damping commands at once
            counts.write_timeouts += 1
            self.damping_since = self._damping_first_sent = None  # what the OS held was discarded
            if not self._stalled:  # one fault per stall, however many cycles it lasts
                self._stalled = True
                with self._lock:
                    self._raise_fault(AdapterStalled(f"the adapter stopped taking frames: {exc}"))
            self._apply([], time.monotonic())
            return
        self._stalled = False
        sent = time.monotonic()
        if damping and self._damping_first_sent is None:
            self._damping_first_sent = sent
        for q in self._owed:
            q.append(sent)

        # this cycle's replies: until every motor answered this cycle's command or the window closes
        readings: list[MotorReading] = []
        fresh, last = self._collect(readings, now + self.config.reply_window * period)
        end = time.monotonic()
        missing = self.n - len(fresh)
        counts.feedback_missed += missing
        self.cycle_fresh.append(len(fresh))
        self.reply_times.append((last if missing == 0 else end) - sent)
        self._apply(readings, end)
        self.feedback_age.append(end - float(self.feedback_sent_at.min()))

    def _settle(self, now: float, period: float) -> None:
        """Before sending: wait (within the settle window) for replies earlier cycles still owe, and
        apply whatever arrived since the last cycle, so the command is computed on the newest state."""
        readings: list[MotorReading] = []
        self._collect(readings, now + self.config.settle_window * period, settle=True)
        lost_before = time.monotonic() - self.config.reply_lost_s
        for q in self._owed:
            while q and q[0] < lost_before:
                q.popleft()
                self.counts.replies_lost += 1
        if readings:
            self._apply(readings, time.monotonic())

    def _collect(self, readings: list[MotorReading], deadline: float, settle: bool = False) -> tuple[set[int], float]:
        """Receive until nothing is owed (settle) / every motor answered its newest command, or the
        deadline. Appends readings in arrival order; returns the motors answered fresh and when the
        last fresh reply arrived. Always takes what has already arrived, even past the deadline."""
        counts, owed = self.counts, self._owed
        fresh: set[int] = set()
        last = 0.0
        while True:
            if settle:
                done = not any(owed)
            else:
                done = len(fresh) == self.n
            if done:  # still take what is already buffered (stray frames), without waiting
                left = 0.0
            else:
                left = max(0.0, deadline - time.monotonic())
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
            i = reading.index
            q = owed[i]
            readings.append(reading)
            if not q:  # nothing owed: a reply to a request from before the controller started
                counts.replies_unexpected += 1
                continue
            self.feedback_sent_at[i] = sent_at = q.popleft()
            first = self._damping_first_sent
            if self.damping_since is None and first is not None and sent_at >= first:
                self.damping_since = time.monotonic()  # the arm answered a damping command: it damps
            if settle or q:
                counts.replies_late += 1  # answers an earlier cycle's command: arrived after its cycle
            else:
                fresh.add(i)
                last = time.monotonic()
        return fresh, last

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
