"""The alarm desk: rule verdicts → ISA-18.2 transitions → incident grouping → the alerting hook.

Runs inside the writer's transaction on the shared :class:`~hub.state.HubState`. The rules
(hub/rules.py) and the state machine (hub/alarms.py) are pure; this desk records what they
decide.

Rules and invariants:

1. One alarm row per (site, device, point, rule), created the first time its condition becomes
   active; a condition that was never active creates nothing.
2. Every transition is one ``alarm_transitions`` row with who and why, the ``alarms`` row and
   the mirror (state, the point's active rules, the shelved set) changed together, and one
   ``alarm`` live event after commit.
3. An alarm entering unacknowledged is *raised*: it is grouped (EEMUA 191 floods open an
   incident per area, hub/incidents.py) and, when ``alerts`` is set, a raise or a clear is
   handed to alerting in the same transaction (hub/alerting.py rule 2).
4. An incident closes when every alarm of it is back to normal, or when a supervisor closes it
   with a reason; both are audited.
5. Operators act only with operator events (ack, shelve, unshelve, remove, restore); activate
   and clear are the process's.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import Sequence

from hub import alarms as isa
from hub.alerting import AlarmAlerts, AlarmFacts
from hub.config import HubConfig
from hub.errors import Conflict, NotFound, Refused
from hub.incidents import FloodGrouper
from hub.live import AlarmChanged, IncidentChanged
from hub.outlet import Outlet, live_after
from hub.rules import Rule, RuleKind, Sample, Verdict, evaluate, rules_for, stale_verdict
from hub.state import AlarmMem, HubState, PointMem
from hub.store import Tx
from shared import messages
from shared.messages import Quality

log = logging.getLogger(__name__)

PointRules = tuple[tuple[Rule, ...], float]
"""A point's rules, with the longest rate-of-rise window among them (0: none)."""


class AlarmDesk:
    def __init__(self, cfg: HubConfig, state: HubState, outlet: Outlet) -> None:
        self.cfg = cfg
        self.state = state
        self.outlet = outlet
        self.grouper = FloodGrouper(cfg.alarms.flood_count, cfg.alarms.flood_window_s)
        self._rules: dict[tuple[str, str], dict[str, PointRules]] = {}
        self.alerts: AlarmAlerts | None = None
        """Set by the hub when ``[forward]`` is configured: alarm raises and clears become alerts."""

    def load(self, conn: sqlite3.Connection) -> None:
        """Reopen the flood grouper's open incidents (start-up, after the state is loaded)."""
        for inc_id, area in conn.execute("SELECT id, area FROM incidents WHERE state = 'open'"):
            self.grouper.opened(area, inc_id)

    def reload(self, conn: sqlite3.Connection) -> None:
        """Forget the cached rules and the flood counts; reopen the open incidents (engine.reload)."""
        self._rules.clear()
        self.grouper = FloodGrouper(self.cfg.alarms.flood_count, self.cfg.alarms.flood_window_s)
        self.load(conn)

    # --- rules -----------------------------------------------------------------------------

    def rules_of(self, site: str, kind: str) -> dict[str, PointRules]:
        """The rules of a kind at a site by point (cached until the site's next birth)."""
        rules = self._rules.get((site, kind))
        if rules is None:
            rules = self._rules[(site, kind)] = {
                point: (rs, max((r.window_s for r in rs if r.kind is RuleKind.RATE_OF_RISE), default=0.0))
                for point, rs in rules_for(kind, self.cfg.rules.params(site, kind)).items()
            }
        return rules

    def forget_rules(self, site: str) -> None:
        """A birth may change a site's devices: their rules are looked up again."""
        for k in [k for k in self._rules if k[0] == site]:
            del self._rules[k]

    def judge(self, tx: Tx, site: str, device: str, point: str, point_rules: PointRules, pm: PointMem,
              sample: Sample) -> None:
        """Judge a point's new latest sample against its rules (the hot path: changes only)."""
        rules, span = point_rules
        window: Sequence[tuple[float, float]] = pm.window or ()
        for verdict in evaluate(rules, sample, window, pm.active, changes_only=True):
            self.condition(tx, site, device, point, verdict)
        if span and sample.quality is Quality.GOOD and sample.num is not None:
            w = pm.window
            if w is None:
                w = pm.window = deque()
            w.append((sample.ts, sample.num))
            while w[0][0] < sample.ts - span:
                w.popleft()

    def stale_site(self, tx: Tx, site: str, now: float) -> None:
        """Judge the stale rules of every point of ``site`` (offline, or no data for too long)."""
        st = self.state
        s = st.sites[site]
        for device, point in s.points:
            kind = st.kinds.get((site, device))
            if kind is None:
                continue
            point_rules = self.rules_of(site, kind).get(point)
            if point_rules is None:
                continue
            pm = st.latest[(site, device, point)]
            for rule in point_rules[0]:
                if rule.kind is RuleKind.STALE:
                    self.condition(tx, site, device, point, stale_verdict(rule, pm.ts, pm.quality, now, s.online))

    # --- transitions -----------------------------------------------------------------------

    def condition(self, tx: Tx, site: str, device: str, point: str, verdict: Verdict) -> None:
        """A rule's condition is (still, or no longer) active: rule 1, then a transition if it changed."""
        st = self.state
        am = st.alarms.get((site, device, point, verdict.rule.name))
        if am is None:
            if not verdict.active:
                return
            area = st.sites[site].area
            cur = tx.conn.execute(
                "INSERT INTO alarms (site, device, point, rule, area, priority, state, active, message, changed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'normal', 0, ?, ?)",
                (site, device, point, verdict.rule.name, area, verdict.rule.priority.value, verdict.reason, tx.now),
            )
            assert cur.lastrowid is not None
            am = AlarmMem(cur.lastrowid, site, device, point, verdict.rule.name, area,
                          verdict.rule.priority.value, isa.Alarm())
            st.add_alarm(am)
        if am.alarm.active == verdict.active:
            return
        event = isa.AlarmEvent.ACTIVATE if verdict.active else isa.AlarmEvent.CLEAR
        self._transition(tx, am, isa.Action(event, isa.SYSTEM, verdict.reason, tx.now), message=verdict.reason)

    def _transition(self, tx: Tx, am: AlarmMem, action: isa.Action, message: str | None = None) -> isa.Transition:
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
        st = self.state
        pm = st.latest.get((am.site, am.device, am.point))
        if pm is not None:
            if new.active:
                pm.active.add(am.rule)
            else:
                pm.active.discard(am.rule)
        if new.state is isa.AlarmState.SHELVED:
            st.shelved.add(am.id)
        else:
            st.shelved.discard(am.id)
        if raised:
            self._group(tx, am)
        if self.alerts is not None and (raised or tr.event is isa.AlarmEvent.CLEAR):
            entry = self.cfg.sites.registry.get(am.site)
            self.alerts.on_transition(tx, AlarmFacts(
                alarm_id=am.id, site=am.site, site_name=entry.name if entry else "", device=am.device,
                point=am.point, rule=am.rule, area=am.area, priority=am.priority,
                kind=st.kinds.get((am.site, am.device)), message=message or tr.reason, ts=tr.ts,
                event=tr.event.value), tr, raised=raised)
        if new.state is isa.AlarmState.NORMAL and am.incident_id is not None:
            self._maybe_close_incident(tx, am.incident_id, am.area)
        live_after(tx, self.outlet, AlarmChanged(
            id=am.id, site=am.site, device=am.device, point=am.point, rule=am.rule, priority=am.priority,
            state=new.state.value, active=new.active, event=tr.event.value, actor=tr.actor, reason=tr.reason,
            ts=tr.ts, incident_id=am.incident_id))
        if tr.event is isa.AlarmEvent.ACTIVATE:
            log.info("alarm.raised", extra={"alarm": am.id, "site": am.site, "rule": am.rule, "reason": tr.reason})
        return tr

    def unshelve_expired(self, tx: Tx) -> None:
        """Shelved alarms whose shelve time is over return to their state (audited)."""
        st = self.state
        for aid in sorted(st.shelved):
            am = st.alarms[st.alarm_ids[aid]]
            if isa.shelve_expired(am.alarm, tx.now):
                self._transition(tx, am, isa.Action(isa.AlarmEvent.UNSHELVE, isa.SYSTEM, "shelve time is over",
                                                    tx.now))
                tx.audit(isa.SYSTEM, "alarm.unshelve", f"alarm/{aid}", {"reason": "shelve time is over"})

    def alarm_action(self, tx: Tx, alarm_id: int, event: isa.AlarmEvent, actor: str, reason: str,
                     shelve_s: float | None = None) -> isa.Transition:
        """An operator's action on an alarm (ack, shelve, unshelve, remove, restore), audited."""
        if not event.by_operator:
            raise Refused(f"{event.value} is the process's, not an operator's")
        am = self.state.alarm_by_id(alarm_id)
        if am is None:
            raise NotFound(f"no alarm {alarm_id}")
        until = tx.now + shelve_s if shelve_s is not None else None
        tr = self._transition(tx, am, isa.Action(event, actor, reason, tx.now, shelve_until=until))
        detail: dict[str, messages.Scalar | list[str]] = {"from": tr.from_state.value, "to": tr.to_state.value,
                                                          "reason": reason}
        if until is not None:
            detail["until"] = until
        tx.audit(actor, f"alarm.{event.value}", f"alarm/{alarm_id}", detail)
        return tr

    # --- incidents -------------------------------------------------------------------------

    def _group(self, tx: Tx, am: AlarmMem) -> None:
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
                other = self.state.alarm_by_id(aid)
                if other is not None:
                    other.incident_id = inc
            conn.executemany("UPDATE alarms SET incident_id = ? WHERE id = ?", [(inc, a) for a in g.alarms])
            tx.audit("system", "incident.opened", f"incident/{inc}", {"area": am.area, "alarms": len(g.alarms)})
            live_after(tx, self.outlet, IncidentChanged(id=inc, area=am.area, state="open"))
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
        live_after(tx, self.outlet, IncidentChanged(id=inc, area=area, state="closed"))

    def close_incident(self, tx: Tx, inc: int, actor: str, reason: str) -> None:
        row = tx.conn.execute("SELECT area, state FROM incidents WHERE id = ?", (inc,)).fetchone()
        if row is None:
            raise NotFound(f"no incident {inc}")
        if row[1] != "open":
            raise Conflict(f"incident {inc} is {row[1]}")
        if not reason.strip():
            raise Refused("closing an incident needs a reason")
        self._close_incident(tx, inc, row[0], actor, reason)

    # --- conditions of other hub parts --------------------------------------------------------

    def source_raise(self, tx: Tx, key: tuple[str, str, str, str], area: str, priority: str, reason: str) -> int:
        """Another part of the hub reports a condition active (forwarding's escalations,
        hub/alerting.py rule 6): rules 1-3 as for a rule's verdict, for a key whose site need not
        be an edge's. Returns the alarm's id."""
        st = self.state
        am = st.alarms.get(key)
        if am is None:
            site, device, point, rule = key
            cur = tx.conn.execute(
                "INSERT INTO alarms (site, device, point, rule, area, priority, state, active, message, changed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'normal', 0, ?, ?)",
                (site, device, point, rule, area, priority, reason, tx.now),
            )
            assert cur.lastrowid is not None
            am = AlarmMem(cur.lastrowid, site, device, point, rule, area, priority, isa.Alarm())
            st.add_alarm(am)
        if not am.alarm.active:
            self._transition(tx, am, isa.Action(isa.AlarmEvent.ACTIVATE, isa.SYSTEM, reason, tx.now), message=reason)
        return am.id

    def source_clear(self, tx: Tx, alarm_id: int, reason: str) -> bool:
        """The condition of a :meth:`source_raise` alarm is over; False if it was not active."""
        am = self.state.alarm_by_id(alarm_id)
        if am is None or not am.alarm.active:
            return False
        self._transition(tx, am, isa.Action(isa.AlarmEvent.CLEAR, isa.SYSTEM, reason, tx.now), message=reason)
        return True
