"""Provincial CAP alerts (DESIGN §8): an incident across city boundaries goes to the province's
recipients (its police, fire and military headquarters, its own centre) through the hub's
forwarding code (hub/forward/), signed with the province's alert key like a hub's alerts.

Rules:

1. Every ``every_s`` the provincial incidents are computed from the store (province/grouping.py:
   active alarms of two or more cities within the distance or in one catchment).
2. One CAP thread per incident (``province-incident:{id}``, the grouping's stable id): a new
   incident is an Alert; a change of its cities or alarms an Update; an incident no longer there
   (its alarms cleared, or no longer of two cities) a Cancel. Notice keys name the membership, so
   a restart enqueues nothing already planned; the open threads are read back from forwarding's
   own tables at start, so an incident that ended while the province was down is cancelled.
3. The notice is placed at the centroid of the incident's alarms with a radius that covers them
   all (plus 0.5 km), named by its cities; its priority is critical (two cities are flooding at
   once).
4. Forwarding's tables are in a file of their own beside the province's (``province-forward.db``,
   hub/forward/tx.py's :class:`~hub.forward.tx.LocalWriter`: the hub's schema), and every audit
   row forwarding writes goes into the province's own hash chain.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import sqlite3
from collections.abc import Callable
from typing import Final

from hub.alerting import AREA_GEOCODE
from hub.cctv_geo import GeoPoint
from hub.forward.cap import Text
from hub.forward.config import ForwardConfig
from hub.forward.deliver import Forwarder
from hub.forward.plan import Change, Hazard, Notice, Source
from hub.rules import AlarmPriority
from province.grouping import EARTH_RADIUS_M, ProvincialIncident

log = logging.getLogger(__name__)

THREAD_PREFIX: Final = "province-incident:"
FORWARD_FILE: Final = "province-forward.db"
"""Forwarding's file, beside the province's database (rule 4)."""


def open_threads(conn: sqlite3.Connection) -> set[str]:
    """Rule 2: the incidents whose thread is open in forwarding's tables."""
    rows = conn.execute("SELECT key FROM fwd_threads WHERE open = 1 AND key LIKE ?", (THREAD_PREFIX + "%",))
    return {str(k)[len(THREAD_PREFIX):] for (k,) in rows}


def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    dp, dl = p2 - p1, math.radians(b[1] - a[1])
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h))) / 1000


def notice(inc: ProvincialIncident, change: Change, now: float) -> Notice:
    """Rules 2-3: the notice of one incident's raise, update or cancel. A raise or update is keyed
    by the incident's membership: the same members again plan nothing."""
    members = ",".join(f"{c}/{a}" for c, a in inc.alarms)
    digest = hashlib.sha256(members.encode()).hexdigest()[:16]
    key = f"{THREAD_PREFIX}{inc.incident_id}:{f'clear:{now!r}' if change is Change.CLEAR else digest}"
    lat = sum(p[0] for p in inc.points) / len(inc.points)
    lon = sum(p[1] for p in inc.points) / len(inc.points)
    radius = max(_km((lat, lon), p) for p in inc.points) + 0.5
    cities = ", ".join(inc.cities)
    return Notice(
        key=key,
        thread=THREAD_PREFIX + inc.incident_id,
        change=change,
        at=now,
        source=Source.ALARM,
        area="+".join(inc.cities),
        priority=AlarmPriority.CRITICAL,
        hazard=Hazard.FLOOD,
        headline=Text(f"시·군 경계 침수 경보: {cities}", f"Flooding across city boundaries: {cities}"),
        description=Text(f"{len(inc.alarms)}개 경보, {len(inc.cities)}개 시·군 ({cities})",
                         f"{len(inc.alarms)} alarms in {len(inc.cities)} cities ({cities})"),
        place=Text(cities, cities),
        position=GeoPoint(lat, lon),
        radius_km=round(radius, 2),
    )


def cancel(incident_id: str, now: float) -> Notice:
    """Rule 2: the Cancel of an incident that ended while the province was down (its places are
    not known any more: it is placed by the province's area)."""
    return Notice(key=f"{THREAD_PREFIX}{incident_id}:clear:{now!r}", thread=THREAD_PREFIX + incident_id,
                  change=Change.CLEAR, at=now, source=Source.ALARM, area="province", priority=AlarmPriority.CRITICAL,
                  hazard=Hazard.FLOOD, headline=Text("시·군 경계 침수 경보 해제", "Cross-boundary flooding ended"),
                  description=Text("관련 경보가 모두 해제됨", "Its alarms have cleared"), place=Text("", ""),
                  geocodes=((AREA_GEOCODE, "province"),))


class ProvincialAlerts:
    """Rules 1-3 over a :class:`~hub.forward.deliver.Forwarder`; run :meth:`run` as a task."""

    def __init__(self, config: ForwardConfig, forwarder: Forwarder, incidents: Callable[[], list[ProvincialIncident]],
                 *, every_s: float, clock: Callable[[], float]) -> None:
        self.config = config
        self.forwarder = forwarder
        self.incidents = incidents
        self.every_s = every_s
        self.clock = clock
        self.open: set[str] = set()
        self._last: dict[str, ProvincialIncident] = {}
        """The incidents of the last tick, to place their Cancel where they were."""
        self.sent = 0

    async def run(self) -> None:
        self.open = await self.forwarder.gateway.call(lambda tx: open_threads(tx.conn))
        while True:
            await self.tick()
            await asyncio.sleep(self.every_s)

    async def tick(self) -> None:
        now = self.clock()
        current = {inc.incident_id: inc for inc in self.incidents() if inc.points}
        for iid, inc in current.items():
            change = Change.UPDATE if iid in self.open else Change.RAISE
            if await self.forwarder.enqueue(notice(inc, change, now)) is not None:
                self.sent += 1
                log.info("province.alert", extra={"incident": iid, "change": change.value, "cities": list(inc.cities)})
        for iid in sorted(self.open - current.keys()):
            last = self._last.get(iid)
            ended = notice(last, Change.CLEAR, now) if last is not None else cancel(iid, now)
            if await self.forwarder.enqueue(ended) is not None:
                self.sent += 1
                log.info("province.alert", extra={"incident": iid, "change": "clear"})
        self.open = set(current)
        self._last = current
