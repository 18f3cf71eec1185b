"""Ingest against a real Mosquitto with mTLS: exactly-once commit, acks, resend, quarantine."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from hub.config import HubConfig, parse
from hub.service import running
from shared import topics
from shared.messages import SiteState
from tests.conftest import PkiFixture
from tests.fakes.hub_edge import fake_edge
from tests.hub.conftest import ConfigFactory, eventually, raw_config
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker


@pytest.fixture(params=[True, False], ids=["client-process", "in-process"])
def hub_config(request: pytest.FixtureRequest, test_pki: PkiFixture, broker: RunningBroker,
               tmp_path: Path) -> ConfigFactory:
    """Every test here twice: the hub's MQTT client in its child process (the default) and in the
    hub's own process (``broker.client_process = false``)."""

    def make(**sections: dict[str, Any]) -> HubConfig:
        sections["broker"] = {"client_process": request.param, **sections.get("broker", {})}
        return parse(raw_config(test_pki, broker.port, tmp_path / "hub.db", **sections), tmp_path / "hub.toml")

    return make


def seqs(db: Path, site: str) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [s for (s,) in conn.execute("SELECT seq FROM records WHERE site = ? ORDER BY seq", (site,))]


async def test_records_from_several_sites_are_committed_once_and_acked(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture
) -> None:
    """Three sites send 100 records each, one batch twice: every record is stored once and every
    edge is acked through its last seq."""
    cfg = hub_config()
    sites = [test_pki.take_site() for _ in range(3)]
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(sites[0]), sites[0]) as a, \
                fake_edge(broker, test_pki.files(sites[1]), sites[1]) as b, \
                fake_edge(broker, test_pki.files(sites[2]), sites[2]) as c:
        for edge in (a, b, c):
            await edge.status(SiteState.ONLINE)
        for _ in range(5):
            for edge in (a, b, c):
                await edge.send(edge.readings(20))
        await a.send([a.reading("gauge", "water_depth_cm", 1.0)])
        for edge in (a, b, c):
            await edge.wait_acked(edge.next_seq - 1)
        # a batch sent again after it was acked: the hub stores nothing new but acks again
        again = [a.reading("gauge", "water_depth_cm", 2.0)]
        await a.send(again)
        await a.send(again)
        await a.wait_acked(again[0].seq)
        await eventually(lambda: hub.engine.counters.duplicates >= 1)
    assert seqs(cfg.db_path, sites[0]) == list(range(1, 103))
    assert seqs(cfg.db_path, sites[1]) == list(range(1, 101))
    assert seqs(cfg.db_path, sites[2]) == list(range(1, 101))


async def test_a_dropped_message_is_recovered_through_resend_from(
    hub_config: ConfigFactory, broker: RunningBroker, site_id: str, test_pki: PkiFixture
) -> None:
    """The second of three batches never reaches the hub: the hub asks resend_from=11, the edge
    resends, and all 30 records are committed exactly once, then acked through 30."""
    cfg = hub_config()
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge:
        await edge.send(edge.readings(10))
        await edge.send(edge.readings(10), drop=True)
        await edge.send(edge.readings(10))
        await edge.wait_acked(30)
        assert any(ack.resend_from == 11 for ack in edge.acks)
        assert edge.resends >= 1
        assert not edge.held
        assert hub.engine.counters.resend_asks >= 1
    assert seqs(cfg.db_path, site_id) == list(range(1, 31))


async def test_garbage_on_a_data_topic_is_quarantined_and_ingest_goes_on(
    hub_config: ConfigFactory, broker: RunningBroker, site_id: str, test_pki: PkiFixture
) -> None:
    """Bytes that are not a DataBatch are kept in the quarantine with their topic; the next good
    batch from the same site is committed and acked."""
    cfg = hub_config()
    garbage = b"\x00\xffnot json at all"
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge:
        await edge.publish_raw(topics.SiteChannel.DATA, garbage)
        await edge.publish_raw(topics.SiteChannel.DATA, b'{"v":1,"site":"' + site_id.encode() + b'","boot":"x"}')
        await edge.send(edge.readings(5))
        await edge.wait_acked(5)
        assert hub.engine.counters.quarantined == 2
    with sqlite3.connect(cfg.db_path) as conn:
        rows = conn.execute("SELECT topic, payload, error FROM quarantine ORDER BY id").fetchall()
    assert rows[0][0] == topics.site_topic(site_id, topics.SiteChannel.DATA)
    assert rows[0][1] == garbage
    assert "records" in rows[1][2]
    assert seqs(cfg.db_path, site_id) == [1, 2, 3, 4, 5]


async def test_thinned_seqs_below_floor_close_the_gap(
    hub_config: ConfigFactory, broker: RunningBroker, site_id: str, test_pki: PkiFixture
) -> None:
    """Records the edge thinned never come; the batch's floor_seq lets the watermark pass them."""
    cfg = hub_config()
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge:
        thinned = edge.readings(10)
        for r in thinned:
            del edge.held[r.seq]  # thinned out of a full outbox before they were sent
        await edge.send(edge.readings(10))
        await edge.wait_acked(20)
        assert hub.engine.counters.floor_closed == 10
    assert seqs(cfg.db_path, site_id) == list(range(11, 21))


async def test_a_restarted_hub_resumes_its_session_without_asking_for_resends(
    hub_config: ConfigFactory, broker: RunningBroker, site_id: str, test_pki: PkiFixture
) -> None:
    """What edges publish while the hub is down (within its session expiry) is queued by the
    broker for the hub's session and delivered when it comes back: all of it is committed, with
    no resend asked for."""
    cfg = hub_config()
    async with fake_edge(broker, test_pki.files(site_id), site_id) as edge:
        async with running(cfg):
            await edge.send(edge.readings(10))
            await edge.wait_acked(10)
        for _ in range(3):  # the hub is away
            await edge.send(edge.readings(10))
        async with running(cfg) as hub:
            await edge.wait_acked(40)
            assert hub.engine.counters.resend_asks == 0
            assert edge.resends == 0
    assert seqs(cfg.db_path, site_id) == list(range(1, 41))
