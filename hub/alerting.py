"""Alarms out: each alarm raise and clear becomes a forwarding notice, atomically with it.

Rules:

1. An alarm that is raised (enters unacknowledged) is a ``raise`` notice; one that returns
   to normal on its own (``clear``) is a ``clear`` notice (CAP Cancel). Operator actions
   (acknowledge, shelve) are not news for a city centre and are not forwarded.
2. The notice is queued inside the transaction that records the alarm transition, so an
   alarm committed is an alert queued: a hub crash cannot lose one between the two.
3. After the commit the forwarder is woken; for a raise with cameras configured, the nearest
   cameras that face the site are asked for a snapshot, stored as evidence, and sent as an
   ``update`` of the same thread (an alert never waits for a picture).
4. A site without a position in ``[sites.registry]`` cannot be placed on a map or in a CAP
   area: its alarm is not forwarded, and that is logged and counted (``unplaced``) so the
   configuration gets fixed rather than an alert silently missed.

:func:`notice_for` is pure; :class:`AlarmAlerts` is the shell the engine and the hub call.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from hub import alarms as isa
from hub.cctv_geo import Evidence, GeoPoint
from hub.config import HubConfig
from hub.forward import outbox
from hub.forward.cap import Text
from hub.forward.plan import Change, Hazard, Notice, Source
from hub.rules import AlarmPriority
from hub.store import Tx

log = logging.getLogger(__name__)

_HAZARD_BY_KIND = {
    "underpass": Hazard.UNDERPASS,
    "flood_alarm": Hazard.FLOOD,
    "displacement": Hazard.LANDSLIDE,
    "river_gate": Hazard.RIVER,
    "rain_gauge": Hazard.HEAVY_RAIN,
}
_DEVICE_RULES = ("stale", "fault", "comm")


@dataclass(frozen=True)
class AlarmFacts:
    """What forwarding needs to know of one alarm transition."""

    alarm_id: int
    site: str
    site_name: str
    device: str
    point: str
    rule: str
    area: str
    priority: str
    kind: str | None
    message: str
    ts: float
    event: str


def hazard_of(kind: str | None, rule: str) -> Hazard:
    if any(word in rule for word in _DEVICE_RULES):
        return Hazard.DEVICE
    return _HAZARD_BY_KIND.get(kind or "", Hazard.OTHER)


def notice_for(f: AlarmFacts, change: Change, position: GeoPoint, *,
               evidence: tuple[Evidence, ...] = ()) -> Notice:
    """The notice of an alarm transition (pure)."""
    place = f.site_name or f.site
    what_en = f"{f.point} at {place} ({f.device}): {f.message}"
    what_ko = f"{place} {f.device} {f.point}: {f.message}"
    if change is Change.CLEAR:
        headline = Text(f"해제: {place} 경보", f"Cleared: alarm at {place}")
    else:
        headline = Text(f"{place} 경보: {f.rule}", f"Alarm at {place}: {f.rule}")
    suffix = f":evidence:{evidence[0].id}" if evidence else ""
    return Notice(
        key=f"alarm:{f.alarm_id}:{f.event}:{f.ts!r}{suffix}",
        thread=f"alarm:{f.alarm_id}",
        change=change,
        at=f.ts,
        source=Source.ALARM,
        area=f.area,
        priority=AlarmPriority(f.priority),
        hazard=hazard_of(f.kind, f.rule),
        headline=headline,
        description=Text(what_ko, what_en),
        place=Text(place, place),
        position=position,
        site=f.site,
        evidence=evidence,
    )


class AlarmAlerts:
    """Queues alarm notices in the engine's transactions; captures camera evidence after."""

    def __init__(self, cfg: HubConfig, *, wake: Callable[[], None],
                 capture: Callable[[AlarmFacts, GeoPoint], None] | None) -> None:
        assert cfg.forward is not None
        self.cfg = cfg
        self.forward = cfg.forward
        self._wake = wake
        self._capture = capture
        self.queued = 0
        self.unplaced = 0

    def position(self, site: str) -> GeoPoint | None:
        entry = self.cfg.sites.registry.get(site)
        if entry is None or entry.lat is None or entry.lon is None:
            return None
        return GeoPoint(entry.lat, entry.lon)

    def on_transition(self, tx: Tx, f: AlarmFacts, tr: isa.Transition, *, raised: bool) -> None:
        """Called by the engine inside the transaction that recorded ``tr``."""
        if raised:
            change = Change.RAISE
        elif tr.event is isa.AlarmEvent.CLEAR:
            change = Change.CLEAR
        else:
            return
        position = self.position(f.site)
        if position is None:
            self.unplaced += 1
            log.error("forward.site_unplaced", extra={"site": f.site, "alarm": f.alarm_id,
                                                      "fix": f"give [sites.registry.{f.site}] lat and lon"})
            return
        queued = outbox.enqueue(tx, notice_for(f, change, position), self.forward, now=tx.now)
        if queued is None:
            return
        self.queued += 1
        tx.after_commit(self._wake)
        if raised and self._capture is not None:
            capture = self._capture
            tx.after_commit(lambda: capture(f, position))


class EvidenceQueue:
    """Bounded queue of captures to make; a full queue drops the newest with a log line
    (the alert itself is already queued; only its picture is lost)."""

    def __init__(self, size: int = 64) -> None:
        self.queue: asyncio.Queue[tuple[AlarmFacts, GeoPoint]] = asyncio.Queue(maxsize=size)
        self.dropped = 0

    def put(self, f: AlarmFacts, position: GeoPoint) -> None:
        try:
            self.queue.put_nowait((f, position))
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("cctv.capture_queue_full", extra={"alarm": f.alarm_id, "site": f.site})


def operation_notice(cfg: HubConfig, operation_id: str, kind: str, area: str, actor: str, reason: str,
                     at: float) -> Notice | None:
    """The notice of an area operation (block or evacuate), placed as a circle around the
    registered sites of the area; None when none of them has a position (pure)."""
    points = [GeoPoint(e.lat, e.lon) for site, e in cfg.sites.registry.items()
              if e.area == area and e.lat is not None and e.lon is not None and site]
    if not points:
        return None
    centre = GeoPoint(sum(p.lat for p in points) / len(points), sum(p.lon for p in points) / len(points))
    radius_km = max(0.5, max(_km(centre, p) for p in points) + 0.5)
    evacuate = kind == "evacuate"
    return Notice(
        key=f"operation:{operation_id}:start",
        thread=f"operation:{operation_id}",
        change=Change.RAISE,
        at=at,
        source=Source.OPERATION,
        area=area,
        priority=AlarmPriority.CRITICAL,
        hazard=Hazard.EVACUATION if evacuate else Hazard.BLOCK,
        headline=Text(f"{area} {'대피 명령' if evacuate else '통행 차단'}",
                      f"{'Evacuation order' if evacuate else 'Closure'} in {area}"),
        description=Text(f"{actor}: {reason}", f"{actor}: {reason}"),
        place=Text(area, area),
        position=centre,
        radius_km=radius_km,
    )


def _km(a: GeoPoint, b: GeoPoint) -> float:
    la1, la2 = math.radians(a.lat), math.radians(b.lat)
    dla, dlo = la2 - la1, math.radians(b.lon - a.lon)
    h = math.sin(dla / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin(dlo / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))
