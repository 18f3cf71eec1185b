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
4. A site without a position (one that reported without being registered, which
   ``accept_any`` allows) still gets its alert out: the CAP ``<area>`` carries the area's
   ``<geocode>`` instead of a circle, and no camera is asked (cameras are chosen by position).
   A *registered* site without a position never gets this far: the hub refuses to start
   (hub/sites.py, :func:`hub.sites.check_placed`).
5. Whatever is not forwarded is counted by reason in ``fwd_not_forwarded``, in the transaction
   of the event (so the counts survive a restart): ``no_recipient`` (a raise that no recipient
   takes), ``evidence_queue_full`` (a camera picture not taken, so not sent; counted at the next
   tick, as the drop happens outside a transaction), and forwarding's own ``delivery_failed``
   and ``undeliverable`` (hub/forward/outbox.py).
   ``GET /api/forwarding`` shows them.
6. An escalation (hub/forward/outbox.py rule 6) raises an ISA-18.2 alarm of priority high from
   the source ``forwarding`` (the alarm's device), one per delivery: site = the alert's site (the
   hub's id for an alert of no site), point = the recipient, rule = ``escalation:<delivery>``.
   It is listed, acknowledged and shelved like any alarm; its condition clears when the
   recipient acknowledges the delivery, or when the delivery no longer exists
   (:meth:`AlarmAlerts.settle`, each tick). Escalation alarms are never forwarded themselves:
   an alarm about an alert not acknowledged, sent as an alert, could escalate in turn.

:func:`notice_for` is pure; :class:`AlarmAlerts` is the shell the engine and the hub call.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from hub import alarms as isa
from hub.cctv_geo import Evidence, GeoPoint
from hub.config import HubConfig
from hub.forward import outbox
from hub.forward.cap import Text
from hub.forward.outbox import Escalation, count_not_forwarded
from hub.forward.plan import Change, Hazard, Notice, Source
from hub.rules import AlarmPriority
from hub.store import Tx
from trust.enrolment import EnrolmentError, registered_places

log = logging.getLogger(__name__)

_HAZARD_BY_KIND = {
    "underpass": Hazard.UNDERPASS,
    "flood_alarm": Hazard.FLOOD,
    "displacement": Hazard.LANDSLIDE,
    "river_gate": Hazard.RIVER,
    "rain_gauge": Hazard.HEAVY_RAIN,
}
_DEVICE_RULES = ("stale", "fault", "comm")
AREA_GEOCODE: Final = "jikimi:area"
"""The CAP ``<geocode>`` valueName whose value is the hub's area id (``gg-suwon``)."""
FORWARDING: Final = "forwarding"
"""The source of escalation alarms: their ``device`` (rule 6)."""
ESCALATION_PRIORITY: Final = AlarmPriority.HIGH
NO_RECIPIENT: Final = "no_recipient"
EVIDENCE_QUEUE_FULL: Final = "evidence_queue_full"

AlarmKey = tuple[str, str, str, str]


class SourceAlarms(Protocol):
    """The alarm desk as alerting uses it (hub/alarmdesk.py): conditions of other hub parts."""

    def source_raise(self, tx: Tx, key: AlarmKey, area: str, priority: str, reason: str) -> int: ...

    def source_clear(self, tx: Tx, alarm_id: int, reason: str) -> bool: ...


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


def notice_for(f: AlarmFacts, change: Change, position: GeoPoint | None, *,
               evidence: tuple[Evidence, ...] = ()) -> Notice:
    """The notice of an alarm transition (pure); without a position it is placed by its area's
    geocode (rule 4)."""
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
        geocodes=() if position is not None else ((AREA_GEOCODE, f.area),),
        site=f.site,
        evidence=evidence,
        forecast=f.device == "forecast",  # the network forecast's alarm (hub/forecastdesk.py): Expected
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
        """Alerts sent placed by their area's geocode only (rule 4), since start."""
        self.desk: SourceAlarms | None = None
        """The alarm desk escalation alarms are raised on (set by the hub)."""

    def position(self, site: str) -> GeoPoint | None:
        """The site's position: from the registry, else from its enrolment (a site enrolled
        since the hub started), else None."""
        entry = self.cfg.sites.registry.get(site)
        if entry is not None and entry.lat is not None and entry.lon is not None:
            return GeoPoint(entry.lat, entry.lon)
        if self.cfg.enrolment is not None:
            try:
                place = registered_places(self.cfg.enrolment.db_path, site).get(site)
            except EnrolmentError as exc:
                log.error("forward.enrolment_unreadable", extra={"site": site, "error": str(exc)})
                return None
            if place is not None:
                return GeoPoint(place.lat, place.lon)
        return None

    def on_transition(self, tx: Tx, f: AlarmFacts, tr: isa.Transition, *, raised: bool) -> None:
        """Called by the engine inside the transaction that recorded ``tr``."""
        if raised:
            change = Change.RAISE
        elif tr.event is isa.AlarmEvent.CLEAR:
            change = Change.CLEAR
        else:
            return
        if f.device == FORWARDING:
            return  # rule 6: an escalation alarm is the console's, never an alert
        position = self.position(f.site)
        if position is None:
            self.unplaced += 1
            log.warning("forward.site_unplaced", extra={"site": f.site, "alarm": f.alarm_id, "area": f.area,
                                                        "fix": "register the site with a position"})
        queued = outbox.enqueue(tx, notice_for(f, change, position), self.forward, now=tx.now)
        if queued is None:
            return
        if not queued.deliveries and change is Change.RAISE:
            count_not_forwarded(tx.conn, NO_RECIPIENT, tx.now)
            log.warning("forward.no_recipient", extra={"alarm": f.alarm_id, "area": f.area, "priority": f.priority})
        self.queued += 1
        tx.after_commit(self._wake)
        if raised and self._capture is not None and position is not None:
            capture = self._capture
            where = position
            tx.after_commit(lambda: capture(f, where))

    # --- escalations (rule 6) ---------------------------------------------------------------

    def escalated(self, tx: Tx, esc: Escalation) -> int | None:
        """Raise the console alarm of ``esc`` (inside the escalation's transaction); its id."""
        if self.desk is None:
            return None
        site = esc.site or self.cfg.hub_id
        area = esc.area or self.cfg.sites.area_of(site)
        alarm_id = self.desk.source_raise(tx, escalation_key(site, esc.recipient, esc.delivery_id), area,
                                          ESCALATION_PRIORITY.value, escalation_text(esc))
        tx.conn.execute(
            "INSERT INTO fwd_escalation_alarms (delivery_id, alarm_id, raised_at) VALUES (?, ?, ?)"
            " ON CONFLICT (delivery_id) DO UPDATE SET alarm_id = excluded.alarm_id, raised_at = excluded.raised_at,"
            " settled_at = NULL",
            (esc.delivery_id, alarm_id, tx.now))
        return alarm_id

    def settle(self, tx: Tx) -> int:
        """Clear the escalation alarms whose delivery was acknowledged or no longer exists."""
        if self.desk is None:
            return 0
        rows = tx.conn.execute(
            "SELECT e.delivery_id, e.alarm_id, d.state, d.recipient, d.identifier FROM fwd_escalation_alarms e"
            " LEFT JOIN fwd_deliveries d ON d.id = e.delivery_id WHERE e.settled_at IS NULL").fetchall()
        settled = 0
        for did, alarm_id, state, recipient, identifier in rows:
            if state == "acked":
                reason = f"{recipient} acknowledged alert {identifier}"
            elif state is None:
                reason = f"delivery {did} no longer exists"
            else:
                continue
            self.desk.source_clear(tx, int(alarm_id), reason)
            tx.conn.execute("UPDATE fwd_escalation_alarms SET settled_at = ? WHERE delivery_id = ?", (tx.now, did))
            settled += 1
        return settled


def escalation_key(site: str, recipient: str, delivery_id: int) -> AlarmKey:
    return (site, FORWARDING, recipient, f"escalation:{delivery_id}")


def escalation_text(esc: Escalation) -> str:
    """The escalation alarm's message: who has not acknowledged which alert (pure)."""
    why = "refused or failed" if esc.state == "failed" else "not acknowledged in time"
    to = f"; sent on to {esc.escalated_to}" if esc.escalated_to else ""
    return f"{esc.recipient}: alert {esc.identifier} ({esc.headline}) {why}{to}"


class EvidenceQueue:
    """Bounded queue of captures to make; a full queue drops the newest with a log line
    (the alert itself is already queued; only its picture is lost)."""

    def __init__(self, size: int = 64) -> None:
        self.queue: asyncio.Queue[tuple[AlarmFacts, GeoPoint]] = asyncio.Queue(maxsize=size)
        self.dropped = 0
        self._uncounted = 0

    def put(self, f: AlarmFacts, position: GeoPoint) -> None:
        try:
            self.queue.put_nowait((f, position))
        except asyncio.QueueFull:
            self.dropped += 1
            self._uncounted += 1
            log.error("cctv.capture_queue_full", extra={"alarm": f.alarm_id, "site": f.site})

    def take_uncounted(self) -> int:
        """The drops since the last call (on the event loop, where :meth:`put` runs); the
        caller counts them with :func:`count_drops` in its next transaction."""
        n, self._uncounted = self._uncounted, 0
        return n


def count_drops(tx: Tx, n: int) -> None:
    """Count ``n`` dropped captures as not forwarded (rule 5), in ``tx``."""
    if n:
        count_not_forwarded(tx.conn, EVIDENCE_QUEUE_FULL, tx.now, n)


def operation_notice(cfg: HubConfig, operation_id: str, kind: str, area: str, actor: str, reason: str,
                     at: float) -> Notice:
    """The notice of an area operation (block or evacuate), placed as a circle around the
    registered sites of the area, or by the area's geocode when none of them has a position (pure)."""
    points = [GeoPoint(e.lat, e.lon) for site, e in cfg.sites.registry.items()
              if e.area == area and e.lat is not None and e.lon is not None and site]
    centre: GeoPoint | None = None
    radius_km: float | None = None
    if points:
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
        geocodes=() if centre is not None else ((AREA_GEOCODE, area),),
    )


def _km(a: GeoPoint, b: GeoPoint) -> float:
    la1, la2 = math.radians(a.lat), math.radians(b.lat)
    dla, dlo = la2 - la1, math.radians(b.lon - a.lon)
    h = math.sin(dla / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin(dlo / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))
