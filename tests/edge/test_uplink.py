"""Outbox + uplink against a real mTLS Mosquitto and a hub that commits and acks per DESIGN §3."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from edge.outbox import Outbox
from edge.uplink import Uplink, UplinkConfig
from shared import messages
from shared.tls import TlsFiles
from tests.conftest import PkiFixture
from tests.edge.real_hub import running_real_hub
from tests.fakes.hub import running_fake_hub
from trust.broker import RunningBroker
from trust.pki import Pki, Role

pytestmark = pytest.mark.broker

OUTAGE_S = float(__import__("os").environ.get("JIKIMI_TEST_OUTAGE_S", "60"))  # the issue: a full minute


def _birth(site: str) -> Callable[[], messages.Birth]:
    return lambda: messages.Birth(site=site, agent_version="test", boot="b", ts=time.time(), devices=[])


async def _ignore(_: messages.Command) -> None:
    return None


@asynccontextmanager
async def running_uplink(
    broker: RunningBroker,
    files: TlsFiles,
    site: str,
    outbox: Outbox,
    on_command: Callable[[messages.Command], Awaitable[None]] = _ignore,
) -> AsyncIterator[Uplink]:
    up = Uplink(
        UplinkConfig(sender=site, host=broker.host, port=broker.port, tls=files, replay_rate=5000.0),
        outbox,
        boot="boot-1",
        birth=_birth(site),
        on_command=on_command,
    )
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(up.run(), name="uplink")
        try:
            yield up
        finally:
            task.cancel()


def _reading(value: float) -> messages.Reading:
    return messages.Reading(
        seq=0,
        ts=time.time(),
        prio=messages.Priority.TELEMETRY,
        device="gauge",
        point="water_depth_cm",
        value=value,
        quality=messages.Quality.GOOD,
    )


async def _produce(outbox: Outbox, up: Uplink, n: int, period_s: float) -> list[int]:
    seqs: list[int] = []
    for i in range(n):
        seqs += [r.seq for r in outbox.append([_reading(float(i))])]
        up.notify()
        await asyncio.sleep(period_s)
    return seqs


async def _until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll a condition on state that other tasks change (no event exists for it)."""
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - polling shared state owned by other tasks
            await asyncio.sleep(0.05)
    assert cond(), what


async def test_every_record_survives_a_60s_broker_outage(test_pki: PkiFixture, tmp_path: Path) -> None:
    """Broker stopped for 60 s (restarted without persistence) while the site produces: the hub
    ends up with every seq, no gap, and what was produced during the outage is historical."""
    site = test_pki.take_site()
    outbox = Outbox(tmp_path / "outbox.db", clock=time.time)
    with RunningBroker.start(test_pki.dir, tmp_path / "broker") as broker:
        async with (
            running_real_hub(broker, test_pki, tmp_path) as hub,
            running_uplink(broker, test_pki.files(site), site, outbox) as up,
        ):
            await asyncio.wait_for(up.connected.wait(), 10)
            before = await _produce(outbox, up, 20, 0.02)
            await _until(lambda: hub.seqs(site) == before, 10, "live records committed")
            broker.stop()
            t0 = time.monotonic()
            during = await _produce(outbox, up, int(OUTAGE_S * 5), 0.2)  # 5 records/s for 60 s
            assert time.monotonic() - t0 >= OUTAGE_S
            assert not up.connected.is_set()
            broker.restart()
            after = await _produce(outbox, up, 20, 0.02)
            everything = before + during + after
            await _until(
                lambda: hub.seqs(site) == everything and outbox.held == 0, 30, "all records committed and acked"
            )
    assert everything == list(range(1, len(everything) + 1))
    flags = hub.historical(site)
    assert not any(flags[s] for s in before)
    assert all(flags[s] for s in during)
    assert up.counters.connects >= 2


async def test_dropped_message_is_recovered_by_resend_from(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """The hub loses one batch; it asks resend_from and gets the missing records, flagged historical.

    (The stand-in hub is used here because it can lose a message on purpose; the real hub's
    own recovery is tested in tests/hub/test_mqtt.py.)"""
    site = test_pki.take_site()
    outbox = Outbox(tmp_path / "outbox.db", clock=time.time)
    async with (
        running_fake_hub(broker, test_pki.files(test_pki.take_hub()), tmp_path / "hub.db") as hub,
        running_uplink(broker, test_pki.files(site), site, outbox) as up,
    ):
        await asyncio.wait_for(up.connected.wait(), 10)
        first = await _produce(outbox, up, 5, 0.05)
        await _until(lambda: hub.seqs(site) == first, 10, "first records")
        hub.drop_next(1)
        rest = await _produce(outbox, up, 10, 0.05)
        await _until(lambda: hub.seqs(site) == first + rest and outbox.held == 0, 15, "gap filled")
    assert hub.dropped == 1
    assert hub.resends_asked >= 1
    assert up.counters.resend_requests >= 1
    assert any(r.historical for r in hub.records(site))


async def test_restarted_outbox_continues_seq(tmp_path: Path) -> None:
    """A new Outbox on the same file continues the seq counter, even after everything was acked."""
    path = tmp_path / "o.db"
    o = Outbox(path, clock=time.time)
    seqs = [r.seq for r in o.append([_reading(1.0), _reading(2.0)])]
    o.mark_sent(seqs[-1])
    o.ack(seqs[-1], epoch=o.epoch)
    o.close()
    o2 = Outbox(path, clock=time.time)
    assert [r.seq for r in o2.append([_reading(3.0)])] == [3]
    assert o2.floor_seq() == 3


def test_full_outbox_thins_telemetry_and_keeps_every_critical_record(tmp_path: Path) -> None:
    """Over the limit, telemetry is halved (with an outbox.thinned event); alarms and replies all stay."""
    o = Outbox(tmp_path / "o.db", max_records=200, clock=time.time)
    critical: list[int] = []
    for i in range(600):
        o.append([_reading(float(i))])
        if i % 10 == 0:
            rec = o.append(
                [
                    messages.Reply(
                        seq=0,
                        ts=1.0,
                        prio=messages.Priority.REPLY,
                        cmd_id=f"c{i}",
                        status=messages.ReplyStatus.VERIFIED,
                    )
                ]
            )
            critical += [r.seq for r in rec]
    rows = o.read(0, limit=10_000)
    held = {r.seq for r in rows}
    assert set(critical) <= held
    assert o.held <= 200 + len(critical) + o.thinned_total  # bounded by the limit plus what may never go
    assert o.thinned_total > 0
    events = [r for r in rows if b'"outbox.thinned"' in r.payload]
    assert events, "thinning is announced, never silent"
    assert o.floor_seq() == min(held)


async def test_tls_refusal_is_reported_as_tls(broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path) -> None:
    """A certificate the broker refuses shows as a TLS error in the uplink's state, not a timeout."""
    site = test_pki.take_site()
    foreign = Pki(tmp_path / "foreign")
    foreign.init()
    foreign.issue(site, Role.EDGE)
    files = TlsFiles(ca=test_pki.pki.ca_chain, cert=foreign.cert(site), key=foreign.key(site))
    outbox = Outbox(tmp_path / "o.db", clock=time.time)
    async with running_uplink(broker, files, site, outbox) as up:
        await _until(lambda: up.counters.last_error != "", 30, "a connection attempt failed")
    assert up.counters.last_error.startswith("tls:"), up.counters.last_error
    assert not up.connected.is_set()


async def test_a_thinned_outbox_drains_in_a_few_round_trips(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """30,000 readings into a 10,000-record outbox while offline, thinned many times over: once
    connected, the batches name the thinned holes and the real hub closes them at once, so the
    outbox drains with at most 5 resend round trips (not one per hole)."""
    site = test_pki.take_site()
    outbox = Outbox(tmp_path / "outbox.db", max_records=10_000, clock=time.time)
    for i in range(0, 30_000, 100):
        outbox.append([_reading(float(i + k)) for k in range(100)])
    assert outbox.thinned_total > 0
    async with (
        running_real_hub(broker, test_pki, tmp_path) as hub,
        running_uplink(broker, test_pki.files(site), site, outbox) as up,
    ):
        await _until(lambda: outbox.held == 0, 60, "the outbox drains")
        counters = hub.hub.engine.counters
    assert up.counters.resend_requests <= 5
    assert counters.resend_asks <= 5
    assert counters.thinned_closed + counters.floor_closed == outbox.thinned_total  # every hole, at once
    assert len(hub.seqs(site)) == outbox.next_seq - 1 - outbox.thinned_total
