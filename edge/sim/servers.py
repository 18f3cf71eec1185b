"""Simulated devices on real transports: Modbus TCP, Modbus RTU on a pty or serial port, and
the ASCII serial line protocol — each serving exactly the points its profile declares.

Use in-process (tests, the edge agent's tests, the demo)::

    async with run_simulator(profile, transport="tcp") as sim:
        sim.address            # "tcp://127.0.0.1:40123" (or the pty path for "pty")
        sim.physics.water.depth_cm = 20.0
        sim.faults.silent = True

or several Modbus RTU devices on one line with :func:`run_rtu_bus`.

Register map: a read or write touching an address no point declares answers exception 2
(illegal data address), unless the profile's ``max_gap`` says the device reads unused
registers as zero. Writes to points the profile does not mark writable answer exception 2;
values outside ``allowed`` answer exception 3.

Faults (:class:`Faults`, settable at run time and from ``jikimi sim run``): ``silent`` (no
answer), ``garbage`` (random bytes instead of the answer), ``bad_crc`` (a corrupted checksum),
``exception`` (answer every request with that exception code), ``stuck`` (points frozen at
their current value) and ``sensor_fault`` (points report the profile's sensor-fault value).

The Modbus framing here is written from the specification (not pymodbus), so a pymodbus or
``mbpoll`` client reading these servers is an independent check of both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import struct
import time
import tty
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import serial

from edge.drivers.codec import Value, decode, encode, raw_to_value, raw_to_words, value_to_raw
from edge.drivers.serial_line import (
    ERR_BAD_VALUE,
    ERR_NOT_WRITABLE,
    ERR_UNKNOWN_KEY,
    frame,
    raw_to_text,
    text_to_raw,
    unframe,
)
from edge.errors import CodecError, FramingError
from edge.sim.physics import DevicePhysics, physics_for
from shared.errors import ConfigError
from shared.profiles import Point, PointType, Profile, Table, Transport

ILLEGAL_FUNCTION = 1
ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3

_READ_FC = {1: Table.COIL, 2: Table.DISCRETE, 3: Table.HOLDING, 4: Table.INPUT}


@dataclass
class Faults:
    """What is wrong with a simulated device right now (mutable at run time)."""

    silent: bool = False
    garbage: bool = False
    bad_crc: bool = False
    exception: int | None = None
    stuck: set[str] = field(default_factory=set)
    sensor_fault: set[str] = field(default_factory=set)

    def clear(self) -> None:
        self.silent = self.garbage = self.bad_crc = False
        self.exception = None
        self.stuck.clear()
        self.sensor_fault.clear()


class SimDevice:
    """One simulated device: its profile, physics, faults and the registers it serves."""

    def __init__(
        self,
        profile: Profile,
        unit_id: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
    ) -> None:
        self.profile = profile
        self.unit_id = profile.transport.unit_id if unit_id is None else unit_id
        self.physics: DevicePhysics = physics_for(profile)
        self.writes: list[tuple[str, Value]] = []
        """Every write the device accepted, in order (what tests count: writes at the device)."""
        self.faults = Faults()
        self.requests = 0
        self._clock = clock
        self._last = clock()
        self.noise = random.Random(seed)  # noqa: S311 - fault noise, not cryptography
        self._stuck: dict[str, Value] = {}
        self._index: dict[Table, dict[int, Point]] = {t: {} for t in Table}
        for p in profile.polled:
            if p.table is not None and p.address is not None:
                for a in range(p.address, p.end):
                    self._index[p.table][a] = p
        self._span = {t: (min(ix), max(ix)) for t, ix in self._index.items() if ix}

    # --- values ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Advance physics to now."""
        now = self._clock()
        self.physics.step(now - self._last)
        self._last = now

    def value(self, point: Point) -> Value:
        """What the device reports for ``point`` now (faults applied)."""
        if point.name in self._stuck:
            return self._stuck[point.name]
        value = self.physics.values().get(point.name, _zero(point))
        if point.name in self.faults.stuck:
            self._stuck[point.name] = value
        return value

    def _words(self, point: Point) -> tuple[int, ...]:
        if point.name in self.faults.sensor_fault:
            return _fault_words(point)
        try:
            return encode(point, _clamp(point, self.value(point)))
        except CodecError:
            return _fault_words(point)

    def text(self, point: Point) -> str:
        if point.name in self.faults.sensor_fault:
            return str(point.sensor_fault if point.sensor_fault is not None else 65535)
        return raw_to_text(point, value_to_raw(point, self.value(point)))

    def _sync_faults(self) -> None:
        for name in list(self._stuck):
            if name not in self.faults.stuck:
                del self._stuck[name]

    # --- Modbus --------------------------------------------------------------------------

    def read(self, table: Table, address: int, count: int) -> list[int] | int:
        """Words (or 0/1 bits) at ``address``; an exception code if not all are declared."""
        self.refresh()
        self._sync_faults()
        ix = self._index[table]
        lenient = self.profile.transport.max_gap > 0 and table in self._span
        out: list[int] = []
        cache: dict[str, tuple[int, ...]] = {}
        for a in range(address, address + count):
            p = ix.get(a)
            if p is None:
                lo, hi = self._span.get(table, (1, 0))
                if lenient and lo <= a <= hi:
                    out.append(0)
                    continue
                return ILLEGAL_ADDRESS
            if p.name not in cache:
                cache[p.name] = self._words(p)
            assert p.address is not None
            out.append(cache[p.name][a - p.address])
        return out

    def write(self, table: Table, address: int, words: Sequence[int]) -> int | None:
        """Store a write from the bus; an exception code if it is refused."""
        self.refresh()
        ix = self._index[table]
        a = address
        updates: list[tuple[Point, Value]] = []
        while a < address + len(words):
            p = ix.get(a)
            if p is None or not p.writable or p.address != a or p.end > address + len(words):
                return ILLEGAL_ADDRESS
            try:
                _, value = decode(p, words[a - address : p.end - address])
            except CodecError:
                return ILLEGAL_VALUE
            if p.allowed and value not in p.allowed:
                return ILLEGAL_VALUE
            updates.append((p, value))
            a = p.end
        for p, value in updates:
            self.writes.append((p.name, value))
            self.physics.command(p.name, value)
        return None

    def handle_pdu(self, pdu: bytes) -> bytes:
        """One Modbus request PDU -> its response PDU (fault ``exception`` applied)."""
        self.requests += 1
        if not pdu:
            return bytes([0x80, ILLEGAL_FUNCTION])
        fc = pdu[0]
        if self.faults.exception is not None:
            return bytes([fc | 0x80, self.faults.exception])
        try:
            return self._dispatch(fc, pdu)
        except (struct.error, IndexError):
            return bytes([fc | 0x80, ILLEGAL_VALUE])

    def _dispatch(self, fc: int, pdu: bytes) -> bytes:
        if fc in _READ_FC:
            table = _READ_FC[fc]
            address, count = struct.unpack(">HH", pdu[1:5])
            if not 1 <= count <= (2000 if table.is_bits else 125):
                return bytes([fc | 0x80, ILLEGAL_VALUE])
            got = self.read(table, address, count)
            if isinstance(got, int):
                return bytes([fc | 0x80, got])
            data = _pack_bits(got) if table.is_bits else _pack_words(got)
            return bytes([fc, len(data)]) + data
        if fc == 5:
            address, raw = struct.unpack(">HH", pdu[1:5])
            if raw not in (0, 0xFF00):
                return bytes([fc | 0x80, ILLEGAL_VALUE])
            err = self.write(Table.COIL, address, [int(raw == 0xFF00)])
            return bytes([fc | 0x80, err]) if err else pdu[:5]
        if fc == 6:
            address, raw = struct.unpack(">HH", pdu[1:5])
            err = self.write(Table.HOLDING, address, [raw])
            return bytes([fc | 0x80, err]) if err else pdu[:5]
        if fc in (15, 16):
            address, count, nbytes = struct.unpack(">HHB", pdu[1:6])
            data = pdu[6 : 6 + nbytes]
            if len(data) != nbytes:
                return bytes([fc | 0x80, ILLEGAL_VALUE])
            if fc == 15:
                values = [(data[i // 8] >> (i % 8)) & 1 for i in range(count)]
                err = self.write(Table.COIL, address, values)
            else:
                values = [int.from_bytes(data[i : i + 2], "big") for i in range(0, 2 * count, 2)]
                err = self.write(Table.HOLDING, address, values)
            return bytes([fc | 0x80, err]) if err else pdu[:5]
        return bytes([fc | 0x80, ILLEGAL_FUNCTION])

    # --- serial line ---------------------------------------------------------------------

    def handle_line(self, payload: str) -> str | None:
        """One serial-line request payload -> reply payload (None: not for this unit)."""
        parts = payload.split(":", 3)
        if len(parts) < 3 or parts[0] != f"{self.unit_id:02d}":
            return None
        self.requests += 1
        self.refresh()
        self._sync_faults()
        unit, verb, key = parts[0], parts[1], parts[2]
        if self.faults.exception is not None:
            return f"{unit}:ER:{self.faults.exception}"
        point = next((p for p in self.profile.polled if p.key == key), None)
        if point is None or verb not in ("R", "W"):
            return f"{unit}:ER:{ERR_UNKNOWN_KEY}"
        if verb == "W":
            if not point.writable or len(parts) != 4:
                return f"{unit}:ER:{ERR_NOT_WRITABLE}"
            try:
                value = raw_to_value(point, text_to_raw(point, parts[3]))
            except CodecError:
                return f"{unit}:ER:{ERR_BAD_VALUE}"
            if point.allowed and value not in point.allowed:
                return f"{unit}:ER:{ERR_BAD_VALUE}"
            self.writes.append((point.name, value))
            self.physics.command(point.name, value)
        return f"{unit}:OK:{key}:{self.text(point)}"


def _zero(point: Point) -> Value:
    if point.type is PointType.BOOL:
        return False
    if point.type is PointType.ENUM:
        return min(point.values, key=lambda k: point.values[k])
    if point.type is PointType.BITFIELD:
        return ()
    if point.type is PointType.STR:
        return ""
    return 0


def _clamp(point: Point, value: Value) -> Value:
    """Integers saturate at their type's limits, as a transmitter's output would."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if point.type in (PointType.F32, PointType.F64):
        return value
    lo, hi = {
        PointType.U16: (0, 0xFFFF),
        PointType.I16: (-0x8000, 0x7FFF),
        PointType.U32: (0, 0xFFFFFFFF),
        PointType.I32: (-0x80000000, 0x7FFFFFFF),
    }.get(point.type, (0, 0xFFFF))
    raw = round((value - point.offset) / point.scale)
    raw = min(hi, max(lo, raw))
    return raw * point.scale + point.offset if (point.scale, point.offset) != (1.0, 0.0) else raw


def _fault_words(point: Point) -> tuple[int, ...]:
    if point.table is not None and point.table.is_bits:
        return (0,)
    if point.sensor_fault is not None:
        return raw_to_words(point.type, point.sensor_fault, point.byte_order, point.word_order)
    if point.type in (PointType.F32, PointType.F64):
        return raw_to_words(point.type, math.nan, point.byte_order, point.word_order)
    return (0xFFFF,) * point.type.registers


def _pack_words(words: Sequence[int]) -> bytes:
    return b"".join(w.to_bytes(2, "big") for w in words)


def _pack_bits(bits: Sequence[int]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


# --- Modbus RTU framing ------------------------------------------------------------------


def crc16(data: bytes) -> int:
    """Modbus RTU CRC-16 (polynomial 0xA001, initial 0xFFFF)."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    body = bytes([unit]) + pdu
    return body + crc16(body).to_bytes(2, "little")


def rtu_request_length(buf: bytes) -> int | None:
    """Length of the request frame at the start of ``buf``; None until enough bytes are in."""
    if len(buf) < 2:
        return None
    fc = buf[1]
    if 1 <= fc <= 6:
        return 8
    if fc in (15, 16):
        return None if len(buf) < 7 else 9 + buf[6]
    return 0  # unknown function: resynchronise


class RtuBus:
    """The devices on one RTU line: bytes in, response frames out (sans I/O)."""

    def __init__(self, devices: Sequence[SimDevice]) -> None:
        self.devices = {d.unit_id: d for d in devices}
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            n = rtu_request_length(bytes(self._buf))
            if n is None or len(self._buf) < n:
                return out
            if n == 0:
                del self._buf[0]
                continue
            frame_ = bytes(self._buf[:n])
            if crc16(frame_[:-2]).to_bytes(2, "little") != frame_[-2:]:
                del self._buf[0]  # not a frame: slide one byte and try again
                continue
            del self._buf[:n]
            dev = self.devices.get(frame_[0])
            if dev is None or dev.faults.silent:  # a silent device hears nothing either
                continue
            response = dev.handle_pdu(frame_[1:-2])
            reply = _faulty(dev, rtu_frame(dev.unit_id, response))
            if reply:
                out.append(reply)


def _faulty(dev: SimDevice, reply: bytes) -> bytes:
    f = dev.faults
    if f.silent:
        return b""
    if f.garbage:
        return bytes(dev.noise.randrange(256) for _ in range(len(reply)))
    if f.bad_crc:
        return reply[:-1] + bytes([reply[-1] ^ 0x5A])
    return reply


class LineProtocolBus:
    """Serial-line protocol devices sharing one line: bytes in, reply frames out."""

    def __init__(self, devices: Sequence[SimDevice]) -> None:
        self.devices = list(devices)
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while b"\n" in self._buf:
            line, _, rest = bytes(self._buf).partition(b"\n")
            self._buf = bytearray(rest)
            for dev in self.devices:
                ck = dev.profile.transport.checksum
                try:
                    payload = unframe(line, ck)
                except FramingError:
                    continue
                if dev.faults.silent:
                    continue
                reply = dev.handle_line(payload)
                if reply is not None:
                    framed = frame(reply, ck)
                    if dev.faults.bad_crc:
                        framed = framed[:-4] + b"00\r\n"
                    framed = _faulty_line(dev, framed)
                    if framed:
                        out.append(framed)
        return out


def _faulty_line(dev: SimDevice, reply: bytes) -> bytes:
    if dev.faults.silent:
        return b""
    if dev.faults.garbage:
        return bytes(dev.noise.randrange(32, 127) for _ in range(len(reply) - 2)) + b"\r\n"
    return reply


# --- transports --------------------------------------------------------------------------

Feeder = Callable[[bytes], list[bytes]]


class FdServer:
    """Serves a feeder on a file descriptor (pty master or serial port) via the event loop."""

    def __init__(self, fd: int, feeder: Feeder) -> None:
        self.fd = fd
        self.feeder = feeder

    def start(self) -> None:
        os.set_blocking(self.fd, False)
        asyncio.get_running_loop().add_reader(self.fd, self._on_readable)

    def stop(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: the other side of the pty is closed for the moment
            return
        for reply in self.feeder(data):
            write_all(self.fd, reply)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            continue
        except OSError:
            return
        view = view[n:]


@dataclass
class Pty:
    """A pseudo-terminal pair; the simulator holds the master, a client opens ``path``."""

    master: int
    slave: int
    path: str

    @classmethod
    def open(cls) -> Pty:
        master, slave = os.openpty()
        tty.setraw(slave)
        return cls(master, slave, os.ttyname(slave))

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass
class Simulator:
    """A running simulator: where to reach it and the devices it serves."""

    devices: list[SimDevice]
    address: str  # "tcp://HOST:PORT" or a device path
    host: str = ""
    port: int = 0

    @property
    def device(self) -> SimDevice:
        return self.devices[0]

    @property
    def physics(self) -> DevicePhysics:
        return self.devices[0].physics

    @property
    def faults(self) -> Faults:
        return self.devices[0].faults

    @property
    def path(self) -> str:
        return self.address

    @property
    def transport(self) -> str:
        """What an edge site config names to reach this simulator (``devices.X.transport``):
        ``tcp://HOST:PORT``, ``rtu://PATH`` or ``serial://PATH`` by the profile's transport."""
        if self.address.startswith("tcp://"):
            return self.address
        scheme = "serial://" if self.device.profile.transport.type is Transport.SERIAL_LINE else "rtu://"
        return scheme + self.address


@contextlib.asynccontextmanager
async def run_simulator(
    profile: Profile,
    transport: str = "auto",
    host: str = "127.0.0.1",
    port: int = 0,
    serial_device: str = "",
    unit_id: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[Simulator]:
    """Serve one simulated device of ``profile``.

    ``transport``: ``tcp`` (Modbus TCP on ``host:port``; 0 picks a free port), ``pty`` (RTU or
    the line protocol on a new pseudo-terminal), ``serial`` (on ``serial_device``), or
    ``auto``: ``tcp`` for Modbus TCP profiles, ``pty`` otherwise.
    """
    dev = SimDevice(profile, unit_id=unit_id, clock=clock)
    if transport == "auto":
        transport = "tcp" if profile.transport.type is Transport.MODBUS_TCP else "pty"
    if transport == "tcp":
        if profile.transport.type is Transport.SERIAL_LINE:
            raise ConfigError(profile.source, "transport.type", "a serial_line device has no TCP server")
        async with _serve_tcp(dev, host, port) as sim:
            yield sim
    else:
        async with run_bus([dev], transport, serial_device) as sim:
            yield sim


@contextlib.asynccontextmanager
async def run_rtu_bus(
    devices: Sequence[SimDevice], transport: str = "pty", serial_device: str = ""
) -> AsyncIterator[Simulator]:
    """Several Modbus RTU devices (distinct unit ids) on one pty or serial line."""
    async with run_bus(devices, transport, serial_device) as sim:
        yield sim


@contextlib.asynccontextmanager
async def run_bus(
    devices: Sequence[SimDevice], transport: str = "pty", serial_device: str = ""
) -> AsyncIterator[Simulator]:
    line = devices[0].profile.transport.type
    feeder: Feeder = LineProtocolBus(devices).feed if line is Transport.SERIAL_LINE else RtuBus(devices).feed
    if transport == "pty":
        pty = Pty.open()
        server = FdServer(pty.master, feeder)
        server.start()
        try:
            yield Simulator(list(devices), pty.path)
        finally:
            server.stop()
            pty.close()
    elif transport == "serial":
        spec = devices[0].profile.transport
        port = serial.Serial(
            serial_device,
            baudrate=spec.baudrate,
            bytesize=spec.bytesize,
            parity=spec.parity.value,
            stopbits=spec.stopbits,
            timeout=0,
        )
        server = FdServer(port.fileno(), feeder)
        server.start()
        try:
            yield Simulator(list(devices), serial_device)
        finally:
            server.stop()
            port.close()
    else:
        raise ValueError(f"unknown transport {transport!r} (tcp, pty, serial)")


@contextlib.asynccontextmanager
async def _serve_tcp(dev: SimDevice, host: str, port: int) -> AsyncIterator[Simulator]:
    conns: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conns.add(task)
        try:
            while True:
                header = await reader.readexactly(7)
                tid, pid, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(max(0, length - 1))
                if dev.faults.silent:
                    continue
                response = dev.handle_pdu(pdu)
                reply = struct.pack(">HHHB", tid, pid, len(response) + 1, unit) + response
                if dev.faults.garbage:
                    reply = bytes(dev.noise.randrange(256) for _ in range(len(reply)))
                elif dev.faults.bad_crc:  # TCP has no CRC: a corrupt MBAP header instead
                    reply = struct.pack(">HHHB", tid, 0x5A5A, 300, unit) + response
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the client hung up; nothing to answer
        finally:
            conns.discard(task)
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    bound = server.sockets[0].getsockname()
    try:
        yield Simulator([dev], f"tcp://{bound[0]}:{bound[1]}", bound[0], bound[1])
    finally:
        server.close()
        for t in list(conns):
            t.cancel()
        await server.wait_closed()
