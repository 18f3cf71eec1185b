"""The province's SQLite store: one writer, the cities' records exactly once, their latest state.

Rules:

1. One :class:`ProvinceStore` owns the file and is its only writer; every batch is one short
   ``BEGIN IMMEDIATE`` transaction (WAL), named migrations run in order at open.
2. ``city_records`` keeps every committed record under its primary key (city, epoch, seq): a
   record is committed at most once, whatever a city or the broker repeats (province/ingest.py
   rule 3); the watermark of each (city, epoch) is stored in the same transaction and the
   trackers are rebuilt from the file at open, so a killed province resumes where its last
   commit left it and acks nothing it has not committed.
3. The latest-state tables (sites, alarms, incidents, operations, deliveries) take a record
   only if it is not older than what they hold: a replayed record never overwrites a newer one.
4. Whatever fails to decode, names another city, breaks the seq rules or is dated in the future
   goes to the hub's bounded quarantine (hub/quarantine.py) in its own transaction; the writer
   goes on.
5. Every city link event that changes what operators see (a new epoch of a city, a city's
   birth) is appended to the hub's hash-chained audit log (hub/audit.py).
6. A provincial request (block or evacuate an area of a city) is ``sent`` until its city's
   :class:`~shared.messages.RequestRecord` is committed; then it holds the city's answer
   (``pending`` at a city operator, ``accepted`` with the operation it started, ``refused``).
   Creating one and each answer are audited. Other processes (``jikimi province request``) may
   add requests (the file waits for the writer: :func:`connect`).
7. Provincial operators' accounts and sessions are hub/auth.py's own tables (``operators``,
   ``sessions``) in this file, written by the API's logins through :meth:`ProvinceStore.write`
   and by ``jikimi province user`` through :func:`connect`; every login lands in the same chain.
"""

from __future__ import annotations

import copy
import logging
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import msgspec

from hub import audit
from hub.alarms import AlarmState
from hub.config import IngestConfig
from hub.quarantine import Quarantine
from hub.store import Tx
from hub.validate import Reason
from province import ingest
from province.errors import ProvinceRequestError, ProvinceStoreError
from province.grouping import PlacedAlarm, ProvincialIncident, group
from shared import topics
from shared.errors import WireError
from shared.messages import (
    AlarmRecord,
    CityAck,
    CityBatch,
    CityBirth,
    CityRecord,
    CityRequest,
    CityStatus,
    DeliveryRecord,
    Event,
    IncidentRecord,
    Operation,
    OperationRecord,
    RequestRecord,
    SiteStateRecord,
    decode,
    decode_city,
    encode,
    encode_record,
)
from shared.outbox import migrate

log = logging.getLogger(__name__)

ACTIVE: Final = (AlarmState.UNACK.value, AlarmState.ACKED.value)
"""Alarm states whose condition is present: what provincial incidents group (two: the query
that reads them has two placeholders)."""

MIGRATIONS: Final[tuple[tuple[str, str], ...]] = (
    ("m001_cities", """
        CREATE TABLE city_records (
            city TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
            ts REAL NOT NULL, committed_at REAL NOT NULL, payload BLOB NOT NULL,
            PRIMARY KEY (city, epoch, seq)) WITHOUT ROWID;
        CREATE TABLE city_seqs (
            city TEXT NOT NULL, epoch INTEGER NOT NULL, through INTEGER NOT NULL,
            PRIMARY KEY (city, epoch)) WITHOUT ROWID;
        CREATE TABLE cities (
            city TEXT PRIMARY KEY, hub TEXT, hub_version TEXT, boot TEXT, online INTEGER NOT NULL DEFAULT 0,
            status_ts REAL, sites INTEGER NOT NULL DEFAULT 0, records INTEGER NOT NULL DEFAULT 0,
            last_batch_at REAL, newest_record_ts REAL, lag_s REAL);
        CREATE TABLE sites (
            city TEXT NOT NULL, site TEXT NOT NULL, online INTEGER NOT NULL, last_data_ts REAL,
            ts REAL NOT NULL, lat REAL, lon REAL, catchment TEXT, PRIMARY KEY (city, site)) WITHOUT ROWID;
        CREATE TABLE alarms (
            city TEXT NOT NULL, alarm_id TEXT NOT NULL, site TEXT NOT NULL, rule TEXT NOT NULL,
            severity TEXT NOT NULL, state TEXT NOT NULL, raised_at REAL NOT NULL, ts REAL NOT NULL,
            lat REAL, lon REAL, catchment TEXT, PRIMARY KEY (city, alarm_id)) WITHOUT ROWID;
        CREATE TABLE incidents (
            city TEXT NOT NULL, incident_id TEXT NOT NULL, state TEXT NOT NULL, area TEXT NOT NULL,
            opened_at REAL NOT NULL, ts REAL NOT NULL, alarm_ids TEXT NOT NULL,
            PRIMARY KEY (city, incident_id)) WITHOUT ROWID;
        CREATE TABLE operations (
            city TEXT NOT NULL, op_id TEXT NOT NULL, action TEXT NOT NULL, area TEXT NOT NULL,
            state TEXT NOT NULL, commands INTEGER NOT NULL, verified INTEGER NOT NULL, failed INTEGER NOT NULL,
            ts REAL NOT NULL, PRIMARY KEY (city, op_id)) WITHOUT ROWID;
        CREATE TABLE deliveries (
            city TEXT NOT NULL, delivery_id TEXT NOT NULL, alert_id TEXT NOT NULL, recipient TEXT NOT NULL,
            state TEXT NOT NULL, attempts INTEGER NOT NULL, ts REAL NOT NULL,
            PRIMARY KEY (city, delivery_id)) WITHOUT ROWID;
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY, received_at REAL NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,
            error TEXT NOT NULL, site TEXT, reason TEXT NOT NULL DEFAULT 'malformed', size INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX quarantine_received ON quarantine (received_at);
        """),
    ("m002_audit", """
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY, ts REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
            target TEXT NOT NULL, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
            BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END
        """),
    ("m003_people", """
        -- hub/auth.py's tables, as the hub's migration m004_people makes them (rule 6)
        CREATE TABLE operators (
            username TEXT PRIMARY KEY, role TEXT NOT NULL, pw_hash TEXT NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at REAL NOT NULL);
        CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY, username TEXT NOT NULL REFERENCES operators (username),
            csrf TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL, remote TEXT NOT NULL);
        -- the epoch of each city's latest committed batch (the API shows it)
        ALTER TABLE cities ADD COLUMN epoch INTEGER;
        """),
    ("m004_requests", """
        CREATE TABLE requests (
            request_id TEXT PRIMARY KEY, city TEXT NOT NULL, action TEXT NOT NULL, area TEXT NOT NULL,
            reason TEXT NOT NULL, requested_by TEXT NOT NULL, created_at REAL NOT NULL, not_after REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'sent', op_id TEXT, decided_by TEXT, why TEXT NOT NULL DEFAULT '',
            ts REAL);
        CREATE INDEX requests_state ON requests (state)
        """),
)

_UPSERT: Final = {
    "sites": ("INSERT INTO sites (city, site, online, last_data_ts, ts, lat, lon, catchment)"
              " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (city, site) DO UPDATE SET online=excluded.online,"
              " last_data_ts=excluded.last_data_ts, ts=excluded.ts, lat=excluded.lat, lon=excluded.lon,"
              " catchment=excluded.catchment WHERE excluded.ts >= sites.ts"),
    "alarms": ("INSERT INTO alarms (city, alarm_id, site, rule, severity, state, raised_at, ts, lat, lon, catchment)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (city, alarm_id) DO UPDATE SET"
               " site=excluded.site, rule=excluded.rule, severity=excluded.severity, state=excluded.state,"
               " raised_at=excluded.raised_at, ts=excluded.ts, lat=excluded.lat, lon=excluded.lon,"
               " catchment=excluded.catchment WHERE excluded.ts >= alarms.ts"),
    "incidents": ("INSERT INTO incidents (city, incident_id, state, area, opened_at, ts, alarm_ids)"
                  " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (city, incident_id) DO UPDATE SET state=excluded.state,"
                  " area=excluded.area, opened_at=excluded.opened_at, ts=excluded.ts, alarm_ids=excluded.alarm_ids"
                  " WHERE excluded.ts >= incidents.ts"),
    "operations": ("INSERT INTO operations (city, op_id, action, area, state, commands, verified, failed, ts)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (city, op_id) DO UPDATE SET"
                   " action=excluded.action, area=excluded.area, state=excluded.state, commands=excluded.commands,"
                   " verified=excluded.verified, failed=excluded.failed, ts=excluded.ts"
                   " WHERE excluded.ts >= operations.ts"),
    "deliveries": ("INSERT INTO deliveries (city, delivery_id, alert_id, recipient, state, attempts, ts)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (city, delivery_id) DO UPDATE SET"
                   " alert_id=excluded.alert_id, recipient=excluded.recipient, state=excluded.state,"
                   " attempts=excluded.attempts, ts=excluded.ts WHERE excluded.ts >= deliveries.ts"),
}
_json = msgspec.json.Encoder()
T = TypeVar("T")
BUSY_TIMEOUT_MS: Final = 5000
"""How long a transaction waits for another writer of the file (``jikimi province user`` and
``jikimi province request`` beside the running service)."""


def connect(path: Path) -> sqlite3.Connection:
    """The province's file with its settings, migrated (rule 1); also hub/auth.py's opener (rule 6)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        migrate(db, MIGRATIONS)
    except (sqlite3.Error, OSError) as exc:
        raise ProvinceStoreError(f"{path}: cannot open the province store: {exc}") from exc
    return db


@dataclass(frozen=True)
class CityView:
    city: str
    hub: str | None
    hub_version: str | None
    online: bool
    sites: int
    records: int
    last_batch_age_s: float | None
    """Seconds since the province last committed a batch of this city: the link's health."""
    lag_s: float | None
    """City → province lag of that batch: its commit time less its newest record's time."""


@dataclass(frozen=True)
class SiteView:
    city: str
    site: str
    online: bool
    data_age_s: float | None
    """Now less the site's newest data acquisition time, as its city hub reported it."""


@dataclass(frozen=True)
class AlarmView:
    city: str
    alarm_id: str
    site: str
    rule: str
    severity: str
    state: str
    raised_at: float
    data_age_s: float | None
    """The data age of the alarm's site (None when the city sent no state for it)."""


@dataclass(frozen=True)
class RequestView:
    request_id: str
    city: str
    action: str
    area: str
    requested_by: str
    created_at: float
    state: str
    """``sent`` (no answer from the city yet), ``pending``, ``accepted`` or ``refused`` (rule 6)."""
    op_id: str | None
    decided_by: str | None
    why: str
    commands: int | None
    verified: int | None
    failed: int | None


class ProvinceStore:
    """The province's file and its one writer (rule 1)."""

    def __init__(self, path: Path, *, ingest_cfg: IngestConfig | None = None,
                 links: ingest.CityLinks | None = None) -> None:
        self.path = path
        self.cfg = ingest_cfg or IngestConfig()
        self.links = links or ingest.CityLinks(grace_s=self.cfg.gap_grace_s, interval_s=self.cfg.resend_interval_s)
        self.db = connect(path)
        try:
            self.quarantine = Quarantine(self.cfg)
            self.quarantine.load(self.db)
            self._load_trackers()
        except (sqlite3.Error, OSError) as exc:
            raise ProvinceStoreError(f"{path}: cannot open the province store: {exc}") from exc

    def close(self) -> None:
        self.db.close()

    def _load_trackers(self) -> None:
        """Rule 2: each (city, epoch)'s watermark, and the seqs committed above it."""
        for city, epoch, through in self.db.execute("SELECT city, epoch, through FROM city_seqs").fetchall():
            s = self.links.tracker(city, epoch)
            s.through = int(through)
        for city, epoch, seq in self.db.execute(
                "SELECT r.city, r.epoch, r.seq FROM city_records r LEFT JOIN city_seqs s"
                " ON s.city = r.city AND s.epoch = r.epoch WHERE r.seq > coalesce(s.through, 0)"
                " ORDER BY r.city, r.epoch, r.seq").fetchall():
            s = self.links.tracker(city, epoch)
            if s.is_new(seq):
                s.add(seq)

    # --- writing -------------------------------------------------------------------------

    def _tx(self, now: float) -> _Transaction:
        return _Transaction(self.db, now)

    def write(self, fn: Callable[[Tx], T], now: float) -> T:
        """``fn`` in one short transaction of its own (rule 6: a login, a logout)."""
        try:
            with self._tx(now) as tx:
                return fn(tx)
        except sqlite3.Error as exc:
            raise ProvinceStoreError(f"{self.path}: write failed: {exc}") from exc

    def _quarantine(self, topic: str, city: str | None, reason: Reason, error: str, payload: bytes,
                    now: float) -> None:
        """Rule 4, in its own transaction."""
        try:
            with self._tx(now) as tx:
                self.quarantine.add(tx, topic, city, reason, error, payload)
        except sqlite3.Error as exc:
            raise ProvinceStoreError(f"{self.path}: cannot quarantine: {exc}") from exc

    def receive(self, topic: str, payload: bytes, now: float) -> CityAck | None:
        """One message from the provincial broker; returns the ack to publish for a batch."""
        try:
            parsed = topics.parse(topic)
        except WireError as exc:
            self._quarantine(topic, None, Reason.MALFORMED, str(exc), payload, now)
            return None
        if not isinstance(parsed, topics.CityTopic) or not parsed.channel.from_city:
            self._quarantine(topic, None, Reason.MALFORMED, "not a city → province topic", payload, now)
            return None
        city = parsed.city
        try:
            if parsed.channel is topics.CityChannel.DATA:
                return self._batch(topic, city, decode_city(CityBatch, payload, city), payload, now)
            if parsed.channel is topics.CityChannel.BIRTH:
                self._birth(topic, city, decode_city(CityBirth, payload, city), payload, now)
            else:
                self._status(topic, city, decode_city(CityStatus, payload, city), payload, now)
        except WireError as exc:
            self._quarantine(topic, city, Reason.MALFORMED, str(exc), payload, now)
        return None

    def _batch(self, topic: str, city: str, batch: CityBatch, payload: bytes, now: float) -> CityAck | None:
        refusal = ingest.check(batch)
        if refusal is not None:
            self._quarantine(topic, city, refusal.reason, refusal.detail, payload, now)
            return None
        taken = self.links.take(city, batch, now, self.cfg.max_clock_skew_s)
        trial = copy.deepcopy(self.links.tracker(city, batch.epoch))  # the tracker learns after the commit
        seqs = [r.seq for r in taken.new] + [r.seq for r in taken.future]
        try:
            with self._tx(now) as tx:
                if not trial.through and not trial.held and batch.epoch != 0:
                    known = tx.conn.execute("SELECT 1 FROM city_seqs WHERE city=? AND epoch=?",
                                            (city, batch.epoch)).fetchone()
                    if known is None:
                        tx.audit("province", "city.epoch", city, {"epoch": str(batch.epoch)})
                for rec in taken.new:
                    self._commit_record(tx, city, batch.epoch, rec)
                if taken.future:
                    for rec in taken.future:  # committed as refused: never asked for again
                        tx.conn.execute("INSERT OR IGNORE INTO city_records VALUES (?, ?, ?, ?, ?, ?, ?)",
                                        (city, batch.epoch, rec.seq, "refused", rec.ts, now, encode_record(rec)))
                    self.quarantine.add(tx, topic, city, Reason.FUTURE,
                                        f"{len(taken.future)} record(s) dated beyond the allowed skew",
                                        _json.encode([encode_record(r).decode() for r in taken.future]))
                ingest.learn(trial, batch, seqs)
                tx.conn.execute("INSERT INTO city_seqs (city, epoch, through) VALUES (?, ?, ?)"
                                " ON CONFLICT (city, epoch) DO UPDATE SET through=excluded.through",
                                (city, batch.epoch, trial.through))
                if taken.new:
                    newest = max(r.ts for r in taken.new)
                    tx.conn.execute(
                        "INSERT INTO cities (city, records, last_batch_at, newest_record_ts, lag_s, epoch)"
                        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (city) DO UPDATE SET"
                        " records = cities.records + excluded.records, last_batch_at = excluded.last_batch_at,"
                        " newest_record_ts = max(coalesce(cities.newest_record_ts, 0), excluded.newest_record_ts),"
                        " lag_s = excluded.lag_s, epoch = excluded.epoch",
                        (city, len(taken.new), now, newest, max(0.0, now - newest), batch.epoch))
        except sqlite3.Error as exc:
            log.error("province.batch_failed", extra={"city": city, "error": str(exc)})
            self._quarantine(topic, city, Reason.STORE, str(exc), payload, now)
            return None
        self.links.seqs[(city, batch.epoch)] = trial
        return self.links.ack(city, batch.epoch, now)

    def _commit_record(self, tx: Tx, city: str, epoch: int, rec: CityRecord) -> None:
        kind = type(rec).__struct_config__.tag
        cur = tx.conn.execute("INSERT OR IGNORE INTO city_records VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (city, epoch, rec.seq, str(kind), rec.ts, tx.now, encode_record(rec)))
        if cur.rowcount == 0:
            return  # committed before (rule 2)
        c = tx.conn
        match rec:
            case SiteStateRecord():
                p = rec.place
                c.execute(_UPSERT["sites"], (city, rec.site, int(rec.online), rec.last_data_ts, rec.ts,
                                             p.lat if p else None, p.lon if p else None, p.catchment if p else None))
            case AlarmRecord():
                p = rec.place
                c.execute(_UPSERT["alarms"], (city, rec.alarm_id, rec.site, rec.rule, rec.severity, rec.state,
                                              rec.raised_at, rec.ts, p.lat if p else None, p.lon if p else None,
                                              p.catchment if p else None))
            case IncidentRecord():
                c.execute(_UPSERT["incidents"], (city, rec.incident_id, rec.state, rec.area, rec.opened_at, rec.ts,
                                                 _json.encode(rec.alarm_ids).decode()))
            case OperationRecord():
                c.execute(_UPSERT["operations"], (city, rec.op_id, rec.action, rec.area, rec.state, rec.commands,
                                                  rec.verified, rec.failed, rec.ts))
            case RequestRecord():
                cur = c.execute("UPDATE requests SET state=?, op_id=?, decided_by=?, why=?, ts=?"
                                " WHERE request_id=? AND city=? AND coalesce(ts, 0) <= ?",
                                (rec.state, rec.op_id, rec.decided_by, rec.why, rec.ts, rec.request_id, city, rec.ts))
                if cur.rowcount:
                    tx.audit(f"city:{city}", f"request.{rec.state}", f"request/{rec.request_id}",
                             {"op_id": rec.op_id, "decided_by": rec.decided_by, "why": rec.why})
            case DeliveryRecord():
                c.execute(_UPSERT["deliveries"], (city, rec.delivery_id, rec.alert_id, rec.recipient, rec.state,
                                                  rec.attempts, rec.ts))
            case Event():
                pass  # kept in city_records: the city outbox's own events (thinned, new epoch, replaced)

    def _birth(self, topic: str, city: str, birth: CityBirth, payload: bytes, now: float) -> None:
        if birth.ts > now + self.cfg.max_clock_skew_s:
            self._quarantine(topic, city, Reason.FUTURE, "birth dated beyond the allowed skew", payload, now)
            return
        with self._tx(now) as tx:
            tx.conn.execute("INSERT INTO cities (city, hub, hub_version, boot, sites) VALUES (?, ?, ?, ?, ?)"
                            " ON CONFLICT (city) DO UPDATE SET hub=excluded.hub, hub_version=excluded.hub_version,"
                            " boot=excluded.boot, sites=excluded.sites",
                            (city, birth.hub, birth.hub_version, birth.boot, len(birth.sites)))
            tx.audit("province", "city.birth", city, {"hub": birth.hub, "hub_version": birth.hub_version,
                                                      "sites": len(birth.sites)})

    def _status(self, topic: str, city: str, status: CityStatus, payload: bytes, now: float) -> None:
        if status.ts > now + self.cfg.max_clock_skew_s:
            self._quarantine(topic, city, Reason.FUTURE, "status dated beyond the allowed skew", payload, now)
            return
        with self._tx(now) as tx:
            tx.conn.execute("INSERT INTO cities (city, hub, online, status_ts) VALUES (?, ?, ?, ?)"
                            " ON CONFLICT (city) DO UPDATE SET hub=excluded.hub, online=excluded.online,"
                            " status_ts=excluded.status_ts WHERE coalesce(cities.status_ts, 0) <= excluded.status_ts",
                            (city, status.hub, int(status.state.value == "online"), status.ts))

    # --- reading -------------------------------------------------------------------------

    def cities(self, now: float) -> list[CityView]:
        rows = self.db.execute("SELECT city, hub, hub_version, online, sites, records, last_batch_at, lag_s"
                               " FROM cities ORDER BY city").fetchall()
        return [CityView(c, h, v, bool(o), int(s), int(n), None if at is None else max(0.0, now - at), lag)
                for c, h, v, o, s, n, at, lag in rows]

    def sites(self, now: float, city: str | None = None) -> list[SiteView]:
        rows = self.db.execute("SELECT city, site, online, last_data_ts FROM sites"
                               " WHERE ? IS NULL OR city = ? ORDER BY city, site", (city, city)).fetchall()
        return [SiteView(c, s, bool(o), None if t is None else max(0.0, now - t)) for c, s, o, t in rows]

    def alarms(self, now: float, *, active_only: bool = False) -> list[AlarmView]:
        rows = self.db.execute(
            "SELECT a.city, a.alarm_id, a.site, a.rule, a.severity, a.state, a.raised_at, s.last_data_ts"
            " FROM alarms a LEFT JOIN sites s ON s.city = a.city AND s.site = a.site"
            " ORDER BY a.raised_at, a.city, a.alarm_id").fetchall()
        out = [AlarmView(c, a, s, r, sev, st, at, None if t is None else max(0.0, now - t))
               for c, a, s, r, sev, st, at, t in rows]
        return [a for a in out if a.state in ACTIVE] if active_only else out

    def provincial_incidents(self, distance_m: float) -> list[ProvincialIncident]:
        """Active alarms of different cities grouped by distance or catchment (province/grouping.py);
        an alarm without a place of its own takes its site's."""
        rows = self.db.execute(
            "SELECT a.city, a.alarm_id, a.raised_at, coalesce(a.lat, s.lat), coalesce(a.lon, s.lon),"
            " coalesce(a.catchment, s.catchment) FROM alarms a"
            " LEFT JOIN sites s ON s.city = a.city AND s.site = a.site"
            " WHERE a.state IN (?, ?)", ACTIVE).fetchall()
        placed = [PlacedAlarm(c, a, at, lat, lon, catch) for c, a, at, lat, lon, catch in rows
                  if lat is not None and lon is not None]
        return group(placed, distance_m)

    def add_request(self, city: str, action: Operation, area: str, reason: str, requested_by: str,
                    now: float, ttl_s: float) -> CityRequest:
        """Rule 6: a provincial operator's request to ``city``; refused (:class:`ProvinceRequestError`)
        for a city the province has not heard from or without a reason."""
        if not reason.strip():
            raise ProvinceRequestError("a request needs a reason")
        try:  # the city will decode it: every bound of the wire message is checked before it is stored
            req = decode(CityRequest, encode(CityRequest(
                city=city, request_id=uuid.uuid4().hex, action=action, area=area, reason=reason,
                requested_by=requested_by, ts=now, not_after=now + ttl_s)))
        except WireError as exc:
            raise ProvinceRequestError(f"the request cannot be sent: {exc}") from None
        with self._tx(now) as tx:
            if tx.conn.execute("SELECT 1 FROM cities WHERE city = ?", (city,)).fetchone() is None:
                raise ProvinceRequestError(f"no city {city!r} has reported to the province")
            tx.conn.execute("INSERT INTO requests (request_id, city, action, area, reason, requested_by, created_at,"
                            " not_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (req.request_id, city, action, area, reason, requested_by, now, req.not_after))
            tx.audit(requested_by, f"request.{action}", f"request/{req.request_id}",
                     {"city": city, "area": area, "reason": reason, "not_after": req.not_after})
        return req

    def unanswered(self, now: float) -> list[CityRequest]:
        """Rule 6: requests no answer of their city has reached yet, still within their time."""
        rows = self.db.execute(
            "SELECT request_id, city, action, area, reason, requested_by, created_at, not_after FROM requests"
            " WHERE state = 'sent' AND not_after > ? ORDER BY created_at", (now,)).fetchall()
        return [CityRequest(request_id=r, city=c, action=a, area=ar, reason=why, requested_by=by, ts=at, not_after=na)
                for r, c, a, ar, why, by, at, na in rows]

    def requests(self) -> list[RequestView]:
        return request_views(self.db)

    def committed(self, city: str) -> list[tuple[int, int, str]]:
        """(epoch, seq, type) of every record committed for ``city`` (tests, the bench)."""
        return [(int(e), int(s), str(t)) for e, s, t in self.db.execute(
            "SELECT epoch, seq, type FROM city_records WHERE city = ? ORDER BY epoch, seq", (city,)).fetchall()]

    def quarantined(self) -> list[tuple[str, str, str]]:
        """(topic, city, reason) of each quarantine entry, oldest first."""
        return [(str(t), str(c), str(r)) for t, c, r in self.db.execute(
            "SELECT topic, coalesce(site, ''), reason FROM quarantine ORDER BY id").fetchall()]

    def verify_audit(self) -> int:
        return audit.verify_conn(self.db)


def request_views(conn: sqlite3.Connection, limit: int = 10_000) -> list[RequestView]:
    """Every request (oldest first) with its city's answer and how far the operation it started got."""
    rows = conn.execute(
        "SELECT r.request_id, r.city, r.action, r.area, r.requested_by, r.created_at, r.state, r.op_id,"
        " r.decided_by, r.why, o.commands, o.verified, o.failed FROM requests r"
        " LEFT JOIN operations o ON o.city = r.city AND o.op_id = r.op_id ORDER BY r.created_at LIMIT ?",
        (limit,)).fetchall()
    return [RequestView(*row) for row in rows]


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error), yielding the hub's :class:`Tx`."""

    def __init__(self, db: sqlite3.Connection, now: float) -> None:
        self._db = db
        self._now = now

    def __enter__(self) -> Tx:
        self._db.execute("BEGIN IMMEDIATE")
        return Tx(self._db, self._now)

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:
            self._db.execute("ROLLBACK")
