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

import hashlib
import itertools
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shared.errors import ProfileError
from shared.paths import resolve_profile


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
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProfileError(source, "", "not UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(source, "", f"not valid TOML: {exc}") from exc
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
_MISSING = object()


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[ProfileError] = []

    def err(self, key: str, problem: str) -> None:
        self.errors.append(ProfileError(self.source, key, problem))

    # typed getters: record an error and return the default on a bad value

    def unknown(self, table: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
        for k in sorted(set(table) - allowed):
            self.err(f"{prefix}{k}", "unknown key")

    def table(self, parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
        value = parent.get(key, {})
        if not isinstance(value, dict):
            self.err(where, "must be a table")
            return {}
        return value

    def str_(self, t: Mapping[str, Any], key: str, where: str, default: Any = _MISSING) -> Any:
        v = t.get(key, default)
        if v is _MISSING:
            self.err(where, "missing")
            return None
        if v is not None and not isinstance(v, str):
            self.err(where, f"must be a string, not {_tname(v)}")
            return None if default is _MISSING else default
        return v

    def int_(
        self,
        t: Mapping[str, Any],
        key: str,
        where: str,
        default: Any = _MISSING,
        lo: int | None = None,
        hi: int | None = None,
    ) -> Any:
        v = t.get(key, default)
        if v is _MISSING:
            self.err(where, "missing")
            return None
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(where, f"must be an integer, not {_tname(v)}")
            return None if default is _MISSING else default
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.err(where, f"{v} is outside {lo}..{hi}")
            return None if default is _MISSING else default
        return v

    def num(
        self, t: Mapping[str, Any], key: str, where: str, default: Any, positive: bool = False
    ) -> Any:
        v = t.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            self.err(where, f"must be a finite number, not {_tname(v)}")
            return default
        if positive and v <= 0:
            self.err(where, "must be > 0")
            return default
        return float(v)

    def bool_(self, t: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        v = t.get(key, default)
        if not isinstance(v, bool):
            self.err(where, f"must be true or false, not {_tname(v)}")
            return default
        return v

    def enum(
        self, cls: type[Any], t: Mapping[str, Any], key: str, where: str, default: Any = _MISSING
    ) -> Any:
        v = t.get(key, default)
        if v is _MISSING:
            self.err(where, "missing")
            return None
        if isinstance(v, cls):
            return v
        try:
            return cls(v)
        except ValueError:
            choices = "|".join(str(m.value) for m in cls)
            what = cls.__name__.lower()
            if cls is PointType:
                what = "type"
            self.err(where, f"unknown {what} {v!r} (one of {choices})")
            return None if default is _MISSING else default

    # sections

    def profile(self, doc: Mapping[str, Any], digest: str) -> Profile | None:
        self.unknown(doc, _TOP_KEYS, "")
        device = self.table(doc, "device", "device")
        self.unknown(device, _DEVICE_KEYS, "device.")
        model = self.str_(device, "model", "device.model")
        kind = self.enum(Kind, device, "kind", "device.kind")
        vendor = self.str_(device, "vendor", "device.vendor", "")
        description = self.str_(device, "description", "device.description", "")
        if "transport" not in doc:
            self.err("transport", "missing")
        transport = self.transport(self.table(doc, "transport", "transport"))
        defaults = self.table(doc, "defaults", "defaults")
        self.unknown(defaults, _DEFAULT_KEYS, "defaults.")
        d_byte = self.enum(Order, defaults, "byte_order", "defaults.byte_order", Order.BIG)
        d_word = self.enum(Order, defaults, "word_order", "defaults.word_order", Order.BIG)
        d_poll = self.num(defaults, "poll_s", "defaults.poll_s", 1.0, positive=True)
        raw_points = self.table(doc, "points", "points")
        if not raw_points:
            self.err("points", "a profile needs at least one point")
        points: dict[str, Point] = {}
        for name, raw in raw_points.items():
            where = f"points.{name}"
            if not isinstance(raw, dict):
                self.err(where, "must be a table")
                continue
            p = self.point(name, raw, where, transport, d_byte, d_word, d_poll)
            if p is not None:
                points[name] = p
        self.cross_checks(points, transport, kind)
        if self.errors or transport is None or kind is None:
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

    def transport(self, t: Mapping[str, Any]) -> TransportSpec | None:
        kind = self.enum(Transport, t, "type", "transport.type")
        if kind is None:
            return None
        self.unknown(t, _TRANSPORT_KEYS[kind], "transport.")
        max_unit = 99 if kind is Transport.SERIAL_LINE else 247
        spec = TransportSpec(
            type=kind,
            unit_id=self.int_(t, "unit_id", "transport.unit_id", 1, 0, max_unit),
            timeout_s=self.num(t, "timeout_s", "transport.timeout_s", 0.5, positive=True),
            baudrate=self.int_(t, "baudrate", "transport.baudrate", 9600),
            bytesize=self.int_(t, "bytesize", "transport.bytesize", 8, 7, 8),
            parity=self.enum(Parity, t, "parity", "transport.parity", Parity.NONE),
            stopbits=self.int_(t, "stopbits", "transport.stopbits", 1, 1, 2),
            port=self.int_(t, "port", "transport.port", 502, 1, 65535),
            max_registers=self.int_(t, "max_registers", "transport.max_registers", 125, 1, 125),
            max_bits=self.int_(t, "max_bits", "transport.max_bits", 2000, 1, 2000),
            max_gap=self.int_(t, "max_gap", "transport.max_gap", 0, 0, 124),
            checksum=self.enum(Checksum, t, "checksum", "transport.checksum", Checksum.XOR8),
        )
        if spec.baudrate not in _BAUDS:
            self.err("transport.baudrate", f"{spec.baudrate} is not a standard baud rate")
        return spec

    def point(
        self,
        name: str,
        t: Mapping[str, Any],
        where: str,
        transport: TransportSpec | None,
        d_byte: Order,
        d_word: Order,
        d_poll: float,
    ) -> Point | None:
        self.unknown(t, _POINT_KEYS, f"{where}.")
        n_errors = len(self.errors)
        ptype = self.enum(PointType, t, "type", f"{where}.type")
        serial = transport is not None and transport.type is Transport.SERIAL_LINE
        derived = self.derived(t, where)
        table: Table | None = None
        address: int | None = None
        key: str | None = None
        if derived is not None:
            for k in ("table", "address", "key"):
                if k in t:
                    self.err(f"{where}.{k}", "a derived point is not read from the device")
        elif serial:
            key = self.str_(t, "key", f"{where}.key")
            for k in ("table", "address"):
                if k in t:
                    self.err(f"{where}.{k}", "serial_line points use 'key', not registers")
        else:
            table = self.enum(Table, t, "table", f"{where}.table")
            address = self.int_(t, "address", f"{where}.address", lo=0, hi=65535)
            if "key" in t:
                self.err(f"{where}.key", "only serial_line points have a key")
        if ptype is PointType.STR and not serial:
            self.err(f"{where}.type", "type 'str' exists only on serial_line devices")
        if table is not None and ptype is not None:
            if table.is_bits and ptype is not PointType.BOOL:
                self.err(f"{where}.type", f"a {table.value} point must be bool, not {ptype.value}")
            if address is not None and address + (1 if table.is_bits else ptype.registers) > 65536:
                self.err(f"{where}.address", "runs past register 65535")
        values = self.label_map(t, "values", f"{where}.values", 0, 65535)
        bits = self.label_map(t, "bits", f"{where}.bits", 0, 15)
        if ptype is PointType.ENUM and not values:
            self.err(f"{where}.values", "an enum needs values = {label = raw, ...}")
        if ptype is not PointType.ENUM and "values" in t:
            self.err(f"{where}.values", "only enum points have values")
        if ptype is PointType.BITFIELD and not bits:
            self.err(f"{where}.bits", "a bitfield needs bits = {label = bit, ...}")
        if ptype is not PointType.BITFIELD and "bits" in t:
            self.err(f"{where}.bits", "only bitfield points have bits")
        if name in STANDARD_LABELS and ptype is PointType.ENUM:
            missing = STANDARD_LABELS[name] - set(values)
            if missing:
                self.err(f"{where}.values", f"missing standard labels {sorted(missing)}")
        rng = t.get("range")
        vmin = vmax = None
        if rng is not None:
            if (
                not isinstance(rng, list)
                or len(rng) != 2
                or any(isinstance(x, bool) or not isinstance(x, int | float) for x in rng)
                or rng[0] > rng[1]
            ):
                self.err(f"{where}.range", "must be [min, max] with min <= max")
            else:
                vmin, vmax = float(rng[0]), float(rng[1])
        writable = self.bool_(t, "writable", f"{where}.writable", False)
        allowed = self.allowed(t, f"{where}.allowed", ptype, values)
        readback = self.str_(t, "readback", f"{where}.readback", None)
        expect = self.expect(t, f"{where}.expect")
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
                if k in t:
                    self.err(f"{where}.{k}", "only writable points have this")
        sensor_fault = self.int_(t, "sensor_fault", f"{where}.sensor_fault", None, 0, 0xFFFFFFFF)
        if len(self.errors) > n_errors or ptype is None:
            return None
        return Point(
            name=name,
            type=ptype,
            table=table,
            address=address,
            key=key,
            byte_order=self.enum(Order, t, "byte_order", f"{where}.byte_order", d_byte),
            word_order=self.enum(Order, t, "word_order", f"{where}.word_order", d_word),
            scale=self.num(t, "scale", f"{where}.scale", 1.0),
            offset=self.num(t, "offset", f"{where}.offset", 0.0),
            unit=self.str_(t, "unit", f"{where}.unit", ""),
            valid_min=vmin,
            valid_max=vmax,
            poll_s=self.num(t, "poll_s", f"{where}.poll_s", d_poll, positive=True),
            values=MappingProxyType(values),
            bits=MappingProxyType(bits),
            sensor_fault=sensor_fault,
            writable=writable,
            allowed=allowed,
            readback=readback,
            expect=MappingProxyType(expect),
            derived=derived,
        )

    def derived(self, t: Mapping[str, Any], where: str) -> Derived | None:
        if "derived" not in t:
            return None
        d = t["derived"]
        if not isinstance(d, dict):
            self.err(f"{where}.derived", "must be a table")
            return None
        self.unknown(d, _DERIVED_KEYS, f"{where}.derived.")
        source = self.str_(d, "source", f"{where}.derived.source")
        method = self.str_(d, "method", f"{where}.derived.method")
        if method is not None and method != "window_delta":
            self.err(f"{where}.derived.method", f"unknown method {method!r} (one of window_delta)")
        window = self.num(d, "window_s", f"{where}.derived.window_s", None, positive=True)
        if window is None:
            self.err(f"{where}.derived.window_s", "missing")
        if source is None or method is None or window is None:
            return None
        return Derived(source=source, method=method, window_s=window)

    def label_map(
        self, t: Mapping[str, Any], key: str, where: str, lo: int, hi: int
    ) -> dict[str, int]:
        raw = t.get(key, {})
        if not isinstance(raw, dict):
            self.err(where, "must be a table {label = number}")
            return {}
        out: dict[str, int] = {}
        seen: dict[int, str] = {}
        for label in raw:
            n = self.int_(raw, label, f"{where}.{label}", lo=lo, hi=hi)
            if n is None:
                continue
            if n in seen:
                self.err(f"{where}.{label}", f"{n} is already {seen[n]!r}")
            seen[n] = label
            out[label] = n
        return out

    def allowed(
        self, t: Mapping[str, Any], where: str, ptype: PointType | None, values: Mapping[str, int]
    ) -> tuple[Scalar, ...]:
        raw = t.get("allowed", [])
        if not isinstance(raw, list):
            self.err(where, "must be a list")
            return ()
        out: list[Scalar] = []
        for i, v in enumerate(raw):
            if ptype is not None and not _fits(ptype, v, values):
                self.err(f"{where}[{i}]", f"{v!r} is not a valid {ptype.value} value")
            else:
                out.append(v)
        return tuple(out)

    def expect(self, t: Mapping[str, Any], where: str) -> dict[str, str]:
        raw = t.get("expect", {})
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            self.err(where, "must be a table {written = read_back_label}")
            return {}
        return dict(raw)

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


def _tname(v: object) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(v), type(v).__name__)


def _fits(ptype: PointType, v: object, values: Mapping[str, int]) -> bool:
    if ptype is PointType.BOOL:
        return isinstance(v, bool)
    if ptype is PointType.ENUM:
        return isinstance(v, str) and v in values
    if ptype is PointType.STR:
        return isinstance(v, str)
    return isinstance(v, int | float) and not isinstance(v, bool)
