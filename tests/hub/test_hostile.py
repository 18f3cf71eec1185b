"""Hostile input against a real broker and a real hub (DESIGN §3, "Hostile input"): one enrolled
edge sends what the store cannot hold, or tries to take the hub's session over; the hub stays
up, another site's data keeps being committed and acked, and the attack is in the quarantine
with its reason."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest

from hub.config import HubConfig
from hub.service import Hub, running
from hub.validate import Reason
from shared import messages, topics
from shared.messages import Birth, DataBatch, DeviceInfo, Priority, Quality, Reading
from tests.conftest import PkiFixture, mqtt_client
from tests.fakes.hub_edge import FakeEdge, fake_edge
from tests.hub.conftest import ConfigFactory, add_users, api_client, eventually
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker

YEAR = 365 * 86400.0
Ch = topics.SiteChannel


def _reading(seq: int, ts: float | None = None, value: messages.Scalar = 1.0) -> Reading:
    return Reading(seq=seq, ts=time.time() if ts is None else ts, prio=Priority.TELEMETRY, device="gauge",
                   point="water_depth_cm", value=value, quality=Quality.GOOD)


def _batch(site: str, records: list[Reading], floor_seq: int | None = None) -> bytes:
    # encoded by hand: messages.encode would refuse the oversized one
    return messages._encoder.encode(DataBatch(site=site, boot="evil", records=list(records), floor_seq=floor_seq))


def _dup_birth(site: str) -> bytes:
    dev = DeviceInfo(id="gauge", kind="underpass", profile="p", profile_sha256="0" * 64, points=["water_depth_cm"])
    return messages.encode(Birth(site=site, agent_version="evil", boot="evil", ts=time.time(), devices=[dev, dev]))


def _malformed(site: str) -> list[bytes]:
    shapes = [b"\x00\xff", b"{", b"[]", b'{"v":1}', b'{"v":2,"site":"%s"}' % site.encode(),
              b'{"v":1,"site":"%s","boot":"b","records":[{"type":"reading"}]}' % site.encode(),
              b'{"v":1,"site":"%s","boot":"b","records":[],"floor_seq":-1}' % site.encode(),
              b'{"v":1,"site":"%s","boot":"b","records":[],"extra":1}' % site.encode()]
    return [shapes[i % len(shapes)] + b" " * (i // len(shapes)) for i in range(200)]


# name: (channel, payloads for the attacking site, the reason it is quarantined with)
ATTACKS: dict[str, tuple[Ch, Callable[[str], list[bytes]], Reason]] = {
    "duplicate_device_birth": (Ch.BIRTH, lambda s: [_dup_birth(s)], Reason.DUPLICATE_DEVICE),
    "record_seq_2_63": (Ch.DATA, lambda s: [_batch(s, [_reading(2**63)])], Reason.SEQ_RANGE),
    "floor_seq_2_64_minus_1": (Ch.DATA, lambda s: [_batch(s, [_reading(1)], floor_seq=2**64 - 1)], Reason.SEQ_RANGE),
    "malformed_x200": (Ch.DATA, _malformed, Reason.MALFORMED),
    "payload_250_kib": (Ch.DATA, lambda s: [_batch(s, [_reading(1, value="x" * (250 * 1024))])], Reason.VALUE),
    "integer_beyond_64_bits": (Ch.DATA, lambda s: [_batch(s, [_reading(1, value=2**70)])], Reason.VALUE),
}


async def _clear_retained(broker: RunningBroker, test_pki: PkiFixture, site: str, channel: Ch) -> None:
    """Other tests' hubs subscribe to every site: no poisonous retained message may outlive a test."""
    async with mqtt_client(broker, test_pki.files(site), site) as c:
        await c.publish(topics.site_topic(site, channel), b"", qos=1, retain=True)


async def _alive(hub: Hub) -> None:
    """The writer still runs transactions and the MQTT session is the one it started with."""
    assert await hub.writer.call(lambda tx: True)
    assert hub.mqtt.connected.is_set()


async def _good_traffic(good: FakeEdge, n: int = 5) -> None:
    await good.send(good.readings(n))
    await good.wait_acked(good.next_seq - 1)


def _hub_cfg(hub_config: ConfigFactory) -> HubConfig:
    cfg = hub_config(api={"enabled": True})
    add_users(cfg)
    return cfg


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_a_hostile_message_is_quarantined_and_the_hub_goes_on(
    attack: str, hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture
) -> None:
    """The attack is quarantined with its reason (API and health show it); the hub's writer and
    session live on, and another site's records before and after are committed and acked."""
    channel, payloads, reason = ATTACKS[attack]
    cfg = _hub_cfg(hub_config)
    evil, honest = test_pki.take_site(), test_pki.take_site()
    sent = payloads(evil)
    try:
        async with running(cfg) as hub, fake_edge(broker, test_pki.files(evil), evil) as bad, \
                fake_edge(broker, test_pki.files(honest), honest) as good, \
                api_client(hub, test_pki.dir / "ca.pem") as api:
            connects = hub.mqtt.connects
            await _good_traffic(good)
            for payload in sent:
                await bad.publish_raw(channel, payload, retain=channel is Ch.BIRTH)
            await _good_traffic(good)
            quarantine = hub.engine.intake.quarantine
            await eventually(lambda: quarantine.counts[reason.value] >= len(sent))
            await _good_traffic(good)
            await _alive(hub)
            assert hub.mqtt.connects == connects
            assert (await api.login("sam")).status == 200
            resp = await api.get(f"/api/quarantine?reason={reason.value}&limit=1000")
            rows: list[dict[str, Any]] = await resp.json()
            mine = [r for r in rows if r["site"] == evil]
            assert len(mine) == len(sent)
            assert {r["topic"] for r in mine} == {topics.site_topic(evil, channel)}
            assert sorted(r["size"] for r in mine) == sorted(len(p) for p in sent)
            health = await (await api.get("/api/health")).json()
            assert health["ingest"][f"quarantined_{reason.value}"] == len(sent)
            assert health["mqtt_connected"]
        with sqlite3.connect(cfg.db_path) as conn:
            assert [s for (s,) in conn.execute("SELECT seq FROM records WHERE site = ? ORDER BY seq",
                                               (honest,))] == list(range(1, 16))
            assert conn.execute("SELECT count(*) FROM records WHERE site = ?", (evil,)).fetchone() == (0,)
            stored = conn.execute("SELECT max(length(payload)) FROM quarantine").fetchone()[0]
            assert stored <= cfg.ingest.quarantine_payload_max
    finally:
        if channel is Ch.BIRTH:
            await _clear_retained(broker, test_pki, evil, channel)


async def test_a_reading_a_year_ahead_does_not_freeze_the_point(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture
) -> None:
    """A reading dated a year ahead is quarantined alone (its seq consumed, its batch's other
    reading stored); the next honest reading still becomes the point's latest."""
    cfg = _hub_cfg(hub_config)
    site = test_pki.take_site()
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(site), site) as edge:
        now = time.time()
        await edge.send([edge.reading("gauge", "water_depth_cm", 3.0, ts=now),
                         edge.reading("gauge", "water_depth_cm", 99.0, ts=now + YEAR)])
        await edge.wait_acked(2)
        await edge.send([edge.reading("gauge", "water_depth_cm", 4.0, ts=now + 1)])
        await edge.wait_acked(3)
        await _alive(hub)
        assert hub.engine.intake.quarantine.counts[Reason.FUTURE.value] == 1
        latest = hub.engine.state.latest[(site, "gauge", "water_depth_cm")]
        assert (latest.value, latest.ts) == (4.0, now + 1)
    with sqlite3.connect(cfg.db_path) as conn:
        assert conn.execute("SELECT seq FROM records WHERE site = ? ORDER BY seq", (site,)).fetchall() == [(1,), (3,)]
        assert conn.execute("SELECT value, ts FROM latest WHERE site = ?", (site,)).fetchone() == ("4.0", now + 1)
        (reason, payload), = conn.execute("SELECT reason, payload FROM quarantine WHERE site = ?", (site,))
    assert reason == Reason.FUTURE.value
    assert b"99.0" in payload


async def test_an_edge_connecting_with_the_hubs_client_id_cannot_throw_the_hub_off(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture
) -> None:
    """The broker gives an edge certificate its CN as client id whatever it asks for: connecting
    as the hub's client id, again and again, leaves the hub's session untouched."""
    cfg = hub_config()
    evil, honest = test_pki.take_site(), test_pki.take_site()
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(honest), honest) as good:
        connects, generation = hub.mqtt.connects, hub.mqtt.generation
        for _ in range(3):
            async with mqtt_client(broker, test_pki.files(evil), cfg.hub_id) as takeover:
                await takeover.publish(topics.site_topic(evil, Ch.DATA), b"{}", qos=1)
                await _good_traffic(good)
        await asyncio.sleep(0.5)
        await _good_traffic(good)
        await _alive(hub)
        assert (hub.mqtt.connects, hub.mqtt.generation) == (connects, generation)


async def test_a_retained_poisonous_birth_does_not_stop_a_restarted_hub(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture
) -> None:
    """The broker hands the retained bad birth to every hub that starts: each quarantines it and
    runs on, committing another site's data."""
    cfg = hub_config()
    evil, honest = test_pki.take_site(), test_pki.take_site()
    try:
        async with mqtt_client(broker, test_pki.files(evil), evil) as c:
            await c.publish(topics.site_topic(evil, Ch.BIRTH), _dup_birth(evil), qos=1, retain=True)
        for _ in range(2):
            async with running(cfg) as hub, fake_edge(broker, test_pki.files(honest), honest) as good:
                good.next_seq = hub.engine.seqs[honest].through + 1 if honest in hub.engine.seqs else 1
                await eventually(lambda: hub.engine.intake.quarantine.counts[Reason.DUPLICATE_DEVICE.value] == 1)
                await _good_traffic(good)
                await _alive(hub)
        with sqlite3.connect(cfg.db_path) as conn:
            assert conn.execute("SELECT count(*) FROM quarantine WHERE site = ? AND reason = ?",
                                (evil, Reason.DUPLICATE_DEVICE.value)).fetchone() == (2,)
            assert conn.execute("SELECT count(*) FROM records WHERE site = ?", (honest,)).fetchone() == (10,)
    finally:
        await _clear_retained(broker, test_pki, evil, Ch.BIRTH)

