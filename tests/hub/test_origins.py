"""Records an edge's outbox carried into a new epoch, at the hub (hub/intake.py rule 10), on the real
engine and a real SQLite file: a carried record whose origin the hub committed is a duplicate for
storage and judging, its new seq still counts for acks; hostile origins change nothing but the
sender's own records."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.engine import Engine
from hub.inbound import Inbound, classify
from hub.migrations import connect
from shared import messages, topics
from shared.messages import DataBatch, Event, Priority, Quality, Reading, Record, Reply, ReplyStatus
from tests.conftest import PkiFixture
from tests.hub.test_engine import Sink, make_cfg
from tests.hub.test_epochs import birth, run

OLD, NEW, NEWER = 0x1111_2222_3333_4444, 0x0555_6666_7777_8888, 0x0999_AAAA_BBBB_CCCC
T0 = time.time() - 900


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = connect(tmp_path / "hub.db")
    yield c
    c.close()


@pytest.fixture
def engine(test_pki: PkiFixture, tmp_path: Path, conn: sqlite3.Connection) -> Engine:
    e = Engine(make_cfg(test_pki, tmp_path), Ed25519PrivateKey.generate(), Sink())
    e.load(conn)
    return e


def reading(i: int, depth: float = 2.0) -> Reading:
    """The i-th reading of the site's depth gauge (its time tells it apart)."""
    return Reading(seq=0, ts=T0 + i, prio=Priority.TELEMETRY, device="barrier", point="water_depth_cm",
                   value=depth, quality=Quality.GOOD)


def batch(site: str, epoch: int, records: Sequence[Record], *, first: int = 1) -> Inbound:
    """``records`` numbered from ``first`` in ``epoch``, each keeping its origin."""
    recs = [msgspec.structs.replace(r, seq=first + i) for i, r in enumerate(records)]
    body = messages.encode(DataBatch(site=site, boot="b", records=recs, floor_seq=first, epoch=epoch))
    return classify(topics.site_topic(site, topics.SiteChannel.DATA), body, received=time.time(), mid=1)


def carry(rec: Record, epoch: int, seq: int) -> Record:
    return msgspec.structs.replace(rec, origin=(epoch, seq))


def stored(conn: sqlite3.Connection, site: str) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for epoch, seq in conn.execute("SELECT epoch, seq FROM records WHERE site = ? ORDER BY epoch, seq", (site,)):
        out.setdefault(epoch, []).append(seq)
    return out


def test_carried_copies_of_committed_records_are_not_stored_again_but_their_seqs_are_acked(
    test_pki: PkiFixture, engine: Engine, conn: sqlite3.Connection
) -> None:
    """The old epoch's 1..10 are committed; the new epoch carries 7..10 (a torn log kept them) and
    adds one record of its own: only that one is stored, and the ack covers all five new seqs."""
    site = test_pki.take_site()
    old = [reading(i) for i in range(10)]
    run(engine, conn, time.time(), [birth(site, time.time()), batch(site, OLD, old)])
    carried = [carry(old[s - 1], OLD, s) for s in range(7, 11)]
    sink = run(engine, conn, time.time(), [batch(site, NEW, [*carried, reading(10)])])
    assert stored(conn, site) == {OLD: list(range(1, 11)), NEW: [5]}
    assert engine.counters.origin_duplicates == 4
    assert engine.counters.duplicates == 4
    assert (sink.acks[-1].epoch, sink.acks[-1].through_seq, sink.acks[-1].resend_from) == (NEW, 5, None)
    assert conn.execute("SELECT origin_epoch, origin_seq FROM records WHERE site = ? AND epoch = ?",
                        (site, NEW)).fetchall() == [(None, None)]


def test_a_carried_event_and_reply_are_neither_stored_nor_applied_twice(
    test_pki: PkiFixture, engine: Engine, conn: sqlite3.Connection
) -> None:
    """An edge alarm event and a command reply committed in the old epoch come again carried: no
    second event row, no second reply for the command desk."""
    site = test_pki.take_site()
    event = Event(seq=0, ts=T0, prio=Priority.ALARM, kind="local.barrier.close", device="barrier", detail="16 cm")
    reply = Reply(seq=0, ts=T0 + 1, prio=Priority.REPLY, cmd_id="c-1", status=ReplyStatus.VERIFIED, reason="ok")
    run(engine, conn, time.time(), [birth(site, time.time()), batch(site, OLD, [event, reply])])
    run(engine, conn, time.time(), [batch(site, NEW, [carry(event, OLD, 1), carry(reply, OLD, 2)])])
    assert stored(conn, site) == {OLD: [1, 2]}
    assert conn.execute("SELECT count(*) FROM command_replies WHERE cmd_id = 'c-1'").fetchone()[0] == 1
    assert engine.counters.origin_duplicates == 2


def test_a_record_carried_twice_is_stored_once(
    test_pki: PkiFixture, engine: Engine, conn: sqlite3.Connection
) -> None:
    """A record whose old epoch never reached the hub is stored from its first carry; carried again
    into a third epoch (same origin), and again after a hub restart, it is a duplicate."""
    site = test_pki.take_site()
    lost = reading(3)
    run(engine, conn, time.time(), [batch(site, NEW, [carry(lost, OLD, 3)])])
    run(engine, conn, time.time(), [batch(site, NEWER, [carry(lost, OLD, 3), reading(4)])])
    assert stored(conn, site) == {NEW: [1], NEWER: [2]}
    restarted = Engine(engine.cfg, Ed25519PrivateKey.generate(), Sink())
    restarted.load(conn)
    run(restarted, conn, time.time(), [batch(site, NEWER, [carry(lost, OLD, 3)], first=3)])
    assert stored(conn, site) == {NEW: [1], NEWER: [2]}
    assert restarted.counters.origin_duplicates == 1
    assert restarted.seqs[site].through == 3


def test_an_original_arriving_after_its_carried_copy_is_not_stored_again(
    test_pki: PkiFixture, engine: Engine, conn: sqlite3.Connection
) -> None:
    """The new epoch's copy of (OLD, 3) is committed first; then the old epoch's batch arrives
    late (a broker that kept it): its record 3 is the duplicate, its other records are new, and a
    record at (OLD, 5) other than the one carried from there is new too. After a restart too."""
    site = test_pki.take_site()
    late = [reading(i) for i in range(5)]
    run(engine, conn, time.time(), [batch(site, NEW, [carry(late[2], OLD, 3), carry(reading(99), OLD, 5)])])
    run(engine, conn, time.time(), [batch(site, OLD, late[:2])])
    assert engine.counters.origin_duplicates == 0
    restarted = Engine(engine.cfg, Ed25519PrivateKey.generate(), Sink())  # it knows OLD was carried from
    restarted.load(conn)
    sink = run(restarted, conn, time.time(), [batch(site, OLD, late[2:], first=3)])
    assert stored(conn, site) == {NEW: [1, 2], OLD: [1, 2, 4, 5]}
    assert restarted.counters.origin_duplicates == 1
    assert (sink.acks[-1].epoch, sink.acks[-1].through_seq) == (OLD, 5)


def test_two_records_of_one_batch_from_the_same_origin_are_stored_once(
    test_pki: PkiFixture, engine: Engine, conn: sqlite3.Connection
) -> None:
    site = test_pki.take_site()
    r = reading(5)
    run(engine, conn, time.time(), [batch(site, NEW, [carry(r, OLD, 5), carry(r, OLD, 5)])])
    assert stored(conn, site) == {NEW: [1]}


# --- hostile or broken senders ------------------------------------------------------------------


def test_an_origin_naming_another_sites_records_is_not_a_duplicate(
    test_pki: PkiFixture, engine: Engine, conn: sqlite3.Connection
) -> None:
    """Origins are per site: B's records naming (OLD, 1..3), which A committed with the very same
    times, device and point, are B's and are stored."""
    a, b = test_pki.take_site(), test_pki.take_site()
    recs = [reading(i) for i in range(3)]
    run(engine, conn, time.time(), [batch(a, OLD, recs)])
    run(engine, conn, time.time(), [batch(b, NEW, [carry(r, OLD, i + 1) for i, r in enumerate(recs)])])
    assert stored(conn, b) == {NEW: [1, 2, 3]}
    assert engine.counters.origin_duplicates == 0


@pytest.mark.parametrize(
    ("origin_epoch", "origin_seq", "why"),
    [
        (OLD, 10**15, "above the old epoch's range"),
        (NEW, 6, "its own key"),
        (NEW, 4, "a committed record of its own epoch"),
        (OLD, 2, "a committed seq holding another record (a seq a torn outbox reused)"),
        (0, 2**63 - 1, "the legacy epoch and the largest seq"),
    ],
)
def test_an_origin_that_names_no_committed_copy_of_the_record_leaves_it_new(
    test_pki: PkiFixture, engine: Engine, conn: sqlite3.Connection, origin_epoch: int, origin_seq: int, why: str
) -> None:
    site = test_pki.take_site()
    run(engine, conn, time.time(), [batch(site, OLD, [reading(i) for i in range(3)])])
    run(engine, conn, time.time(), [batch(site, NEW, [reading(100), reading(101), reading(102), reading(103)])])
    odd = carry(reading(50), origin_epoch, origin_seq) if origin_seq != 4 else carry(reading(103), NEW, 4)
    sink = run(engine, conn, time.time(), [batch(site, NEW, [reading(104), odd], first=5)])
    assert stored(conn, site)[NEW] == [1, 2, 3, 4, 5, 6], why
    assert engine.counters.origin_duplicates == 0
    assert sink.acks[-1].through_seq == 6


@pytest.mark.parametrize(
    "origin",
    [[2**63, 1], [1, 2**63], [1, 0], [-1, 5], [1, 2**64], [1], [1, 2, 3], "1:2", [1.5, 2]],
    ids=["epoch-2^63", "seq-2^63", "seq-0", "epoch-negative", "seq-2^64", "one-item", "three-items", "text",
         "float"],
)
def test_an_origin_out_of_bounds_is_quarantined_and_ingest_goes_on(
    test_pki: PkiFixture, engine: Engine, conn: sqlite3.Connection, origin: object
) -> None:
    site = test_pki.take_site()
    rec = msgspec.to_builtins(msgspec.structs.replace(reading(1), seq=1))
    body = msgspec.json.encode({"v": 1, "site": site, "boot": "b", "epoch": NEW, "floor_seq": 1,
                                "records": [{**rec, "origin": origin}]})
    bad = classify(topics.site_topic(site, topics.SiteChannel.DATA), body, received=time.time(), mid=1)
    assert bad.msg is None
    run(engine, conn, time.time(), [bad, batch(site, NEW, [reading(2)])])
    assert engine.counters.quarantined == 1
    assert stored(conn, site) == {NEW: [1]}


def test_records_without_an_origin_are_deduplicated_by_epoch_and_seq_alone(
    test_pki: PkiFixture, engine: Engine, conn: sqlite3.Connection
) -> None:
    """An edge from before origins carries records without one: each new (epoch, seq) is stored,
    as it always was (the hub cannot tell a carried copy from a new record)."""
    site = test_pki.take_site()
    recs = [reading(i) for i in range(3)]
    run(engine, conn, time.time(), [batch(site, OLD, recs), batch(site, NEW, recs)])
    assert stored(conn, site) == {OLD: [1, 2, 3], NEW: [1, 2, 3]}
