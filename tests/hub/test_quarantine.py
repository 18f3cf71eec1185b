"""The engine on a real SQLite file: a message that fails while it is written is rolled back
alone (database and mirror), and the quarantine stays bounded (rows, bytes, age)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub import validate
from hub.engine import Engine
from hub.inbound import classify
from hub.migrations import connect
from hub.validate import Reason
from shared import messages, topics
from shared.messages import Birth, DataBatch, DeviceInfo, Priority, Quality, Reading, Status
from tests.conftest import PkiFixture
from tests.hub.test_engine import DAY, Sink, batch, make_cfg, run


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = connect(tmp_path / "hub.db")
    yield c
    c.close()


def test_a_message_failing_in_the_store_is_rolled_back_alone_with_the_mirror(
    test_pki: PkiFixture, tmp_path: Path, conn: sqlite3.Connection
) -> None:
    """Three messages in one transaction, the middle one's records refused by SQLite: the other
    two are committed and acked, the middle one is quarantined, and the mirror holds nothing of it."""
    good, bad = test_pki.take_site(), test_pki.take_site()
    engine = Engine(make_cfg(test_pki, tmp_path), Ed25519PrivateKey.generate(), Sink())
    engine.load(conn)
    conn.execute(f"CREATE TEMP TRIGGER boom BEFORE INSERT ON records WHEN NEW.site = '{bad}'"
                 " BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    now = time.time()
    sink = run(engine, conn, now, [batch(good, range(1, 4), now), batch(bad, range(1, 4), now, value=50.0),
                                   batch(good, range(4, 7), now + 10, value=7.0)])
    assert [(a.site, a.through_seq) for a in sink.acks] == [(good, 6)]
    assert [s for (s,) in conn.execute("SELECT seq FROM records WHERE site = ?", (good,))] == list(range(1, 7))
    assert conn.execute("SELECT count(*) FROM sites WHERE site = ?", (bad,)).fetchone() == (0,)
    st = engine.state
    assert bad not in st.sites
    assert bad not in engine.seqs
    assert not [k for k in st.latest if k[0] == bad]
    assert st.latest[(good, "gauge", "water_depth_cm")].value == 9.0
    assert engine.seqs[good].through == 6
    assert engine.intake.quarantine.counts[Reason.STORE.value] == 1
    (reason, error), = conn.execute("SELECT reason, error FROM quarantine WHERE site = ?", (bad,))
    assert reason == Reason.STORE.value
    assert "disk says no" in error
    # and the next transaction goes on as usual
    sink = run(engine, conn, now + 20, [batch(good, range(7, 9), now + 20)])
    assert sink.acks[-1].through_seq == 8


def test_the_quarantine_is_capped_by_rows_and_bytes_and_expires(
    test_pki: PkiFixture, tmp_path: Path, conn: sqlite3.Connection
) -> None:
    """Oldest entries go first when a cap would be passed; payloads are kept truncated with their
    size; entries older than quarantine_days leave on the upkeep's retention tick."""
    cfg = make_cfg(test_pki, tmp_path, ingest={"quarantine_max_rows": 20, "quarantine_max_bytes": 65536,
                                               "quarantine_payload_max": 4096, "quarantine_days": 7})
    engine = Engine(cfg, Ed25519PrivateKey.generate(), Sink())
    engine.load(conn)
    site = test_pki.take_site()
    topic = topics.site_topic(site, topics.SiteChannel.DATA)
    now = 100 * DAY
    small = [classify(topic, b"%d not json" % i, received=now) for i in range(30)]
    run(engine, conn, now, small)
    assert [i for (i,) in conn.execute("SELECT id FROM quarantine ORDER BY id")] == list(range(11, 31))
    big = [classify(topic, b"x" * 10_000, received=now) for _ in range(30)]
    run(engine, conn, now, big)
    rows = conn.execute("SELECT size, length(payload) FROM quarantine").fetchall()
    assert sum(stored for _, stored in rows) <= 65536
    assert set(rows) == {(10_000, 4096)}
    assert len(rows) == 65536 // 4096
    q = engine.intake.quarantine
    assert (q.rows, q.bytes) == (len(rows), 4096 * len(rows))
    assert q.counts[Reason.MALFORMED.value] == 60
    run(engine, conn, now + 8 * DAY)  # the tick's retention round
    assert conn.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
    assert (q.rows, q.bytes) == (0, 0)


@pytest.mark.parametrize(("msg", "reason"), [
    (DataBatch(site="gg-a-01", boot="b", records=[], floor_seq=0), Reason.SEQ_RANGE),
    (DataBatch(site="gg-a-01", boot="b", records=[], floor_seq=2**63 - 1), None),
    (DataBatch(site="gg-a-01", boot="b", records=[], thinned=[(5, 2**63)]), Reason.SEQ_RANGE),
    (DataBatch(site="gg-a-01", boot="b", records=[], thinned=[(0, 4)]), Reason.SEQ_RANGE),
    (DataBatch(site="gg-a-01", boot="b", records=[], thinned=[(1, 2**63 - 1)], epoch=2**63 - 1), None),
    (DataBatch(site="gg-a-01", boot="b", records=[Reading(seq=0, ts=1, prio=Priority.TELEMETRY, device="d",
                                                          point="p", value=1, quality=Quality.GOOD)]),
     Reason.SEQ_RANGE),
    (DataBatch(site="gg-a-01", boot="b", records=[Reading(seq=1, ts=1, prio=Priority.TELEMETRY, device="d",
                                                          point="p", value=-(2**63), quality=Quality.GOOD)]), None),
    (Status(site="gg-a-01", state=messages.SiteState.ONLINE, boot="b", ts=1000 + 301), Reason.FUTURE),
    (Status(site="gg-a-01", state=messages.SiteState.ONLINE, boot="b", ts=1000 + 299), None),
    (Birth(site="gg-a-01", agent_version="1", boot="b", ts=1000 + 301, devices=[]), Reason.FUTURE),
    (Birth(site="gg-a-01", agent_version="1", boot="b", ts=1000, devices=[
        DeviceInfo(id="d", kind="k", profile="p", profile_sha256="0" * 64, points=[]),
        DeviceInfo(id="e", kind="k", profile="p", profile_sha256="0" * 64, points=[])]), None),
])
def test_validation_table(msg: messages.DataBatch | Status | Birth, reason: Reason | None) -> None:
    """The bounds of hub/validate.py, at and beyond their edges (received at 1000, skew 300 s)."""
    verdict = validate.check(msg, 1000.0, 300.0)
    assert (verdict.refusal.reason if verdict.refusal else None) is reason
