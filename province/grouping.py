"""Pure: provincial incidents — alarms of different cities within a distance or in one catchment.

Rules:

1. Two active alarms are *linked* when both have a place and they lie within ``distance_m`` of
   each other (great-circle distance on the Earth's mean radius), or both name the same
   catchment. Grouping is the transitive closure of links (a chain of neighbours is one
   incident, as a storm front is).
2. A group is a provincial incident only when its alarms come from two or more cities: what
   stays inside one city is that city's incident (its hub groups it).
3. An incident's id is derived from its earliest alarm (city and alarm id), so it is stable
   while that alarm stays active.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class PlacedAlarm:
    city: str
    alarm_id: str
    raised_at: float
    lat: float
    lon: float
    catchment: str | None = None


@dataclass(frozen=True)
class ProvincialIncident:
    incident_id: str
    cities: tuple[str, ...]
    alarms: tuple[tuple[str, str], ...]
    """(city, alarm id) of each, earliest first."""
    points: tuple[tuple[float, float], ...] = ()
    """(lat, lon) of each alarm, in the same order."""


def distance_m(a: PlacedAlarm, b: PlacedAlarm) -> float:
    """Haversine distance between two alarms' places, in metres."""
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def group(alarms: list[PlacedAlarm], distance: float) -> list[ProvincialIncident]:
    """Rules 1-3 over the active alarms with a place.

    Alarms are binned in a grid whose cells' diagonal is within ``distance`` (every alarm of a
    cell is linked to the others without a check), and only cells near enough are compared, so
    a typhoon's thousands of alarms cost about one comparison per alarm and neighbour cell, not
    one per pair."""
    parent = list(range(len(alarms)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[root(i)] = root(j)

    first_in: dict[str, int] = {}
    for i, a in enumerate(alarms):
        if a.catchment is not None:
            union(i, first_in.setdefault(a.catchment, i))
    if distance > 0 and alarms:
        lats = [abs(a.lat) for a in alarms]
        cos_lo = max(math.cos(math.radians(min(89.0, max(lats)))), 1e-3)
        cos_hi = math.cos(math.radians(min(89.0, min(lats))))
        side_m = distance / math.sqrt(2) * 0.999  # the diagonal within distance, with room for rounding
        cell_lat = math.degrees(side_m / EARTH_RADIUS_M)
        cell_lon = cell_lat / cos_hi  # at most side_m wide wherever an alarm is
        reach_lat = math.ceil(distance / side_m)
        reach_lon = math.ceil(distance / (side_m * cos_lo / cos_hi))
        cells: dict[tuple[int, int], list[int]] = {}
        for i, a in enumerate(alarms):
            cells.setdefault((math.floor(a.lat / cell_lat), math.floor(a.lon / cell_lon)), []).append(i)
        for cell in cells.values():
            for m in cell[1:]:
                union(cell[0], m)
        for (cy, cx), cell in cells.items():
            for dy in range(0, reach_lat + 1):
                for dx in range(-reach_lon, reach_lon + 1):
                    if dy == 0 and dx <= 0:
                        continue  # each pair of cells once
                    other = cells.get((cy + dy, cx + dx))
                    if other is None or root(cell[0]) == root(other[0]):
                        continue
                    if any(distance_m(alarms[i], alarms[j]) <= distance for i in cell for j in other):
                        union(cell[0], other[0])
    groups: dict[int, list[PlacedAlarm]] = {}
    for i, a in enumerate(alarms):
        groups.setdefault(root(i), []).append(a)
    out = []
    for members in groups.values():
        cities = sorted({m.city for m in members})
        if len(cities) < 2:
            continue
        members.sort(key=lambda m: (m.raised_at, m.city, m.alarm_id))
        first = members[0]
        out.append(ProvincialIncident(f"pi-{first.city}-{first.alarm_id}", tuple(cities),
                                      tuple((m.city, m.alarm_id) for m in members),
                                      tuple((m.lat, m.lon) for m in members)))
    out.sort(key=lambda inc: inc.incident_id)
    return out
