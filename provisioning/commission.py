"""Commissioning a device on site: read every point, judge it, optionally actuate, sign the record.

The technician on a ladder runs ``jikimi provision commission --profile P --port DEV`` and
gets, point by point: the raw value, the decoded value, its quality, and a verdict. The
checks:

- the device answers every point (no timeout, CRC error or exception);
- each value is inside the profile's valid range and is not the sensor-fault value;
- multi-register numbers are plausible in the declared byte/word order: a float that is
  absurd as declared (NaN, infinite, or out of range) but sensible with its words swapped is
  flagged "word order looks swapped" (the most common wiring-to-profile mistake).

An actuation test runs only with ``--actuate POINT=VALUE`` and a typed confirmation; it writes
the value and reads the profile's read-back point until it shows the expected state.

The record (JSON, plus a readable summary) is signed with the device's key (ECDSA P-256,
the key from enrolment) so the hub can tell who commissioned what; it is uploaded to the hub
when it can be reached.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import math
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.config import Endpoint
from edge.drivers.codec import raw_to_words, words_to_raw
from edge.drivers.modbus import ModbusDevice, ModbusLine
from edge.drivers.readings import Quality, Reading
from edge.drivers.scheduler import BusScheduler, DeviceLink
from edge.drivers.serial_line import SerialLineDevice
from edge.errors import CodecError, DeviceError
from shared.errors import ProvisioningError
from shared.profiles import Order, Point, PointType, Profile, Transport


class CommissionError(ProvisioningError):
    """Commissioning could not run (no port, bad key, refused actuation...)."""


@dataclass(frozen=True)
class PointResult:
    name: str
    value: str
    quality: str
    verdict: str  # ok | warn | fail
    note: str = ""


@dataclass
class Record:
    device: str
    model: str
    profile: str
    profile_sha256: str
    endpoint: str
    technician: str
    at: str
    points: list[PointResult] = field(default_factory=list)
    actuation: str = ""
    passed: bool = False
    signature: str = ""
    signer_public_key: str = ""

    def body(self) -> bytes:
        d = asdict(self)
        d.pop("signature")
        return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_port(text: str) -> Endpoint:
    if text.startswith("tcp://"):
        host, _, port = text[6:].rpartition(":")
        if not host or not port.isdigit():
            raise CommissionError(f"--port {text!r}: expected tcp://HOST:PORT")
        return Endpoint("tcp", host=host, port=int(port))
    if text.startswith("/"):
        return Endpoint("rtu", path=text)
    raise CommissionError(f"--port {text!r}: a serial device such as /dev/ttyUSB0, or tcp://HOST:PORT")


def _swapped_words(point: Point, raw: object) -> float | None:
    """The value the same registers would give in the other word order (None if not applicable)."""
    if point.type not in (PointType.F32, PointType.U32, PointType.I32, PointType.F64):
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    try:
        words = raw_to_words(point.type, raw, point.byte_order, point.word_order)
        other = Order.BIG if point.word_order is Order.LITTLE else Order.LITTLE
        swapped = words_to_raw(point.type, words, point.byte_order, other)
    except CodecError:
        return None
    return float(swapped) * point.scale + point.offset


def _in_range(point: Point, value: float) -> bool:
    """Plausible: finite, not a denormal-sized crumb (what swapped float words look like), in range."""
    if math.isnan(value) or math.isinf(value):
        return False
    if point.type in (PointType.F32, PointType.F64) and value != 0.0 and abs(value) < 1e-30:
        return False
    lo = point.valid_min if point.valid_min is not None else -1e6
    hi = point.valid_max if point.valid_max is not None else 1e6
    return lo <= value <= hi


def judge(point: Point, reading: Reading) -> PointResult:
    """The verdict on one point's reading (pure)."""
    shown = "" if reading.value is None else str(reading.value)
    if reading.quality is Quality.COMM_FAIL:
        return PointResult(point.name, shown, reading.quality.value, "fail", reading.error or "no answer")
    if reading.quality is Quality.SENSOR_FAULT:
        return PointResult(point.name, shown, reading.quality.value, "fail", "the device reports a sensor fault")
    value = reading.value
    if isinstance(value, int | float) and not isinstance(value, bool):
        swapped = _swapped_words(point, reading.raw)
        if not _in_range(point, float(value)):
            if swapped is not None and _in_range(point, swapped):
                return PointResult(point.name, shown, reading.quality.value, "fail",
                                   f"word order looks swapped: with the other word order it reads {swapped:.4g}")
            return PointResult(point.name, shown, reading.quality.value, "fail",
                               f"outside the valid range [{point.valid_min}, {point.valid_max}]")
    if reading.quality is Quality.OUT_OF_RANGE:
        return PointResult(point.name, shown, reading.quality.value, "fail", "outside the valid range")
    return PointResult(point.name, shown, reading.quality.value, "ok")


async def _open(profile: Profile, endpoint: Endpoint, unit_id: int | None, stack: AsyncExitStack) -> BusScheduler:
    link: DeviceLink
    if profile.transport.type is Transport.SERIAL_LINE:
        serial_link = await stack.enter_async_context(SerialLineDevice("device", profile, endpoint.path,
                                                                       unit_id=unit_id))
        await serial_link.connect()  # the technician hears "cannot open" at once, not per point
        link = serial_link
    else:
        if profile.transport.type is Transport.MODBUS_TCP and endpoint.scheme != "tcp":
            raise CommissionError(f"{profile.model} speaks Modbus TCP: use --port tcp://HOST:PORT")
        line = (ModbusLine.tcp(endpoint.host, endpoint.port, profile.transport.timeout_s)
                if endpoint.scheme == "tcp" else ModbusLine.rtu(endpoint.path, profile.transport))
        await stack.enter_async_context(line)
        await line.connect()  # the technician hears "cannot connect" at once, not per point
        link = ModbusDevice("device", profile, line, unit_id)
    return BusScheduler([link], backoff_initial_s=0.0, backoff_max_s=0.0)


async def commission(
    profile: Profile,
    profile_path: Path,
    port: str,
    *,
    technician: str,
    unit_id: int | None = None,
    actuate: tuple[str, str] | None = None,
    confirm: Callable[[str], bool] = lambda _q: False,
    progress: Callable[[int, int, PointResult], None] = lambda _i, _n, _r: None,
    verify_timeout_s: float = 30.0,
) -> Record:
    endpoint = parse_port(port)
    rec = Record(device=profile.model, model=profile.model, profile=profile_path.name, profile_sha256=profile.hash,
                 endpoint=port, technician=technician, at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    async with AsyncExitStack() as stack:
        sched = await _open(profile, endpoint, unit_id, stack)
        points = profile.polled
        for i, point in enumerate(points, 1):
            got = await sched.read_now("device", [point.name])
            reading = next(r for r in got if r.point == point.name)
            result = judge(point, reading)
            rec.points.append(result)
            progress(i, len(points), result)
        if actuate is not None:
            rec.actuation = await _actuate(profile, sched, actuate, confirm, verify_timeout_s)
    rec.passed = all(p.verdict != "fail" for p in rec.points) and not rec.actuation.startswith("failed")
    return rec


async def _actuate(profile: Profile, sched: BusScheduler, actuate: tuple[str, str],
                   confirm: Callable[[str], bool], timeout_s: float) -> str:
    name, raw_value = actuate
    point = profile.points.get(name)
    if point is None or not point.writable or point.readback is None:
        raise CommissionError(f"--actuate {name}: not a writable point with a read-back in {profile.model}")
    value: bool | str = raw_value
    if point.type is PointType.BOOL:
        value = raw_value.lower() in ("1", "true", "on", "yes")
    if point.allowed and value not in point.allowed:
        raise CommissionError(f"--actuate {name}={raw_value}: allowed values are {list(point.allowed)}")
    expect = point.expect.get(str(value), value) if isinstance(value, str) else value
    if not confirm(f"Write {name}={value!r} to the device and wait for {point.readback}={expect!r}? "
                   "Make sure nobody is in the way. Type 'yes' to go on: "):
        return "skipped: not confirmed"
    try:
        await sched.write("device", name, value)
    except DeviceError as exc:
        return f"failed: write refused: {exc}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        got = await sched.read_now("device", [point.readback])
        if any(r.point == point.readback and r.value == expect for r in got):
            return f"ok: {name}={value!r} → {point.readback}={expect!r}"
        await asyncio.sleep(0.25)
    return f"failed: {point.readback} did not reach {expect!r} within {timeout_s:g} s"


def sign(rec: Record, key_path: Path) -> None:
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise CommissionError(f"{key_path}: cannot load the signing key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CommissionError(f"{key_path}: not an ECDSA key")
    rec.signer_public_key = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    rec.signature = base64.b64encode(key.sign(rec.body(), ec.ECDSA(hashes.SHA256()))).decode()


def verify(rec: Record) -> bool:
    key = serialization.load_pem_public_key(rec.signer_public_key.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(base64.b64decode(rec.signature), rec.body(), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def summary(rec: Record) -> str:
    lines = [f"Commissioning {rec.model} ({rec.profile}, sha256 {rec.profile_sha256[:12]}…) at {rec.endpoint}",
             f"by {rec.technician} at {rec.at}", ""]
    width = max((len(p.name) for p in rec.points), default=10)
    for p in rec.points:
        lines.append(f"  {p.verdict.upper():4}  {p.name:<{width}}  {p.value:>14}  {p.quality:<12} {p.note}")
    if rec.actuation:
        lines += ["", f"  actuation: {rec.actuation}"]
    lines += ["", "PASSED" if rec.passed else "FAILED: see the lines marked FAIL"]
    return "\n".join(lines)


def digest(rec: Record) -> str:
    return hashlib.sha256(rec.body()).hexdigest()
