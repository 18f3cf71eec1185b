"""The hub's live state, owned by the writer thread: ingest → store → rules → alarms → incidents,
and the write side of commands and operations.

Everything here runs inside the single writer's transaction (hub/store.py), on its thread;
nothing else touches this memory. The memory mirrors the database (it is rebuilt from it at
start-up): per-site sequence trackers, the latest value of every point with its recent good
samples, device kinds, and every alarm's ISA-18.2 state.

Rules of ingest:

1. Malformed messages are quarantined (topic, bytes, error) and counted; ingest goes on.
2. A record is stored iff its (site, seq) is new (hub/seqs.py); duplicates are counted.
3. A reading becomes the point's latest only if it is not older than the latest (a replayed
   historical reading is history, not news); only such readings are judged by the rules.
4. Every message is PUBACKed, and every site in the transaction acked with its ``through_seq``
   (and ``resend_from`` when a gap asks for it), only after COMMIT.
5. A site that goes offline marks its points stale and raises their stale alarms.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub import alarms as isa
from hub.alerting import AlarmAlerts, AlarmFacts
from hub.commands import (
    DEPTH_POINT,
    CommandState,
    DepthReading,
    DeviceRef,
    Draft,
    OperationKind,
    check_action,
    check_fresh_low_water,
    check_second_person,
    plan_operation,
)
from hub.config import HubConfig
from hub.errors import Conflict, NotFound, Refused
from hub.inbound import Inbound
from hub.incidents import FloodGrouper
from hub.live import LiveEvent
from hub.roles import Role
from hub.rules import Rule, RuleKind, Sample, Verdict, as_number, evaluate, rules_for, stale_verdict
from hub.seqs import SiteSeqs
from hub.store import Tx
from shared import messages, vocabulary
from shared.messages import Ack, Birth, Command, DataBatch, Event, Quality, Reading, Reply, SiteState, Status
from shared.signing import sign_command

log = logging.getLogger(__name__)

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()
# Enum ``.value`` is a descriptor call; the hot path looks the text up instead.
_PRIO = {p: p.value for p in messages.Priority}
_QUALITY = {q: q.value for q in Quality}
# All of a transaction's records go in with one statement over one JSON array (json_each):
# executemany steps once per row, releasing and re-taking the GIL each time, and with the
# event loop busy in the other thread each re-take can wait a switch interval (measured: 2,500
# rows 21 ms alone, 250 ms beside a busy thread). One statement takes the GIL back once.
# ``value->9`` is the reading's value as JSON text, which is what the column holds.
_SQL_RECORDS = (
    "INSERT OR IGNORE INTO records (site, seq, type, ts, received_at, prio, historical, device, point,"
    " value, num, quality, body) SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5,"
    " value->>6, value->>7, value->>8, value->9, value->>10, value->>11, value->>12 FROM json_each(?)"
)
_SQL_LATEST = (
    "INSERT INTO latest (site, device, point, value, num, quality, unit, ts, seq, received_at, stale)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT (site, device, point) DO UPDATE SET"
    " value = excluded.value, num = excluded.num, quality = excluded.quality, unit = excluded.unit,"
    " ts = excluded.ts, seq = excluded.seq, received_at = excluded.received_at, stale = 0"
)


class Outlet(Protocol):
    """Where the engine's after-commit effects go (the service implements it, in the event loop)."""

    def send_ack(self, ack: Ack) -> None: ...

    def puback(self, generation: int, mids: list[int]) -> None: ...

    def live(self, event: LiveEvent) -> None: ...

    def wants_live(self) -> bool: ...


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
    rejected_sites: int = 0


@dataclass
class _Site:
    area: str
    online: bool = False
    boot: str = ""
    state_ts: float = 0.0
    points: set[tuple[str, str]] = field(default_factory=set)


class _Point:
    __slots__ = ("active", "num", "quality", "seq", "ts", "value", "window")

    def __init__(self, ts: float, value: messages.Scalar, num: float | None, quality: Quality, seq: int) -> None:
        self.ts = ts
        self.value = value
        self.num = num
        self.quality = quality
        self.seq = seq
        self.window: deque[tuple[float, float]] | None = None
        self.active: set[str] = set()
        """Names of this point's rules whose conditions are active (mirrors the alarms)."""


@dataclass
class _Alarm:
    id: int
    site: str
    device: str
    point: str
    rule: str
    area: str
    priority: str
    alarm: isa.Alarm
    incident_id: int | None = None


@dataclass(frozen=True)
class CommandOut:
    """A command the API should publish now (signed), with its id."""

    cmd_id: str
    state: CommandState
    wire: Command | None = None
    refusal: str = ""
    """Set when the hub refused (the refusal is audited, so the transaction commits)."""


@dataclass(frozen=True)
class OperationOut:
    operation_id: str
    commands: tuple[CommandOut, ...]


Key = tuple[str, str, str]
AlarmKey = tuple[str, str, str, str]


class Engine:
    def __init__(self, cfg: HubConfig, signing_key: Ed25519PrivateKey, outlet: Outlet,
                 observer: Callable[[Sequence[Inbound], float], None] | None = None) -> None:
        self.cfg = cfg
        self.key = signing_key
        self.outlet = outlet
        self.observer = observer
        self.counters = IngestCounters()
        self.sites: dict[str, _Site] = {}
        self.kinds: dict[tuple[str, str], str] = {}
        self.latest: dict[Key, _Point] = {}
        self.seqs: dict[str, SiteSeqs] = {}
        self.alarms: dict[AlarmKey, _Alarm] = {}
        self.alarm_ids: dict[int, AlarmKey] = {}
        self.shelved: set[int] = set()
        self.grouper = FloodGrouper(cfg.alarms.flood_count, cfg.alarms.flood_window_s)
        self._rules: dict[tuple[str, str], dict[str, tuple[tuple[Rule, ...], float]]] = {}
        self._last_stale = 0.0
        self._last_retention = 0.0
        self._retention_todo: list[Key] = []
        self.alerts: AlarmAlerts | None = None
        """Set by the hub when ``[forward]`` is configured: alarm raises and clears become alerts."""

    # --- start-up --------------------------------------------------------------------------

    def load(self, conn: sqlite3.Connection) -> None:
        """Rebuild the memory from the database (the writer calls it once, on its thread)."""
        for site, area, state, boot, state_ts, through in conn.execute(
            "SELECT site, area, state, boot, state_ts, through_seq FROM sites"
        ):
            self.sites[site] = _Site(area=area, online=state == SiteState.ONLINE.value, boot=boot,
                                     state_ts=state_ts or 0.0)
            tr = SiteSeqs(through=through)
            for (seq,) in conn.execute("SELECT seq FROM records WHERE site = ? AND seq > ? ORDER BY seq",
                                       (site, through)):
                tr.add(seq)
            self.seqs[site] = tr
        for site, device, kind in conn.execute("SELECT site, device, kind FROM devices"):
            self.kinds[(site, device)] = kind
        for site, device, point, value, num, quality, ts, seq in conn.execute(
            "SELECT site, device, point, value, num, quality, ts, seq FROM latest"
        ):
            self.latest[(site, device, point)] = _Point(ts, _dec.decode(value), num, Quality(quality), seq)
            if site in self.sites:
                self.sites[site].points.add((device, point))
        for row in conn.execute(
            "SELECT id, site, device, point, rule, area, priority, state, active, shelved_until, shelve_reason,"
            " incident_id FROM alarms"
        ):
            aid, site, device, point, rule, area, prio, state, active, until, sreason, inc = row
            alarm = isa.Alarm(isa.AlarmState(state), bool(active), until, sreason or "")
            key = (site, device, point, rule)
            self.alarms[key] = _Alarm(aid, site, device, point, rule, area, prio, alarm, inc)
            self.alarm_ids[aid] = key
            if alarm.state is isa.AlarmState.SHELVED:
                self.shelved.add(aid)
            pm = self.latest.get((site, device, point))
            if pm is not None and alarm.active:
                pm.active.add(rule)
        for inc_id, area in conn.execute("SELECT id, area FROM incidents WHERE state = 'open'"):
            self.grouper.opened(area, inc_id)

    # --- ingest ----------------------------------------------------------------------------

    def ingest(self, tx: Tx, items: Sequence[Inbound]) -> None:
        conn = tx.conn
        now = tx.now
        c = self.counters
        records: list[tuple[object, ...]] = []
        latest: dict[Key, tuple[object, ...]] = {}
        touched: dict[str, int] = {}
        pubacks: dict[int, list[int]] = {}
        changed_points: dict[str, list[Key]] | None = {} if self.outlet.wants_live() else None
        for item in items:
            c.messages += 1
            if item.mid:
                pubacks.setdefault(item.generation, []).append(item.mid)
            msg = item.msg
            if msg is None or item.site is None:
                self._quarantine(tx, item.topic, item.payload, item.error)
                continue
            site = item.site
            if not self.cfg.sites.accepts(site):
                c.rejected_sites += 1
                self._quarantine(tx, item.topic, _enc.encode(msg), "site is not in sites.registry")
                continue
            self._site(conn, site, now)
            if isinstance(msg, DataBatch):
                c.batches += 1
                n = self._batch(tx, site, msg, item.received, records, latest, changed_points)
                touched[site] = touched.get(site, 0) + n
            elif isinstance(msg, Status):
                c.statuses += 1
                self._status(tx, site, msg)
            else:
                c.births += 1
                self._birth(tx, site, msg)
        if records:
            conn.execute(_SQL_RECORDS, (_enc.encode(records),))
        if latest:
            conn.executemany(_SQL_LATEST, [(*row[:3], _enc.encode(row[3]).decode(), *row[4:])
                                           for row in latest.values()])
        acks: list[Ack] = []
        for site, n in touched.items():
            tr = self.seqs[site]
            conn.execute("UPDATE sites SET through_seq = ?, last_seen = ?, records = records + ? WHERE site = ?",
                         (tr.through, now, n, site))
            resend = tr.want_resend(now, self.cfg.ingest.gap_grace_s, self.cfg.ingest.resend_interval_s)
            if resend is not None:
                c.resend_asks += 1
                log.info("ingest.resend_asked", extra={"site": site, "resend_from": resend})
            if tr.through > 0 or resend is not None:
                acks.append(Ack(site=site, through_seq=tr.through if tr.through > 0 else None, resend_from=resend))
        c.acks += len(acks)
        outlet = self.outlet
        live: list[LiveEvent] = []
        for site, keys in (changed_points or {}).items():
            points = []
            for key in dict.fromkeys(keys):
                pm = self.latest[key]
                points.append({"device": key[1], "point": key[2], "value": pm.value,
                               "quality": pm.quality.value, "ts": pm.ts})
            live.append(LiveEvent.of("latest", {"site": site, "points": points}))

        def after() -> None:
            for gen, mids in pubacks.items():
                outlet.puback(gen, mids)
            for ack in acks:
                outlet.send_ack(ack)
            if self.observer is not None:
                self.observer(items, time.time())
            for event in live:
                outlet.live(event)

        tx.after_commit(after)

    def _site(self, conn: sqlite3.Connection, site: str, now: float) -> _Site:
        s = self.sites.get(site)
        if s is None:
            area = self.cfg.sites.area_of(site)
            entry = self.cfg.sites.registry.get(site)
            conn.execute("INSERT OR IGNORE INTO sites (site, area, name, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)",
                         (site, area, entry.name if entry else "", now, now))
            s = self.sites[site] = _Site(area=area)
            self.seqs[site] = SiteSeqs()
            log.info("ingest.new_site", extra={"site": site, "area": area})
        return s

    def _quarantine(self, tx: Tx, topic: str, payload: bytes, error: str) -> None:
        self.counters.quarantined += 1
        tx.conn.execute("INSERT INTO quarantine (received_at, topic, payload, error) VALUES (?, ?, ?, ?)",
                        (tx.now, topic, payload, error))
        log.warning("ingest.quarantined", extra={"topic": topic, "error": error, "bytes": len(payload)})

    def _batch(self, tx: Tx, site: str, batch: DataBatch, received: float, rows: list[tuple[object, ...]],
               latest: dict[Key, tuple[object, ...]], changed: dict[str, list[Key]] | None) -> int:
        tr = self.seqs[site]
        c = self.counters
        s = self.sites[site]
        new = 0
        for r in batch.records:
            seq = r.seq
            if not tr.is_new(seq):
                c.duplicates += 1
                continue
            tr.add(seq)
            new += 1
            if isinstance(r, Reading):
                value = r.value
                num = as_number(value)
                quality = _QUALITY[r.quality]
                rows.append((site, seq, "reading", r.ts, received, _PRIO[r.prio], int(r.historical), r.device,
                             r.point, value, num, quality, None))
                key = (site, r.device, r.point)
                pm = self.latest.get(key)
                if pm is not None and r.ts < pm.ts:
                    continue
                if pm is None:
                    pm = self.latest[key] = _Point(r.ts, value, num, r.quality, seq)
                    s.points.add((r.device, r.point))
                else:
                    pm.ts, pm.value, pm.num, pm.quality, pm.seq = r.ts, value, num, r.quality, seq
                latest[key] = (site, r.device, r.point, value, num, quality, r.unit, r.ts, seq, received)
                if changed is not None:
                    changed.setdefault(site, []).append(key)
                kind = self.kinds.get((site, r.device))
                if kind is not None:
                    point_rules = self._rules_of(site, kind).get(r.point)
                    if point_rules is not None:
                        self._judge(tx, site, r.device, r.point, point_rules, pm, Sample(r.ts, value, r.quality, num))
            elif isinstance(r, Event):
                rows.append((site, seq, "event", r.ts, received, _PRIO[r.prio], int(r.historical), r.device,
                             None, None, None, None, _enc.encode(r).decode()))
                tx.after_commit(_live(self.outlet, "event", {"site": site, "seq": seq, "kind": r.kind,
                                                              "device": r.device, "detail": r.detail, "ts": r.ts}))
            else:
                rows.append((site, seq, "reply", r.ts, received, _PRIO[r.prio], int(r.historical), None, None,
                             None, None, None, _enc.encode(r).decode()))
                self._reply(tx, site, r, received)
        closed = tr.settle(batch.floor_seq)
        if closed:
            c.floor_closed += closed
            tx.conn.execute("INSERT INTO seq_gaps (site, closed_at, through_seq, missing, how) VALUES (?, ?, ?, ?, ?)",
                            (site, tx.now, tr.through, closed, "floor_seq"))
            log.warning("ingest.gap_closed_by_floor", extra={"site": site, "missing": closed, "through": tr.through})
        c.records += new
        return new

    # --- rules and alarms ------------------------------------------------------------------

    def _rules_of(self, site: str, kind: str) -> dict[str, tuple[tuple[Rule, ...], float]]:
        """The rules of a kind at a site by point, each with its rate-of-rise window (0: none)."""
        rules = self._rules.get((site, kind))
        if rules is None:
            rules = self._rules[(site, kind)] = {
                point: (rs, max((r.window_s for r in rs if r.kind is RuleKind.RATE_OF_RISE), default=0.0))
                for point, rs in rules_for(kind, self.cfg.rules.params(site, kind)).items()
            }
        return rules

    def _judge(self, tx: Tx, site: str, device: str, point: str, point_rules: tuple[tuple[Rule, ...], float],
               pm: _Point, sample: Sample) -> None:
        rules, span = point_rules
        window: Sequence[tuple[float, float]] = pm.window or ()
        for verdict in evaluate(rules, sample, window, pm.active, changes_only=True):
            self._condition(tx, site, device, point, verdict)
        if span and sample.quality is Quality.GOOD and sample.num is not None:
            w = pm.window
            if w is None:
                w = pm.window = deque()
            w.append((sample.ts, sample.num))
            while w[0][0] < sample.ts - span:
                w.popleft()

    def _condition(self, tx: Tx, site: str, device: str, point: str, verdict: Verdict) -> None:
        key = (site, device, point, verdict.rule.name)
        am = self.alarms.get(key)
        if am is None:
            if not verdict.active:
                return
            area = self.sites[site].area
            cur = tx.conn.execute(
                "INSERT INTO alarms (site, device, point, rule, area, priority, state, active, message, changed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'normal', 0, ?, ?)",
                (site, device, point, verdict.rule.name, area, verdict.rule.priority.value, verdict.reason, tx.now),
            )
            assert cur.lastrowid is not None
            am = _Alarm(cur.lastrowid, site, device, point, verdict.rule.name, area, verdict.rule.priority.value,
                        isa.Alarm())
            self.alarms[key] = am
            self.alarm_ids[am.id] = key
        if am.alarm.active == verdict.active:
            return
        event = isa.AlarmEvent.ACTIVATE if verdict.active else isa.AlarmEvent.CLEAR
        self._transition(tx, am, isa.Action(event, isa.SYSTEM, verdict.reason, tx.now), message=verdict.reason)

    def _transition(self, tx: Tx, am: _Alarm, action: isa.Action, message: str | None = None) -> isa.Transition:
        new, tr = isa.apply(am.alarm, action, max_shelve_s=self.cfg.alarms.max_shelve_s)
        raised = tr.to_state is isa.AlarmState.UNACK and tr.from_state is not isa.AlarmState.UNACK
        conn = tx.conn
        conn.execute(
            "UPDATE alarms SET state = ?, active = ?, changed_at = ?, shelved_until = ?, shelve_reason = ?,"
            " message = coalesce(?, message), raised_at = CASE WHEN ? THEN ? ELSE raised_at END WHERE id = ?",
            (new.state.value, int(new.active), tx.now, new.shelved_until, new.shelve_reason, message, raised,
             tx.now, am.id),
        )
        conn.execute(
            "INSERT INTO alarm_transitions (alarm_id, ts, event, from_state, to_state, actor, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (am.id, tr.ts, tr.event.value, tr.from_state.value, tr.to_state.value, tr.actor, tr.reason),
        )
        am.alarm = new
        pm = self.latest.get((am.site, am.device, am.point))
        if pm is not None:
            if new.active:
                pm.active.add(am.rule)
            else:
                pm.active.discard(am.rule)
        if new.state is isa.AlarmState.SHELVED:
            self.shelved.add(am.id)
        else:
            self.shelved.discard(am.id)
        if raised:
            self._group(tx, am)
        if self.alerts is not None and (raised or tr.event is isa.AlarmEvent.CLEAR):
            entry = self.cfg.sites.registry.get(am.site)
            self.alerts.on_transition(tx, AlarmFacts(
                alarm_id=am.id, site=am.site, site_name=entry.name if entry else "", device=am.device,
                point=am.point, rule=am.rule, area=am.area, priority=am.priority,
                kind=self.kinds.get((am.site, am.device)), message=message or tr.reason, ts=tr.ts,
                event=tr.event.value), tr, raised=raised)
        if new.state is isa.AlarmState.NORMAL and am.incident_id is not None:
            self._maybe_close_incident(tx, am.incident_id, am.area)
        tx.after_commit(_live(self.outlet, "alarm", {
            "id": am.id, "site": am.site, "device": am.device, "point": am.point, "rule": am.rule,
            "priority": am.priority, "state": new.state.value, "active": new.active, "event": tr.event.value,
            "actor": tr.actor, "reason": tr.reason, "ts": tr.ts, "incident_id": am.incident_id}))
        if tr.event is isa.AlarmEvent.ACTIVATE:
            log.info("alarm.raised", extra={"alarm": am.id, "site": am.site, "rule": am.rule, "reason": tr.reason})
        return tr

    def _group(self, tx: Tx, am: _Alarm) -> None:
        g = self.grouper.raised(am.area, am.id, tx.now)
        conn = tx.conn
        if g.open_new:
            cur = conn.execute(
                "INSERT INTO incidents (area, opened_at, state, title) VALUES (?, ?, 'open', ?)",
                (am.area, tx.now, f"alarm flood in {am.area}: {len(g.alarms)} alarms"),
            )
            assert cur.lastrowid is not None
            inc = cur.lastrowid
            self.grouper.opened(am.area, inc)
            for aid in g.alarms:
                key = self.alarm_ids.get(aid)
                if key is not None:
                    self.alarms[key].incident_id = inc
            conn.executemany("UPDATE alarms SET incident_id = ? WHERE id = ?", [(inc, a) for a in g.alarms])
            tx.audit("system", "incident.opened", f"incident/{inc}", {"area": am.area, "alarms": len(g.alarms)})
            tx.after_commit(_live(self.outlet, "incident", {"id": inc, "area": am.area, "state": "open"}))
            log.warning("incident.opened", extra={"incident": inc, "area": am.area, "alarms": len(g.alarms)})
        elif g.join is not None:
            am.incident_id = g.join
            conn.execute("UPDATE alarms SET incident_id = ? WHERE id = ?", (g.join, am.id))

    def _maybe_close_incident(self, tx: Tx, inc: int, area: str) -> None:
        (left,) = tx.conn.execute("SELECT count(*) FROM alarms WHERE incident_id = ? AND state <> 'normal'",
                                  (inc,)).fetchone()
        if left == 0:
            self._close_incident(tx, inc, area, isa.SYSTEM, "every alarm of the incident is back to normal")

    def _close_incident(self, tx: Tx, inc: int, area: str, actor: str, reason: str) -> None:
        tx.conn.execute("UPDATE incidents SET state = 'closed', closed_at = ?, closed_by = ?, close_reason = ?"
                        " WHERE id = ?", (tx.now, actor, reason, inc))
        self.grouper.closed(area, inc)
        tx.audit(actor, "incident.closed", f"incident/{inc}", {"reason": reason})
        tx.after_commit(_live(self.outlet, "incident", {"id": inc, "area": area, "state": "closed"}))

    def close_incident(self, tx: Tx, inc: int, actor: str, reason: str) -> None:
        row = tx.conn.execute("SELECT area, state FROM incidents WHERE id = ?", (inc,)).fetchone()
        if row is None:
            raise NotFound(f"no incident {inc}")
        if row[1] != "open":
            raise Conflict(f"incident {inc} is {row[1]}")
        if not reason.strip():
            raise Refused("closing an incident needs a reason")
        self._close_incident(tx, inc, row[0], actor, reason)

    def alarm_action(self, tx: Tx, alarm_id: int, event: isa.AlarmEvent, actor: str, reason: str,
                     shelve_s: float | None = None) -> isa.Transition:
        """An operator's action on an alarm (ack, shelve, unshelve, remove, restore), audited."""
        if not event.by_operator:
            raise Refused(f"{event.value} is the process's, not an operator's")
        key = self.alarm_ids.get(alarm_id)
        if key is None:
            raise NotFound(f"no alarm {alarm_id}")
        am = self.alarms[key]
        until = tx.now + shelve_s if shelve_s is not None else None
        tr = self._transition(tx, am, isa.Action(event, actor, reason, tx.now, shelve_until=until))
        detail: dict[str, messages.Scalar | list[str]] = {"from": tr.from_state.value, "to": tr.to_state.value,
                                                          "reason": reason}
        if until is not None:
            detail["until"] = until
        tx.audit(actor, f"alarm.{event.value}", f"alarm/{alarm_id}", detail)
        return tr

    # --- status, birth ---------------------------------------------------------------------

    def _status(self, tx: Tx, site: str, st: Status) -> None:
        s = self.sites[site]
        if st.ts < s.state_ts:
            return  # an older status (a retained copy overtaken by a newer one)
        s.online = st.state is SiteState.ONLINE
        s.boot = st.boot
        s.state_ts = st.ts
        tx.conn.execute("UPDATE sites SET state = ?, boot = ?, state_ts = ? WHERE site = ?",
                        (st.state.value, st.boot, st.ts, site))
        if not s.online:
            tx.conn.execute("UPDATE latest SET stale = 1 WHERE site = ?", (site,))
            self._stale_site(tx, site, tx.now)
        log.info("ingest.site_state", extra={"site": site, "state": st.state.value, "boot": st.boot})
        tx.after_commit(_live(self.outlet, "site", {"site": site, "state": st.state.value, "boot": st.boot}))

    def _birth(self, tx: Tx, site: str, b: Birth) -> None:
        conn = tx.conn
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
        for k in [k for k in self.kinds if k[0] == site]:
            del self.kinds[k]
        for d in b.devices:
            self.kinds[(site, d.id)] = d.kind
        for k in [k for k in self._rules if k[0] == site]:
            del self._rules[k]
        tx.after_commit(_live(self.outlet, "site", {"site": site, "birth": b.boot, "devices": len(b.devices)}))

    # --- the periodic tick -----------------------------------------------------------------

    def tick(self, tx: Tx) -> None:
        """Once a second: resend asks, shelve expiry, stale data, command timeouts, retention."""
        now = tx.now
        acks: list[Ack] = []
        for site, tr in self.seqs.items():
            if not tr.held:
                continue
            resend = tr.want_resend(now, self.cfg.ingest.gap_grace_s, self.cfg.ingest.resend_interval_s)
            if resend is not None:
                self.counters.resend_asks += 1
                log.info("ingest.resend_asked", extra={"site": site, "resend_from": resend})
                acks.append(Ack(site=site, through_seq=tr.through if tr.through > 0 else None, resend_from=resend))
        if acks:
            outlet = self.outlet

            def send() -> None:
                for ack in acks:
                    outlet.send_ack(ack)

            tx.after_commit(send)
        for aid in sorted(self.shelved):
            am = self.alarms[self.alarm_ids[aid]]
            if isa.shelve_expired(am.alarm, now):
                self._transition(tx, am, isa.Action(isa.AlarmEvent.UNSHELVE, isa.SYSTEM, "shelve time is over", now))
                tx.audit(isa.SYSTEM, "alarm.unshelve", f"alarm/{aid}", {"reason": "shelve time is over"})
        if now - self._last_stale >= self.cfg.alarms.stale_check_s:
            self._last_stale = now
            for site in self.sites:
                self._stale_site(tx, site, now)
        self._timeouts(tx)
        if now - self._last_retention >= self.cfg.retention.every_s:
            self._last_retention = now
            self._retention_todo = sorted(self.latest)
            r = self.cfg.retention
            tx.conn.execute("DELETE FROM records WHERE type <> 'reading' AND ts < ?", (now - r.events_days * 86400,))
            tx.conn.execute("DELETE FROM history_agg WHERE bucket < ?", (now - r.downsampled_days * 86400,))
        if self._retention_todo:
            self._downsample(tx, self._retention_todo[:200])
            del self._retention_todo[:200]

    def _stale_site(self, tx: Tx, site: str, now: float) -> None:
        s = self.sites[site]
        for device, point in s.points:
            kind = self.kinds.get((site, device))
            if kind is None:
                continue
            point_rules = self._rules_of(site, kind).get(point)
            if point_rules is None:
                continue
            pm = self.latest[(site, device, point)]
            for rule in point_rules[0]:
                if rule.kind is RuleKind.STALE:
                    self._condition(tx, site, device, point, stale_verdict(rule, pm.ts, pm.quality, now, s.online))

    def _downsample(self, tx: Tx, keys: Sequence[Key]) -> None:
        step = self.cfg.retention.downsample_s
        cutoff = (tx.now - self.cfg.retention.raw_days * 86400) // step * step
        for site, device, point in keys:
            tx.conn.execute(
                "INSERT INTO history_agg (site, device, point, bucket, n, min, max, avg)"
                " SELECT site, device, point, CAST(ts / ? AS INTEGER) * ?, count(*), min(num), max(num), avg(num)"
                " FROM records WHERE site = ? AND device = ? AND point = ? AND type = 'reading' AND ts < ?"
                " GROUP BY 4 HAVING true ON CONFLICT (site, device, point, bucket) DO UPDATE SET"
                " avg = (coalesce(avg, 0) * n + coalesce(excluded.avg, 0) * excluded.n) / (n + excluded.n),"
                " n = n + excluded.n, min = min(coalesce(min, excluded.min), coalesce(excluded.min, min)),"
                " max = max(coalesce(max, excluded.max), coalesce(excluded.max, max))",
                (step, step, site, device, point, cutoff),
            )
            tx.conn.execute(
                "DELETE FROM records WHERE site = ? AND device = ? AND point = ? AND type = 'reading' AND ts < ?",
                (site, device, point, cutoff),
            )

    # --- commands --------------------------------------------------------------------------

    def _timeouts(self, tx: Tx) -> None:
        grace = self.cfg.commands.reply_grace_s
        rows = tx.conn.execute(
            "SELECT cmd_id FROM commands WHERE state IN ('sent', 'received') AND not_after < ?", (tx.now - grace,)
        ).fetchall()
        for (cmd_id,) in rows:
            self._set_state(tx, cmd_id, CommandState.TIMED_OUT, "no terminal reply by not_after + grace")
            tx.audit(isa.SYSTEM, "command.timed_out", f"command/{cmd_id}", {})

    def _set_state(self, tx: Tx, cmd_id: str, state: CommandState, detail: str) -> None:
        tx.conn.execute("UPDATE commands SET state = ?, detail = ?, updated_at = ? WHERE cmd_id = ?",
                        (state.value, detail, tx.now, cmd_id))
        tx.after_commit(_live(self.outlet, "command", {"cmd_id": cmd_id, "state": state.value, "detail": detail}))

    def _reply(self, tx: Tx, site: str, r: Reply, received: float) -> None:
        conn = tx.conn
        conn.execute(
            "INSERT INTO command_replies (cmd_id, site, seq, status, reason, ts, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (r.cmd_id, site, r.seq, r.status.value, r.reason, r.ts, received),
        )
        row = conn.execute("SELECT site, state FROM commands WHERE cmd_id = ?", (r.cmd_id,)).fetchone()
        if row is None or row[0] != site:
            log.warning("command.unknown_reply", extra={"site": site, "cmd_id": r.cmd_id, "status": r.status.value})
            return
        state = CommandState(row[1])
        if state.is_terminal and state is not CommandState.TIMED_OUT:
            return  # a repeated reply (the edge re-sends the stored result)
        if r.status.is_terminal:
            self._set_state(tx, r.cmd_id, CommandState.of_reply(r.status), r.reason)
            tx.audit(site, f"command.{r.status.value}", f"command/{r.cmd_id}", {"reason": r.reason})
        elif state in (CommandState.SENDING, CommandState.SENT):
            self._set_state(tx, r.cmd_id, CommandState.RECEIVED, r.reason)

    def _depths(self, site: str) -> list[DepthReading]:
        s = self.sites.get(site)
        if s is None:
            return []
        out = []
        for device, point in sorted(s.points):
            if point == DEPTH_POINT:
                pm = self.latest[(site, device, point)]
                out.append(DepthReading(device, pm.num, pm.quality, pm.ts))
        return out

    def _check_water(self, tx: Tx, site: str, device: str) -> None:
        kind = self.kinds.get((site, device)) or ""
        params = self.cfg.rules.params(site, kind)
        s = self.sites.get(site)
        check_fresh_low_water(self._depths(site), now=tx.now, site_online=bool(s and s.online),
                              reopening_depth_cm=params.reopening_depth_cm, data_age_limit_s=params.data_age_limit_s)

    def _sign(self, tx: Tx, cmd_id: str, draft: Draft, issued_by: str, approved_by: list[str], reason: str) -> Command:
        cmd = Command(cmd_id=cmd_id, site=draft.site, device=draft.device, action=draft.action,
                      params=dict(draft.params), issued_by=issued_by, approved_by=approved_by, issued_at=tx.now,
                      not_after=tx.now + self.cfg.commands.ttl_s, reason=reason)
        return sign_command(cmd, self.key)

    def create_command(self, tx: Tx, draft: Draft, actor: str, role: Role, reason: str,
                       operation_id: str | None = None) -> CommandOut:
        if not role.allows(Role.OPERATOR):
            raise Refused(f"{actor} ({role.value}) may not issue commands")
        if not reason.strip():
            raise Refused("a command needs a reason")
        check_action(self.kinds.get((draft.site, draft.device)), draft)
        cmd_id = uuid.uuid4().hex
        wire: Command | None = None
        if vocabulary.is_opening(draft.action):
            self._check_water(tx, draft.site, draft.device)
            state = CommandState.AWAITING_APPROVAL
        else:
            wire = self._sign(tx, cmd_id, draft, actor, [], reason)
            state = CommandState.SENDING
        tx.conn.execute(
            "INSERT INTO commands (cmd_id, site, device, action, params, issued_by, reason, state, created_at,"
            " issued_at, not_after, updated_at, operation_id, wire) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (cmd_id, draft.site, draft.device, draft.action.value, _enc.encode(draft.params).decode(), actor, reason,
             state.value, tx.now, wire.issued_at if wire else None, wire.not_after if wire else None, tx.now,
             operation_id, messages.encode(wire).decode() if wire else None),
        )
        tx.audit(actor, "command.requested" if wire is None else "command.issued", f"command/{cmd_id}",
                 {"site": draft.site, "device": draft.device, "action": draft.action.value, "reason": reason})
        tx.after_commit(_live(self.outlet, "command", {"cmd_id": cmd_id, "state": state.value, "detail": ""}))
        return CommandOut(cmd_id, state, wire)

    def _command_row(self, tx: Tx, cmd_id: str) -> tuple[str, str, str, str, str, str, str]:
        row = tx.conn.execute("SELECT site, device, action, params, issued_by, reason, state FROM commands"
                              " WHERE cmd_id = ?", (cmd_id,)).fetchone()
        if row is None:
            raise NotFound(f"no command {cmd_id}")
        return row  # type: ignore[no-any-return]

    def approve_command(self, tx: Tx, cmd_id: str, approver: str, role: Role, reason: str) -> CommandOut:
        site, device, action, params, issued_by, creason, state = self._command_row(tx, cmd_id)
        if state != CommandState.AWAITING_APPROVAL.value:
            raise Conflict(f"command {cmd_id} is {state}, not awaiting approval")
        try:
            check_second_person(issued_by, approver, role)
            self._check_water(tx, site, device)
        except Refused as exc:
            # the refusal is a fact worth keeping: audit it and commit; the caller raises it
            tx.audit(approver, "command.approval_refused", f"command/{cmd_id}", {"reason": str(exc)})
            return CommandOut(cmd_id, CommandState.AWAITING_APPROVAL, refusal=str(exc))
        draft = Draft(site, device, messages.Action(action), msgspec.json.decode(params))
        wire = self._sign(tx, cmd_id, draft, issued_by, [approver], creason)
        tx.conn.execute(
            "UPDATE commands SET state = ?, approved_by = ?, issued_at = ?, not_after = ?, wire = ?, updated_at = ?"
            " WHERE cmd_id = ?",
            (CommandState.SENDING.value, _enc.encode([approver]).decode(), wire.issued_at, wire.not_after,
             messages.encode(wire).decode(), tx.now, cmd_id),
        )
        tx.audit(approver, "command.approved", f"command/{cmd_id}", {"reason": reason or "approved"})
        tx.after_commit(_live(self.outlet, "command", {"cmd_id": cmd_id, "state": "sending", "detail": ""}))
        return CommandOut(cmd_id, CommandState.SENDING, wire)

    def reject_command(self, tx: Tx, cmd_id: str, actor: str, role: Role, reason: str) -> None:
        _site, _device, _action, _params, issued_by, _r, state = self._command_row(tx, cmd_id)
        if state != CommandState.AWAITING_APPROVAL.value:
            raise Conflict(f"command {cmd_id} is {state}, not awaiting approval")
        if actor == issued_by:
            new = CommandState.CANCELLED
        elif role.allows(Role.SUPERVISOR):
            new = CommandState.REFUSED
        else:
            raise Refused(f"only the issuer or a supervisor may withdraw command {cmd_id}")
        if not reason.strip():
            raise Refused("a reason is needed")
        self._set_state(tx, cmd_id, new, reason)
        tx.audit(actor, f"command.{new.value}", f"command/{cmd_id}", {"reason": reason})

    def mark_sent(self, tx: Tx, cmd_id: str, ok: bool, detail: str = "") -> None:
        row = tx.conn.execute("SELECT state FROM commands WHERE cmd_id = ?", (cmd_id,)).fetchone()
        if row is None or row[0] != CommandState.SENDING.value:
            return  # a reply overtook the PUBACK
        if ok:
            self._set_state(tx, cmd_id, CommandState.SENT, "")
        else:
            self._set_state(tx, cmd_id, CommandState.SEND_FAILED, detail)
            tx.audit(isa.SYSTEM, "command.send_failed", f"command/{cmd_id}", {"detail": detail})

    def create_operation(self, tx: Tx, kind: OperationKind, area: str, actor: str, role: Role,
                         reason: str) -> OperationOut:
        if not role.allows(Role.OPERATOR):
            raise Refused(f"{actor} ({role.value}) may not start operations")
        if not reason.strip():
            raise Refused("an operation needs a reason")
        devices = [DeviceRef(site, device, kind_) for (site, device), kind_ in self.kinds.items()
                   if site in self.sites and self.sites[site].area == area]
        drafts = plan_operation(kind, devices)
        if not drafts:
            raise Refused(f"area {area!r} has no device that takes part in {kind.value}")
        op_id = uuid.uuid4().hex
        note = "CAP alert (responseType Evacuate) to be forwarded" if kind is OperationKind.EVACUATE else ""
        tx.conn.execute("INSERT INTO operations (id, kind, area, issued_by, reason, created_at, note)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)", (op_id, kind.value, area, actor, reason, tx.now, note))
        tx.audit(actor, f"operation.{kind.value}", f"operation/{op_id}",
                 {"area": area, "commands": len(drafts), "reason": reason})
        out = tuple(self.create_command(tx, d, actor, role, reason, operation_id=op_id) for d in drafts)
        tx.after_commit(_live(self.outlet, "operation", {"id": op_id, "kind": kind.value, "area": area}))
        return OperationOut(op_id, out)


def _live(outlet: Outlet, kind: str, body: object) -> Callable[[], None]:
    def effect() -> None:
        outlet.live(LiveEvent.of(kind, body))

    return effect
