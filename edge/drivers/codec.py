"""Register codec (pure): Modbus words <-> raw numbers <-> engineering values.

Three layers, each invertible:

* :func:`words_to_raw` / :func:`raw_to_words`: 16-bit words <-> the device's raw number, honouring
  byte order (within a word) and word order (between words). "big" means most significant
  first, which is the Modbus default.
* :func:`raw_to_value` / :func:`value_to_raw`: raw number <-> engineering value: ``raw * scale +
  offset`` for numbers, the label for enums, the set labels (a sorted tuple) for bitfields.
* :func:`decode` / :func:`encode`: both at once for a :class:`~shared.profiles.Point`.

No I/O, no clock, no logging. Every failure is a :class:`~edge.errors.CodecError`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from edge.errors import CodecError
from shared.profiles import Order, Point, PointType

Raw = int | float
Value = bool | int | float | str | tuple[str, ...]

_STRUCT = {
    PointType.U16: ">H",
    PointType.I16: ">h",
    PointType.ENUM: ">H",
    PointType.BITFIELD: ">H",
    PointType.BOOL: ">H",
    PointType.U32: ">I",
    PointType.I32: ">i",
    PointType.F32: ">f",
    PointType.F64: ">d",
}


def _fmt(ptype: PointType) -> str:
    try:
        return _STRUCT[ptype]
    except KeyError:
        raise CodecError(f"type {ptype.value} has no register encoding") from None


def words_to_raw(
    ptype: PointType,
    words: Sequence[int],
    byte_order: Order = Order.BIG,
    word_order: Order = Order.BIG,
) -> Raw:
    """Turn ``ptype.registers`` 16-bit words into the raw number they hold."""
    fmt = _fmt(ptype)
    if len(words) != ptype.registers:
        raise CodecError(f"{ptype.value} needs {ptype.registers} register(s), got {len(words)}")
    if any(not 0 <= w <= 0xFFFF for w in words):
        raise CodecError(f"register value out of 0..65535: {list(words)}")
    ordered = list(words)
    if word_order is Order.LITTLE:
        ordered.reverse()
    if byte_order is Order.LITTLE:
        ordered = [((w & 0xFF) << 8) | (w >> 8) for w in ordered]
    data = b"".join(w.to_bytes(2, "big") for w in ordered)
    raw: Raw = struct.unpack(fmt, data)[0]
    if ptype is PointType.BOOL:
        return int(raw != 0)
    return raw


def raw_to_words(
    ptype: PointType, raw: Raw, byte_order: Order = Order.BIG, word_order: Order = Order.BIG
) -> tuple[int, ...]:
    """Inverse of :func:`words_to_raw`."""
    fmt = _fmt(ptype)
    if ptype in (PointType.F32, PointType.F64):
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise CodecError(f"{ptype.value} needs a number, not {raw!r}")
        value: Raw = float(raw)
        if ptype is PointType.F32 and math.isfinite(value) and abs(value) > 3.4028234663852886e38:
            raise CodecError(f"{raw!r} does not fit in f32")
    else:
        if isinstance(raw, float):
            if not raw.is_integer():
                raise CodecError(f"{ptype.value} needs an integer, not {raw!r}")
            raw = int(raw)
        value = int(raw)
    try:
        data = struct.pack(fmt, value)
    except (struct.error, OverflowError) as exc:
        raise CodecError(f"{raw!r} does not fit in {ptype.value}") from exc
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if byte_order is Order.LITTLE:
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if word_order is Order.LITTLE:
        words.reverse()
    return tuple(words)


def raw_to_value(point: Point, raw: Raw | str) -> Value:
    """Raw number (or text, for ``str`` points) -> engineering value."""
    t = point.type
    if t is PointType.STR:
        if not isinstance(raw, str):
            raise CodecError(f"{point.name}: expected text, got {raw!r}")
        return raw
    if isinstance(raw, str):
        raise CodecError(f"{point.name}: expected a number, got text {raw!r}")
    if isinstance(raw, float) and not math.isfinite(raw) and t not in (PointType.F32, PointType.F64):
        # Registers never give one, but a serial line can say "nan" or "1e400"; int() of it would raise.
        raise CodecError(f"{point.name}: {raw} cannot be a raw {t.value} value")
    if t is PointType.BOOL:
        return bool(raw)
    if t is PointType.ENUM:
        label = point.labels.get(int(raw))
        if label is None:
            raise CodecError(f"{point.name}: {raw} is not one of its enum values")
        return label
    if t is PointType.BITFIELD:
        return tuple(sorted(label for label, bit in point.bits.items() if int(raw) >> bit & 1))
    if point.scale == 1.0 and point.offset == 0.0 and t is not PointType.F32 and t is not PointType.F64:
        return int(raw)
    return raw * point.scale + point.offset


def value_to_raw(point: Point, value: Value) -> Raw | str:
    """Engineering value -> raw number (inverse of :func:`raw_to_value`)."""
    t = point.type
    if t is PointType.STR:
        if not isinstance(value, str):
            raise CodecError(f"{point.name}: expected text, got {value!r}")
        return value
    if t is PointType.BOOL:
        if not isinstance(value, bool):
            raise CodecError(f"{point.name}: expected true/false, got {value!r}")
        return int(value)
    if t is PointType.ENUM:
        if not isinstance(value, str) or value not in point.values:
            raise CodecError(f"{point.name}: {value!r} is not one of {sorted(point.values)}")
        return point.values[value]
    if t is PointType.BITFIELD:
        if not isinstance(value, tuple) or any(v not in point.bits for v in value):
            raise CodecError(f"{point.name}: {value!r} is not a tuple of {sorted(point.bits)}")
        return sum(1 << point.bits[label] for label in set(value))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CodecError(f"{point.name}: expected a number, got {value!r}")
    raw = (value - point.offset) / point.scale
    if t in (PointType.F32, PointType.F64):
        return raw
    rounded = round(raw)
    if abs(rounded - raw) > 1e-6 * max(1.0, abs(raw)):
        raise CodecError(f"{point.name}: {value!r} is not a multiple of scale {point.scale}")
    return int(rounded)


def decode(point: Point, words: Sequence[int]) -> tuple[Raw, Value]:
    """Words of one point -> (raw, value). Bit-table points take one 0/1 "word"."""
    if point.table is not None and point.table.is_bits:
        if len(words) != 1:
            raise CodecError(f"{point.name}: a bit point takes one bit")
        raw: Raw = int(bool(words[0]))
    else:
        raw = words_to_raw(point.type, words, point.byte_order, point.word_order)
    return raw, raw_to_value(point, raw)


def encode(point: Point, value: Value) -> tuple[int, ...]:
    """Value -> the words (or one 0/1 bit) to write for ``point``."""
    raw = value_to_raw(point, value)
    if isinstance(raw, str):
        raise CodecError(f"{point.name}: text points are not in registers")
    if point.table is not None and point.table.is_bits:
        return (int(bool(raw)),)
    return raw_to_words(point.type, raw, point.byte_order, point.word_order)
