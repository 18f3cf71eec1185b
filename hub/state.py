"""The hub's in-memory mirror of its database: what ingest, rules, alarms and commands consult
on every record without a query.

Owned by the writer thread (hub/store.py): only code running inside the writer's transaction
reads or changes it; the desks (hub/intake.py, hub/alarmdesk.py, hub/commanddesk.py,
hub/upkeep.py) share the one :class:`HubState` the engine (hub/engine.py) builds.

Invariants:

1. The mirror equals what the database holds once the current transaction commits: each desk
   changes a row and its mirror entry together, and :meth:`HubState.load` rebuilds the mirror
   from the database at start-up (so a restart, or a rolled-back writer that ends the process,
   never leaves the two apart).
2. ``seqs`` has one tracker per (site, epoch) the hub has seen (DESIGN §3: each outbox epoch
   is tracked on its own); ``epochs`` maps a site to the epoch it last sent, whose watermark
   is also ``sites.through_seq``. Every point in ``latest`` is listed in its site's ``points``
   (when the site is known).
3. ``alarms`` and ``alarm_ids`` hold the same alarms (by key and by id); ``shelved`` is exactly
   the ids of the alarms whose state is ``shelved``; a point's ``active`` set is exactly the
   rules of its alarms whose condition is active.
"""

from __future__ import annotations

import math
import sqlite3
from collections import deque
from dataclasses import dataclass, field

import msgspec

from hub import alarms as isa
from hub.seqs import SiteSeqs
from shared import messages
from shared.messages import Quality, SiteState

_dec = msgspec.json.Decoder()

Key = tuple[str, str, str]
"""(site, device, point)"""
AlarmKey = tuple[str, str, str, str]
"""(site, device, point, rule)"""


@dataclass
class SiteMem:
    area: str
    online: bool = False
    boot: str = ""
    state_ts: float = 0.0
    points: set[tuple[str, str]] = field(default_factory=set)


class PointMem:
    """A point's latest value, its recent good samples (for rate-of-rise rules) and active rules."""

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
class AlarmMem:
    id: int
    site: str
    device: str
    point: str
    rule: str
    area: str
    priority: str
    alarm: isa.Alarm
    incident_id: int | None = None
    source: str = "rule"
    """``rule`` (the hub's rules, hub/rules.py), ``edge`` (the edge's events, shared/site_events.py), or
    another hub part that reported a condition (``forwarding``: an escalation)."""
    cond_ts: float = -math.inf
    """The record time of the last change of the condition (hub/alarmdesk.py, ordering rules)."""
    late: bool = False


class HistoryCursor:
    """A point's judge of late readings (older than its latest): the time of the last late sample
    judged, the rules active at that time as history tells them, and its good samples for
    rate-of-rise rules (hub/alarmdesk.py rule 7)."""

    __slots__ = ("active", "ts", "window")

    def __init__(self, ts: float, active: set[str]) -> None:
        self.ts = ts
        self.active = active
        self.window: deque[tuple[float, float]] | None = None


class HubState:
    """Sites, device kinds, latest values, per-site sequence trackers and alarms."""

    def __init__(self) -> None:
        self.sites: dict[str, SiteMem] = {}
        self.kinds: dict[tuple[str, str], str] = {}
        self.latest: dict[Key, PointMem] = {}
        self.seqs: dict[tuple[str, int], SiteSeqs] = {}
        """(site, epoch) → its tracker."""
        self.epochs: dict[str, int] = {}
        """site → the epoch it last sent."""
        self.alarms: dict[AlarmKey, AlarmMem] = {}
        self.alarm_ids: dict[int, AlarmKey] = {}
        self.shelved: set[int] = set()
        self.born: set[str] = set()
        """Sites whose birth the hub holds; data from any other site asks for a rebirth."""
        self.rebirth_asked: dict[str, float] = {}
        """When each site was last asked for a rebirth (not persisted: a restart asks again)."""
        self.history: dict[Key, HistoryCursor] = {}
        """Points that received late readings → their history judge (not persisted)."""
        self.carried_from: set[tuple[str, int]] = set()
        """(site, epoch) of which some record was committed carried into a later epoch: only
        these epochs' records are looked up as possibly late originals (hub/intake.py rule 10)."""
        self.edge_clears: dict[AlarmKey, float] = {}
        """(site, device, point, name) of an edge alarm → the newest clearing event seen for it,
        whether or not the alarm exists (not persisted)."""

    def add_alarm(self, am: AlarmMem) -> None:
        key = (am.site, am.device, am.point, am.rule)
        self.alarms[key] = am
        self.alarm_ids[am.id] = key

    def current_seqs(self, site: str) -> SiteSeqs | None:
        """The tracker of the epoch ``site`` last sent."""
        epoch = self.epochs.get(site)
        return None if epoch is None else self.seqs.get((site, epoch))

    def alarm_by_id(self, alarm_id: int) -> AlarmMem | None:
        key = self.alarm_ids.get(alarm_id)
        return None if key is None else self.alarms[key]

    def load(self, conn: sqlite3.Connection) -> None:
        """Rebuild the mirror from the database (the writer calls it once, on its thread)."""
        for site, area, state, boot, state_ts, epoch in conn.execute(
            "SELECT site, area, state, boot, state_ts, epoch FROM sites"
        ):
            self.sites[site] = SiteMem(area=area, online=state == SiteState.ONLINE.value, boot=boot,
                                       state_ts=state_ts or 0.0)
            self.epochs[site] = epoch
        for site, epoch, through in conn.execute("SELECT site, epoch, through_seq FROM site_epochs"):
            tr = SiteSeqs(through=through)
            for (seq,) in conn.execute("SELECT seq FROM records WHERE site = ? AND epoch = ? AND seq > ? ORDER BY seq",
                                       (site, epoch, through)):
                tr.add(seq)
            self.seqs[(site, epoch)] = tr
        self.carried_from.update(conn.execute(
            "SELECT DISTINCT site, origin_epoch FROM records INDEXED BY records_origin WHERE origin_epoch IS NOT NULL"))
        self.born.update(site for (site,) in conn.execute("SELECT site FROM sites WHERE birth_ts IS NOT NULL"))
        for site, device, kind in conn.execute("SELECT site, device, kind FROM devices"):
            self.kinds[(site, device)] = kind
        for site, device, point, value, num, quality, ts, seq in conn.execute(
            "SELECT site, device, point, value, num, quality, ts, seq FROM latest"
        ):
            self.latest[(site, device, point)] = PointMem(ts, _dec.decode(value), num, Quality(quality), seq)
            if site in self.sites:
                self.sites[site].points.add((device, point))
        for row in conn.execute(
            "SELECT id, site, device, point, rule, area, priority, state, active, shelved_until, shelve_reason,"
            " incident_id, source, cond_ts, late FROM alarms"
        ):
            aid, site, device, point, rule, area, prio, state, active, until, sreason, inc = row[:12]
            source, cond_ts, late = row[12:]
            alarm = isa.Alarm(isa.AlarmState(state), bool(active), until, sreason or "")
            self.add_alarm(AlarmMem(aid, site, device, point, rule, area, prio, alarm, inc, source,
                                    -math.inf if cond_ts is None else cond_ts, bool(late)))
            if alarm.state is isa.AlarmState.SHELVED:
                self.shelved.add(aid)
            pm = self.latest.get((site, device, point))
            if pm is not None and alarm.active:
                pm.active.add(rule)
