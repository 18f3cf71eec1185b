"""Device-profile schema: a profile TOML parsed once into frozen types (DESIGN §4).

A profile declares one device model: its transport and framing, and its points. It is read
with :func:`load_profile`, which either returns a fully validated :class:`Profile` or raises
:class:`ProfileInvalid` (a :class:`~shared.errors.ProfileError`) listing *every* problem, each
as ``file: key: problem``. Nothing is dropped with a warning.

Layout of a profile::

    [device]      model, kind (flood_alarm|displacement|underpass|river_gate|rain_gauge),
                  vendor, description
    [transport]   type (modbus_rtu|modbus_tcp|serial_line) and its framing parameters
    [defaults]    byte_order, word_order, poll_s applied to points that do not say
    [points.NAME] table, address (0-based), type, byte_order, word_order, scale, offset,
                  unit, range = [min, max], poll_s, values = {label = raw} (enum),
                  bits = {label = bit} (bitfield), sensor_fault = raw, writable, allowed,
                  readback, expect = {written = read_back}, derived = {...}

Points on a ``serial_line`` device have ``key`` (the protocol's name for the point) instead
of ``table``/``address``, and may also use type ``str`` (free text, e.g. a sign's message).
A point with ``derived`` is computed by the edge from another point and never polled.

Rules enforced here: unknown keys are refused, values have the right types, register ranges
in one table never overlap, bit tables hold only ``bool`` points, every writable point names
its allowed values and an existing read-back point, and each kind has DESIGN §4's standard
points.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from shared import tomlread
from shared.errors import ProfileError
from shared.paths import resolve_profile
from shared.tomlread import Problems
from shared.tomlread import Table as TomlTable


class Transport(Enum):
    MODBUS_RTU = "modbus_rtu"
    MODBUS_TCP = "modbus_tcp"
    SERIAL_LINE = "serial_line"


class Table(Enum):
    """The four Modbus data tables."""

    COIL = "coil"
    DISCRETE = "discrete"
    INPUT = "input"
    HOLDING = "holding"

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)

    @property
    def is_writable(self) -> bool:
        return self in (Table.COIL, Table.HOLDING)


class PointType(Enum):
    BOOL = "bool"
    U16 = "u16"
    I16 = "i16"
    U32 = "u32"
    I32 = "i32"
    F32 = "f32"
    F64 = "f64"
    BITFIELD = "bitfield"
    ENUM = "enum"
    STR = "str"  # serial_line only

    @property
    def registers(self) -> int:
        """How many 16-bit registers one value takes."""
        if self in (PointType.U32, PointType.I32, PointType.F32):
            return 2
        if self is PointType.F64:
            return 4
        return 1


class Order(Enum):
    BIG = "big"
    LITTLE = "little"


class Kind(Enum):
    FLOOD_ALARM = "flood_alarm"
    DISPLACEMENT = "displacement"
    UNDERPASS = "underpass"
    RIVER_GATE = "river_gate"
    RAIN_GAUGE = "rain_gauge"


class Checksum(Enum):
    """Checksums a serial line protocol may use."""

    XOR8 = "xor8"  # NMEA-style: XOR of the payload bytes, two hex digits after '*'
    SUM8 = "sum8"  # low byte of the sum of the payload bytes


class Parity(Enum):
    NONE = "N"
    EVEN = "E"
    ODD = "O"


# DESIGN §4: the points each kind has at least.
STANDARD_POINTS: Mapping[Kind, tuple[str, ...]] = MappingProxyType(
    {
        Kind.FLOOD_ALARM: ("water_depth_cm", "alarm_active", "siren", "battery_v"),
        Kind.DISPLACEMENT: ("displacement_mm", "tilt_x_deg", "tilt_y_deg", "temperature_c"),
        Kind.UNDERPASS: ("water_depth_cm", "barrier_state", "barrier_cmd", "mode", "motor_fault"),
        Kind.RIVER_GATE: ("gate_state", "gate_cmd", "sign_message", "broadcast"),
        Kind.RAIN_GAUGE: ("rain_mm_total", "rain_mm_10min"),
    }
)

# DESIGN §4: the labels a standard enum point must offer.
STANDARD_LABELS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "barrier_state": frozenset({"open", "closing", "closed", "opening", "fault"}),
        "mode": frozenset({"remote", "local"}),
    }
)

Scalar = bool | int | float | str


@dataclass(frozen=True)
class TransportSpec:
    """How to reach the device and how it frames requests."""

    type: Transport
    unit_id: int = 1
    timeout_s: float = 0.5
    # serial lines
    baudrate: int = 9600
    bytesize: int = 8
    parity: Parity = Parity.NONE
    stopbits: int = 1
    # TCP
    port: int = 502
    # planner limits: the device rejects reads wider than these or across more than max_gap
    # undeclared registers (0: it rejects any read touching an undeclared register).
    max_registers: int = 125
    max_bits: int = 2000
    max_gap: int = 0
    # serial line protocol
    checksum: Checksum = Checksum.XOR8


@dataclass(frozen=True)
class Derived:
    """A point the edge computes from another one (e.g. 10-minute rain from the counter)."""

    source: str
    method: str  # "window_delta": source(now) - source(now - window_s)
    window_s: float


@dataclass(frozen=True)
class Point:
    """One named value on a device."""

    name: str
    type: PointType
    table: Table | None = None  # None on serial_line devices and for derived points
    address: int | None = None
    key: str | None = None  # serial_line protocol name
    byte_order: Order = Order.BIG
    word_order: Order = Order.BIG
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    valid_min: float | None = None
    valid_max: float | None = None
    poll_s: float = 1.0
    values: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    bits: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    sensor_fault: int | None = None  # raw value the device reports when its sensor failed
    writable: bool = False
    allowed: tuple[Scalar, ...] = ()
    readback: str | None = None
    expect: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    derived: Derived | None = None

    @property
    def count(self) -> int:
        """Registers (or bits, in a bit table) this point occupies."""
        if self.table is not None and self.table.is_bits:
            return 1
        return self.type.registers

    @property
    def labels(self) -> Mapping[int, str]:
        """Raw enum value -> label."""
        return MappingProxyType({raw: label for label, raw in self.values.items()})

    @property
    def end(self) -> int:
        """One past the last register/bit of this point."""
        assert self.address is not None
        return self.address + self.count


@dataclass(frozen=True)
class Profile:
    """A validated device profile."""

    source: str  # file name, for messages
    hash: str  # SHA-256 of the file's bytes, hex (sent in the birth message)
    model: str
    kind: Kind
    vendor: str
    description: str
    transport: TransportSpec
    points: Mapping[str, Point]

    def point(self, name: str) -> Point:
        return self.points[name]

    @property
    def polled(self) -> tuple[Point, ...]:
        """Points read from the device (everything but derived points)."""
        return tuple(p for p in self.points.values() if p.derived is None)


class ProfileInvalid(ProfileError):
    """A profile with one or more problems; ``errors`` holds each as its own ProfileError."""

    def __init__(self, errors: list[ProfileError]) -> None:
        first = errors[0]
        super().__init__(first.file, first.key, first.problem)
        self.errors = tuple(errors)

    def __str__(self) -> str:
        return "\n".join(
            f"{e.file}: {e.key}: {e.problem}" if e.key else f"{e.file}: {e.problem}"
            for e in self.errors
        )


def profile_hash(path: Path) -> str:
    """SHA-256 (hex) of a profile file's bytes, as announced in the birth message."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_profile(path: Path | str) -> Profile:
    """Read and validate one profile; raise :class:`ProfileInvalid` naming file and key."""
    path = resolve_profile(Path(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProfileError(path.name, "", f"cannot read: {exc.strerror}") from exc
    return parse_profile(data, path.name)


def parse_profile(data: bytes, source: str) -> Profile:
    """Validate profile bytes (``source`` names the file in errors)."""
    doc = tomlread.loads(data, source, error=ProfileError)
    parser = _Parser(source)
    profile = parser.profile(doc, hashlib.sha256(data).hexdigest())
    if parser.errors or profile is None:
        raise ProfileInvalid(parser.errors)
    return profile


# --- the parser -------------------------------------------------------------------------

_TOP_KEYS = {"device", "transport", "defaults", "points"}
_DEVICE_KEYS = {"model", "kind", "vendor", "description"}
_COMMON_TRANSPORT = {"type", "unit_id", "timeout_s"}
_SERIAL_KEYS = {"baudrate", "bytesize", "parity", "stopbits"}
_PLAN_KEYS = {"max_registers", "max_bits", "max_gap"}
_TRANSPORT_KEYS: Mapping[Transport, set[str]] = {
    Transport.MODBUS_RTU: _COMMON_TRANSPORT | _SERIAL_KEYS | _PLAN_KEYS,
    Transport.MODBUS_TCP: _COMMON_TRANSPORT | {"port"} | _PLAN_KEYS,
    Transport.SERIAL_LINE: _COMMON_TRANSPORT | _SERIAL_KEYS | {"checksum"},
}
_DEFAULT_KEYS = {"byte_order", "word_order", "poll_s"}
_POINT_KEYS = {
    "table",
    "address",
    "key",
    "type",
    "byte_order",
    "word_order",
    "scale",
    "offset",
    "unit",
    "range",
    "poll_s",
    "values",
    "bits",
    "sensor_fault",
    "writable",
    "allowed",
    "readback",
    "expect",
    "derived",
    "description",
}
_DERIVED_KEYS = {"source", "method", "window_s"}
_BAUDS = {1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200}


T = TypeVar("T")
F = TypeVar("F")


class _Parser:
    """Reads a profile through :class:`shared.tomlread.Table`, keeping *every* problem."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems = Problems()

    @property
    def errors(self) -> list[ProfileError]:
        return [e if isinstance(e, ProfileError) else ProfileError(e.file, e.key, e.problem)
                for e in self.problems.errors]

    def err(self, key: str, problem: str) -> None:
        self.problems.add(ProfileError(self.source, key, problem))

    def n_errors(self) -> int:
        return len(self.problems.errors)

    def get(self, read: Callable[[], T], fallback: F) -> T | F:
        """One typed read; a problem is kept and ``fallback`` returned."""
        return self.problems.attempt(read, fallback)

    def unknown(self, t: TomlTable, allowed: set[str]) -> None:
        self.problems.add(*t.unknown(allowed))

    def table(self, t: TomlTable, key: str) -> TomlTable:
        return self.get(lambda: t.table(key), TomlTable(self.source, {}, t.key(key), error=ProfileError))

    # sections

    def profile(self, doc: TomlTable, digest: str) -> Profile | None:
        self.unknown(doc, _TOP_KEYS)
        device = self.table(doc, "device")
        self.unknown(device, _DEVICE_KEYS)
        model = self.get(lambda: device.text("model"), None)
        kind = self.get(lambda: device.enum("kind", Kind), None)
        vendor = self.get(lambda: device.text("vendor", ""), "")
        description = self.get(lambda: device.text("description", ""), "")
        if not doc.has("transport"):
            self.err("transport", "missing")
        transport = self.transport(self.table(doc, "transport"))
        defaults = self.table(doc, "defaults")
        self.unknown(defaults, _DEFAULT_KEYS)
        d_byte = self.get(lambda: defaults.enum("byte_order", Order, Order.BIG), Order.BIG)
        d_word = self.get(lambda: defaults.enum("word_order", Order, Order.BIG), Order.BIG)
        d_poll = self.get(lambda: defaults.number("poll_s", 1.0, positive=True), 1.0)
        raw_points = self.table(doc, "points")
        if not raw_points.names():
            self.err("points", "a profile needs at least one point")
        points: dict[str, Point] = {}
        for name in raw_points.names():
            pt = self.get(functools.partial(raw_points.table, name), None)
            if pt is None:
                continue
            p = self.point(name, pt, transport, d_byte, d_word, d_poll)
            if p is not None:
                points[name] = p
        self.cross_checks(points, transport, kind)
        if self.errors or transport is None or kind is None or model is None:
            return None
        return Profile(
            source=self.source,
            hash=digest,
            model=model,
            kind=kind,
            vendor=vendor,
            description=description,
            transport=transport,
            points=MappingProxyType(points),
        )

    def transport(self, t: TomlTable) -> TransportSpec | None:
        kind = self.get(lambda: t.enum("type", Transport), None)
        if kind is None:
            return None
        self.unknown(t, _TRANSPORT_KEYS[kind])
        max_unit = 99 if kind is Transport.SERIAL_LINE else 247

        def integer(key: str, default: int, lo: int = 0, hi: int = 2**31) -> int:
            return self.get(lambda: t.integer(key, default, lo=lo, hi=hi), default)

        spec = TransportSpec(
            type=kind,
            unit_id=integer("unit_id", 1, 0, max_unit),
            timeout_s=self.get(lambda: t.number("timeout_s", 0.5, positive=True), 0.5),
            baudrate=integer("baudrate", 9600),
            bytesize=integer("bytesize", 8, 7, 8),
            parity=self.get(lambda: t.enum("parity", Parity, Parity.NONE), Parity.NONE),
            stopbits=integer("stopbits", 1, 1, 2),
            port=integer("port", 502, 1, 65535),
            max_registers=integer("max_registers", 125, 1, 125),
            max_bits=integer("max_bits", 2000, 1, 2000),
            max_gap=integer("max_gap", 0, 0, 124),
            checksum=self.get(lambda: t.enum("checksum", Checksum, Checksum.XOR8), Checksum.XOR8),
        )
        if spec.baudrate not in _BAUDS:
            self.err("transport.baudrate", f"{spec.baudrate} is not a standard baud rate")
        return spec

    def point(
        self,
        name: str,
        t: TomlTable,
        transport: TransportSpec | None,
        d_byte: Order,
        d_word: Order,
        d_poll: float,
    ) -> Point | None:
        where = t.prefix
        self.unknown(t, _POINT_KEYS)
        n_errors = self.n_errors()
        ptype = self.get(lambda: t.enum("type", PointType, what="type"), None)
        serial = transport is not None and transport.type is Transport.SERIAL_LINE
        derived = self.derived(t)
        table: Table | None = None
        address: int | None = None
        key: str | None = None
        if derived is not None:
            for k in ("table", "address", "key"):
                if t.has(k):
                    self.err(f"{where}.{k}", "a derived point is not read from the device")
        elif serial:
            key = self.get(lambda: t.text("key"), None)
            for k in ("table", "address"):
                if t.has(k):
                    self.err(f"{where}.{k}", "serial_line points use 'key', not registers")
        else:
            table = self.get(lambda: t.enum("table", Table), None)
            address = self.get(lambda: t.integer("address", lo=0, hi=65535), None)
            if t.has("key"):
                self.err(f"{where}.key", "only serial_line points have a key")
        if ptype is PointType.STR and not serial:
            self.err(f"{where}.type", "type 'str' exists only on serial_line devices")
        if table is not None and ptype is not None:
            if table.is_bits and ptype is not PointType.BOOL:
                self.err(f"{where}.type", f"a {table.value} point must be bool, not {ptype.value}")
            if address is not None and address + (1 if table.is_bits else ptype.registers) > 65536:
                self.err(f"{where}.address", "runs past register 65535")
        values = self.label_map(t, "values", 0, 65535)
        bits = self.label_map(t, "bits", 0, 15)
        if ptype is PointType.ENUM and not values:
            self.err(f"{where}.values", "an enum needs values = {label = raw, ...}")
        if ptype is not PointType.ENUM and t.has("values"):
            self.err(f"{where}.values", "only enum points have values")
        if ptype is PointType.BITFIELD and not bits:
            self.err(f"{where}.bits", "a bitfield needs bits = {label = bit, ...}")
        if ptype is not PointType.BITFIELD and t.has("bits"):
            self.err(f"{where}.bits", "only bitfield points have bits")
        if name in STANDARD_LABELS and ptype is PointType.ENUM:
            missing = STANDARD_LABELS[name] - set(values)
            if missing:
                self.err(f"{where}.values", f"missing standard labels {sorted(missing)}")
        rng = t.raw("range", None)
        vmin = vmax = None
        if rng is not None:
            if (
                not isinstance(rng, list)
                or len(rng) != 2
                or any(isinstance(x, bool) or not isinstance(x, int | float) or not tomlread.finite(x) for x in rng)
                or rng[0] > rng[1]
            ):
                self.err(f"{where}.range", "must be [min, max] with min <= max")
            else:
                vmin, vmax = float(rng[0]), float(rng[1])
        writable = self.get(lambda: t.flag("writable", False), False)
        allowed = self.allowed(t, ptype, values)
        readback = self.get(lambda: t.optional_text("readback"), None)
        expect = self.expect(t)
        if writable:
            if table is not None and not table.is_writable:
                self.err(f"{where}.writable", f"{table.value} registers cannot be written")
            if derived is not None:
                self.err(f"{where}.writable", "a derived point cannot be written")
            if not allowed:
                self.err(f"{where}.allowed", "a writable point must list its allowed values")
            if readback is None:
                self.err(f"{where}.readback", "a writable point must name the point read back")
        else:
            for k in ("allowed", "readback", "expect"):
                if t.has(k):
                    self.err(f"{where}.{k}", "only writable points have this")
        sensor_fault = self.get(lambda: t.optional_integer("sensor_fault", lo=0, hi=0xFFFFFFFF), None)
        byte_order = self.get(lambda: t.enum("byte_order", Order, d_byte), d_byte)
        word_order = self.get(lambda: t.enum("word_order", Order, d_word), d_word)
        scale = self.get(lambda: t.number("scale", 1.0), 1.0)
        offset = self.get(lambda: t.number("offset", 0.0), 0.0)
        unit = self.get(lambda: t.text("unit", ""), "")
        poll_s = self.get(lambda: t.number("poll_s", d_poll, positive=True), d_poll)
        self.get(lambda: t.text("description", ""), "")
        if self.n_errors() > n_errors or ptype is None:
            return None
        return Point(
            name=name,
            type=ptype,
            table=table,
            address=address,
            key=key,
            byte_order=byte_order,
            word_order=word_order,
            scale=scale,
            offset=offset,
            unit=unit,
            valid_min=vmin,
            valid_max=vmax,
            poll_s=poll_s,
            values=MappingProxyType(values),
            bits=MappingProxyType(bits),
            sensor_fault=sensor_fault,
            writable=writable,
            allowed=allowed,
            readback=readback,
            expect=MappingProxyType(expect),
            derived=derived,
        )

    def derived(self, t: TomlTable) -> Derived | None:
        if not t.has("derived"):
            return None
        d = self.get(lambda: t.table("derived"), None)
        if d is None:
            return None
        self.unknown(d, _DERIVED_KEYS)
        source = self.get(lambda: d.text("source"), None)
        method = self.get(lambda: d.text("method"), None)
        if method is not None and method != "window_delta":
            self.err(d.key("method"), f"unknown method {method!r} (one of window_delta)")
            method = None
        window = self.get(lambda: d.number("window_s", positive=True), None)
        if source is None or method is None or window is None:
            return None
        return Derived(source=source, method=method, window_s=window)

    def label_map(self, t: TomlTable, key: str, lo: int, hi: int) -> dict[str, int]:
        raw = self.get(lambda: t.table(key), None)
        if raw is None:
            return {}
        out: dict[str, int] = {}
        seen: dict[int, str] = {}
        for label in raw.names():
            n = self.get(functools.partial(raw.integer, label, lo=lo, hi=hi), None)
            if n is None:
                continue
            if n in seen:
                self.err(raw.key(label), f"{n} is already {seen[n]!r}")
            seen[n] = label
            out[label] = n
        return out

    def allowed(self, t: TomlTable, ptype: PointType | None, values: Mapping[str, int]) -> tuple[Scalar, ...]:
        raw = self.get(lambda: t.array("allowed", ()), ())
        out: list[Scalar] = []
        for i, v in enumerate(raw):
            if ptype is not None and not _fits(ptype, v, values):
                self.problems.add(t.item_error("allowed", i, f"{v!r} is not a valid {ptype.value} value"))
            elif isinstance(v, bool | int | float | str):
                out.append(v)
        return tuple(out)

    def expect(self, t: TomlTable) -> dict[str, str]:
        raw = t.raw("expect", {})
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            self.err(t.key("expect"), "must be a table {written = read_back_label}")
            return {}
        return {str(k): str(v) for k, v in raw.items()}

    def cross_checks(
        self, points: Mapping[str, Point], transport: TransportSpec | None, kind: Kind | None
    ) -> None:
        # overlapping register ranges within one table
        by_table: dict[Table, list[Point]] = {}
        for p in points.values():
            if p.table is not None and p.address is not None:
                by_table.setdefault(p.table, []).append(p)
        for table, pts in by_table.items():
            pts.sort(key=lambda p: (p.address or 0, p.name))
            for a, b in itertools.pairwise(pts):
                if b.address is not None and a.end > b.address:
                    self.err(
                        f"points.{b.name}.address",
                        f"{table.value} {b.address} overlaps points.{a.name}"
                        f" ({table.value} {a.address}..{a.end - 1})",
                    )
        keys: dict[str, str] = {}
        for p in points.values():
            if p.key is not None:
                if p.key in keys:
                    self.err(f"points.{p.name}.key", f"{p.key!r} is already points.{keys[p.key]}")
                keys[p.key] = p.name
        for p in points.values():
            if p.readback is not None:
                rb = points.get(p.readback)
                if rb is None:
                    self.err(f"points.{p.name}.readback", f"no point named {p.readback!r}")
                elif p.expect:
                    for written, label in p.expect.items():
                        if written not in {str(a) for a in p.allowed}:
                            self.err(f"points.{p.name}.expect.{written}", "not an allowed value")
                        if rb.type is PointType.ENUM and label not in rb.values:
                            self.err(
                                f"points.{p.name}.expect.{written}",
                                f"{label!r} is not a value of points.{rb.name}",
                            )
            if p.derived is not None:
                src = points.get(p.derived.source)
                if src is None or src.derived is not None:
                    self.err(
                        f"points.{p.name}.derived.source", f"no polled point {p.derived.source!r}"
                    )
        if kind is not None:
            for name in STANDARD_POINTS[kind]:
                if name not in points and not any(
                    e.key == f"points.{name}" or e.key.startswith(f"points.{name}.")
                    for e in self.errors
                ):
                    self.err(f"points.{name}", f"a {kind.value} profile needs this standard point")


def _fits(ptype: PointType, v: object, values: Mapping[str, int]) -> bool:
    if ptype is PointType.BOOL:
        return isinstance(v, bool)
    if ptype is PointType.ENUM:
        return isinstance(v, str) and v in values
    if ptype is PointType.STR:
        return isinstance(v, str)
    return isinstance(v, int | float) and not isinstance(v, bool)
