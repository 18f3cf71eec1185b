"""The city → province core on real SQLite files: a city hub's province outbox (the shared outbox
with city records) feeding the province store, with hostile input (DESIGN §8, issue 18).

The MQTT leg (bridged brokers, the `province-*` identity) is not in these tests: the city topics'
ACL comes with the bridge work; every byte here is what the broker would carry.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from hub.upstream import apply_ack, next_batch, open_upstream
from province.grouping import PlacedAlarm, distance_m, group
from province.store import ProvinceStore
from shared import messages, topics
from shared.messages import (
    MAX_SEQ,
    AlarmRecord,
    CityAck,
    CityBatch,
    CityBirth,
    CityRecord,
    Place,
    Priority,
    SiteStateRecord,
)
from shared.sending import Ack as SentAck
from shared.sending import Cursors

NOW = 1_790_000_000.0

# synthetic places a kilometre apart across a city boundary, and one far away
NEAR_BUCHEON = Place(lat=37.4800, lon=126.8000)
NEAR_SUWON = Place(lat=37.4890, lon=126.8000)
FAR_GOYANG = Place(lat=37.6584, lon=126.8320)


def _alarm(alarm_id: str, site: str, place: Place | None, *, state: str = "unacknowledged",
           ts: float = NOW - 5) -> AlarmRecord:
    return AlarmRecord(seq=0, ts=ts, prio=Priority.ALARM, alarm_id=alarm_id, site=site, rule="water_depth_high",
                       severity="high", state=state, raised_at=NOW - 5, place=place)


def _site(site: str, last_data_ts: float, place: Place | None = None) -> SiteStateRecord:
    return SiteStateRecord(seq=0, ts=NOW - 1, prio=Priority.TELEMETRY, site=site, online=True,
                           last_data_ts=last_data_ts, place=place)


def _send_all(tmp_path: Path, city: str, records: list[CityRecord], store: ProvinceStore) -> CityAck | None:
    """Append ``records`` to a fresh city outbox, send every batch to ``store``, apply its acks."""
    outbox, _ = open_upstream(tmp_path / f"{city}-outbox.db", clock=lambda: NOW)
    outbox.append(records)
    ack = None
    seq = 1
    while (got := next_batch(outbox, city, "boot-1", seq)) is not None:
        payload, seq = got
        ack = store.receive(topics.city_topic(city, topics.CityChannel.DATA), payload, NOW)
        assert ack is not None
        apply_ack(outbox, ack)
    assert outbox.held == 0, "every record the province committed is deleted at the city"
    outbox.close()
    return ack


def _batch(city: str, seqs: list[int], *, epoch: int = 7, ts: float = NOW - 1, floor: int | None = None) -> bytes:
    recs: list[CityRecord] = [_site(f"gg-{city}-up-{s:04d}", NOW - 2) for s in seqs]
    recs = [msgspec.structs.replace(r, seq=s, ts=ts) for r, s in zip(recs, seqs, strict=True)]
    return messages.encode(CityBatch(city=city, boot="b", records=recs, epoch=epoch, floor_seq=floor))


def _data(city: str) -> str:
    return topics.city_topic(city, topics.CityChannel.DATA)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProvinceStore]:
    s = ProvinceStore(tmp_path / "province.db")
    yield s
    s.close()


def test_alarm_at_a_bucheon_site_appears_at_the_province_with_its_data_age(tmp_path: Path,
                                                                            store: ProvinceStore) -> None:
    """A Bucheon alarm travels through the city's outbox and shows at the province with the age of
    its site's newest data; the city deletes only what the province acked."""
    ack = _send_all(tmp_path, "bucheon", [_site("gg-bucheon-up-0007", NOW - 12.0, NEAR_BUCHEON),
                                          _alarm("a-1", "gg-bucheon-up-0007", None)], store)
    assert ack is not None
    assert ack.through_seq == 2
    [alarm] = store.alarms(NOW)
    assert (alarm.city, alarm.alarm_id, alarm.site) == ("bucheon", "a-1", "gg-bucheon-up-0007")
    assert alarm.data_age_s == pytest.approx(12.0)
    [city] = store.cities(NOW + 3)
    assert city.city == "bucheon"
    assert city.records == 2
    assert city.last_batch_age_s == pytest.approx(3.0)
    assert city.lag_s == pytest.approx(1.0)  # committed at NOW, newest record dated NOW - 1


def test_a_repeated_batch_and_a_reopened_store_commit_every_record_exactly_once(tmp_path: Path) -> None:
    """A batch sent again (the city never got the ack) and again after the province's file is
    reopened (the process died after its commit) is committed once; the ack covers it all."""
    path = tmp_path / "province.db"
    first = ProvinceStore(path)
    payload = _batch("suwon", [1, 2, 3])
    assert first.receive(_data("suwon"), payload, NOW) == CityAck(city="suwon", epoch=7, through_seq=3)
    assert first.receive(_data("suwon"), payload, NOW) == CityAck(city="suwon", epoch=7, through_seq=3)
    first.db.close()  # no orderly close of the store: what is on disk is all the next one has
    again = ProvinceStore(path)
    ack = again.receive(_data("suwon"), _batch("suwon", [2, 3, 4]), NOW)
    assert ack == CityAck(city="suwon", epoch=7, through_seq=4)
    assert again.committed("suwon") == [(7, 1, "site_state"), (7, 2, "site_state"), (7, 3, "site_state"),
                                        (7, 4, "site_state")]
    again.close()


def test_a_new_epoch_of_a_city_is_tracked_on_its_own(store: ProvinceStore) -> None:
    """A city whose outbox was replaced starts again at seq 1 in a new epoch: not taken for a replay."""
    store.receive(_data("goyang"), _batch("goyang", [1, 2], epoch=7), NOW)
    ack = store.receive(_data("goyang"), _batch("goyang", [1], epoch=8), NOW)
    assert ack == CityAck(city="goyang", epoch=8, through_seq=1)
    assert [(e, s) for e, s, _ in store.committed("goyang")] == [(7, 1), (7, 2), (8, 1)]
    assert store.verify_audit() == 2  # each new epoch is audited


def test_a_gap_is_asked_for_again_after_the_grace_time(store: ProvinceStore) -> None:
    """Seqs 3-4 missing: the ack stays at 2, and asks resend_from=3 once the gap outlasts the grace."""
    assert store.receive(_data("suwon"), _batch("suwon", [1, 2, 5]), NOW) == CityAck(
        city="suwon", epoch=7, through_seq=2)
    late = NOW + store.cfg.gap_grace_s + 0.5
    assert store.receive(_data("suwon"), _batch("suwon", [6]), late) == CityAck(
        city="suwon", epoch=7, through_seq=2, resend_from=3)
    assert store.receive(_data("suwon"), _batch("suwon", [3, 4]), late) == CityAck(
        city="suwon", epoch=7, through_seq=6)


def test_alarms_in_two_cities_within_the_distance_form_one_provincial_incident(tmp_path: Path,
                                                                            store: ProvinceStore) -> None:
    """Bucheon and Suwon alarms a kilometre apart are one provincial incident within 3 km; a Goyang
    alarm 20 km away, and a cleared alarm, are not in it; within 500 m there is none."""
    _send_all(tmp_path, "bucheon", [_site("gg-bucheon-up-0001", NOW - 2, NEAR_BUCHEON),
                                    _alarm("b-1", "gg-bucheon-up-0001", None)], store)
    _send_all(tmp_path, "suwon", [_alarm("s-1", "gg-suwon-up-0001", NEAR_SUWON),
                                  _alarm("s-2", "gg-suwon-up-0002", NEAR_SUWON, state="rtn_unacknowledged")], store)
    _send_all(tmp_path, "goyang", [_alarm("g-1", "gg-goyang-up-0001", FAR_GOYANG)], store)
    [incident] = store.provincial_incidents(3000)
    assert incident.cities == ("bucheon", "suwon")
    assert sorted(incident.alarms) == [("bucheon", "b-1"), ("suwon", "s-1")]
    assert store.provincial_incidents(500) == []


def test_same_catchment_groups_across_cities_and_one_city_alone_is_no_provincial_incident() -> None:
    """Rule 1 and 2 of province/grouping.py: a shared catchment links far alarms; one city's group is its own."""
    a = PlacedAlarm("suwon", "s-1", 1.0, 37.26, 127.02, "hwangguji")
    b = PlacedAlarm("hwaseong", "h-1", 2.0, 37.10, 126.90, "hwangguji")
    c = PlacedAlarm("suwon", "s-2", 3.0, 37.2601, 127.0201)
    assert distance_m(a, b) > 10_000
    [incident] = group([a, b, c], 100)
    assert incident.incident_id == "pi-suwon-s-1"
    assert incident.alarms == (("suwon", "s-1"), ("hwaseong", "h-1"),
                                                                           ("suwon", "s-2"))
    assert group([a, c], 100) == []


def test_haversine_distance_of_one_degree_of_latitude() -> None:
    """A degree of latitude is about 111.2 km on the mean radius."""
    a, b = PlacedAlarm("x", "1", 0, 37.0, 127.0), PlacedAlarm("y", "2", 0, 38.0, 127.0)
    assert distance_m(a, b) == pytest.approx(111_195, rel=1e-3)


def test_hostile_city_input_is_quarantined_and_the_writer_goes_on(store: ProvinceStore) -> None:
    """Malformed JSON, a payload naming another city, seqs out of range or repeated within a batch,
    a birth from the future and an unknown topic are quarantined; a record dated in the future is
    refused alone; a good batch after all of it commits."""
    suwon = _data("suwon")
    assert store.receive(suwon, b"{not json", NOW) is None
    assert store.receive(suwon, _batch("bucheon", [1]), NOW) is None  # bucheon's payload on suwon's topic
    assert store.receive(suwon, _batch("suwon", [0]), NOW) is None
    assert store.receive(suwon, _batch("suwon", [MAX_SEQ + 1]), NOW) is None
    assert store.receive(suwon, _batch("suwon", [4, 4]), NOW) is None
    birth = messages.encode(CityBirth(city="suwon", hub="hub-suwon", hub_version="1", boot="b", ts=NOW + 3600,
                                      sites=[]))
    assert store.receive(topics.city_topic("suwon", topics.CityChannel.BIRTH), birth, NOW) is None
    assert store.receive("jk/v1/city/suwon/ack", _batch("suwon", [1]), NOW) is None
    reasons = [r for _, _, r in store.quarantined()]
    assert reasons == ["malformed", "malformed", "seq_out_of_range", "seq_out_of_range", "malformed",
                       "future_timestamp", "malformed"]
    future = _batch("suwon", [2], ts=NOW + 3600)
    assert store.receive(suwon, future, NOW) == CityAck(city="suwon", epoch=7, through_seq=0)
    assert store.quarantined()[-1][2] == "future_timestamp"
    assert store.receive(suwon, _batch("suwon", [1]), NOW) == CityAck(city="suwon", epoch=7, through_seq=2)
    assert [(s, t) for _, s, t in store.committed("suwon")] == [(1, "site_state"), (2, "refused")]
    assert store.cities(NOW)[0].records == 1
    assert store.db.execute("SELECT count(*) FROM city_records WHERE city='bucheon'").fetchone()[0] == 0


def test_a_corrupt_city_outbox_is_moved_aside_and_a_new_epoch_starts(tmp_path: Path) -> None:
    """The shared outbox's rule 7 holds for a city's province outbox: the damaged file is kept
    aside, a new epoch starts, and the replacement is recorded as an event."""
    path = tmp_path / "province-outbox.db"
    outbox, _ = open_upstream(path, clock=lambda: NOW)
    old_epoch = outbox.epoch
    outbox.append([_alarm("a-1", "gg-suwon-up-0001", None)])
    outbox.close()
    with path.open("r+b") as f:
        f.write(b"\x00" * 100)  # the header is gone
    again, replaced = open_upstream(path, clock=lambda: NOW)
    assert replaced is not None
    assert replaced.moved_to is not None
    assert replaced.moved_to.exists()
    assert again.epoch != old_epoch
    [row] = again.read(1, limit=10)
    assert again.decode_row(row).kind == "outbox.replaced"  # type: ignore[union-attr]
    again.close()
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(replaced.moved_to).execute("SELECT * FROM records").fetchall()


def test_a_city_senders_cursors_follow_the_provinces_acks(tmp_path: Path, store: ProvinceStore) -> None:
    """shared/sending.py over a city outbox: an ack of another epoch changes nothing, the province's
    resend_from widens the replay to the gap, and its through_seq deletes what was committed."""
    outbox, _ = open_upstream(tmp_path / "goyang-outbox.db", clock=lambda: NOW)
    cur = Cursors(outbox)
    assert cur.connected() == 0
    outbox.append([_alarm(f"g-{i}", "gg-goyang-up-0001", FAR_GOYANG) for i in range(5)])
    got = next_batch(outbox, "goyang", "b", 1)
    assert got is not None
    cur.live = got[1]
    assert cur.on_ack(outbox.epoch + 1, 5, None) is SentAck.FOREIGN
    assert outbox.held == 5
    # the province lost seqs 3-5 on the way: it asks again from 3 once the grace is over
    batch = msgspec.json.decode(got[0])
    partial = messages.encode(CityBatch(city="goyang", boot="b", epoch=outbox.epoch, records=[
        msgspec.convert(r, CityRecord) for r in batch["records"][:2]] + [
        msgspec.convert(batch["records"][4], CityRecord)]))
    store.receive(_data("goyang"), partial, NOW)
    ack = store.receive(_data("goyang"), partial, NOW + 5)
    assert ack == CityAck(city="goyang", epoch=outbox.epoch, through_seq=2, resend_from=3)
    assert cur.on_ack(ack.epoch, ack.through_seq, ack.resend_from) is SentAck.RESEND
    assert (cur.replay, cur.replay_end, outbox.held) == (3, 6, 3)
    outbox.close()


@pytest.mark.parametrize("distance", [0.0, 400.0, 3000.0, 12_000.0])
def test_grid_grouping_finds_the_same_incidents_as_comparing_every_pair(distance: float) -> None:
    """The grid in province/grouping.py is only a shortcut: on 400 random alarms over the province
    it groups exactly as linking every pair within the distance (or catchment) would."""
    rng = random.Random(int(distance) + 18)
    cities = ["suwon", "bucheon", "goyang", "yongin"]
    alarms = [PlacedAlarm(rng.choice(cities), f"a-{i}", float(i), rng.uniform(36.9, 38.3), rng.uniform(126.4, 127.9),
                          rng.choice([None, None, None, "hantan", "anyang"])) for i in range(400)]
    parent = list(range(len(alarms)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, a in enumerate(alarms):
        for j, b in enumerate(alarms[:i]):
            if (a.catchment is not None and a.catchment == b.catchment) or distance_m(a, b) <= distance:
                parent[root(i)] = root(j)
    expected: dict[int, set[tuple[str, str]]] = {}
    for i, a in enumerate(alarms):
        expected.setdefault(root(i), set()).add((a.city, a.alarm_id))
    want = sorted(sorted(g) for g in expected.values() if len({c for c, _ in g}) > 1)
    got = sorted(sorted(inc.alarms) for inc in group(alarms, distance))
    assert got == want
