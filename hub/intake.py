"""The intake desk: what the edges send, into the database and the mirror, then acked.

Runs inside the writer's transaction (hub/store.py) on the shared :class:`~hub.state.HubState`;
hands readings to the alarm desk (rules) and replies to the command desk. Calls go down only:
intake → alarm desk → alerting → forwarding outbox.

Rules of ingest:

1. Malformed messages, and messages the store cannot hold (hub/validate.py: seq bounds, unique
   device ids, values, timestamps within the allowed clock skew), are quarantined with their
   reason (hub/quarantine.py) and counted before anything is changed; ingest goes on.
2. A record is stored iff its (site, epoch, seq) is new (hub/seqs.py: one tracker per outbox
   epoch, so a replaced or wiped edge starting again at seq 1 is new, never a duplicate);
   duplicates are counted.
3. A reading becomes the point's latest only if it is not older than the latest (a replayed
   historical reading is history, not news). Every reading is judged: one that becomes the
   latest by the point's live judge, an older one by its history cursor; a reading flagged
   ``historical`` or older than the latest raises or clears alarms at its own time, marked late
   (hub/alarmdesk.py rules 7-10 say in which order, and why history never re-raises an alarm
   that a newer reading cleared).
4. Every message is PUBACKed, and every (site, epoch) in the transaction acked with its
   ``through_seq`` (and ``resend_from`` when a gap asks for it), only after COMMIT. Only a
   site's current epoch (the one it last sent) is asked to resend.
   A batch's thinned ranges close those holes at once (hub/seqs.py rule 6).
5. A site that goes offline marks its points stale and raises their stale alarms.
6. A message's records go in with one statement (``json_each``), and the transaction's latest
   values with one ``executemany``: no per-record statement on the hot path. A message's plain
   readings (no origin) go in with statements of their own (multi-row ``VALUES``, up to
   ``READINGS_PER_STATEMENT`` rows each) whose rows carry only what varies per reading; the
   message's site, epoch and receipt time are bound once.
7. Each message is written in its own SAVEPOINT. Should writing it fail anyway (a SQLite
   error, a value SQLite refuses), that message alone is rolled back and quarantined, its
   after-commit effects dropped, and the mirror rebuilt from the database (``reload``, as at
   start-up; the latest values of the messages before it are written first): the writer never
   dies for one message, and the other messages of the transaction are committed and acked.
8. A site that sends data while the hub holds no birth for it (the birth was lost, dropped on
   overflow or quarantined) is asked for a *rebirth* in its ack, at most every
   ``REBIRTH_EVERY_S``; the edge then publishes its status and birth again.
9. Every event is stored whatever its kind; the alarm desk raises or clears the edge alarms
   shared/site_events.py names for it (hub/alarmdesk.py rule 11), and readings of the points
   that clear an edge alarm are shown to the desk too.
10. A record an outbox carried into a new epoch names its ``origin``, the (epoch, seq) it was
   first assigned. Its new seq counts as received (rule 2: acks and gaps go on as for any
   record), but if the site's record at that origin, or a record carried from the same origin,
   is committed already and is the same record (type, time, device and point, event kind or
   command reply), it is a duplicate: neither stored nor judged. The lookup is per site (an
   origin can only name the sending site's records); an origin in the record's own epoch means
   nothing (no outbox carries a record within its epoch) and is ignored; an origin that names
   nothing committed, or another record (a seq a torn outbox reused), leaves the record new.
   The other way round too: an original that arrives late, after a copy carried from it was
   committed, is the duplicate (looked up only for epochs something was carried from).
   Records without an origin (older edges) are deduplicated by (site, epoch, seq) alone.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from hub import validate
from hub.alarmdesk import EDGE_CLEAR_POINTS, AlarmDesk
from hub.commanddesk import CommandDesk
from hub.config import HubConfig
from hub.inbound import Inbound
from hub.live import LatestChanged, LatestPoint, LiveEvent, SiteBorn, SiteEvent, SiteStateChanged
from hub.outlet import Outlet, live_after
from hub.quarantine import Quarantine
from hub.rules import Sample, as_number
from hub.seqs import SiteSeqs
from hub.state import HubState, Key, PointMem, SiteMem
from hub.store import Clock, Tx
from hub.validate import Reason
from shared import messages
from shared.messages import Ack, Birth, DataBatch, Event, Quality, Reading, Record, Reply, SiteState, Status

log = logging.getLogger(__name__)

REBIRTH_EVERY_S = 30.0
"""How often a site without a birth at the hub is asked for one again (rule 8)."""

_enc = msgspec.json.Encoder()
# Enum ``.value`` is a descriptor call; the hot path looks the text up instead.
_PRIO = {p: p.value for p in messages.Priority}
_QUALITY = {q: q.value for q in Quality}
# All of a message's records go in with one statement over one JSON array (json_each):
# executemany steps once per row, releasing and re-taking the GIL each time, and with the
# event loop busy in the other thread each re-take can wait a switch interval (measured: 2,500
# rows 21 ms alone, 250 ms beside a busy thread). One statement takes the GIL back once.
# ``value->10`` is the reading's value as JSON text, which is what the column holds.
_SQL_RECORDS = (
    "INSERT OR IGNORE INTO records (site, epoch, seq, type, ts, received_at, prio, historical, device, point,"
    " value, num, quality, body, origin_epoch, origin_seq) SELECT value->>0, value->>1, value->>2, value->>3,"
    " value->>4, value->>5, value->>6, value->>7, value->>8, value->>9, value->10, value->>11, value->>12,"
    " value->>13, value->>14, value->>15 FROM json_each(?)"
)
# A message's plain readings (rule 6), the hot path: one multi-row VALUES statement (up to
# READINGS_PER_STATEMENT rows; one cached statement per row count), each row binding only what
# varies per reading (seq, ts, prio, historical, device, point, value as JSON text, num, quality)
# and reusing the message's site, epoch and receipt time (?1-?3). Measured on one core, 1,000,000
# rows over 6,500 sites, 50 a message: 4.8 µs a row, against 6.9 with json_each over one JSON
# array and 5.6 with executemany (which also takes the GIL back once a row).
READINGS_PER_STATEMENT = 64
_READING_FIELDS = 9


@functools.lru_cache(maxsize=READINGS_PER_STATEMENT)
def _sql_readings(n: int) -> str:
    rows = ",".join(
        f"(?1, ?2, ?{b}, 'reading', ?{b + 1}, ?3, ?{b + 2}, ?{b + 3}, ?{b + 4}, ?{b + 5}, ?{b + 6}, ?{b + 7}, ?{b + 8})"
        for b in range(4, 4 + n * _READING_FIELDS, _READING_FIELDS))
    return ("INSERT OR IGNORE INTO records (site, epoch, seq, type, ts, received_at, prio, historical, device,"  # noqa: S608 - placeholders only
            f" point, value, num, quality) VALUES {rows}")


def _insert_readings(conn: sqlite3.Connection, site: str, epoch: int, received: float, flat: list[object]) -> None:
    """Rule 6: ``flat`` holds the readings' fields, :data:`_READING_FIELDS` a reading."""
    step = READINGS_PER_STATEMENT * _READING_FIELDS
    for at in range(0, len(flat), step):
        part = flat[at:at + step]
        conn.execute(_sql_readings(len(part) // _READING_FIELDS), (site, epoch, received, *part))


# rule 10: a carried record's origin, looked up as the record stored there and as one carried from it
_SQL_AT_ORIGIN = "SELECT type, ts, device, point, body FROM records WHERE site = ? AND epoch = ? AND seq = ?"
# (the planner would rather walk the site's whole primary key than take the partial index)
_SQL_FROM_ORIGIN = ("SELECT type, ts, device, point, body FROM records INDEXED BY records_origin"
                    " WHERE site = ? AND origin_epoch = ? AND origin_seq = ?")
_SAME_TS_S = 1e-6
"""Times compared after a trip through SQLite's REAL: equal within a microsecond."""
_body = msgspec.json.Decoder(Event | Reply)
_SQL_LATEST = (
    "INSERT INTO latest (site, device, point, value, num, quality, unit, ts, seq, received_at, stale)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT (site, device, point) DO UPDATE SET"
    " value = excluded.value, num = excluded.num, quality = excluded.quality, unit = excluded.unit,"
    " ts = excluded.ts, seq = excluded.seq, received_at = excluded.received_at, stale = 0"
)

Observer = Callable[[Sequence[Inbound], float], None]
"""Told of every committed ingest batch and the time it committed (benchmarks, tests)."""


@dataclass
class IngestCounters:
    messages: int = 0
    batches: int = 0
    records: int = 0
    duplicates: int = 0
    quarantined: int = 0
    statuses: int = 0
    births: int = 0
    acks: int = 0
    resend_asks: int = 0
    floor_closed: int = 0
    new_epochs: int = 0
    rebirth_asks: int = 0
    thinned_closed: int = 0
    rejected_sites: int = 0
    origin_duplicates: int = 0
    """Carried records whose origin was committed already (rule 10; also counted in duplicates)."""


class Intake:
    def __init__(self, cfg: HubConfig, state: HubState, alarms: AlarmDesk, commands: CommandDesk, outlet: Outlet,
                 *, clock: Clock, observer: Observer | None = None) -> None:
        self.cfg = cfg
        self.state = state
        self.alarms = alarms
        self.commands = commands
        self.outlet = outlet
        self.clock = clock
        self.observer = observer
        self.counters = IngestCounters()
        self.quarantine = Quarantine(cfg.ingest)
        self.reload: Callable[[sqlite3.Connection], None] | None = None
        """Rebuilds the mirror from the database (rule 7); set by the engine."""
        self.on_latest: Callable[[str, str, str, float, float | None, Quality, str | None], None] | None = None
        """Each live reading that became its point's latest (site, device, point, ts, number, quality,
        kind): the network forecast's feed (hub/forecastdesk.py), set by the engine."""

    def ingest(self, tx: Tx, items: Sequence[Inbound]) -> None:
        """The writer's ingest handler: one transaction's worth of inbound messages (rule 7)."""
        conn = tx.conn
        now = tx.now
        c = self.counters
        latest: dict[Key, tuple[object, ...]] = {}
        touched: dict[tuple[str, int], int] = {}
        pubacks: dict[int, list[int]] = {}
        changed_points: dict[str, list[Key]] | None = {} if self.outlet.wants_live() else None
        skew = self.cfg.ingest.max_clock_skew_s
        for item in items:
            c.messages += 1
            if item.mid:
                pubacks.setdefault(item.generation, []).append(item.mid)
            msg = item.msg
            if msg is None or item.site is None:
                self._quarantine(tx, item, Reason.MALFORMED, item.error)
                continue
            site = item.site
            if not self.cfg.sites.accepts(site):
                c.rejected_sites += 1
                self._quarantine(tx, item, Reason.UNKNOWN_SITE, "site is not in sites.registry")
                continue
            verdict = validate.check(msg, max(item.received, now), skew)
            if verdict.refusal is not None:
                self._quarantine(tx, item, verdict.refusal.reason, verdict.refusal.detail)
                continue
            effects = len(tx.effects)
            rows: list[tuple[object, ...]] = []
            readings: list[object] = []
            msg_latest: dict[Key, tuple[object, ...]] = {}
            changed: dict[str, list[Key]] | None = {} if changed_points is not None else None
            conn.execute("SAVEPOINT msg")
            try:
                self._site(conn, site, now)
                n = 0
                if isinstance(msg, DataBatch):
                    n = self._batch(tx, site, msg, item.received, rows, readings, msg_latest, changed,
                                    verdict.future)
                    if verdict.future:
                        self._quarantine(tx, item, Reason.FUTURE, f"{len(verdict.future)} record(s) dated more than"
                                         f" {skew:.0f} s after receipt",
                                         _enc.encode(validate.future_records(msg, verdict.future)))
                    if readings:
                        _insert_readings(conn, site, msg.epoch, item.received, readings)
                    if rows:
                        conn.execute(_SQL_RECORDS, (_enc.encode(rows),))
                elif isinstance(msg, Status):
                    self._status(tx, site, msg)
                else:
                    self._birth(tx, site, msg)
                conn.execute("RELEASE msg")
            except (sqlite3.Error, OverflowError, ValueError, msgspec.MsgspecError) as exc:
                # rule 7: this message alone is undone; the mirror is rebuilt from what is written
                conn.execute("ROLLBACK TO msg")
                conn.execute("RELEASE msg")
                del tx.effects[effects:]
                self._write_latest(conn, latest)
                if self.reload is not None:
                    self.reload(conn)
                self._quarantine(tx, item, Reason.STORE, f"{type(exc).__name__}: {exc}")
                continue
            if isinstance(msg, DataBatch):
                c.batches += 1
                c.records += n
                touched[(site, msg.epoch)] = touched.get((site, msg.epoch), 0) + n
                latest.update(msg_latest)
                if changed_points is not None and changed:
                    changed_points.setdefault(site, []).extend(changed.get(site, ()))
            elif isinstance(msg, Status):
                c.statuses += 1
            else:
                c.births += 1
        self._write_latest(conn, latest)
        acks: list[Ack] = []
        for (site, epoch), n in touched.items():
            tr = self.state.seqs[(site, epoch)]
            conn.execute("UPDATE site_epochs SET through_seq = ?, last_seen = ?, records = records + ?"
                         " WHERE site = ? AND epoch = ?", (tr.through, now, n, site, epoch))
            if self.state.epochs.get(site) == epoch:
                conn.execute("UPDATE sites SET through_seq = ?, last_seen = ?, records = records + ? WHERE site = ?",
                             (tr.through, now, n, site))
            ack = self._ack(site, epoch, tr, now, always=True)
            if self._wants_rebirth(site, now):
                ack = (Ack(site=site, epoch=epoch, through_seq=ack.through_seq, resend_from=ack.resend_from,
                           rebirth=True) if ack is not None else Ack(site=site, epoch=epoch, rebirth=True))
            if ack is not None:
                acks.append(ack)
        c.acks += len(acks)
        outlet = self.outlet
        live: list[LiveEvent] = []
        for site, keys in (changed_points or {}).items():
            points = []
            for key in dict.fromkeys(keys):
                pm = self.state.latest[key]
                points.append(LatestPoint(device=key[1], point=key[2], value=pm.value, quality=pm.quality.value,
                                          ts=pm.ts))
            live.append(LiveEvent.of(LatestChanged(site=site, points=points)))

        def after() -> None:
            for gen, mids in pubacks.items():
                outlet.puback(gen, mids)
            for ack in acks:
                outlet.send_ack(ack)
            if self.observer is not None:
                self.observer(items, self.clock())
            for event in live:
                outlet.live(event)

        tx.after_commit(after)

    def _wants_rebirth(self, site: str, now: float) -> bool:
        """Rule 8: a site sending data whose birth the hub lacks is asked for it, at most every
        ``REBIRTH_EVERY_S``."""
        st = self.state
        if site in st.born or now - st.rebirth_asked.get(site, -REBIRTH_EVERY_S) < REBIRTH_EVERY_S:
            return False
        st.rebirth_asked[site] = now
        self.counters.rebirth_asks += 1
        log.info("ingest.rebirth_asked", extra={"site": site})
        return True

    def _ack(self, site: str, epoch: int, tr: SiteSeqs, now: float, *, always: bool) -> Ack | None:
        """The ack for ``site``: its watermark (``always``) and a ``resend_from`` when a gap is due one."""
        resend = tr.want_resend(now, self.cfg.ingest.gap_grace_s, self.cfg.ingest.resend_interval_s)
        if resend is not None:
            self.counters.resend_asks += 1
            log.info("ingest.resend_asked", extra={"site": site, "epoch": epoch, "resend_from": resend})
        elif not (always and tr.through > 0):
            return None
        return Ack(site=site, epoch=epoch, through_seq=tr.through if tr.through > 0 else None, resend_from=resend)

    def ask_resends(self, tx: Tx) -> None:
        """The tick's part of rule 4: sites holding records above a gap are asked to resend it."""
        acks: list[Ack] = []
        epochs = self.state.epochs
        for (site, epoch), tr in self.state.seqs.items():
            if not tr.held or epochs.get(site) != epoch:
                continue  # an old epoch's outbox is gone: nobody is left to resend it
            ack = self._ack(site, epoch, tr, tx.now, always=False)
            if ack is not None:
                acks.append(ack)
        if acks:
            outlet = self.outlet

            def send() -> None:
                for ack in acks:
                    outlet.send_ack(ack)

            tx.after_commit(send)

    def _site(self, conn: sqlite3.Connection, site: str, now: float) -> SiteMem:
        st = self.state
        s = st.sites.get(site)
        if s is None:
            area = self.cfg.sites.area_of(site)
            entry = self.cfg.sites.registry.get(site)
            conn.execute("INSERT OR IGNORE INTO sites (site, area, name, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)",
                         (site, area, entry.name if entry else "", now, now))
            s = st.sites[site] = SiteMem(area=area)
            log.info("ingest.new_site", extra={"site": site, "area": area})
        return s

    def _quarantine(self, tx: Tx, item: Inbound, reason: Reason, error: str, payload: bytes | None = None) -> None:
        self.counters.quarantined += 1
        if payload is None:
            payload = item.payload if item.msg is None else _enc.encode(item.msg)
        self.quarantine.add(tx, item.topic, item.site, reason, error, payload)

    @staticmethod
    def _write_latest(conn: sqlite3.Connection, latest: dict[Key, tuple[object, ...]]) -> None:
        if latest:
            conn.executemany(_SQL_LATEST, [(*row[:3], _enc.encode(row[3]).decode(), *row[4:])
                                           for row in latest.values()])
            latest.clear()

    def _batch(self, tx: Tx, site: str, batch: DataBatch, received: float, rows: list[tuple[object, ...]],
               readings: list[object], latest: dict[Key, tuple[object, ...]],
               changed: dict[str, list[Key]] | None, refused: frozenset[int]) -> int:
        """Rules 2, 3 and 10 for one message's records: the new ones go to ``readings`` (plain
        readings, for _insert_readings) or ``rows`` (everything else, for _SQL_RECORDS)."""
        st = self.state
        epoch = batch.epoch
        tr = st.seqs.get((site, epoch)) or self._epoch(tx, site, epoch)
        if st.epochs.get(site) != epoch:
            st.epochs[site] = epoch
            tx.conn.execute("UPDATE sites SET epoch = ?, through_seq = ? WHERE site = ?", (epoch, tr.through, site))
        c = self.counters
        s = st.sites[site]
        points = st.latest
        kinds = st.kinds
        alarms = self.alarms
        new = 0
        carried: dict[tuple[int, int], list[Record]] = {}  # this message's, by origin (not in the table yet)
        for r in batch.records:
            seq = r.seq
            if not tr.is_new(seq):
                c.duplicates += 1
                continue
            tr.add(seq)
            if refused and seq in refused:
                continue  # dated in the future: quarantined, its seq consumed (validate rule 4)
            origin = r.origin
            if origin is not None and origin[0] == epoch:
                origin = None  # rule 10: meaningless within its own epoch
            if origin is not None:
                if self._committed_at_origin(tx.conn, site, r, origin, carried):
                    c.duplicates += 1
                    c.origin_duplicates += 1
                    continue  # its seq counts as received (tr.add above); nothing stored, nothing judged
                carried.setdefault(origin, []).append(r)
                st.carried_from.add((site, origin[0]))
            elif (site, epoch) in st.carried_from and any(
                    _same_as_row(r, row) for row in tx.conn.execute(_SQL_FROM_ORIGIN, (site, epoch, seq)).fetchall()):
                c.duplicates += 1
                c.origin_duplicates += 1
                continue  # rule 10: a late original of a copy committed already
            o_epoch, o_seq = origin if origin is not None else (None, None)
            new += 1
            if isinstance(r, Reading):
                value = r.value
                num = as_number(value)
                quality = _QUALITY[r.quality]
                if origin is None:
                    readings.extend((seq, r.ts, _PRIO[r.prio], int(r.historical), r.device, r.point,
                                     _enc.encode(value).decode(), num, quality))
                else:
                    rows.append((site, epoch, seq, "reading", r.ts, received, _PRIO[r.prio], int(r.historical),
                                 r.device, r.point, value, num, quality, None, o_epoch, o_seq))
                key = (site, r.device, r.point)
                pm = points.get(key)
                if pm is not None and r.ts < pm.ts:
                    self._judge_late(tx, site, r, value, num)  # history, not news (rule 3)
                    continue
                if pm is None:
                    pm = points[key] = PointMem(r.ts, value, num, r.quality, seq)
                    s.points.add((r.device, r.point))
                else:
                    pm.ts, pm.value, pm.num, pm.quality, pm.seq = r.ts, value, num, r.quality, seq
                latest[key] = (site, r.device, r.point, value, num, quality, r.unit, r.ts, seq, received)
                if changed is not None:
                    changed.setdefault(site, []).append(key)
                kind = kinds.get((site, r.device))
                if self.on_latest is not None and not r.historical:
                    self.on_latest(site, r.device, r.point, r.ts, num, r.quality, kind)
                if kind is not None:
                    point_rules = alarms.rules_of(site, kind).get(r.point)
                    if point_rules is not None:
                        alarms.judge(tx, site, r.device, r.point, point_rules, pm, Sample(r.ts, value, r.quality, num),
                                     late=r.historical)
                if r.point in EDGE_CLEAR_POINTS:
                    alarms.edge_reading(tx, site, r.device, r.point, value, r.quality, r.ts, late=r.historical)
            elif isinstance(r, Event):
                rows.append((site, epoch, seq, "event", r.ts, received, _PRIO[r.prio], int(r.historical), r.device,
                             None, None, None, None, _enc.encode(r).decode(), o_epoch, o_seq))
                alarms.edge_event(tx, site, r, late=r.historical)
                live_after(tx, self.outlet, SiteEvent(site=site, seq=seq, kind=r.kind, device=r.device,
                                                      detail=r.detail, ts=r.ts))
            else:
                rows.append((site, epoch, seq, "reply", r.ts, received, _PRIO[r.prio], int(r.historical), None, None,
                             None, None, None, _enc.encode(r).decode(), o_epoch, o_seq))
                self.commands.reply(tx, site, r, received)
        if batch.thinned:
            thinned = sum(tr.close(lo, hi) for lo, hi in batch.thinned)
            if thinned:
                c.thinned_closed += thinned
                tx.conn.execute("INSERT INTO seq_gaps (site, epoch, closed_at, through_seq, missing, how)"
                                " VALUES (?, ?, ?, ?, ?, ?)", (site, epoch, tx.now, tr.through, thinned, "thinned"))
        closed = tr.settle(batch.floor_seq)
        if closed:
            c.floor_closed += closed
            tx.conn.execute("INSERT INTO seq_gaps (site, epoch, closed_at, through_seq, missing, how)"
                            " VALUES (?, ?, ?, ?, ?, ?)", (site, epoch, tx.now, tr.through, closed, "floor_seq"))
            log.warning("ingest.gap_closed_by_floor", extra={"site": site, "epoch": epoch, "missing": closed,
                                                             "through": tr.through})
        return new

    @staticmethod
    def _committed_at_origin(conn: sqlite3.Connection, site: str, r: Record, origin: tuple[int, int],
                             carried: dict[tuple[int, int], list[Record]]) -> bool:
        """Rule 10: is the record ``r`` carried from ``origin`` committed already, at its origin or
        carried from it before (in an earlier message, or earlier in this one)?"""
        if any(_same(r, other) for other in carried.get(origin, ())):
            return True
        args = (site, *origin)
        return any(_same_as_row(r, row) for sql in (_SQL_AT_ORIGIN, _SQL_FROM_ORIGIN)
                   for row in conn.execute(sql, args).fetchall())

    def _judge_late(self, tx: Tx, site: str, r: Reading, value: messages.Scalar, num: float | None) -> None:
        """A reading older than its point's latest: judged by the point's history cursor (rule 3)."""
        kind = self.state.kinds.get((site, r.device))
        if kind is not None:
            point_rules = self.alarms.rules_of(site, kind).get(r.point)
            if point_rules is not None:
                self.alarms.judge_late(tx, site, r.device, r.point, point_rules, Sample(r.ts, value, r.quality, num))
        if r.point in EDGE_CLEAR_POINTS:
            self.alarms.edge_reading(tx, site, r.device, r.point, value, r.quality, r.ts, late=True)

    def _epoch(self, tx: Tx, site: str, epoch: int) -> SiteSeqs:
        """A tracker for an outbox epoch never seen before: its seqs start afresh."""
        tr = self.state.seqs[(site, epoch)] = SiteSeqs()
        tx.conn.execute("INSERT OR IGNORE INTO site_epochs (site, epoch, first_seen, last_seen) VALUES (?, ?, ?, ?)",
                        (site, epoch, tx.now, tx.now))
        self.counters.new_epochs += 1
        log.warning("ingest.new_epoch", extra={"site": site, "epoch": epoch,
                                               "previous": self.state.epochs.get(site)})
        return tr

    def _status(self, tx: Tx, site: str, st: Status) -> None:
        s = self.state.sites[site]
        if st.ts < s.state_ts:
            return  # an older status (a retained copy overtaken by a newer one)
        s.online = st.state is SiteState.ONLINE
        s.boot = st.boot
        s.state_ts = st.ts
        tx.conn.execute("UPDATE sites SET state = ?, boot = ?, state_ts = ? WHERE site = ?",
                        (st.state.value, st.boot, st.ts, site))
        if not s.online:
            tx.conn.execute("UPDATE latest SET stale = 1 WHERE site = ?", (site,))
            self.alarms.stale_site(tx, site, tx.now)
        log.info("ingest.site_state", extra={"site": site, "state": st.state.value, "boot": st.boot})
        live_after(tx, self.outlet, SiteStateChanged(site=site, state=st.state.value, boot=st.boot))

    def _birth(self, tx: Tx, site: str, b: Birth) -> None:
        conn = tx.conn
        self.state.born.add(site)
        conn.execute(
            "UPDATE sites SET agent_version = ?, birth_ts = ?, boot = ?, models = ? WHERE site = ?",
            (b.agent_version, b.ts, b.boot, _enc.encode(b.models).decode(), site),
        )
        conn.execute("DELETE FROM devices WHERE site = ?", (site,))
        conn.executemany(
            "INSERT INTO devices (site, device, kind, profile, profile_sha256, points, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(site, d.id, d.kind, d.profile, d.profile_sha256, _enc.encode(d.points).decode(), tx.now)
             for d in b.devices],
        )
        kinds = self.state.kinds
        for k in [k for k in kinds if k[0] == site]:
            del kinds[k]
        for d in b.devices:
            kinds[(site, d.id)] = d.kind
        self.alarms.forget_rules(site)
        live_after(tx, self.outlet, SiteBorn(site=site, birth=b.boot, devices=len(b.devices)))


def _same(a: Record, b: Record) -> bool:
    """Rule 10: the same record, whatever seq, epoch, origin and ``historical`` flag each carries."""
    if abs(a.ts - b.ts) > _SAME_TS_S:
        return False
    if isinstance(a, Reading) and isinstance(b, Reading):
        return (a.device, a.point) == (b.device, b.point)
    if isinstance(a, Event) and isinstance(b, Event):
        return (a.device, a.kind) == (b.device, b.kind)
    if isinstance(a, Reply) and isinstance(b, Reply):
        return (a.cmd_id, a.status) == (b.cmd_id, b.status)
    return False


def _same_as_row(r: Record, row: tuple[str, float, str | None, str | None, str | None]) -> bool:
    """Rule 10: ``r`` against a ``records`` row (type, ts, device, point, body)."""
    type_, ts, device, point, body = row
    if isinstance(r, Reading):
        return type_ == "reading" and abs(r.ts - ts) <= _SAME_TS_S and (r.device, r.point) == (device, point)
    if body is None:
        return False
    try:
        stored = _body.decode(body)
    except msgspec.DecodeError:
        return False
    return _same(r, stored)
