"""The link to one arm's CAN bus: a python-can bus owned by one object, with typed errors.

`SlcanLink` opens the bus through python-can: its `slcan` interface (a USB-serial adapter speaking
Lawicel ASCII over pyserial, any device path or pyserial URL) or any other python-can interface
(`socketcan` for adapters already brought up with slcand, `virtual` in one process).

For `slcan`, `SlcanSerialBus` subclasses python-can's `slcanBus` and replaces its receive path,
because python-can 4.6's reader (a) reads one byte per system call, too slow for 7,000 frames/s,
(b) silently drops BEL (0x07) error replies, and (c) wedges for good on a non-UTF-8 byte (it decodes
its buffer before clearing it, so every later line fails to decode too). The replacement reads in
chunks, accepts a frame with or without the 4-digit timestamp, skips garbage (counted) and resyncs
on the next frame, and raises `AdapterRejected` for each BEL. Opening, bitrate and closing stay
python-can's (`C`, `S8`, `O` on open; `C` on shutdown).
"""

from __future__ import annotations

import os
import select
import time
from collections import deque
from dataclasses import dataclass
from typing import Iterable

import can
from can.interfaces.slcan import slcanBus

Frame = tuple[int, bytes]  # (CAN id, data)

_BEL = 0x07
_CR = 0x0D
_HEX = frozenset(b"0123456789abcdefABCDEF")
_MAX_LINE = 64  # longest valid SLCAN line is T + 8 + 1 + 16 + 4 = 30 characters


class LinkError(OSError):
    """The link to an arm failed."""


class LinkDisconnected(LinkError):
    """The serial device went away (cable pulled, adapter reset, pty closed)."""


class AdapterRejected(LinkError):
    """The adapter answered BEL: it refused a command or a frame (channel closed, buffer full...)."""


@dataclass
class LinkStats:
    frames_sent: int = 0
    frames_received: int = 0
    acks: int = 0  # bare `\r` (or Lawicel `z\r`) acknowledgements
    adapter_rejections: int = 0  # BEL replies
    garbage_lines: int = 0  # lines that were not a valid frame, skipped
    other_replies: int = 0  # V/N/F replies


class SlcanReader:
    """Turns received SLCAN bytes into frames. Never raises: garbage is skipped and counted, each
    BEL is counted in `rejections` (the bus raises AdapterRejected for it), and a valid frame that
    follows garbage on the same line is still found."""

    def __init__(self, stats: LinkStats | None = None) -> None:
        self.stats = stats or LinkStats()
        self.frames: deque[Frame] = deque()
        self.rejections = 0
        self._rx = bytearray()

    def feed(self, chunk: bytes) -> None:
        rx = self._rx
        rx += chunk
        start = 0
        for i in range(len(rx)):
            b = rx[i]
            if b == _CR or b == _BEL:
                self._line(bytes(rx[start:i]), b)
                start = i + 1
        del rx[:start]
        if len(rx) > _MAX_LINE:  # no terminator for too long: garbage; keep a possible frame start
            cut = max(rx.rfind(b"t"), rx.rfind(b"T"))
            keep = rx[cut:] if cut > 0 and len(rx) - cut <= _MAX_LINE else b""
            self.stats.garbage_lines += 1
            self._rx = bytearray(keep)

    def _line(self, line: bytes, terminator: int) -> None:
        stats = self.stats
        if terminator == _BEL:
            stats.adapter_rejections += 1
            self.rejections += 1
            if line:  # bytes before a BEL: a frame or garbage, handled as a line of its own
                self._line(line, _CR)
            return
        if not line or line in (b"z", b"Z"):
            stats.acks += 1
            return
        frame = _parse_frame(line)
        if frame is None:
            # resync: garbage may precede a frame on the same line
            for j in range(1, len(line)):
                if line[j] in (0x74, 0x54):  # 't', 'T'
                    frame = _parse_frame(line[j:])
                    if frame is not None:
                        break
        if frame is None:
            stats.garbage_lines += 1
        elif frame is _INFO:
            stats.other_replies += 1
        else:
            stats.frames_received += 1
            self.frames.append(frame)


class SlcanSerialBus(slcanBus):
    """python-can's SLCAN bus with a chunked, garbage-tolerant reader and batched writes."""

    def __init__(self, channel: str, **kwargs) -> None:
        self.link_stats = LinkStats()
        self.reader = SlcanReader(self.link_stats)
        super().__init__(channel, **kwargs)
        try:
            self._fd: int | None = self.serialPortOrig.fileno()
        except Exception:  # pyserial URLs without a file descriptor (loop://, socket://)
            self._fd = None

    # -- receiving -------------------------------------------------------------------------------
    def recv_frame(self, timeout: float | None) -> Frame | None:
        """The next data frame, or None after `timeout` seconds. Raises AdapterRejected once per BEL
        received and LinkDisconnected when the device is gone."""
        reader = self.reader
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if reader.rejections:
                reader.rejections -= 1
                raise AdapterRejected("the SLCAN adapter answered BEL (it refused a frame or command)")
            if reader.frames:
                return reader.frames.popleft()
            left = None if deadline is None else deadline - time.monotonic()
            # past the deadline the device is still polled once (timeout 0): receive(0) returns what
            # has already arrived instead of only what an earlier read happened to buffer
            chunk = self._read_chunk(None if left is None else max(0.0, left))
            if chunk:
                reader.feed(chunk)
            elif left is not None and left <= 0:
                return None

    def _read_chunk(self, timeout: float | None) -> bytes:
        port = self.serialPortOrig
        try:
            if self._fd is not None:
                ready, _, _ = select.select([self._fd], [], [], timeout)
                if not ready:
                    return b""
                data = os.read(self._fd, 4096)
                if not data:
                    raise LinkDisconnected(f"serial device {port.port} closed (end of file)")
                return data
            port.timeout = 0 if timeout is None else timeout
            return port.read(max(1, port.in_waiting))
        except LinkError:
            raise
        except (OSError, ValueError, TypeError) as exc:  # EIO, EBADF, closed port objects
            raise LinkDisconnected(f"serial device {port.port} went away: {exc}") from exc
        except Exception as exc:  # serial.SerialException
            raise LinkDisconnected(f"serial device {port.port} went away: {exc}") from exc

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        frame = self.recv_frame(timeout)
        if frame is None:
            return None, False
        can_id, data = frame
        return can.Message(arbitration_id=can_id, is_extended_id=can_id > 0x7FF, data=data, timestamp=time.time()), False

    # -- sending ---------------------------------------------------------------------------------
    def send_frames(self, frames: Iterable[Frame]) -> None:
        """Write several standard frames in one write (no tcdrain per frame)."""
        parts = []
        count = 0
        for can_id, data in frames:
            parts.append(f"t{can_id:03X}{len(data):d}{data.hex().upper()}\r" if can_id <= 0x7FF
                         else f"T{can_id:08X}{len(data):d}{data.hex().upper()}\r")
            count += 1
        payload = "".join(parts).encode("ascii")
        try:
            if self._fd is not None:
                view = memoryview(payload)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
            else:
                self.serialPortOrig.write(payload)
        except Exception as exc:
            raise LinkDisconnected(f"serial device {self.serialPortOrig.port} went away: {exc}") from exc
        self.link_stats.frames_sent += count


_INFO = (-1, b"")  # marker: a V/N/F reply, not a frame


def _parse_frame(line: bytes) -> Frame | None:
    """A `t`/`T` line (with or without a 4-digit timestamp) -> (id, data); V/N/F -> _INFO; else None."""
    kind = line[0]
    if kind == 0x74:  # 't'
        id_len = 3
    elif kind == 0x54:  # 'T'
        id_len = 8
    elif kind in (0x56, 0x4E, 0x46):  # 'V', 'N', 'F'
        return _INFO if all(c in _HEX for c in line[1:]) else None
    else:
        return None
    head = 1 + id_len
    if len(line) < head + 1:
        return None
    dlc_char = line[head]
    if not 0x30 <= dlc_char <= 0x38:
        return None
    dlc = dlc_char - 0x30
    body = line[head + 1 :]
    if len(body) not in (2 * dlc, 2 * dlc + 4):
        return None
    for c in line[1:head]:
        if c not in _HEX:
            return None
    for c in body:
        if c not in _HEX:
            return None
    return int(line[1:head], 16), bytes.fromhex(body[: 2 * dlc].decode("ascii"))


class SlcanLink:
    """Owns one bus: open, send, receive with a timeout, typed errors, close.

    `channel` is a serial device path or pyserial URL for interface "slcan", or a python-can
    channel name for any other interface ("socketcan": "can0"; "virtual": any name).
    `settle_s` is python-can's `sleep_after_open`: CANable-class adapters do not reset when the
    port opens, so 0 is enough; adapters built on an Arduino need about 2 s.
    """

    def __init__(
        self,
        channel: str,
        *,
        interface: str = "slcan",
        bitrate: int = 1_000_000,
        settle_s: float = 0.0,
        open_reply_timeout_s: float = 0.2,
    ) -> None:
        self.channel = channel
        self.interface = interface
        self.bitrate = bitrate
        self.settle_s = settle_s
        self.open_reply_timeout_s = open_reply_timeout_s
        self._bus: can.BusABC | None = None
        self._stats = LinkStats()

    # -- life cycle --------------------------------------------------------------------------------
    def open(self) -> "SlcanLink":
        if self._bus is not None:
            return self
        try:
            if self.interface == "slcan":
                bus = SlcanSerialBus(self.channel, bitrate=self.bitrate, sleep_after_open=self.settle_s)
            else:
                bus = can.Bus(interface=self.interface, channel=self.channel, bitrate=self.bitrate)
        except (can.CanError, OSError, ValueError) as exc:
            cause = exc.__cause__ or exc
            raise LinkError(f"cannot open the CAN adapter on '{self.channel}' ({self.interface}): {cause}") from exc
        self._bus = bus
        if isinstance(bus, SlcanSerialBus):
            self._stats = bus.link_stats
            self._drain_open_replies(bus)
        return self

    def _drain_open_replies(self, bus: SlcanSerialBus) -> None:
        """python-can writes C, S8, an empty line and O without reading the replies: read them here
        (some firmwares send none; a BEL to C on a closed channel is normal, so BELs are counted
        and remembered as `startup_rejections`, not raised)."""
        self.startup_rejections = 0
        deadline = time.monotonic() + self.open_reply_timeout_s
        while bus.link_stats.acks < 3 and time.monotonic() < deadline:
            try:
                frame = bus.recv_frame(max(0.0, deadline - time.monotonic()))
            except AdapterRejected:
                self.startup_rejections += 1
                continue
            if frame is not None:  # traffic already on the bus: keep nothing from before we started
                continue

    def close(self) -> None:
        bus, self._bus = self._bus, None
        if bus is None:
            return
        try:
            bus.shutdown()
        except Exception:  # the device may already be gone; closing must not raise
            try:
                bus.serialPortOrig.close()  # type: ignore[attr-defined]
            except Exception:
                pass

    @property
    def is_open(self) -> bool:
        return self._bus is not None

    @property
    def stats(self) -> LinkStats:
        return self._stats

    def __enter__(self) -> "SlcanLink":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- traffic -----------------------------------------------------------------------------------
    def _require(self) -> can.BusABC:
        if self._bus is None:
            raise LinkDisconnected(f"the link on '{self.channel}' is not open")
        return self._bus

    def send(self, can_id: int, data: bytes) -> None:
        self.send_many(((can_id, data),))

    def send_many(self, frames: Iterable[Frame]) -> None:
        bus = self._require()
        if isinstance(bus, SlcanSerialBus):
            bus.send_frames(frames)
            return
        try:
            for can_id, data in frames:
                bus.send(can.Message(arbitration_id=can_id, is_extended_id=can_id > 0x7FF, data=data))
                self._stats.frames_sent += 1
        except can.CanError as exc:
            raise LinkDisconnected(f"cannot send on '{self.channel}': {exc}") from exc

    def drain(self, quiet_s: float = 0.0, max_s: float = 0.05) -> int:
        """Discard received frames (and BELs) until nothing arrives for `quiet_s` (0: only what is
        already there), at most `max_s`. Returns the number of frames discarded."""
        self._require()
        dropped = 0
        end = time.monotonic() + max_s
        while True:
            try:
                frame = self.receive(min(quiet_s, max(0.0, end - time.monotonic())))
            except AdapterRejected:
                continue
            if frame is None:
                return dropped
            dropped += 1
            if time.monotonic() >= end:
                return dropped

    def receive(self, timeout: float | None) -> Frame | None:
        """The next frame or None after `timeout` s. Raises AdapterRejected per BEL and
        LinkDisconnected when the device is gone."""
        bus = self._require()
        if isinstance(bus, SlcanSerialBus):
            return bus.recv_frame(timeout)
        try:
            msg = bus.recv(timeout)
        except can.CanError as exc:
            raise LinkDisconnected(f"cannot receive on '{self.channel}': {exc}") from exc
        if msg is None:
            return None
        self._stats.frames_received += 1
        return msg.arbitration_id, bytes(msg.data)
