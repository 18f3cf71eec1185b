"""The plain ASCII serial line protocol of river gates and signs, and its driver.

Framing (pure functions at the top of this module)::

    request   UU:R:KEY*CS\\r\\n            read one point
              UU:W:KEY:VALUE*CS\\r\\n      write one point
    response  UU:OK:KEY:VALUE*CS\\r\\n     the point's (new) value
              UU:ER:CODE*CS\\r\\n          1 unknown key, 2 bad value, 3 not writable, 4 busy

``UU`` is the unit id (two decimal digits), ``CS`` the checksum of the UTF-8 payload bytes
before ``*`` in two upper-case hex digits (XOR or low byte of the sum, per the profile).
Enum, bool and integer values travel as raw decimal integers, floats in decimal, text as is
(it may not contain ``*`` or line breaks). Exactly one request is outstanding at a time.

I/O: :class:`SerialLineDevice` opens the port with pyserial only to configure it (baud,
parity, raw mode) and then does non-blocking reads and writes on its file descriptor through
the event loop (``loop.add_reader``), so it needs no serial-asyncio package and works on
ptys as well as real UARTs.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from types import TracebackType

import serial

from edge.drivers.codec import Raw, Value, raw_to_value, value_to_raw
from edge.errors import CodecError, DeviceError, DeviceException, DeviceTimeout, FramingError
from shared.profiles import Checksum, Point, PointType, Profile

log = logging.getLogger(__name__)

Decoded = tuple[Raw | str, Value] | CodecError

ERR_UNKNOWN_KEY = 1
ERR_BAD_VALUE = 2
ERR_NOT_WRITABLE = 3
ERR_BUSY = 4


def checksum(payload: bytes, kind: Checksum) -> str:
    """Two hex digits over ``payload``."""
    if kind is Checksum.XOR8:
        c = 0
        for b in payload:
            c ^= b
    else:
        c = sum(payload) & 0xFF
    return f"{c:02X}"


def frame(payload: str, kind: Checksum) -> bytes:
    """``payload`` with its checksum and line end, ready for the wire."""
    data = payload.encode()
    return data + b"*" + checksum(data, kind).encode() + b"\r\n"


def unframe(line: bytes, kind: Checksum) -> str:
    """The payload of one received line; :class:`FramingError` if it is not a valid frame."""
    line = line.rstrip(b"\r\n")
    payload, star, cs = line.rpartition(b"*")
    if not star or len(cs) != 2:
        raise FramingError(f"no checksum in {line[:40]!r}")
    if checksum(payload, kind).encode() != cs.upper():
        raise FramingError(f"checksum mismatch in {line[:40]!r}")
    try:
        return payload.decode()
    except UnicodeDecodeError as exc:
        raise FramingError(f"not UTF-8: {line[:40]!r}") from exc


def parse_reply(line: bytes, kind: Checksum, unit_id: int, name: str) -> str:
    """The body of one reply line from unit ``unit_id`` (after ``UU:OK:``).

    :class:`FramingError` for a corrupt frame, another unit's reply or an unknown status;
    :class:`DeviceException` for ``UU:ER:CODE`` (code 0 when it is not a number).
    """
    reply = unframe(line, kind)
    unit, _, rest = reply.partition(":")
    if unit != f"{unit_id:02d}":
        raise FramingError(f"{name}: reply from unit {unit!r}")
    status, _, body = rest.partition(":")
    if status == "ER":
        # isdigit() is also true for digits int() refuses ("²") and for more digits than
        # int() converts; neither may escape as a ValueError.
        code = int(body) if body.isascii() and body.isdigit() and len(body) <= 9 else 0
        raise DeviceException(f"{name}: error {code}", code)
    if status != "OK":
        raise FramingError(f"{name}: bad status {status!r}")
    return body


def raw_to_text(point: Point, raw: Raw | str) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, float) and not raw.is_integer():
        return repr(raw)
    return str(int(raw))


def text_to_raw(point: Point, text: str) -> Raw | str:
    """Wire text -> raw value of ``point`` (CodecError if it is not a number where one is due)."""
    if point.type is PointType.STR:
        return text
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise CodecError(f"{point.name}: {text!r} is not a number") from None


def decode_text(point: Point, text: str) -> Decoded:
    try:
        raw = text_to_raw(point, text)
        return raw, raw_to_value(point, raw)
    except CodecError as exc:
        return exc


class SerialLineDevice:
    """One device on a serial line speaking the ASCII protocol; ``async with`` owns the port.

    Implements the bus scheduler's device interface (``requests_for``, ``read``, ``write``).
    """

    def __init__(
        self,
        name: str,
        profile: Profile,
        port: str,
        unit_id: int | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.name = name
        self.profile = profile
        self.port = port
        spec = profile.transport
        self.unit_id = spec.unit_id if unit_id is None else unit_id
        self.timeout_s = spec.timeout_s if timeout_s is None else timeout_s
        self._serial: serial.Serial | None = None
        self._buf = bytearray()
        self._line: asyncio.Future[bytes] | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> SerialLineDevice:
        """Open the port, but never fail: a port missing at start (an unplugged adapter) is a
        ``comm_fail`` reading and an open breaker, not a stopped agent; each later request
        tries to open it again, paced by that breaker (edge/drivers/scheduler.py)."""
        try:
            await self.connect()
        except DeviceError as exc:
            log.warning("serial.open_failed", extra={"device": self.name, "port": self.port, "error": str(exc)})
        return self

    async def connect(self) -> None:
        """Open the port now or raise :class:`DeviceError` saying why (the technician's tools ask first)."""
        if self._serial is None:
            self._open()

    def _open(self) -> None:
        spec = self.profile.transport
        try:
            self._serial = serial.Serial(
                self.port,
                baudrate=spec.baudrate,
                bytesize=spec.bytesize,
                parity=spec.parity.value,
                stopbits=spec.stopbits,
                timeout=0,
            )
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"{self.name}: cannot open {self.port}: {exc}") from exc
        fd = self._serial.fileno()
        os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(fd, self._on_readable, fd)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._serial is not None:
            asyncio.get_running_loop().remove_reader(self._serial.fileno())
            self._serial.close()
            self._serial = None

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        self._buf += data
        while b"\n" in self._buf:
            line, _, rest = bytes(self._buf).partition(b"\n")
            self._buf = bytearray(rest)
            if self._line is not None and not self._line.done():
                self._line.set_result(line)

    async def request(self, payload: str) -> str:
        """Send one request and return the reply's payload (after ``UU:OK:``)."""
        if self._serial is None:
            self._open()
        assert self._serial is not None
        async with self._lock:
            self._buf.clear()
            self._line = asyncio.get_running_loop().create_future()
            try:
                os.write(self._serial.fileno(), frame(payload, self.profile.transport.checksum))
            except OSError as exc:
                raise DeviceError(f"{self.name}: write failed: {exc}") from exc
            try:
                async with asyncio.timeout(self.timeout_s):  # not wait_for: see drivers/scheduler.py
                    line = await self._line
            except TimeoutError:
                got = bytes(self._buf)
                if got:
                    raise FramingError(f"{self.name}: no complete frame, got {got[:40]!r}") from None
                raise DeviceTimeout(f"{self.name}: no answer in {self.timeout_s:g} s") from None
        return parse_reply(line, self.profile.transport.checksum, self.unit_id, self.name)

    def requests_for(self, points: Sequence[Point]) -> tuple[tuple[Point, ...], ...]:
        """One request per point: the protocol has no block reads."""
        return tuple((p,) for p in points if p.key is not None)

    async def read(self, points: Sequence[Point]) -> Mapping[str, Decoded]:
        out: dict[str, Decoded] = {}
        for p in points:
            body = await self.request(f"{self.unit_id:02d}:R:{p.key}")
            key, _, text = body.partition(":")
            if key != p.key:
                raise FramingError(f"{self.name}: asked {p.key}, got {key!r}")
            out[p.name] = decode_text(p, text)
        return out

    async def write(self, point: Point, value: Value) -> None:
        text = raw_to_text(point, value_to_raw(point, value))
        if any(c in text for c in "*\r\n"):
            raise CodecError(f"{point.name}: text may not contain '*' or line breaks")
        await self.request(f"{self.unit_id:02d}:W:{point.key}:{text}")
