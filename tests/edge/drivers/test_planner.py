"""The read planner: fewest reads within the device's limits, never across a forbidden gap."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from edge.drivers.planner import plan, plan_for
from shared.paths import profiles_dir
from shared.profiles import Point, PointType, Table, load_profile


def reg(name: str, address: int, ptype: PointType = PointType.U16, table: Table = Table.HOLDING) -> Point:
    return Point(name=name, type=ptype, table=table, address=address)


def test_adjacent_points_merge_into_one_read() -> None:
    blocks = plan([reg("a", 0), reg("b", 1, PointType.F32), reg("c", 3)])
    assert [(b.table, b.address, b.count) for b in blocks] == [(Table.HOLDING, 0, 4)]


def test_a_gap_splits_reads_unless_the_device_accepts_it() -> None:
    points = [reg("a", 0), reg("b", 5)]
    assert [(b.address, b.count) for b in plan(points, max_gap=0)] == [(0, 1), (5, 1)]
    assert [(b.address, b.count) for b in plan(points, max_gap=4)] == [(0, 6)]


def test_tables_are_never_mixed_and_bits_use_the_bit_limit() -> None:
    points = [reg("h", 0), reg("i", 0, table=Table.INPUT)]
    points += [reg(f"c{i}", i, PointType.BOOL, Table.COIL) for i in range(2500)]
    blocks = plan(points)
    assert [(b.table, b.count) for b in blocks] == [
        (Table.COIL, 2000),
        (Table.COIL, 500),
        (Table.INPUT, 1),
        (Table.HOLDING, 1),
    ]


def test_the_displacement_profile_needs_two_input_reads_around_its_hole() -> None:
    p = load_profile(profiles_dir() / "displacement-jk-dx200.toml")
    blocks = plan_for(p.polled, p.transport)
    assert [(b.table, b.address, b.count) for b in blocks] == [
        (Table.INPUT, 0, 9),
        (Table.INPUT, 10, 2),
        (Table.HOLDING, 0, 4),
    ]


@given(
    st.sets(st.integers(0, 400), min_size=1, max_size=60),
    st.integers(0, 10),
    st.integers(4, 125),
)
def test_blocks_cover_every_point_within_limits(starts: set[int], gap: int, limit: int) -> None:
    points = [reg(f"p{a}", a) for a in sorted(starts)]
    blocks = plan(points, max_registers=limit, max_gap=gap)
    covered = [p.name for b in blocks for p in b.points]
    assert sorted(covered) == sorted(p.name for p in points)
    for b in blocks:
        assert b.count <= limit
        for p in b.points:
            assert b.address <= (p.address or 0)
            assert p.end <= b.address + b.count
        addrs = sorted(p.address or 0 for p in b.points)
        assert all(y - (x + 1) <= gap for x, y in itertools.pairwise(addrs))
    # greedy is minimal: a lower bound is the count of forced splits
    forced = sum(1 for x, y in zip(sorted(starts), sorted(starts)[1:], strict=False) if y - x - 1 > gap)
    assert len(blocks) >= forced + 1
