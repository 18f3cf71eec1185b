"""The register codec: table tests for known encodings and round-trips for every type/order."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.drivers.codec import decode, encode, raw_to_value, raw_to_words, words_to_raw
from edge.errors import CodecError
from shared.profiles import Order, Point, PointType, Table

B, L = Order.BIG, Order.LITTLE
RANGES = {
    PointType.U16: (0, 0xFFFF),
    PointType.I16: (-0x8000, 0x7FFF),
    PointType.U32: (0, 0xFFFFFFFF),
    PointType.I32: (-0x80000000, 0x7FFFFFFF),
    PointType.ENUM: (0, 0xFFFF),
    PointType.BITFIELD: (0, 0xFFFF),
}


@pytest.mark.parametrize(
    ("ptype", "raw", "byte_order", "word_order", "words"),
    [
        (PointType.U16, 0x1234, B, B, (0x1234,)),
        (PointType.U16, 0x1234, L, B, (0x3412,)),
        (PointType.I16, -2, B, B, (0xFFFE,)),
        (PointType.U32, 0x12345678, B, B, (0x1234, 0x5678)),
        (PointType.U32, 0x12345678, B, L, (0x5678, 0x1234)),
        (PointType.U32, 0x12345678, L, B, (0x3412, 0x7856)),
        (PointType.U32, 0x12345678, L, L, (0x7856, 0x3412)),
        (PointType.I32, -1, B, B, (0xFFFF, 0xFFFF)),
        (PointType.F32, 1.0, B, B, (0x3F80, 0x0000)),
        (PointType.F32, 1.0, B, L, (0x0000, 0x3F80)),
        (PointType.F32, -2.5, L, B, (0x20C0, 0x0000)),
        (PointType.F64, 1.0, B, B, (0x3FF0, 0, 0, 0)),
        (PointType.F64, 1.0, B, L, (0, 0, 0, 0x3FF0)),
    ],
)
def test_known_encodings(
    ptype: PointType, raw: float, byte_order: Order, word_order: Order, words: tuple[int, ...]
) -> None:
    assert raw_to_words(ptype, raw, byte_order, word_order) == words
    assert words_to_raw(ptype, words, byte_order, word_order) == raw


orders = st.sampled_from([B, L])


@given(st.sampled_from(sorted(RANGES, key=lambda t: t.value)), st.data(), orders, orders)
def test_integers_round_trip_in_every_order(ptype: PointType, data: st.DataObject, bo: Order, wo: Order) -> None:
    lo, hi = RANGES[ptype]
    raw = data.draw(st.integers(lo, hi))
    words = raw_to_words(ptype, raw, bo, wo)
    assert len(words) == ptype.registers
    assert words_to_raw(ptype, words, bo, wo) == raw


@given(st.floats(width=32, allow_nan=False), orders, orders)
def test_f32_round_trips_in_every_order(raw: float, bo: Order, wo: Order) -> None:
    assert words_to_raw(PointType.F32, raw_to_words(PointType.F32, raw, bo, wo), bo, wo) == raw


@given(st.floats(allow_nan=False), orders, orders)
def test_f64_round_trips_in_every_order(raw: float, bo: Order, wo: Order) -> None:
    assert words_to_raw(PointType.F64, raw_to_words(PointType.F64, raw, bo, wo), bo, wo) == raw


@given(st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2), orders, orders)
def test_any_two_words_decode_to_the_f32_struct_gives(words: list[int], bo: Order, wo: Order) -> None:
    raw = words_to_raw(PointType.F32, words, bo, wo)
    back = raw_to_words(PointType.F32, raw, bo, wo)
    if not math.isnan(raw):
        assert list(back) == words
    ordered = words[::-1] if wo is L else words
    data = b"".join(w.to_bytes(2, "little" if bo is L else "big") for w in ordered)
    expected = struct.unpack(">f", data)[0]
    assert raw == expected or (math.isnan(raw) and math.isnan(expected))


def test_values_that_do_not_fit_are_codec_errors() -> None:
    with pytest.raises(CodecError):
        raw_to_words(PointType.U16, 70000)
    with pytest.raises(CodecError):
        raw_to_words(PointType.I16, 1.5)
    with pytest.raises(CodecError):
        words_to_raw(PointType.U32, [1])


def point(**kw: object) -> Point:
    base: dict[str, object] = {
        "name": "p",
        "type": PointType.U16,
        "table": Table.HOLDING,
        "address": 0,
    }
    base.update(kw)
    return Point(**base)  # type: ignore[arg-type]


def test_scale_offset_enum_bitfield_and_bool_values() -> None:
    depth = point(scale=0.1, offset=-5.0)
    raw, value = decode(depth, [150])
    assert raw == 150
    assert value == pytest.approx(10.0)
    assert encode(depth, 10.0) == (150,)
    state = point(type=PointType.ENUM, values={"open": 0, "closed": 2})
    assert decode(state, [2]) == (2, "closed")
    assert encode(state, "open") == (0,)
    with pytest.raises(CodecError):
        decode(state, [7])
    status = point(type=PointType.BITFIELD, bits={"a": 0, "c": 2})
    assert decode(status, [0b101]) == (5, ("a", "c"))
    assert encode(status, ("c",)) == (4,)
    coil = point(type=PointType.BOOL, table=Table.COIL)
    assert decode(coil, [1]) == (1, True)
    assert encode(coil, False) == (0,)


@pytest.mark.parametrize("ptype", [PointType.U16, PointType.I32, PointType.ENUM, PointType.BITFIELD, PointType.BOOL])
@pytest.mark.parametrize("raw", [math.nan, math.inf, -math.inf])
def test_a_non_finite_raw_value_of_an_integer_point_is_a_codec_error(ptype: PointType, raw: float) -> None:
    # Found by jikimi bench fuzz (serial_line): a line reply "nan" reached int() and raised ValueError.
    with pytest.raises(CodecError, match="cannot be a raw"):
        raw_to_value(point(type=ptype, values={"open": 0}, bits={"a": 0}), raw)


def test_a_non_finite_raw_value_of_a_float_point_is_kept() -> None:
    assert math.isnan(float(raw_to_value(point(type=PointType.F32), math.nan)))  # type: ignore[arg-type]


@given(st.integers(-3000, 3000))
def test_scaled_values_round_trip(raw: int) -> None:
    p = point(type=PointType.I16, scale=0.01, offset=2.0)
    _, value = decode(p, raw_to_words(PointType.I16, raw))
    assert encode(p, value) == raw_to_words(PointType.I16, raw)
