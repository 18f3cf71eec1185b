"""Outbox epochs at the hub, on the real engine and a real SQLite file: a replaced edge whose seqs
start again at 1 is a new (site, epoch), stored and judged, never taken for duplicates."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.engine import Engine
from hub.inbound import Inbound, classify
from hub.migrations import connect
from hub.seqs import SiteSeqs
from hub.store import Tx
from shared import messages, topics
from shared.messages import Birth, DataBatch, DeviceInfo, Priority, Quality, Reading
from tests.conftest import PkiFixture
from tests.hub.test_engine import Sink, make_cfg

OLD, NEW = 0x1234_5678_9ABC_DEF0, 0x0FED_CBA9_8765_4321


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = connect(tmp_path / "hub.db")
    yield c
    c.close()


def run(engine: Engine, conn: sqlite3.Connection, now: float, items: list[Inbound]) -> Sink:
    tx = Tx(conn, now)
    conn.execute("BEGIN IMMEDIATE")
    engine.ingest(tx, items)
    conn.execute("COMMIT")
    for effect in tx.effects:
        effect()
    assert isinstance(engine.outlet, Sink)
    return engine.outlet


def birth(site: str, now: float) -> Inbound:
    b = Birth(site=site, agent_version="t", boot="b", ts=now, devices=[
        DeviceInfo(id="barrier", kind="underpass", profile="p.toml", profile_sha256="0" * 64,
                   points=["water_depth_cm"])])
    return classify(topics.site_topic(site, topics.SiteChannel.BIRTH), messages.encode(b), received=now)


def depths(site: str, epoch: int, seqs: range, ts: float, depth: float) -> Inbound:
    recs = [Reading(seq=s, ts=ts + i, prio=Priority.TELEMETRY, device="barrier", point="water_depth_cm",
                    value=depth, quality=Quality.GOOD) for i, s in enumerate(seqs)]
    body = messages.encode(DataBatch(site=site, boot="b", records=list(recs), floor_seq=seqs[0], epoch=epoch))
    return classify(topics.site_topic(site, topics.SiteChannel.DATA), body, received=ts, mid=1)


def test_a_replaced_edge_is_stored_and_judged_from_its_first_record(
    test_pki: PkiFixture, tmp_path: Path, conn: sqlite3.Connection
) -> None:
    """The old box sent seqs 1..200; its replacement starts at 1 in a new epoch with the water at
    16 cm: all its records are stored, the closing-depth alarm fires, and the acks name the epoch."""
    site = test_pki.take_site()
    engine = Engine(make_cfg(test_pki, tmp_path), Ed25519PrivateKey.generate(), Sink())
    engine.load(conn)
    now = time.time()
    run(engine, conn, now - 600, [birth(site, now - 600), depths(site, OLD, range(1, 201), now - 600, 2.0)])
    sink = run(engine, conn, now, [birth(site, now), depths(site, NEW, range(1, 6), now, 16.0)])
    stored = conn.execute("SELECT epoch, count(*) FROM records WHERE site = ? GROUP BY epoch ORDER BY epoch",
                          (site,)).fetchall()
    assert sorted(stored) == sorted([(OLD, 200), (NEW, 5)])
    assert engine.counters.duplicates == 0
    alarm = conn.execute("SELECT rule, active FROM alarms WHERE site = ?", (site,)).fetchall()
    assert ("closing_depth", 1) in alarm
    assert [(a.epoch, a.through_seq) for a in sink.acks] == [(OLD, 200), (NEW, 5)]
    assert conn.execute("SELECT epoch, through_seq FROM sites WHERE site = ?", (site,)).fetchone() == (NEW, 5)


def test_each_epoch_dedupes_on_its_own_and_survives_a_restart(
    test_pki: PkiFixture, tmp_path: Path, conn: sqlite3.Connection
) -> None:
    """A repeat within an epoch is a duplicate; the same seqs in another epoch are not; a restarted
    hub rebuilds both trackers and knows which epoch the site sends now."""
    site = test_pki.take_site()
    cfg = make_cfg(test_pki, tmp_path)
    first = Engine(cfg, Ed25519PrivateKey.generate(), Sink())
    first.load(conn)
    now = time.time()
    run(first, conn, now, [depths(site, OLD, range(1, 11), now, 1.0), depths(site, OLD, range(1, 11), now, 1.0)])
    assert first.counters.duplicates == 10
    run(first, conn, now + 1, [depths(site, NEW, range(1, 4), now + 1, 1.0)])
    again = Engine(cfg, Ed25519PrivateKey.generate(), Sink())
    again.load(conn)
    assert again.state.seqs[(site, OLD)].through == 10
    assert again.seqs[site].through == 3
    assert again.state.epochs[site] == NEW
    sink = run(again, conn, now + 2, [depths(site, NEW, range(3, 6), now + 2, 1.0)])
    assert again.counters.duplicates == 1
    assert sink.acks[-1].epoch == NEW
    assert sink.acks[-1].through_seq == 5


@pytest.mark.parametrize(
    ("held", "close", "through", "left", "closed"),
    [
        ([1, 3, 5], [(2, 2), (4, 4)], 5, [], 2),
        ([1, 5], [(2, 3)], 3, [[5, 5]], 2),
        ([1, 2, 3], [(2, 3)], 3, [], 0),  # already held: nothing new closed
        ([10], [(1, 9)], 10, [], 9),
        ([1, 8], [(3, 4), (6, 6)], 1, [[3, 4], [6, 6], [8, 8]], 3),
        ([1, 8], [(6, 6), (3, 4), (5, 5)], 1, [[3, 6], [8, 8]], 4),
    ],
)
def test_thinned_ranges_close_the_holes_between_held_seqs(
    held: list[int], close: list[tuple[int, int]], through: int, left: list[list[int]], closed: int
) -> None:
    tr = SiteSeqs()
    for seq in held:
        tr.add(seq)
    assert sum(tr.close(lo, hi) for lo, hi in close) == closed
    assert (tr.through, tr.held) == (through, left)
