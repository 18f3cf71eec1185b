"""Read planner (pure): merge points into the fewest Modbus reads the device accepts.

A :class:`ReadBlock` is one request: one table, a start address and a count. Points of one
table are sorted by address and merged greedily, which is optimal for intervals on a line:
a point joins the current block when

* the block stays within ``max_registers`` (≤125) registers, or ``max_bits`` (≤2000) bits, and
* the undeclared gap between the block's end and the point is at most ``max_gap`` (0 for devices
  that reject reads of registers they do not implement).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.profiles import Point, Table, TransportSpec


@dataclass(frozen=True)
class ReadBlock:
    """One read request and the points it serves."""

    table: Table
    address: int
    count: int
    points: tuple[Point, ...]

    def words_of(self, point: Point, words: Sequence[int]) -> Sequence[int]:
        """The slice of this block's answer that belongs to ``point``."""
        assert point.address is not None
        start = point.address - self.address
        return words[start : start + point.count]


def plan(
    points: Iterable[Point], max_registers: int = 125, max_bits: int = 2000, max_gap: int = 0
) -> tuple[ReadBlock, ...]:
    """The fewest blocks covering ``points`` (derived and serial-line points are ignored)."""
    by_table: dict[Table, list[Point]] = {}
    for p in points:
        if p.table is not None and p.address is not None:
            by_table.setdefault(p.table, []).append(p)
    blocks: list[ReadBlock] = []
    for table in Table:
        pts = sorted(by_table.get(table, []), key=lambda p: p.address or 0)
        limit = max_bits if table.is_bits else max_registers
        current: list[Point] = []
        start = end = 0
        for p in pts:
            assert p.address is not None
            if current and p.address - end <= max_gap and p.end - start <= limit:
                current.append(p)
                end = max(end, p.end)
                continue
            if current:
                blocks.append(ReadBlock(table, start, end - start, tuple(current)))
            current, start, end = [p], p.address, p.end
        if current:
            blocks.append(ReadBlock(table, start, end - start, tuple(current)))
    return tuple(blocks)


def plan_for(points: Iterable[Point], spec: TransportSpec) -> tuple[ReadBlock, ...]:
    """:func:`plan` with the limits a profile's transport declares."""
    return plan(points, spec.max_registers, spec.max_bits, spec.max_gap)
