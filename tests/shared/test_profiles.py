"""The profile schema: shipped profiles load; bad profiles are refused naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ProfileError
from shared.paths import profiles_dir
from shared.profiles import (
    STANDARD_POINTS,
    Kind,
    Order,
    PointType,
    ProfileInvalid,
    Table,
    Transport,
    load_profile,
    parse_profile,
    profile_hash,
)

GOOD = """
[device]
model = "T-1"
kind = "flood_alarm"

[transport]
type = "modbus_rtu"
baudrate = 9600

[points.water_depth_cm]
table = "input"
address = 0
type = "u16"
scale = 0.1
range = [0, 300]

[points.battery_v]
table = "input"
address = 1
type = "u16"

[points.alarm_active]
table = "discrete"
address = 0
type = "bool"

[points.siren]
table = "coil"
address = 0
type = "bool"
writable = true
allowed = [true, false]
readback = "siren"
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ProfileInvalid) as info:
        parse_profile(text.encode(), "flood.toml")
    return [str(e) for e in info.value.errors]


def test_every_shipped_profile_loads_with_its_kinds_standard_points() -> None:
    files = sorted(profiles_dir().glob("*.toml"))
    kinds = set()
    for f in files:
        p = load_profile(f)
        kinds.add(p.kind)
        assert set(STANDARD_POINTS[p.kind]) <= set(p.points)
        assert p.hash == profile_hash(f)
    assert kinds == set(Kind)


def test_a_good_profile_parses_into_typed_points() -> None:
    p = parse_profile(GOOD.encode(), "flood.toml")
    depth = p.point("water_depth_cm")
    assert p.transport.type is Transport.MODBUS_RTU
    assert (depth.table, depth.address, depth.type) == (Table.INPUT, 0, PointType.U16)
    assert (depth.scale, depth.valid_max, depth.byte_order) == (0.1, 300.0, Order.BIG)
    assert p.point("siren").readback == "siren"


def test_the_displacement_meter_swaps_float_words() -> None:
    p = load_profile(profiles_dir() / "displacement-jk-dx200.toml")
    assert p.point("displacement_mm").word_order is Order.LITTLE
    assert p.point("displacement_mm").type is PointType.F32


def test_a_bad_type_is_refused_with_file_and_key() -> None:
    errs = errors_of(GOOD.replace('type = "u16"\nscale', 'type = "float"\nscale'))
    assert errs == [
        "flood.toml: points.water_depth_cm.type: unknown type 'float' "
        "(one of bool|u16|i16|u32|i32|f32|f64|bitfield|enum|str)"
    ]


def test_an_unknown_key_is_refused_with_file_and_key() -> None:
    errs = errors_of(GOOD.replace("scale = 0.1", "scale = 0.1\nscael = 2"))
    assert errs == ["flood.toml: points.water_depth_cm.scael: unknown key"]


def test_an_overlapping_register_range_is_refused_with_file_and_key() -> None:
    text = GOOD.replace(
        '[points.battery_v]\ntable = "input"\naddress = 1\ntype = "u16"',
        '[points.battery_v]\ntable = "input"\naddress = 1\ntype = "u32"\n'
        '[points.extra]\ntable = "input"\naddress = 2\ntype = "u16"',
    )
    assert errors_of(text) == ["flood.toml: points.extra.address: input 2 overlaps points.battery_v (input 1..2)"]


def test_all_errors_are_reported_not_just_the_first() -> None:
    text = GOOD.replace('kind = "flood_alarm"', 'kind = "flood_alarm"\ncolour = "red"')
    text = text.replace("address = 1", 'address = "one"').replace('readback = "siren"', "")
    errs = errors_of(text)
    assert "flood.toml: device.colour: unknown key" in errs
    assert "flood.toml: points.battery_v.address: must be an integer, not 'one' (string)" in errs
    assert "flood.toml: points.siren.readback: a writable point must name the point read back" in errs


def test_a_missing_standard_point_is_refused() -> None:
    text = GOOD.replace('[points.battery_v]\ntable = "input"\naddress = 1\ntype = "u16"', "")
    assert errors_of(text) == ["flood.toml: points.battery_v: a flood_alarm profile needs this standard point"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            (
                'table = "discrete"\naddress = 0\ntype = "bool"',
                'table = "discrete"\naddress = 0\ntype = "u16"',
            ),
            "points.alarm_active.type: a discrete point must be bool, not u16",
        ),
        (
            ('readback = "siren"', 'readback = "horn"'),
            "points.siren.readback: no point named 'horn'",
        ),
        (
            ("allowed = [true, false]", "allowed = [1]"),
            "points.siren.allowed[0]: 1 is not a valid bool value",
        ),
        (
            ('type = "modbus_rtu"', 'type = "can_bus"'),
            "transport.type: unknown transport 'can_bus'",
        ),
        (
            ("baudrate = 9600", "baudrate = 9601"),
            "transport.baudrate: 9601 is not a standard baud rate",
        ),
        (
            ("range = [0, 300]", "range = [300, 0]"),
            "points.water_depth_cm.range: must be [min, max]",
        ),
    ],
)
def test_bad_values_name_their_key(edit: tuple[str, str], expected: str) -> None:
    errs = errors_of(GOOD.replace(*edit))
    assert any(e.startswith(f"flood.toml: {expected}") for e in errs), errs


def test_invalid_toml_and_missing_files_are_profile_errors(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text("[device\n")
    with pytest.raises(ProfileError, match=r"^broken.toml: not valid TOML"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "absent.toml")
