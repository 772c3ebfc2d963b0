"""The link to one arm's CAN bus: a python-can bus owned by one object, with typed errors.

`SlcanLink` opens the bus through python-can: its `slcan` interface (a USB-serial adapter speaking
Lawicel ASCII over pyserial, any device path or pyserial URL) or any other python-can interface
(`socketcan` for adapters already brought up with slcand, `virtual` in one process).

For `slcan`, `SlcanSerialBus` subclasses python-can's `slcanBus` and replaces its receive path,
because python-can 4.6's reader (a) reads one byte per system call, too slow for 7,000 frames/s,
(b) silently drops BEL (0x07) error replies, and (c) wedges for good on a non-UTF-8 byte (it decodes
its buffer before clearing it, so every later line fails to decode too). The replacement reads in
chunks, accepts a frame with or without the 4-digit timestamp, skips garbage (counted) and resyncs
on the next frame, and raises `AdapterRejected` for each BEL. Opening and bitrate stay python-can's
(`C`, `S8`, `O` on open), but every byte goes through one bounded writer (`write_bytes`): pyserial's
own write, used by python-can with no write timeout, spins forever on a non-blocking port whose
adapter stopped reading. A write the OS has not taken within its deadline raises `LinkStalled`;
the adapter may then hold half a line, so the next write starts with `\r` (it ends the half line,
which the adapter rejects, and nothing merges with it). Closing (`C`, then the port) is bounded too.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import termios
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import can
import serial
from can.interfaces.slcan import slcanBus

from chatvla2.drivers.errors import DriverDeviceError

Frame = tuple[int, bytes]  # (CAN id, data)

_BEL = 0x07
_CR = 0x0D
_HEX = frozenset(b"0123456789abcdefABCDEF")
_MAX_LINE = 64  # longest valid SLCAN line is T + 8 + 1 + 16 + 4 = 30 characters


class LinkError(DriverDeviceError):
    """The link to an arm failed."""


class LinkDisconnected(LinkError):
    """The serial device went away (cable pulled, adapter reset, pty closed)."""


class AdapterRejected(LinkError):
    """The adapter answered BEL: it refused a command or a frame (channel closed, buffer full...)."""


class LinkStalled(LinkError):
    """The adapter stopped taking bytes: a write was not accepted within its deadline. The device is
    still there and may recover (the next write resynchronises); nothing was lost for good."""


@dataclass
class LinkStats:
    frames_sent: int = 0
    frames_received: int = 0
    acks: int = 0  # bare `\r` (or Lawicel `z\r`) acknowledgements
    adapter_rejections: int = 0  # BEL replies
    garbage_lines: int = 0  # lines that were not a valid frame, skipped
    other_replies: int = 0  # V/N/F replies
    write_timeouts: int = 0  # writes the OS did not take within their deadline (adapter not reading)
    resyncs: int = 0  # writes that began with `\r` to end a half-written line
    close_abandoned: int = 0  # closes whose `C` could not be written in time (port closed anyway)


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
    """python-can's SLCAN bus with a chunked, garbage-tolerant reader, batched writes, and every write
    (python-can's own commands included) and the close bounded by a deadline."""

    def __init__(self, channel: str, *, write_timeout_s: float = 0.05, close_timeout_s: float = 0.2, **kwargs) -> None:
        self.link_stats = LinkStats()
        self.reader = SlcanReader(self.link_stats)
        self.write_timeout_s = write_timeout_s
        self.close_timeout_s = close_timeout_s
        self._resync = False  # the adapter may hold half a line: the next write begins with `\r`
        self._fd: int | None = None
        try:
            super().__init__(channel, **kwargs)  # opens the port, writes C, S8, (empty), O
        except BaseException:
            # python-can leaves the port open when a write fails during its __init__
            port = getattr(self, "serialPortOrig", None)
            if port is not None:
                _close_quietly(port, discard=True)
            raise
        self._fd = _fileno(self.serialPortOrig)  # never raises: nothing after the open can leave it open

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
        """Write several standard frames in one write (no tcdrain per frame), within the write deadline."""
        parts = []
        count = 0
        for can_id, data in frames:
            parts.append(f"t{can_id:03X}{len(data):d}{data.hex().upper()}\r" if can_id <= 0x7FF
                         else f"T{can_id:08X}{len(data):d}{data.hex().upper()}\r")
            count += 1
        self.write_bytes("".join(parts).encode("ascii"), self.write_timeout_s)
        self.link_stats.frames_sent += count

    def _write(self, string: str) -> None:
        """python-can's command writer (C, S8, O, ...), bounded like every other write. No tcdrain:
        on a USB adapter that stopped reading it would wait forever."""
        self.write_bytes(string.encode("ascii") + b"\r", self.write_timeout_s)

    def write_bytes(self, payload: bytes, timeout_s: float) -> None:
        """Hand `payload` to the OS within `timeout_s`. Raises LinkStalled when the adapter does not
        take it in time (what the OS still holds for it is discarded: stale commands are worse than
        none, and the next write starts with `\r`) and LinkDisconnected when the device is gone."""
        if self._resync:
            payload = b"\r" + payload
            self.link_stats.resyncs += 1
        port = self.serialPortOrig
        fd = self._fd if self._fd is not None else _fileno(port)
        try:
            if fd is None:  # pyserial URL without a descriptor: pyserial's own write timeout
                if port.write_timeout != timeout_s:
                    port.write_timeout = timeout_s
                try:
                    port.write(payload)
                    left = 0
                except serial.SerialTimeoutException:
                    left = len(payload)
            else:
                left = _write_fd(fd, payload, time.monotonic() + timeout_s)
        except (OSError, ValueError, serial.SerialException) as exc:
            raise LinkDisconnected(f"serial device {port.port} went away: {exc}") from exc
        if left:
            self._resync = True
            self.link_stats.write_timeouts += 1
            if fd is not None:
                _discard_output(fd)
            raise LinkStalled(
                f"the SLCAN adapter on {port.port} stopped reading: {len(payload) - left} of {len(payload)} bytes "
                f"taken in {timeout_s * 1000:.0f} ms"
            )
        self._resync = False

    def shutdown(self) -> None:
        """`C` (close the CAN channel), then close the port, all within `close_timeout_s`: a hung
        adapter gets its `C` abandoned and the port closed anyway, never a hung process."""
        if self._is_shutdown:
            return
        can.BusABC.shutdown(self)  # python-can's slcanBus.shutdown would write `C` without a deadline
        port = self.serialPortOrig
        deadline = time.monotonic() + self.close_timeout_s
        delivered = False
        try:
            self.write_bytes(b"C\r", self.close_timeout_s)
            fd = _fileno(port)
            delivered = fd is None or _wait_output_drained(fd, deadline)
        except LinkError:
            pass
        finally:
            if not delivered:
                self.link_stats.close_abandoned += 1
            _close_quietly(port, discard=not delivered)


def _fileno(port) -> int | None:
    try:
        return port.fileno()
    except Exception:  # pyserial URLs without a file descriptor (loop://, socket://)
        return None


def _write_fd(fd: int, payload: bytes, deadline: float) -> int:
    """Write to a non-blocking descriptor (pyserial opens ports O_NONBLOCK) until done or the
    deadline; returns the number of bytes not written."""
    view = memoryview(payload)
    while view:
        try:
            view = view[os.write(fd, view):]
            continue
        except BlockingIOError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            break
        select.select([], [fd], [], left)
    return len(view)


def _discard_output(fd: int) -> None:
    """Drop bytes the OS still holds for the adapter (a pty discards its peer's unread input)."""
    try:
        termios.tcflush(fd, termios.TCOFLUSH)
    except (termios.error, OSError):
        pass


def _wait_output_drained(fd: int, deadline: float) -> bool:
    """Whether the OS handed everything written to the adapter before the deadline (TIOCOUTQ)."""
    buf = bytearray(4)
    while True:
        try:
            fcntl.ioctl(fd, termios.TIOCOUTQ, buf)
        except OSError:
            return True  # not a tty (nothing queued that we could see)
        if struct.unpack("i", buf)[0] == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)


def _close_quietly(port, discard: bool) -> None:
    """Close the port; with `discard`, drop unsent output first (a USB tty's close otherwise waits up
    to closing_wait, 30 s by default, for an adapter that stopped reading)."""
    try:
        fd = _fileno(port)
        if discard and fd is not None:
            _discard_output(fd)
        port.close()
    except Exception:  # the device may already be gone; closing must not raise
        pass


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
    `write_timeout_s` bounds every write (an adapter that stops reading raises LinkStalled instead
    of hanging the caller); `close_timeout_s` bounds `close()`.
    """

    def __init__(
        self,
        channel: str,
        *,
        interface: str = "slcan",
        bitrate: int = 1_000_000,
        settle_s: float = 0.0,
        open_reply_timeout_s: float = 0.2,
        write_timeout_s: float = 0.05,
        close_timeout_s: float = 0.2,
    ) -> None:
        if write_timeout_s <= 0 or close_timeout_s <= 0:
            raise ValueError("write and close timeouts must be positive (a write without a deadline can hang for good)")
        self.channel = channel
        self.interface = interface
        self.bitrate = bitrate
        self.settle_s = settle_s
        self.open_reply_timeout_s = open_reply_timeout_s
        self.write_timeout_s = write_timeout_s
        self.close_timeout_s = close_timeout_s
        self._bus: can.BusABC | None = None
        self._stats = LinkStats()
        self.startup_rejections = 0

    # -- life cycle --------------------------------------------------------------------------------
    def open(self) -> SlcanLink:
        """Open the bus, or raise LinkError having left nothing open."""
        if self._bus is not None:
            return self
        try:
            if self.interface == "slcan":
                bus = SlcanSerialBus(self.channel, bitrate=self.bitrate, sleep_after_open=self.settle_s,
                                     write_timeout_s=self.write_timeout_s, close_timeout_s=self.close_timeout_s)
            else:
                bus = can.Bus(interface=self.interface, channel=self.channel, bitrate=self.bitrate)
        except (can.CanError, OSError, ValueError) as exc:
            cause = exc.__cause__ or exc
            raise LinkError(f"cannot open the CAN adapter on '{self.channel}' ({self.interface}): {cause}") from exc
        if isinstance(bus, SlcanSerialBus):
            self._stats = bus.link_stats
            try:
                self._drain_open_replies(bus)
            except BaseException as exc:
                bus.shutdown()
                if isinstance(exc, LinkError):
                    raise type(exc)(f"cannot open the CAN adapter on '{self.channel}': {exc}") from exc
                raise
        self._bus = bus
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
        """Close the channel and the port, bounded by `close_timeout_s`; never raises."""
        bus, self._bus = self._bus, None
        if bus is None:
            return
        try:
            bus.shutdown()
        except Exception:  # the device may already be gone; closing must not raise
            port = getattr(bus, "serialPortOrig", None)
            if port is not None:
                _close_quietly(port, discard=True)

    @property
    def is_open(self) -> bool:
        return self._bus is not None

    @property
    def stats(self) -> LinkStats:
        return self._stats

    def __enter__(self) -> SlcanLink:
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
                msg = can.Message(arbitration_id=can_id, is_extended_id=can_id > 0x7FF, data=data)
                bus.send(msg, timeout=self.write_timeout_s)
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
