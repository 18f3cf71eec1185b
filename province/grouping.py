"""Pure: provincial incidents — alarms of different cities within a distance or in one catchment.

Rules:

1. Two active alarms are *linked* when both have a place and they lie within ``distance_m`` of
   each other (great-circle distance on the WGS-84 mean radius), or both name the same
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


def distance_m(a: PlacedAlarm, b: PlacedAlarm) -> float:
    """Haversine distance between two alarms' places, in metres."""
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def group(alarms: list[PlacedAlarm], distance: float) -> list[ProvincialIncident]:
    """Rules 1-3 over the active alarms with a place."""
    parent = list(range(len(alarms)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(alarms):
        for j in range(i + 1, len(alarms)):
            b = alarms[j]
            same_catchment = a.catchment is not None and a.catchment == b.catchment
            if same_catchment or distance_m(a, b) <= distance:
                parent[root(i)] = root(j)
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
                                      tuple((m.city, m.alarm_id) for m in members)))
    out.sort(key=lambda inc: inc.incident_id)
    return out
