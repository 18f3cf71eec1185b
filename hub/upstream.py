"""The city hub's side of the province (DESIGN §8): its province outbox and the batches it sends.

A city hub is to the province what an edge is to the city hub, so this is the edge's protocol
with the very same code: the outbox is :class:`shared.outbox.Outbox` holding
:data:`shared.messages.CityRecord` (rules 1-7 of shared/outbox.py: seq per epoch, deleted only
on the province's ack of commit, thinning of site states when full, salvage of a corrupt file),
and a batch is :func:`shared.messages.encode_batch` as a :class:`~shared.messages.CityBatch`.

Rules:

1. Province records (alarms and their transitions, incidents, site states with data age,
   operations, alert deliveries) are appended as they happen; never raw telemetry. Site states
   are the only thinnable records (they are sent at the ``telemetry`` priority: a newer one
   supersedes them); every other record is critical.
2. A batch carries the outbox's epoch, its floor and the thinned holes among its records
   (:func:`shared.outbox.thinned_holes`, as the edge's uplink names them); records are marked
   sent before the batch is published.
3. A :class:`~shared.messages.CityAck` is applied as the edge applies an :class:`Ack`
   (shared/sending.py): ``through_seq`` of the outbox's epoch deletes what was sent; another
   epoch's deletes nothing.

4. The sender is :class:`shared.uplink.Uplink` (the edge's, on the city's wire), attached to the
   hub's one broker connection (hub/mqtt.py): the certificate ``hub-<city>`` is the city's voice
   at its broker, and the broker makes a client id of the certificate's name, so a second
   connection would take the first one's session over. The hub's receiver hands it the city's
   acks and requests; its status is ``online`` on connect and ``offline`` on a clean stop (the
   connection's Will is the hub's own status, for its edges).
5. :class:`Upstream` turns the hub's committed changes (hub/outlet.py, after commit, on the
   event loop) into records: alarm transitions, incidents, operations; every
   ``site_state_every_s`` each site whose state or newest data changed (its data age at the
   province is ``now - last_data_ts``), and each alert delivery (CAP to a city centre, 112, 119)
   whose state or attempts changed. The records of one writer transaction are appended in
   one outbox write.
6. Records are the state *as it is now*, so a record lost between the hub's commit and the
   outbox's (a crash in between) is repaired by the next one of the same alarm, incident or
   operation, and on start every site's state is reported again.
7. Requests from the province (``jk/v1/city/{city}/req``) are decoded as from this city's topic
   (a request naming another city is dropped and counted) and handed to ``on_request``
   (hub/requestdesk.py decides; its answers come back through :meth:`Upstream.report`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

import msgspec

from hub.config import HubConfig
from hub.errors import UpstreamError
from hub.live import AlarmChanged, Change, IncidentChanged, OperationChanged, OperationStarted
from hub.province_config import ProvinceLinkConfig
from hub.state import HubState
from shared import messages, topics
from shared.messages import (
    AlarmRecord,
    CityAck,
    CityBirth,
    CityRecord,
    CityRequest,
    CityStatus,
    DeliveryRecord,
    IncidentRecord,
    OperationRecord,
    Place,
    Priority,
    SiteState,
    SiteStateRecord,
)
from shared.mqtt import Connection
from shared.outbox import MIGRATIONS, Outbox, OutboxKind, Replaced, open_outbox, thinned_holes
from shared.uplink import Uplink, UplinkConfig, Wire
from shared.version import VERSION

log = logging.getLogger(__name__)


UPSTREAM_FILE: Final = "province-outbox.db"
"""The province outbox's file name in the hub's data directory."""

KIND: Final = OutboxKind[CityRecord](decoder=msgspec.json.Decoder(CityRecord), migrations=MIGRATIONS,
                                     error=UpstreamError)

ProvinceOutbox = Outbox[CityRecord]


def open_upstream(path: Path, *, max_records: int = 200_000,
                  clock: Callable[[], float]) -> tuple[ProvinceOutbox, Replaced | None]:
    """The province outbox at ``path`` (a corrupt one is moved aside and salvaged, rule 7)."""
    return open_outbox(path, kind=KIND, max_records=max_records, clock=clock)


def next_batch(outbox: ProvinceOutbox, city: str, boot: str, from_seq: int, *, limit: int = 500,
               historical: bool = False) -> tuple[bytes, int] | None:
    """Rule 2: the next :class:`~shared.messages.CityBatch` from ``from_seq``, marked sent, and
    the seq to continue from; None when nothing is held there."""
    rows = outbox.read(from_seq, limit=limit)
    if not rows:
        return None
    floor = outbox.floor_seq()
    payload, n = messages.encode_batch(city, boot, [r.payload for r in rows], floor_seq=floor,
                                       epoch=outbox.epoch, thinned=thinned_holes(rows, max(from_seq, floor)),
                                       historical=historical, sender="city")
    outbox.mark_sent(rows[n - 1].seq)
    return payload, rows[n - 1].seq + 1


def apply_ack(outbox: ProvinceOutbox, ack: CityAck) -> int:
    """Rule 3; returns how many records were deleted."""
    if ack.through_seq is None:
        return 0
    return outbox.ack(ack.through_seq, epoch=ack.epoch)


DeliveryNow = tuple[int, str, str, str, int]
"""(delivery id, alert identifier, recipient, state, attempts) of one alert delivery."""


def deliveries_now(conn: sqlite3.Connection, since: float) -> list[DeliveryNow]:
    """Alert deliveries still pending, or created or settled at or after ``since``."""
    rows = conn.execute(
        "SELECT id, identifier, recipient, state, attempts FROM fwd_deliveries WHERE state = 'pending'"
        " OR max(created_at, coalesce(acked_at, 0), coalesce(failed_at, 0)) >= ? ORDER BY id", (since,)).fetchall()
    return [(int(i), str(a), str(r), str(s), int(n)) for i, a, r, s, n in rows]


SiteNow = tuple[str, bool, float | None]
"""(site, online, newest data time) as the hub's state holds it."""


def city_wire(city: str, hub_id: str, boot: str, *, sites: Callable[[], list[str]],
              on_request: Callable[[CityRequest], None], clock: Callable[[], float]) -> Wire:
    """A city's topics and messages for :class:`shared.uplink.Uplink` (rules 4 and 7): status, birth
    (the ``sites`` it serves) and batches up; the province's acks and requests down, each decoded as
    from this city's topic (one naming another city raises WireError: counted and dropped)."""

    def at(channel: topics.CityChannel) -> str:
        return topics.city_topic(city, channel)

    def status(state: SiteState) -> bytes:
        return messages.encode(CityStatus(city=city, hub=hub_id, state=state, ts=clock()))

    def birth() -> bytes:
        return messages.encode(CityBirth(city=city, hub=hub_id, hub_version=VERSION, boot=boot, ts=clock(),
                                         sites=sites()))

    async def request(topic: str, payload: bytes) -> None:
        on_request(messages.decode_city(CityRequest, payload, city))

    return Wire(kind="city", status_topic=at(topics.CityChannel.STATUS), birth_topic=at(topics.CityChannel.BIRTH),
                data_topic=at(topics.CityChannel.DATA), ack_topic=at(topics.CityChannel.ACK),
                decode_ack=lambda p: messages.decode_city(CityAck, p, city), status=status, birth=birth,
                outbox_error=UpstreamError, inbound=(at(topics.CityChannel.REQ),), on_message=request)


def sites_now(st: HubState) -> list[SiteNow]:
    """Every known site's state (run on the writer's thread, which owns ``st``)."""
    newest: dict[str, float] = {}
    for (site, _device, _point), pm in st.latest.items():
        if pm.ts > newest.get(site, -math.inf):
            newest[site] = pm.ts
    return [(site, mem.online, newest.get(site)) for site, mem in st.sites.items()]


class Upstream:
    """The city hub's voice to the province (rules 4-6): its outbox, its sender, and the
    translation of the hub's committed changes into records."""

    def __init__(self, cfg: HubConfig, link: ProvinceLinkConfig, *, boot: str,
                 clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.link = link
        self.city = topics.city_of_hub(cfg.hub_id)
        self.clock = clock
        self.outbox, replaced = open_upstream(cfg.db_path.parent / UPSTREAM_FILE, max_records=link.max_records,
                                              clock=clock)
        if replaced is not None:
            log.error("upstream.outbox_replaced", extra={"error": replaced.error, "moved_to": str(replaced.moved_to),
                                                         "salvaged": replaced.salvaged})
        city = self.city

        def request(req: CityRequest) -> None:
            if self.on_request is not None:
                self.on_request(req)

        wire = city_wire(city, cfg.hub_id, boot, sites=lambda: sorted(self._sites), on_request=request, clock=clock)
        b = cfg.broker
        self.uplink = Uplink(UplinkConfig(sender=city, host=b.host, port=b.port, tls=b.tls, client_id=cfg.hub_id),
                             wire, self.outbox, boot=boot, clock=clock)
        self._sites: set[str] = set(cfg.sites.registry)
        self._reported: dict[str, tuple[bool, float | None]] = {}
        self._raised: dict[int, float] = {}
        """alarm id → when its current episode was raised (learned from its activation)."""
        self._ops: dict[str, tuple[str, str]] = {}
        """operation id → (action, area), learned when it starts."""
        self._incidents: dict[int, tuple[float, list[str]]] = {}
        """incident id → (opened at, its alarms' ids)."""
        self._pending: list[CityRecord] = []
        self._delivered: dict[int, tuple[str, int]] = {}
        """delivery id → (state, attempts) as last reported, for those the last query returned."""
        self.on_request: Callable[[CityRequest], None] | None = None
        """Takes a request from the province (the hub hands it to hub/requestdesk.py); must not block."""

    def close(self) -> None:
        self.outbox.close()

    def _place(self, site: str) -> Place | None:
        entry = self.cfg.sites.registry.get(site)
        if entry is None or entry.lat is None or entry.lon is None:
            return None
        return Place(lat=entry.lat, lon=entry.lon)

    # --- rule 5: the hub's changes -------------------------------------------------------

    def changed(self, change: Change) -> None:
        """A committed change of the hub (after commit, on the event loop)."""
        rec = self._record(change)
        if rec is None:
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(rec)

    def _record(self, change: Change) -> CityRecord | None:
        now = self.clock()
        match change:
            case AlarmChanged():
                if change.event == "activate" or change.id not in self._raised:
                    self._raised[change.id] = change.ts
                if change.incident_id is not None:
                    opened, ids = self._incidents.setdefault(change.incident_id, (change.ts, []))
                    if str(change.id) not in ids:
                        ids.append(str(change.id))
                return AlarmRecord(seq=0, ts=change.ts, prio=Priority.ALARM, alarm_id=str(change.id),
                                   site=change.site, rule=change.rule, severity=change.priority, state=change.state,
                                   raised_at=self._raised[change.id], place=self._place(change.site),
                                   by=change.actor or None, why=change.reason[:200])
            case IncidentChanged():
                opened, ids = self._incidents.setdefault(change.id, (now, []))
                rec = IncidentRecord(seq=0, ts=now, prio=Priority.ALARM, incident_id=str(change.id),
                                     state=change.state, area=change.area, opened_at=opened,
                                     alarm_ids=ids[-messages.MAX_INCIDENT_ALARMS:])
                if change.state == "closed":
                    self._incidents.pop(change.id, None)
                return rec
            case OperationStarted():
                self._ops[change.id] = (change.kind, change.area)
                return OperationRecord(seq=0, ts=now, prio=Priority.EVENT, op_id=change.id, action=change.kind,
                                       area=change.area, state="started")
            case OperationChanged():
                action, area = self._ops.get(change.id, ("", ""))
                c = change.counts
                n = sum(c.values())
                failed = sum(v for k, v in c.items() if k in ("failed", "refused", "expired", "send_failed"))
                verified = c.get("verified", 0)
                state = "done" if n and verified + failed == n else "running"
                return OperationRecord(seq=0, ts=now, prio=Priority.EVENT, op_id=change.id, action=action or "unknown",
                                       area=area or "unknown", state=state, commands=n, verified=verified,
                                       failed=failed)
            case _:
                return None

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            self.outbox.append(pending)
        except UpstreamError as exc:  # the province misses these; the city goes on (rule 6 repairs)
            log.error("upstream.append_failed", extra={"records": len(pending), "error": str(exc)})
            return
        self.uplink.notify()

    def report(self, rec: CityRecord) -> None:
        """A record the hub makes on its own (a provincial request's answer, hub/requestdesk.py)."""
        self._pending.append(rec)
        self._flush()

    # --- rule 5: site states -------------------------------------------------------------

    def report_sites(self, sites: Iterable[SiteNow]) -> int:
        """Append a site-state record for each site whose state or newest data changed since it
        was last reported; returns how many."""
        now = self.clock()
        out: list[CityRecord] = []
        for site, online, last in sites:
            self._sites.add(site)
            if self._reported.get(site) == (online, last):
                continue
            self._reported[site] = (online, last)
            out.append(SiteStateRecord(seq=0, ts=now, prio=Priority.TELEMETRY, site=site, online=online,
                                       last_data_ts=last, place=self._place(site)))
        if out:
            self._pending.extend(out)
            self._flush()
        return len(out)

    def report_deliveries(self, deliveries: Iterable[DeliveryNow]) -> int:
        """Append a delivery record for each alert delivery whose state or attempts changed since
        it was last reported; returns how many."""
        now = self.clock()
        out: list[CityRecord] = []
        seen: dict[int, tuple[str, int]] = {}
        for did, alert, recipient, state, attempts in deliveries:
            seen[did] = (state, attempts)
            if self._delivered.get(did) == (state, attempts):
                continue
            out.append(DeliveryRecord(seq=0, ts=now, prio=Priority.EVENT, delivery_id=str(did), alert_id=alert,
                                      recipient=recipient, state=state, attempts=attempts))
        self._delivered = seen  # what the next query can return again: no more is remembered
        if out:
            self._pending.extend(out)
            self._flush()
        return len(out)

    async def attached(self, conn: Connection) -> None:
        await self.uplink.attached(conn)

    def owns(self, topic: str) -> bool:
        return self.uplink.owns(topic)
