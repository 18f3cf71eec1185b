"""Readings and their quality (pure): what a driver hands to the rest of the edge.

Rules (DESIGN §5):

* Every reading carries a :class:`Quality` and the time it was *acquired* (``ts``), read from
  the injected clock when the device answered.
* A cached value is never re-stamped: :func:`aged` only downgrades ``good`` to ``stale`` and
  keeps the original ``ts``.
* A failed poll produces a ``comm_fail`` reading with the failure time and no value, so the
  consumer can still see the last good reading separately.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edge.drivers.codec import Raw, Value
from shared.messages import Quality as Quality  # re-exported: one closed set for the edge, wire and hub
from shared.profiles import Point


@dataclass(frozen=True)
class Reading:
    """One point's value at one acquisition time."""

    device: str
    point: str
    value: Value | None
    quality: Quality
    ts: float  # acquisition time (clock seconds), never updated after the fact
    raw: Raw | str | None = None
    error: str = ""


def classify(point: Point, raw: Raw | str, value: Value) -> Quality:
    """Quality of a freshly decoded value: sensor_fault, out_of_range or good."""
    if point.sensor_fault is not None and not isinstance(raw, str) and raw == point.sensor_fault:
        return Quality.SENSOR_FAULT
    if isinstance(value, int | float) and not isinstance(value, bool):
        if point.valid_min is not None and value < point.valid_min:
            return Quality.OUT_OF_RANGE
        if point.valid_max is not None and value > point.valid_max:
            return Quality.OUT_OF_RANGE
    return Quality.GOOD


def aged(reading: Reading, now: float, max_age_s: float) -> Reading:
    """The reading as seen at ``now``: ``stale`` if older than ``max_age_s`` (ts unchanged)."""
    if reading.quality is Quality.GOOD and now - reading.ts > max_age_s:
        return replace(reading, quality=Quality.STALE)
    return reading
