"""The read side of the API: what the console sees (hub/views.py), read from the database.
Every function takes a read-only connection (hub/store.py ``Reader``).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from hub.commands import CommandState, DeviceState, count_states, device_state
from hub.errors import NotFound
from hub.views import (
    AggPoint,
    AlarmDetail,
    AlarmView,
    AuditRow,
    CommandView,
    DeliveryView,
    DeviceView,
    DriverView,
    EscalationView,
    EvidenceRef,
    ExerciseView,
    History,
    HistoryPoint,
    IncidentView,
    LatestView,
    OperationDevice,
    OperationView,
    PointCheckView,
    QuarantineRow,
    ReplyView,
    SiteDetail,
    SiteEventView,
    SiteView,
    TransitionView,
)
from shared import site_events
from shared.messages import Action, Event, PointCheck, ReplyStatus

_dec = msgspec.json.Decoder()
_report = msgspec.json.Decoder(list[PointCheck])


_SITE_COLS = ("s.site, s.area, s.name, s.state, s.boot, s.state_ts, s.agent_version, s.last_seen, s.through_seq,"
              " s.records, (SELECT count(*) FROM alarms a WHERE a.site = s.site AND a.state NOT IN"
              " ('normal', 'out_of_service'))")


def _site(row: tuple[Any, ...]) -> SiteView:
    return SiteView(site=row[0], area=row[1], name=row[2], state=row[3], boot=row[4], state_ts=row[5],
                    agent_version=row[6], last_seen=row[7], through_seq=row[8], records=row[9], open_alarms=row[10])


def sites(conn: sqlite3.Connection, area: str | None = None) -> list[SiteView]:
    sql = f"SELECT {_SITE_COLS} FROM sites s"  # noqa: S608 - constant column lists; values are bound
    args: tuple[object, ...] = ()
    if area:
        sql += " WHERE s.area = ?"
        args = (area,)
    return [_site(r) for r in conn.execute(sql + " ORDER BY s.site", args)]


def site(conn: sqlite3.Connection, site_id: str) -> SiteDetail:
    row = conn.execute(f"SELECT {_SITE_COLS} FROM sites s WHERE s.site = ?", (site_id,)).fetchone()  # noqa: S608 - constant column lists; values are bound
    if row is None:
        raise NotFound(f"no site {site_id}")
    devices = [
        DeviceView(site=r[0], device=r[1], kind=r[2], profile=r[3], profile_sha256=r[4], points=_dec.decode(r[5]))
        for r in conn.execute("SELECT site, device, kind, profile, profile_sha256, points FROM devices"
                              " WHERE site = ? ORDER BY device", (site_id,))
    ]
    return SiteDetail(site=_site(row), devices=devices)


def latest(conn: sqlite3.Connection, site_id: str, now: float, age_limit_s: float) -> list[LatestView]:
    row = conn.execute("SELECT state FROM sites WHERE site = ?", (site_id,)).fetchone()
    if row is None:
        raise NotFound(f"no site {site_id}")
    offline = row[0] == "offline"
    out = []
    for device, point, value, unit, quality, ts, seq, stale in conn.execute(
        "SELECT device, point, value, unit, quality, ts, seq, stale FROM latest WHERE site = ? ORDER BY device, point",
        (site_id,),
    ):
        age = max(0.0, now - ts)
        effective = "stale" if (offline or stale or age > age_limit_s) else quality
        out.append(LatestView(device=device, point=point, value=_dec.decode(value), unit=unit, quality=effective,
                              reported_quality=quality, ts=ts, age_s=round(age, 3), seq=seq))
    return out


def history(conn: sqlite3.Connection, site_id: str, device: str, point: str, since: float, until: float,
            limit: int) -> History:
    raw = [
        HistoryPoint(ts=ts, value=_dec.decode(v), quality=q, historical=bool(h))
        for ts, v, q, h in conn.execute(
            "SELECT ts, value, quality, historical FROM records WHERE site = ? AND device = ? AND point = ?"
            " AND type = 'reading' AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
            (site_id, device, point, since, until, limit))
    ]
    agg = [
        AggPoint(bucket=b, n=n, min=mn, max=mx, avg=av)
        for b, n, mn, mx, av in conn.execute(
            "SELECT bucket, n, min, max, avg FROM history_agg WHERE site = ? AND device = ? AND point = ?"
            " AND bucket >= ? AND bucket < ? ORDER BY bucket LIMIT ?", (site_id, device, point, since, until, limit))
    ]
    return History(site=site_id, device=device, point=point, raw=raw, downsampled=agg)


_event = msgspec.json.Decoder(Event)


def events(conn: sqlite3.Connection, site_id: str, limit: int) -> list[SiteEventView]:
    """A site's newest events, newest first."""
    if conn.execute("SELECT 1 FROM sites WHERE site = ?", (site_id,)).fetchone() is None:
        raise NotFound(f"no site {site_id}")
    out = []
    for seq, ts, received, prio, historical, body in conn.execute(
        "SELECT seq, ts, received_at, prio, historical, body FROM records WHERE site = ? AND type = 'event'"
        " ORDER BY ts DESC, seq DESC LIMIT ?", (site_id, limit),
    ):
        ev = _event.decode(body)
        alarm = site_events.alarm_of(ev.kind)
        out.append(SiteEventView(ts=ts, kind=ev.kind, device=ev.device, detail=ev.detail, values=ev.values, prio=prio,
                                 alarm=alarm.priority if alarm is not None else None, historical=bool(historical),
                                 seq=seq, received_at=received))
    return out


_ALARM_COLS = ("id, site, device, point, rule, area, priority, state, active, message, raised_at, changed_at,"
               " shelved_until, shelve_reason, incident_id, late, source")


def _alarm(r: tuple[Any, ...]) -> AlarmView:
    return AlarmView(id=r[0], site=r[1], device=r[2], point=r[3], rule=r[4], area=r[5], priority=r[6], state=r[7],
                     active=bool(r[8]), message=r[9], raised_at=r[10], changed_at=r[11], shelved_until=r[12],
                     shelve_reason=r[13], incident_id=r[14], late=bool(r[15]), source=r[16])


def alarms(conn: sqlite3.Connection, *, state: str | None, site_id: str | None, limit: int) -> list[AlarmView]:
    where, args = [], []
    if state == "all":
        pass
    elif state:
        where.append("state = ?")
        args.append(state)
    else:
        where.append("state <> 'normal'")
    if site_id:
        where.append("site = ?")
        args.append(site_id)
    sql = f"SELECT {_ALARM_COLS} FROM alarms" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608 - constant column lists; values are bound
    sql += " ORDER BY CASE priority WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END," \
           " changed_at DESC LIMIT ?"
    return [_alarm(r) for r in conn.execute(sql, (*args, limit))]


def alarm(conn: sqlite3.Connection, alarm_id: int) -> AlarmDetail:
    row = conn.execute(f"SELECT {_ALARM_COLS} FROM alarms WHERE id = ?", (alarm_id,)).fetchone()  # noqa: S608 - constant column lists; values are bound
    if row is None:
        raise NotFound(f"no alarm {alarm_id}")
    trs = [TransitionView(id=r[0], ts=r[1], event=r[2], from_state=r[3], to_state=r[4], actor=r[5], reason=r[6],
                          late=bool(r[7]))
           for r in conn.execute("SELECT id, ts, event, from_state, to_state, actor, reason, late"
                                 " FROM alarm_transitions WHERE alarm_id = ? ORDER BY id", (alarm_id,))]
    evidence: list[EvidenceRef] = []
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'cctv_evidence'").fetchone():
        evidence = [EvidenceRef(id=r[0], camera=r[1], ts=r[2], sha256=r[3]) for r in conn.execute(
            "SELECT id, camera_id, captured_at, sha256 FROM cctv_evidence WHERE ref = ? ORDER BY id",
            (f"alarm:{alarm_id}",))]
    (raw,) = conn.execute("SELECT drivers FROM alarms WHERE id = ?", (alarm_id,)).fetchone()
    drivers = msgspec.json.decode(raw, type=list[DriverView]) if raw else []
    return AlarmDetail(alarm=_alarm(row), transitions=trs, evidence=evidence, drivers=drivers)


def deliveries(conn: sqlite3.Connection, limit: int = 500) -> list[DeliveryView]:
    """The newest deliveries, escalated and unacknowledged first."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'fwd_deliveries'").fetchone():
        return []
    rows = conn.execute(
        "SELECT d.id, d.identifier, d.thread, m.msg_type, m.headline, d.recipient, d.state, d.attempts,"
        " d.last_error, d.created_at, max(d.created_at, coalesce(d.acked_at, 0), coalesce(d.failed_at, 0),"
        " coalesce(d.escalated_at, 0)), d.escalated_at IS NOT NULL"
        " FROM fwd_deliveries d JOIN fwd_messages m ON m.identifier = d.identifier"
        " ORDER BY (d.escalated_at IS NOT NULL AND d.state <> 'acked') DESC, d.state = 'acked', d.id DESC LIMIT ?",
        (limit,))
    return [DeliveryView(id=r[0], alert_id=r[1], thread=r[2], msg_type=r[3], headline=r[4], recipient=r[5],
                         state=_delivery_state(r[6], r[7], bool(r[11])), attempts=r[7], last_error=r[8],
                         created_at=r[9], updated_at=r[10], escalated=bool(r[11])) for r in rows]


def escalations(conn: sqlite3.Connection) -> list[EscalationView]:
    """Escalations not yet settled (hub/alerting.py rule 6), oldest first; an escalation whose
    delivery no longer exists is not one."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'fwd_escalation_alarms'").fetchone():
        return []
    rows = conn.execute(
        "SELECT e.delivery_id, d.recipient, d.identifier, a.site, coalesce(d.escalated_at, e.raised_at), e.alarm_id"
        " FROM fwd_escalation_alarms e JOIN fwd_deliveries d ON d.id = e.delivery_id"
        " JOIN alarms a ON a.id = e.alarm_id"
        " WHERE e.settled_at IS NULL AND d.state <> 'acked' ORDER BY e.raised_at, e.delivery_id")
    return [EscalationView(delivery_id=r[0], recipient=r[1], alert_id=r[2], site=r[3], since=r[4], alarm_id=r[5])
            for r in rows]


def _delivery_state(state: str, attempts: int, escalated: bool) -> str:
    if state == "acked":
        return "acknowledged"
    if state == "failed":
        return "failed"
    if escalated:
        return "escalated"
    return "retrying" if attempts else "queued"


def incidents(conn: sqlite3.Connection, state: str | None) -> list[IncidentView]:
    sql = ("SELECT i.id, i.area, i.opened_at, i.closed_at, i.state, i.title,"
           " (SELECT count(*) FROM alarms a WHERE a.incident_id = i.id) FROM incidents i")
    args: tuple[object, ...] = ()
    if state:
        sql += " WHERE i.state = ?"
        args = (state,)
    return [IncidentView(id=r[0], area=r[1], opened_at=r[2], closed_at=r[3], state=r[4], title=r[5], alarms=r[6])
            for r in conn.execute(sql + " ORDER BY i.id DESC LIMIT 500", args)]


_CMD_COLS = ("cmd_id, site, device, action, params, issued_by, approved_by, reason, state, detail, created_at,"
             " issued_at, not_after, updated_at, operation_id, exercise_id")


def _command(r: tuple[Any, ...], replies: list[ReplyView] | None = None,
             report: list[PointCheckView] | None = None) -> CommandView:
    return CommandView(cmd_id=r[0], site=r[1], device=r[2], action=r[3], params=_dec.decode(r[4]), issued_by=r[5],
                       approved_by=_dec.decode(r[6]), reason=r[7], state=r[8], detail=r[9], created_at=r[10],
                       issued_at=r[11], not_after=r[12], updated_at=r[13], operation_id=r[14], exercise_id=r[15],
                       replies=replies or [], report=report or [])


def commands(conn: sqlite3.Connection, *, state: str | None, site_id: str | None, limit: int) -> list[CommandView]:
    where, args = [], []
    if state:
        where.append("state = ?")
        args.append(state)
    if site_id:
        where.append("site = ?")
        args.append(site_id)
    sql = f"SELECT {_CMD_COLS} FROM commands" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608 - constant column lists; values are bound
    return [_command(r) for r in conn.execute(sql + " ORDER BY created_at DESC LIMIT ?", (*args, limit))]


def command(conn: sqlite3.Connection, cmd_id: str) -> CommandView:
    row = conn.execute(f"SELECT {_CMD_COLS} FROM commands WHERE cmd_id = ?", (cmd_id,)).fetchone()  # noqa: S608 - constant column lists; values are bound
    if row is None:
        raise NotFound(f"no command {cmd_id}")
    rows = conn.execute("SELECT seq, status, reason, ts, received_at, report FROM command_replies"
                        " WHERE cmd_id = ? AND site = ? ORDER BY id", (cmd_id, row[1])).fetchall()
    replies = [ReplyView(seq=r[0], status=r[1], reason=r[2], ts=r[3], received_at=r[4]) for r in rows]
    return _command(row, replies, _selftest_report(conn, row, rows))


def _selftest_report(conn: sqlite3.Connection, cmd: tuple[Any, ...],
                     replies: list[tuple[Any, ...]]) -> list[PointCheckView]:
    """The report of the terminal reply that ended a ``device.selftest`` (the first one; a
    repeat is the edge re-sending it). Any other command shows none, whatever its reply held."""
    if cmd[3] != Action.DEVICE_SELFTEST.value or not CommandState(cmd[8]).is_terminal:
        return []
    terminal = next((r for r in replies if ReplyStatus(r[1]).is_terminal), None)
    if terminal is None:
        return []
    dev = conn.execute("SELECT points FROM devices WHERE site = ? AND device = ?", (cmd[1], cmd[2])).fetchone()
    points = set(_dec.decode(dev[0])) if dev is not None else set()
    return [PointCheckView(point=p.point, value=p.value, quality=p.quality.value, ok=p.ok, why=p.why,
                           known=p.point in points) for p in _report.decode(terminal[5])]


def _operation(conn: sqlite3.Connection, r: tuple[Any, ...]) -> OperationView:
    cmds = [_command(c) for c in conn.execute(f"SELECT {_CMD_COLS} FROM commands WHERE operation_id = ?"  # noqa: S608 - constant column lists; values are bound
                                              " ORDER BY site, device, action", (r[0],))]
    states: dict[str, int] = {}
    for c in cmds:
        states[c.state] = states.get(c.state, 0) + 1
    devices: list[OperationDevice] = []
    for site, device, kind, action, params, cmd_id, refusal, cstate, detail in conn.execute(
            "SELECT d.site, d.device, d.kind, d.action, d.params, d.cmd_id, d.reason, c.state, c.detail"
            " FROM operation_devices d LEFT JOIN commands c ON c.cmd_id = d.cmd_id"
            " WHERE d.operation_id = ? ORDER BY d.n", (r[0],)):
        st = device_state(None if cstate is None else CommandState(cstate))
        devices.append(OperationDevice(site=site, device=device, kind=kind, action=action, params=_dec.decode(params),
                                       state=st.value, reason=refusal or detail or "", cmd_id=cmd_id))
    counts = count_states([DeviceState(d.state) for d in devices])
    return OperationView(id=r[0], kind=r[1], area=r[2], issued_by=r[3], reason=r[4], created_at=r[5], note=r[6],
                         commands=cmds, states=states, devices=devices, counts=counts, exercise_id=r[7])


_OP_COLS = "id, kind, area, issued_by, reason, created_at, note, exercise_id"


def operations(conn: sqlite3.Connection, limit: int) -> list[OperationView]:
    rows = conn.execute(f"SELECT {_OP_COLS} FROM operations"  # noqa: S608 - constant column lists; values are bound
                        " ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
    return [_operation(conn, r) for r in rows]


def operation(conn: sqlite3.Connection, op_id: str) -> OperationView:
    row = conn.execute(f"SELECT {_OP_COLS} FROM operations WHERE id = ?",  # noqa: S608 - constant column lists; values are bound
                       (op_id,)).fetchone()
    if row is None:
        raise NotFound(f"no operation {op_id}")
    return _operation(conn, row)


_EX_COLS = "id, area, reason, started_by, started_at, ended_by, ended_at, end_reason"


def _exercise(r: tuple[Any, ...]) -> ExerciseView:
    return ExerciseView(id=r[0], area=r[1], reason=r[2], started_by=r[3], started_at=r[4], ended_by=r[5],
                        ended_at=r[6], end_reason=r[7])


def exercises(conn: sqlite3.Connection) -> list[ExerciseView]:
    """The active exercises, oldest first."""
    return [_exercise(r) for r in conn.execute(
        f"SELECT {_EX_COLS} FROM exercises WHERE ended_at IS NULL ORDER BY started_at")]  # noqa: S608 - constant column lists


def exercise(conn: sqlite3.Connection, ex_id: str) -> ExerciseView:
    row = conn.execute(f"SELECT {_EX_COLS} FROM exercises WHERE id = ?", (ex_id,)).fetchone()  # noqa: S608 - constant column lists; values are bound
    if row is None:
        raise NotFound(f"no exercise {ex_id}")
    return _exercise(row)


def audit_rows(conn: sqlite3.Connection, after: int, limit: int) -> list[AuditRow]:
    return [AuditRow(id=r[0], ts=r[1], actor=r[2], action=r[3], target=r[4], detail=_dec.decode(r[5]),
                     prev_hash=r[6], hash=r[7])
            for r in conn.execute("SELECT id, ts, actor, action, target, detail, prev_hash, hash FROM audit"
                                  " WHERE id > ? ORDER BY id LIMIT ?", (after, limit))]


def quarantine(conn: sqlite3.Connection, limit: int, reason: str | None = None) -> list[QuarantineRow]:
    """The newest quarantined messages (of one reason, if given), newest first."""
    sql = ("SELECT id, received_at, topic, site, reason, error, size, substr(payload, 1, 256) FROM quarantine"
           " WHERE ? IS NULL OR reason = ? ORDER BY id DESC LIMIT ?")
    return [QuarantineRow(id=r[0], received_at=r[1], topic=r[2], site=r[3], reason=r[4], error=r[5], size=r[6],
                          payload_preview=bytes(r[7]).decode("utf-8", "replace"))
            for r in conn.execute(sql, (reason, reason, limit))]
