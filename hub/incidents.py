"""Pure: alarm-flood grouping (EEMUA 191) — many alarms in one area become one incident.

Rules:

1. Every alarm that is raised (goes to ``unacknowledged``) is counted for its area with its time.
2. When an area has ``flood_count`` or more alarms raised within ``window_s`` (EEMUA 191's
   alarm flood: 10 in 10 minutes, DESIGN §6), an incident is opened for the area and every
   alarm counted in the window joins it.
3. While the area's incident is open, every alarm raised in the area joins it.
4. The incident is closed by the engine (all its alarms back to normal) or by a supervisor;
   the next flood in the area opens a new one.

Times are passed in; nothing here reads a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Grouping:
    """What to do with a raised alarm: open an incident (with these alarms), join one, or neither."""

    open_new: bool = False
    join: int | None = None
    """The open incident the alarm joins."""
    alarms: tuple[int, ...] = ()
    """With ``open_new``: every alarm of the window (this one included)."""


@dataclass
class _Area:
    raised: deque[tuple[float, int]] = field(default_factory=deque)
    incident: int | None = None


class FloodGrouper:
    def __init__(self, flood_count: int, window_s: float) -> None:
        self.flood_count = flood_count
        self.window_s = window_s
        self._areas: dict[str, _Area] = {}

    def raised(self, area: str, alarm_id: int, ts: float) -> Grouping:
        a = self._areas.setdefault(area, _Area())
        a.raised.append((ts, alarm_id))
        while a.raised and a.raised[0][0] < ts - self.window_s:
            a.raised.popleft()
        if a.incident is not None:
            return Grouping(join=a.incident)
        if len(a.raised) >= self.flood_count:
            return Grouping(open_new=True, alarms=tuple(dict.fromkeys(i for _, i in a.raised)))
        return Grouping()

    def opened(self, area: str, incident_id: int) -> None:
        self._areas.setdefault(area, _Area()).incident = incident_id

    def closed(self, area: str, incident_id: int) -> None:
        a = self._areas.get(area)
        if a is not None and a.incident == incident_id:
            a.incident = None
            a.raised.clear()

    def open_incident(self, area: str) -> int | None:
        a = self._areas.get(area)
        return a.incident if a else None
