"""The engine on a real SQLite file without a broker: retention and downsampling, the sites
registry, and what a restart rebuilds."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.config import HubConfig, parse
from hub.engine import Engine
from hub.inbound import Inbound, classify
from hub.live import Change, LiveEvent
from hub.migrations import connect
from hub.store import Tx
from shared import messages, topics
from shared.messages import Ack, DataBatch, Priority, Quality, Reading
from tests.conftest import PkiFixture
from tests.hub.conftest import raw_config

DAY = 86400.0


class Sink:
    def __init__(self) -> None:
        self.acks: list[Ack] = []

    def send_ack(self, ack: Ack) -> None:
        self.acks.append(ack)

    def puback(self, generation: int, mids: list[int]) -> None:
        pass

    def live(self, event: LiveEvent) -> None:
        pass

    def wants_live(self) -> bool:
        return False

    def changed(self, change: Change) -> None:
        pass


def make_cfg(pki: PkiFixture, tmp_path: Path, **sections: dict[str, Any]) -> HubConfig:
    return parse(raw_config(pki, 1, tmp_path / "hub.db", **sections), tmp_path / "hub.toml")


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = connect(tmp_path / "hub.db")
    yield c
    c.close()


def run(engine: Engine, conn: sqlite3.Connection, now: float, items: list[Inbound] | None = None) -> Sink:
    tx = Tx(conn, now)
    conn.execute("BEGIN IMMEDIATE")
    if items is None:
        engine.tick(tx)
    else:
        engine.ingest(tx, items)
    conn.execute("COMMIT")
    for effect in tx.effects:
        effect()
    assert isinstance(engine.outlet, Sink)
    return engine.outlet


def batch(site: str, seqs: range, ts: float, value: float = 1.0) -> Inbound:
    recs = [Reading(seq=s, ts=ts + i, prio=Priority.TELEMETRY, device="gauge", point="water_depth_cm",
                    value=value + i, quality=Quality.GOOD) for i, s in enumerate(seqs)]
    body = messages.encode(DataBatch(site=site, boot="b", records=list(recs), floor_seq=seqs[0]))
    return classify(topics.site_topic(site, topics.SiteChannel.DATA), body, received=ts, mid=1)


def test_old_readings_are_downsampled_then_deleted(test_pki: PkiFixture, tmp_path: Path,
                                                   conn: sqlite3.Connection) -> None:
    """Readings older than raw_days become per-minute aggregates (count, min, max, mean) and
    leave the raw history; newer ones stay raw."""
    cfg = make_cfg(test_pki, tmp_path, retention={"raw_days": 1, "downsample_s": 60})
    engine = Engine(cfg, Ed25519PrivateKey.generate(), Sink())
    engine.load(conn)
    now = 10 * DAY
    site = test_pki.take_site()
    old = now - 2 * DAY  # a minute boundary: 60 readings one second apart fill one bucket
    run(engine, conn, now, [batch(site, range(1, 61), old, value=10.0), batch(site, range(61, 71), now - 60)])
    run(engine, conn, now)  # the tick runs retention
    raw = [r[0] for r in conn.execute("SELECT seq FROM records WHERE site = ? ORDER BY seq", (site,))]
    agg = conn.execute("SELECT bucket, n, min, max, avg FROM history_agg WHERE site = ?", (site,)).fetchall()
    assert raw == list(range(61, 71))
    assert conn.execute("SELECT value, typeof(value), num FROM records WHERE site = ? AND seq = 61",
                        (site,)).fetchone() == ("1.0", "text", 1.0)
    assert agg == [(old, 60, 10.0, 69.0, pytest.approx(39.5))]


def test_sites_outside_the_registry_are_quarantined_when_not_accepting_any(
    test_pki: PkiFixture, tmp_path: Path, conn: sqlite3.Connection
) -> None:
    known, other = test_pki.take_site(), test_pki.take_site()
    cfg = make_cfg(test_pki, tmp_path, sites={"accept_any": False, "registry": {known: {"area": "a1"}}})
    engine = Engine(cfg, Ed25519PrivateKey.generate(), Sink())
    engine.load(conn)
    sink = run(engine, conn, time.time(), [batch(known, range(1, 4), time.time()),
                                           batch(other, range(1, 4), time.time())])
    assert [a.site for a in sink.acks] == [known]
    assert engine.counters.rejected_sites == 1
    (error,) = conn.execute("SELECT error FROM quarantine").fetchone()
    assert "registry" in error


def test_a_restart_rebuilds_watermarks_held_seqs_and_alarms(test_pki: PkiFixture, tmp_path: Path,
                                                            conn: sqlite3.Connection) -> None:
    """After a restart the hub still knows which seqs above the watermark it holds (so a gap is
    still a gap and a duplicate still a duplicate)."""
    cfg = make_cfg(test_pki, tmp_path)
    site = test_pki.take_site()
    first = Engine(cfg, Ed25519PrivateKey.generate(), Sink())
    first.load(conn)
    now = time.time()
    item = batch(site, range(1, 6), now)
    assert isinstance(item.msg, DataBatch)
    gappy = classify(item.topic, messages.encode(DataBatch(site=site, boot="b", records=[
        *item.msg.records[:2], item.msg.records[4]], floor_seq=1)), received=now)
    run(first, conn, now, [gappy])
    assert first.seqs[site].through == 2
    again = Engine(cfg, Ed25519PrivateKey.generate(), Sink())
    again.load(conn)
    assert again.seqs[site].through == 2
    assert again.seqs[site].gap() == (3, 4)
    assert not again.seqs[site].is_new(5)


def test_the_observer_is_told_the_injected_clock(test_pki: PkiFixture, tmp_path: Path,
                                                 conn: sqlite3.Connection) -> None:
    """The engine reads no wall clock of its own: an ingest batch is reported at the clock's time."""
    cfg = make_cfg(test_pki, tmp_path)
    seen: list[tuple[int, float]] = []
    engine = Engine(cfg, Ed25519PrivateKey.generate(), Sink(), observer=lambda items, at: seen.append((len(items), at)),
                    clock=lambda: 1234.5)
    engine.load(conn)
    run(engine, conn, time.time(), [batch(test_pki.take_site(), range(1, 3), time.time())])
    assert seen == [(1, 1234.5)]


def test_a_message_longer_than_one_statement_is_stored_whole_each_value_as_its_json(
        test_pki: PkiFixture, tmp_path: Path, conn: sqlite3.Connection) -> None:
    """hub/intake.py rule 6: a message's readings go in READINGS_PER_STATEMENT rows a statement;
    2.5 statements' worth, with numbers, text and booleans, are all stored once, each value as
    its JSON text; the same message again stores nothing."""
    from hub.intake import READINGS_PER_STATEMENT

    cfg = make_cfg(test_pki, tmp_path)
    engine = Engine(cfg, Ed25519PrivateKey.generate(), Sink())
    engine.load(conn)
    site, now = test_pki.take_site(), time.time()
    values: list[float | int | str | bool] = [1.5, 7, "open", True, -0.25, "문 닫힘"]
    n = READINGS_PER_STATEMENT * 2 + READINGS_PER_STATEMENT // 2
    recs = [Reading(seq=s, ts=now - n + s, prio=Priority.TELEMETRY, device="gate", point=f"p{s % 7}",
                    value=values[s % len(values)], quality=Quality.GOOD) for s in range(1, n + 1)]
    body = messages.encode(DataBatch(site=site, boot="b", records=list(recs), floor_seq=1))
    item = classify(topics.site_topic(site, topics.SiteChannel.DATA), body, received=now, mid=1)
    run(engine, conn, now, [item])
    rows = conn.execute("SELECT seq, value, num, point, received_at FROM records WHERE site = ? ORDER BY seq",
                        (site,)).fetchall()
    assert [r[0] for r in rows] == list(range(1, n + 1))
    assert [r[1] for r in rows] == [messages.encode(r.value).decode() for r in recs]  # type: ignore[arg-type]
    assert [r[2] for r in rows] == [r.value if isinstance(r.value, (int, float)) else None for r in recs]
    assert {r[3] for r in rows} == {f"p{i}" for i in range(7)}
    assert {r[4] for r in rows} == {now}
    run(engine, conn, now, [item])
    assert conn.execute("SELECT count(*) FROM records WHERE site = ?", (site,)).fetchone() == (n,)
    assert engine.counters.duplicates == n
