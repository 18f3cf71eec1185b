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

Sources, time and order (DESIGN §6: late data is judged too; the alarm it raises or clears
carries the original times):

6. An alarm's ``source`` is ``rule`` (the hub's rules on readings, hub/rules.py) or ``edge``
   (the edge's own alarm events, shared/site_events.py); both take the one path of rules 1-5,
   so an edge alarm is grouped, forwarded (CAP) and gets camera evidence like any other.
7. Every verdict comes from a record (a reading or an event) with its time ``ts``, the edge's
   acquisition or occurrence time (the hub's own stale checks use the check's time). Each alarm
   keeps ``cond_ts``, the time of the record that last *changed* its condition.
8. Readings not older than their point's latest are judged in order by the point's live judge
   (its latest value, rate-of-rise window and active rules), as they always were. A reading
   older than the latest (a replay that live data overtook) is *late*: it never becomes the
   latest (hub/intake.py rule 3) and is judged by the point's history cursor instead, which
   follows the point's past in the order the late readings come. A cursor starts from what
   the alarms say held at the reading's time: an alarm's condition at ``t`` is its current one
   if it last changed at or before ``t``, else the opposite. Stale rules judge no late or
   ``historical`` reading (staleness is about now: live data, which the edge sends first,
   clears a stale alarm).
9. A verdict from a late reading, or from an edge event, at ``t`` changes an alarm only if
   ``t > cond_ts``: the newer record has the last word. So judging history never re-raises an
   alarm that a newer reading cleared, nor clears one that a newer reading raised; what it can
   add is an episode the hub did not see, after ``cond_ts``: raised at ``t`` and cleared at the
   next late reading that says so (failing that, by the next live reading: the live judge finds
   the rule in its point's active set and judges it afresh).
10. A transition judged from a record that came late (flagged ``historical``, replayed after an
    outage, or older than its point's latest) happens at the record's time, not at receipt, and
    is marked ``late``; so is its alarm, for the episode (a raise sets ``late`` anew, a clear can
    only set it). Other process transitions happen at the transaction's time.
11. Edge alarms: an event of a raising kind raises its alarm at (site, device); a clearing
    event, or a reading of the device that the kind names (e.g. ``barrier_state = closed``),
    clears it; both under rule 9. The newest clearing event of each edge alarm is remembered
    even while the alarm is clear, so a raise that arrives after a newer clear (the live record
    overtook the replay) is raised at its time and cleared at once at that clear's time (or at
    the latest clearing reading's): the episode is recorded, never left open. Only a device
    the site's birth names raises an alarm (a hostile edge cannot mint alarms for made-up
    devices); an unknown kind raises nothing; every event is stored either way.
"""

from __future__ import annotations

import logging
import math
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
from hub.rules import Rule, RuleKind, Sample, Verdict, as_text, edge_rule, evaluate, rules_for, stale_verdict
from hub.state import AlarmMem, HistoryCursor, HubState, PointMem
from hub.store import Tx
from shared import messages, site_events
from shared.messages import Event, Quality, Scalar
from shared.site_events import EventAlarm

log = logging.getLogger(__name__)

PointRules = tuple[tuple[Rule, ...], float]
"""A point's rules, with the longest rate-of-rise window among them (0: none)."""

EDGE_CLEAR_POINTS = frozenset(c.point for a in site_events.ALARMS for c in a.cleared_when)
"""Points whose readings may clear an edge alarm (rule 11)."""
_EDGE_RULES = {a.name: edge_rule(a) for a in site_events.ALARMS}


class AlarmDesk:
    def __init__(self, cfg: HubConfig, state: HubState, outlet: Outlet) -> None:
        self.cfg = cfg
        self.state = state
        self.outlet = outlet
        self.grouper = FloodGrouper(cfg.alarms.flood_count, cfg.alarms.flood_window_s)
        self._rules: dict[tuple[str, str], dict[str, PointRules]] = {}
        self.alerts: AlarmAlerts | None = None
        """Set by the hub when ``[forward]`` is configured: alarm raises and clears become alerts."""
        self.forecast_cap = False
        """Whether network-forecast alarms (source ``forecast``) become alerts too (``forecast.cap``)."""
        self.unknown_device_events = 0
        """Alarm events naming a device the site's birth does not (rule 11): stored, no alarm."""

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
              sample: Sample, *, late: bool = False) -> None:
        """Judge a point's new latest sample against its rules (the hot path: changes only).
        ``late``: the reading was replayed after an outage (rule 10); it says nothing of now, so
        the stale rules do not judge it (rule 8)."""
        rules, span = point_rules
        if late:
            rules = tuple(r for r in rules if r.kind is not RuleKind.STALE)
        window: Sequence[tuple[float, float]] = pm.window or ()
        for verdict in evaluate(rules, sample, window, pm.active, changes_only=True):
            self.condition(tx, site, device, point, verdict, ts=sample.ts, late=late)
        if span and sample.quality is Quality.GOOD and sample.num is not None:
            w = pm.window
            if w is None:
                w = pm.window = deque()
            _slide(w, sample.ts, sample.num, span)

    def judge_late(self, tx: Tx, site: str, device: str, point: str, point_rules: PointRules,
                   sample: Sample) -> None:
        """Judge a reading older than its point's latest with the point's history cursor (rule 8)."""
        st = self.state
        key = (site, device, point)
        rules = tuple(r for r in point_rules[0] if r.kind is not RuleKind.STALE)
        cur = st.history.get(key)
        if cur is None or sample.ts < cur.ts:
            cur = st.history[key] = HistoryCursor(sample.ts, {
                r.name for r in rules if self._held_at(st.alarms.get((site, device, point, r.name)), sample.ts)})
        for verdict in evaluate(rules, sample, cur.window or (), cur.active, changes_only=True):
            if verdict.active:
                cur.active.add(verdict.rule.name)
            else:
                cur.active.discard(verdict.rule.name)
            self.condition(tx, site, device, point, verdict, ts=sample.ts, late=True, ordered=False)
        cur.ts = sample.ts
        span = point_rules[1]
        if span and sample.quality is Quality.GOOD and sample.num is not None:
            if cur.window is None:
                cur.window = deque()
            _slide(cur.window, sample.ts, sample.num, span)

    @staticmethod
    def _held_at(am: AlarmMem | None, ts: float) -> bool:
        """Whether an alarm's condition held at ``ts``, as far as the hub knows (rule 8)."""
        if am is None:
            return False
        return am.alarm.active if am.cond_ts <= ts else not am.alarm.active

    # --- the edge's alarm events (rule 11) ---------------------------------------------------

    def edge_event(self, tx: Tx, site: str, ev: Event, *, late: bool) -> None:
        """An event from ``site``: raise or clear the edge alarms shared/site_events.py names."""
        spec = site_events.alarm_of(ev.kind)
        clears = site_events.cleared_by_event(ev.kind)
        if (spec is None and not clears) or ev.device is None:
            return
        device = ev.device
        st = self.state
        if (site, device) not in st.kinds:
            self.unknown_device_events += 1
            return
        what = f"{ev.kind}: {ev.detail}" if ev.detail else ev.kind
        for a in clears:
            key = (site, device, a.point, a.name)
            if st.edge_clears.get(key, -math.inf) < ev.ts:
                st.edge_clears[key] = ev.ts
            self.condition(tx, site, device, a.point, Verdict(_EDGE_RULES[a.name], False, what), ts=ev.ts,
                           late=late, ordered=False)
        if spec is not None:
            self._edge_raise(tx, site, device, spec, ev.ts, what, late=late)

    def _edge_raise(self, tx: Tx, site: str, device: str, spec: EventAlarm, ts: float, what: str, *,
                    late: bool) -> None:
        rule = _EDGE_RULES[spec.name]
        if not self.condition(tx, site, device, spec.point, Verdict(rule, True, what), ts=ts, late=late,
                              ordered=False):
            return
        st = self.state
        # a clear newer than this raise is known already: the episode is over (rule 11)
        known: list[tuple[float, str]] = []
        cleared = st.edge_clears.get((site, device, spec.point, spec.name))
        if cleared is not None and cleared > ts:
            known.append((cleared, "cleared by a newer event"))
        for c in spec.cleared_when:
            pm = st.latest.get((site, device, c.point))
            if pm is not None and pm.ts > ts and pm.quality is Quality.GOOD and as_text(pm.value) in c.values:
                known.append((pm.ts, f"{c.point} = {as_text(pm.value)}"))
        if known:
            at, why = min(known)
            self.condition(tx, site, device, spec.point, Verdict(rule, False, why), ts=at, late=late,
                           ordered=False)

    def edge_reading(self, tx: Tx, site: str, device: str, point: str, value: Scalar, quality: Quality, ts: float,
                     *, late: bool) -> None:
        """A reading of a point that may clear edge alarms of its device (``EDGE_CLEAR_POINTS``)."""
        if quality is not Quality.GOOD:
            return
        st = self.state
        text: str | None = None
        for a, values in site_events.cleared_by_reading(point):
            am = st.alarms.get((site, device, a.point, a.name))
            if am is None or not am.alarm.active or ts <= am.cond_ts:
                continue
            text = as_text(value) if text is None else text
            if text in values:
                self.condition(tx, site, device, a.point, Verdict(_EDGE_RULES[a.name], False, f"{point} = {text}"),
                               ts=ts, late=late, ordered=False)

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

    def condition(self, tx: Tx, site: str, device: str, point: str, verdict: Verdict, *, ts: float | None = None,
                  late: bool = False, ordered: bool = True) -> bool:
        """A rule's condition is (still, or no longer) active: rule 1, then a transition if it changed.

        ``ts`` is the time of the record judged (None: the hub's own check, now); ``late`` that the
        record came late (rule 10); ``ordered`` false that it may be older than what the alarm
        knows, so it changes the alarm only if newer than ``cond_ts`` (rule 9). True when the
        condition changed.
        """
        st = self.state
        at = tx.now if ts is None else ts
        am = st.alarms.get((site, device, point, verdict.rule.name))
        if am is not None and not ordered and at <= am.cond_ts:
            return False
        if am is None:
            if not verdict.active:
                return False
            area = st.sites[site].area
            source = "edge" if verdict.rule.kind is RuleKind.EDGE else "rule"
            cur = tx.conn.execute(
                "INSERT INTO alarms (site, device, point, rule, area, priority, state, active, message, changed_at,"
                " source) VALUES (?, ?, ?, ?, ?, ?, 'normal', 0, ?, ?, ?)",
                (site, device, point, verdict.rule.name, area, verdict.rule.priority.value, verdict.reason,
                 at if late else tx.now, source),
            )
            assert cur.lastrowid is not None
            am = AlarmMem(cur.lastrowid, site, device, point, verdict.rule.name, area,
                          verdict.rule.priority.value, isa.Alarm(), source=source)
            st.add_alarm(am)
        if am.alarm.active == verdict.active:
            return False
        event = isa.AlarmEvent.ACTIVATE if verdict.active else isa.AlarmEvent.CLEAR
        self._transition(tx, am, isa.Action(event, isa.SYSTEM, verdict.reason, at if late else tx.now),
                         message=verdict.reason, cond=(at, late))
        return True

    def _transition(self, tx: Tx, am: AlarmMem, action: isa.Action, message: str | None = None,
                    cond: tuple[float, bool] | None = None) -> isa.Transition:
        """Record one transition (rule 2). ``cond``: for a process event, the time of the record
        that changed the condition and whether it came late (rules 7 and 10)."""
        new, tr = isa.apply(am.alarm, action, max_shelve_s=self.cfg.alarms.max_shelve_s)
        raised = tr.to_state is isa.AlarmState.UNACK and tr.from_state is not isa.AlarmState.UNACK
        late = False
        if cond is not None:
            am.cond_ts, late = cond
            am.late = late if tr.event is isa.AlarmEvent.ACTIVATE else am.late or late
        conn = tx.conn
        conn.execute(
            "UPDATE alarms SET state = ?, active = ?, changed_at = ?, shelved_until = ?, shelve_reason = ?,"
            " message = coalesce(?, message), raised_at = CASE WHEN ? THEN ? ELSE raised_at END, cond_ts = ?,"
            " late = ? WHERE id = ?",
            (new.state.value, int(new.active), tr.ts, new.shelved_until, new.shelve_reason, message, raised,
             tr.ts, am.cond_ts if math.isfinite(am.cond_ts) else None, int(am.late), am.id),
        )
        conn.execute(
            "INSERT INTO alarm_transitions (alarm_id, ts, event, from_state, to_state, actor, reason, late)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (am.id, tr.ts, tr.event.value, tr.from_state.value, tr.to_state.value, tr.actor, tr.reason, int(late)),
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
        if self.alerts is not None and (raised or tr.event is isa.AlarmEvent.CLEAR) and (
                am.source != "forecast" or self.forecast_cap):
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
            ts=tr.ts, incident_id=am.incident_id, late=am.late, source=am.source))
        if tr.event is isa.AlarmEvent.ACTIVATE:
            log.info("alarm.raised", extra={"alarm": am.id, "site": am.site, "rule": am.rule, "reason": tr.reason,
                                            "late": late})
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
                "INSERT INTO alarms (site, device, point, rule, area, priority, state, active, message, changed_at,"
                " source) VALUES (?, ?, ?, ?, ?, ?, 'normal', 0, ?, ?, ?)",
                (site, device, point, rule, area, priority, reason, tx.now, device),
            )
            assert cur.lastrowid is not None
            # the source is the reporting part, named as the alarm's device (``forwarding``)
            am = AlarmMem(cur.lastrowid, site, device, point, rule, area, priority, isa.Alarm(), source=device)
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

def _slide(w: deque[tuple[float, float]], ts: float, num: float, span: float) -> None:
    """Append a good sample to a rate-of-rise window and drop what is older than ``span``."""
    w.append((ts, num))
    while w[0][0] < ts - span:
        w.popleft()
