"""The alarm desk's ordering rules (hub/alarmdesk.py rules 7-11) on a real SQLite file without a
broker: late readings and events raise and clear alarms at their original times, marked late,
and history never re-raises an alarm that a newer record cleared; the edge's alarm events raise
and clear their alarms; hostile events are stored and raise nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.engine import Engine
from hub.inbound import Inbound, classify
from hub.migrations import connect
from hub.rules import AlarmPriority
from shared import messages, site_events, topics
from shared.messages import Action, Birth, DataBatch, DeviceInfo, Event, Priority, Quality, Reading, Record
from shared.site_events import local_outcome
from tests.conftest import PkiFixture
from tests.hub.test_engine import Sink, make_cfg, run

T0 = 1_800_000_000.0
CLOSE_FAILED = local_outcome(Action.BARRIER_CLOSE, False)
CLOSE_VERIFIED = local_outcome(Action.BARRIER_CLOSE, True)


class Site:
    """One edge, fed straight into an engine: births, readings and events with their own seqs."""

    def __init__(self, engine: Engine, conn: sqlite3.Connection, site: str) -> None:
        self.engine, self.conn, self.site = engine, conn, site
        self.seq = 0

    def born(self, now: float = T0) -> None:
        b = Birth(site=self.site, agent_version="t", boot="b", ts=now, devices=[
            DeviceInfo(id="barrier", kind="underpass", profile="underpass.toml", profile_sha256="0" * 64,
                       points=["water_depth_cm", "barrier_state", "motor_fault"])])
        run(self.engine, self.conn, now, [classify(topics.site_topic(self.site, topics.SiteChannel.BIRTH),
                                                   messages.encode(b), received=now)])

    def depth(self, ts: float, cm: float, *, historical: bool = False) -> Reading:
        self.seq += 1
        return Reading(seq=self.seq, ts=ts, prio=Priority.TELEMETRY, device="barrier", point="water_depth_cm",
                       value=cm, quality=Quality.GOOD, historical=historical)

    def state(self, ts: float, value: str, *, historical: bool = False) -> Reading:
        self.seq += 1
        return Reading(seq=self.seq, ts=ts, prio=Priority.TELEMETRY, device="barrier", point="barrier_state",
                       value=value, quality=Quality.GOOD, historical=historical)

    def event(self, ts: float, kind: str, *, device: str | None = "barrier", historical: bool = False,
              detail: str = "") -> Event:
        self.seq += 1
        return Event(seq=self.seq, ts=ts, prio=Priority.ALARM, kind=kind, device=device, detail=detail,
                     historical=historical)

    def send(self, now: float, records: Sequence[Record]) -> None:
        body = messages.encode(DataBatch(site=self.site, boot="b", records=list(records), floor_seq=1))
        run(self.engine, self.conn, now, [self.inbound(body, now)])

    def inbound(self, body: bytes, now: float) -> Inbound:
        return classify(topics.site_topic(self.site, topics.SiteChannel.DATA), body, received=now, mid=1)

    def alarms(self) -> list[tuple[Any, ...]]:
        return self.conn.execute(
            "SELECT rule, priority, state, active, raised_at, late, source FROM alarms WHERE site = ? ORDER BY id",
            (self.site,)).fetchall()

    def transitions(self, rule: str) -> list[tuple[Any, ...]]:
        return self.conn.execute(
            "SELECT t.event, t.to_state, t.ts, t.late FROM alarm_transitions t JOIN alarms a ON a.id = t.alarm_id"
            " WHERE a.site = ? AND a.rule = ? ORDER BY t.id", (self.site, rule)).fetchall()

    def latest_depth(self) -> tuple[Any, ...]:
        row = self.conn.execute("SELECT value, ts FROM latest WHERE site = ? AND point = 'water_depth_cm'",
                                (self.site,)).fetchone()
        assert row is not None
        return tuple(row)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = connect(tmp_path / "hub.db")
    yield c
    c.close()


@pytest.fixture
def site(test_pki: PkiFixture, tmp_path: Path, conn: sqlite3.Connection) -> Site:
    engine = Engine(make_cfg(test_pki, tmp_path), Ed25519PrivateKey.generate(), Sink())
    engine.load(conn)
    s = Site(engine, conn, test_pki.take_site())
    s.born()
    return s


NOW = T0 + 600  # when the hub receives what the tests send (after the outage)


def test_replayed_readings_in_order_raise_and_clear_at_their_own_times_marked_late(site: Site) -> None:
    """An outage replay that reaches the hub before any live data: 20 cm at +10 s, 2 cm at +70 s
    raise and clear the closing-depth alarm at those times, not at receipt, both marked late."""
    site.send(T0, [site.depth(T0, 3.0)])
    site.send(NOW, [site.depth(T0 + 10, 20.0, historical=True), site.depth(T0 + 70, 2.0, historical=True)])
    ((rule, prio, state, active, raised_at, late, source),) = site.alarms()
    assert (rule, prio, state, active, late, source) == ("closing_depth", "critical", "rtn_unacknowledged", 0, 1,
                                                         "rule")
    assert raised_at == T0 + 10
    assert site.transitions("closing_depth") == [("activate", "unacknowledged", T0 + 10, 1),
                                                 ("clear", "rtn_unacknowledged", T0 + 70, 1)]


def test_late_readings_behind_live_data_still_raise_and_clear_with_original_times(site: Site) -> None:
    """Live data overtook the replay: the live 2 cm at +500 s is the latest; the replayed 20 cm at
    +10 s and 2 cm at +70 s, older than it, are judged by the history cursor: an alarm raised at
    +10 s and cleared at +70 s, late; the latest value stays the live one."""
    site.send(T0, [site.depth(T0, 3.0)])
    site.send(NOW, [site.depth(T0 + 500, 2.0)])
    site.send(NOW + 1, [site.depth(T0 + 10, 20.0, historical=True)])
    site.send(NOW + 2, [site.depth(T0 + 70, 2.0, historical=True)])
    assert site.latest_depth() == ("2.0", T0 + 500)
    assert site.transitions("closing_depth") == [("activate", "unacknowledged", T0 + 10, 1),
                                                 ("clear", "rtn_unacknowledged", T0 + 70, 1)]
    assert [a[5] for a in site.alarms()] == [1]


def test_history_never_reraises_an_alarm_a_newer_reading_cleared(site: Site) -> None:
    """Raised live at +0 s, cleared live at +500 s; late readings between them (2 cm at +100 s,
    then 20 cm at +200 s: a dip and a rise history alone would call a new episode) change nothing:
    the newer reading has the last word."""
    site.send(T0, [site.depth(T0, 20.0)])
    site.send(T0 + 500, [site.depth(T0 + 500, 2.0)])
    before = site.transitions("closing_depth")
    site.send(NOW, [site.depth(T0 + 100, 2.0, historical=True), site.depth(T0 + 200, 20.0, historical=True)])
    assert site.transitions("closing_depth") == before
    assert [(e, s) for e, s, _ts, _late in before] == [("activate", "unacknowledged"), ("clear", "rtn_unacknowledged")]
    assert [a[3] for a in site.alarms() if a[0] == "closing_depth"] == [0]


def test_history_never_clears_an_alarm_a_newer_reading_raised(site: Site) -> None:
    """Raised live at +500 s; late readings before it (20 cm at +100 s, 2 cm at +200 s) do not
    clear it."""
    site.send(T0, [site.depth(T0, 3.0)])
    site.send(T0 + 500, [site.depth(T0 + 500, 20.0)])
    site.send(NOW, [site.depth(T0 + 100, 20.0, historical=True), site.depth(T0 + 200, 2.0, historical=True)])
    assert [(e, s) for e, s, _ts, _late in site.transitions("closing_depth")] == [("activate", "unacknowledged")]
    assert [a[2:6:] for a in site.alarms() if a[0] == "closing_depth"] == [("unacknowledged", 1, T0 + 500, 0)]


def test_a_late_episode_without_its_end_is_closed_by_the_next_live_reading(site: Site) -> None:
    """Only the start of a flood came back (+10 s, 20 cm) behind the live 2 cm: the alarm is raised
    at +10 s, late, and the next live reading, still 2 cm, returns it to normal."""
    site.send(T0, [site.depth(T0, 3.0)])
    site.send(NOW, [site.depth(T0 + 500, 2.0)])
    site.send(NOW + 1, [site.depth(T0 + 10, 20.0, historical=True)])
    assert [a[3] for a in site.alarms()] == [1]
    site.send(NOW + 2, [site.depth(T0 + 502, 2.0)])
    assert [(e, ts, late) for e, _s, ts, late in site.transitions("closing_depth")] == [
        ("activate", T0 + 10, 1), ("clear", NOW + 2, 0)]
    assert [a[2:6:3] for a in site.alarms()] == [("rtn_unacknowledged", 1)]


def test_a_restart_keeps_what_history_may_no_longer_change(site: Site, test_pki: PkiFixture,
                                                           tmp_path: Path) -> None:
    """The time of an alarm's last change survives a restart: after it, a late 20 cm older than
    the clear still raises nothing."""
    site.send(T0, [site.depth(T0, 20.0)])
    site.send(T0 + 500, [site.depth(T0 + 500, 2.0)])
    again = Engine(make_cfg(test_pki, tmp_path), Ed25519PrivateKey.generate(), Sink())
    again.load(site.conn)
    site.engine = again
    site.send(NOW, [site.depth(T0 + 100, 20.0, historical=True)])
    assert len(site.transitions("closing_depth")) == 2


# --- the edge's alarm events ------------------------------------------------------------------


def test_a_failed_local_close_is_a_critical_edge_alarm_cleared_by_a_closed_barrier(site: Site) -> None:
    """``local.barrier.close.failed`` raises a critical alarm (source edge) about barrier_state; a
    ``closed`` reading older than the event does not clear it, a newer one does."""
    site.send(T0, [site.event(T0 + 10, CLOSE_FAILED, detail="did not reach 'closed'")])
    ((rule, prio, state, active, raised_at, late, source),) = site.alarms()
    assert (rule, prio, state, active, late, source) == (CLOSE_FAILED, "critical", "unacknowledged", 1, 0, "edge")
    assert raised_at == T0  # live: raised when the hub learns of it
    site.send(T0 + 1, [site.state(T0 + 5, "closed")])
    assert [a[3] for a in site.alarms()] == [1]
    site.send(T0 + 30, [site.state(T0 + 30, "closed")])
    assert [(a[2], a[3]) for a in site.alarms()] == [("rtn_unacknowledged", 0)]


def test_a_later_verified_close_clears_the_failed_one_and_a_repeat_failure_raises_again(site: Site) -> None:
    site.send(T0, [site.event(T0, CLOSE_FAILED)])
    site.send(T0 + 10, [site.event(T0 + 10, CLOSE_VERIFIED)])
    site.send(T0 + 20, [site.event(T0 + 20, CLOSE_FAILED)])
    assert [e for e, *_ in site.transitions(CLOSE_FAILED)] == ["activate", "clear", "activate"]


def test_a_late_failure_behind_a_newer_verified_close_is_recorded_as_a_closed_episode(site: Site) -> None:
    """The live ``verified`` at +300 s reached the hub before the replayed ``failed`` at +100 s:
    the alarm is raised at +100 s and cleared at +300 s, both late, never left open."""
    site.send(NOW, [site.event(T0 + 300, CLOSE_VERIFIED)])
    assert site.alarms() == []
    site.send(NOW + 1, [site.event(T0 + 100, CLOSE_FAILED, historical=True)])
    assert site.transitions(CLOSE_FAILED) == [("activate", "unacknowledged", T0 + 100, 1),
                                              ("clear", "rtn_unacknowledged", T0 + 300, 1)]
    assert [a[5] for a in site.alarms()] == [1]


def test_a_failure_behind_a_newer_closed_reading_is_raised_and_cleared_at_that_reading(site: Site) -> None:
    """The barrier reads ``closed`` at +30 s before the replayed failure of +10 s reaches the hub:
    the alarm's episode is recorded, from +10 s to +30 s, not left open."""
    site.send(NOW, [site.state(T0 + 30, "closed")])
    site.send(NOW + 1, [site.event(T0 + 10, CLOSE_FAILED, historical=True)])
    assert site.transitions(CLOSE_FAILED) == [("activate", "unacknowledged", T0 + 10, 1),
                                              ("clear", "rtn_unacknowledged", T0 + 30, 1)]


def test_slope_grades_raise_and_clear_their_alarms(test_pki: PkiFixture, tmp_path: Path,
                                                   conn: sqlite3.Connection) -> None:
    """displacement.warning (high) and displacement.alarm (critical); a fall to warning clears the
    alarm grade, normal clears the warning."""
    engine = Engine(make_cfg(test_pki, tmp_path), Ed25519PrivateKey.generate(), Sink())
    engine.load(conn)
    s = Site(engine, conn, test_pki.take_site())
    b = Birth(site=s.site, agent_version="t", boot="b", ts=T0, devices=[
        DeviceInfo(id="barrier", kind="displacement", profile="dx.toml", profile_sha256="0" * 64,
                   points=["displacement_mm"])])
    run(engine, conn, T0, [classify(topics.site_topic(s.site, topics.SiteChannel.BIRTH), messages.encode(b),
                                    received=T0)])
    s.send(T0, [s.event(T0, "displacement.warning")])
    s.send(T0 + 1, [s.event(T0 + 1, "displacement.alarm")])
    assert {(a[0], a[1], a[3]) for a in s.alarms()} == {("displacement.warning", "high", 1),
                                                        ("displacement.alarm", "critical", 1)}
    s.send(T0 + 2, [s.event(T0 + 2, "displacement.warning")])
    assert {(a[0], a[3]) for a in s.alarms()} == {("displacement.warning", 1), ("displacement.alarm", 0)}
    s.send(T0 + 3, [s.event(T0 + 3, "displacement.normal")])
    assert {(a[0], a[3]) for a in s.alarms()} == {("displacement.warning", 0), ("displacement.alarm", 0)}


# --- hostile events ----------------------------------------------------------------------------


def test_junk_kinds_huge_details_unknown_devices_and_floods_of_events_are_stored_and_raise_nothing(
    site: Site,
) -> None:
    """What a broken or hostile edge sends: unknown kinds, a detail at the wire's limit, alarm kinds
    for devices its birth does not name or for no device, 2,000 events in one batch. Every event
    is stored; none raises an alarm; one real failure among them still does."""
    records: list[Record] = [
        site.event(T0, "no.such.kind", detail="x" * messages.MAX_TEXT),
        site.event(T0, "local.barrier.close.failed.extra"),
        site.event(T0, "LOCAL.BARRIER.CLOSE.FAILED"),
        site.event(T0, CLOSE_FAILED, device=None),
        site.event(T0, "displacement.alarm", device="made-up-device", detail="y" * messages.MAX_TEXT),
    ]
    records += [site.event(T0 + i / 1000, CLOSE_FAILED, device=f"dev-{i}") for i in range(2000)]
    for i in range(0, len(records), 500):
        site.send(T0 + 1, records[i:i + 500])
    (stored,) = site.conn.execute("SELECT count(*) FROM records WHERE site = ? AND type = 'event'",
                                  (site.site,)).fetchone()
    assert stored == len(records)
    assert site.alarms() == []
    assert site.engine.alarms.unknown_device_events == 2001
    site.send(T0 + 2, [site.event(T0 + 2, CLOSE_FAILED, detail="z" * messages.MAX_TEXT)])
    assert [(a[0], a[3]) for a in site.alarms()] == [(CLOSE_FAILED, 1)]


def test_edge_alarm_priorities_are_the_hubs() -> None:
    """shared/site_events.py cannot import the hub; its priorities are AlarmPriority values."""
    assert {a.priority for a in site_events.ALARMS} <= {p.value for p in AlarmPriority}


def test_a_replay_does_not_clear_a_stale_alarm_only_live_data_does(site: Site) -> None:
    """The site went offline (stale alarm, at the hub's time); a replayed good reading says
    nothing of now and leaves the alarm active; the first live reading clears it."""
    site.send(T0, [site.depth(T0, 3.0)])
    status = messages.Status(site=site.site, state=messages.SiteState.OFFLINE, boot="b", ts=T0 + 5)
    run(site.engine, site.conn, T0 + 5, [classify(topics.site_topic(site.site, topics.SiteChannel.STATUS),
                                                  messages.encode(status), received=T0 + 5)])
    assert [(a[0], a[3]) for a in site.alarms()] == [("stale", 1)]
    site.send(NOW, [site.depth(T0 + 60, 3.0, historical=True)])
    assert [(a[0], a[3]) for a in site.alarms()] == [("stale", 1)]
    site.send(NOW + 1, [site.depth(NOW + 1, 3.0)])
    assert [(a[0], a[3]) for a in site.alarms()] == [("stale", 0)]
