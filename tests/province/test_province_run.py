"""`jikimi province run` as a process, fed by a city hub's province outbox over a real city broker
bridged to a real provincial broker (DESIGN §8, issue 18).

The city side here is the test driving hub/upstream.py's outbox and batches by hand (the hub's
own sender task is not written yet); the province side is the real service.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt

from hub.upstream import ProvinceOutbox, apply_ack, next_batch, open_upstream
from province.store import ProvinceStore
from shared import messages
from shared.messages import AlarmRecord, CityAck, CityRecord, Place, Priority, SiteStateRecord
from shared.topics import CityChannel, city_of_hub, city_topic
from tests.conftest import PkiFixture, ProvincePki, mqtt_client, start_city_broker, start_province_broker
from tests.province.harness import province_config

ROOT = Path(__file__).resolve().parents[2]


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "shared.cli", "province", "run", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)


def _records(first: int, n: int, now: float) -> list[CityRecord]:
    out: list[CityRecord] = []
    for i in range(first, first + n):
        site = f"gg-city-up-{i:04d}"
        out.append(SiteStateRecord(seq=0, ts=now, prio=Priority.TELEMETRY, site=site, online=True,
                                   last_data_ts=now - 30.0, place=Place(lat=37.5, lon=126.8)))
        out.append(AlarmRecord(seq=0, ts=now, prio=Priority.ALARM, alarm_id=f"a-{i}", site=site,
                               rule="water_depth_high", severity="high", state="unacknowledged", raised_at=now))
    return out


async def _send_held(outbox: ProvinceOutbox, city: str, client: aiomqtt.Client) -> None:
    seq = outbox.floor_seq()
    while (got := next_batch(outbox, city, "boot-1", seq, limit=50)) is not None:
        payload, seq = got
        await client.publish(city_topic(city, CityChannel.DATA), payload, qos=1)


async def _pump(outbox: ProvinceOutbox, city: str, client: aiomqtt.Client, *, down_to: int,
                timeout_s: float) -> None:
    """Send everything the outbox holds (again each second: the province may have lost it) and
    apply the province's acks, until at most ``down_to`` records are held."""
    async with asyncio.timeout(timeout_s):
        while outbox.held > down_to:
            await _send_held(outbox, city, client)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    async for msg in client.messages:
                        apply_ack(outbox, messages.decode_city(CityAck, bytes(msg.payload), city))
                        if outbox.held <= down_to:
                            return


async def test_a_killed_province_loses_nothing_and_commits_every_city_record_once(
        test_pki: PkiFixture, province_pki: ProvincePki, tmp_path: Path) -> None:
    """Records go city outbox → city broker → bridge → provincial broker → `jikimi province run`;
    the province is SIGKILLed mid-stream and started again; at the end the city holds nothing
    (each record deleted only on the province's ack) and the province has every record exactly
    once, with its alarms and their sites' data age."""
    hub = test_pki.take_hub()
    city = city_of_hub(hub)
    province_pki.bridge_for(city)
    now = time.time()
    outbox, _ = open_upstream(tmp_path / "city" / "province-outbox.db", clock=time.time)
    outbox.append(_records(1, 150, now))
    config = province_config(tmp_path, province_pki, upstream := start_province_broker(province_pki, tmp_path / "pb"))
    log = tmp_path / "province.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with upstream, start_city_broker(test_pki, province_pki, city, upstream, tmp_path / "cb") as local:
            procs.append(_start(config, log))
            async with mqtt_client(local, test_pki.files(hub), hub) as client:
                await client.subscribe(city_topic(city, CityChannel.ACK), qos=1)
                await _pump(outbox, city, client, down_to=200, timeout_s=60)
                procs[-1].send_signal(signal.SIGKILL)
                procs[-1].wait(timeout=10)
                outbox.append(_records(151, 100, now))
                await _send_held(outbox, city, client)  # the provincial broker queues it for the province
                procs.append(_start(config, log))
                await _pump(outbox, city, client, down_to=0, timeout_s=60)
            procs[-1].send_signal(signal.SIGTERM)
            procs[-1].wait(timeout=15)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert outbox.held == 0
    epoch = outbox.epoch
    outbox.close()
    store = ProvinceStore(tmp_path / "province.db")
    try:
        committed = store.committed(city)
        assert [(e, s) for e, s, _ in committed] == [(epoch, s) for s in range(1, 501)], log.read_text()[-2000:]
        [view] = store.cities(time.time())
        assert view.records == 500
        alarms = store.alarms(time.time())
        assert len(alarms) == 250
        assert all(a.data_age_s is not None and a.data_age_s >= 30.0 for a in alarms)
        assert store.verify_audit() >= 1
    finally:
        store.close()
