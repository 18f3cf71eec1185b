"""The hub as a service: restarts keep exactly-once, live updates, and ``jikimi hub run`` itself."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hub.service import Hub, running
from shared import messages, topics
from shared.messages import HubStatus, SiteState
from tests.conftest import PkiFixture, mqtt_client
from tests.fakes.hub_edge import fake_edge
from tests.hub.conftest import ConfigFactory, api_client
from trust.broker import RunningBroker, free_port

pytestmark = pytest.mark.broker


async def test_a_restarted_hub_keeps_its_watermark_and_stores_nothing_twice(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """Records committed before a restart but sent again after it (the edge missed the ack) are
    recognised as duplicates; the watermark continues where it was."""
    cfg = hub_config()
    async with fake_edge(broker, test_pki.files(site_id), site_id) as edge:
        async with running(cfg):
            await edge.send(edge.readings(10))
            await edge.wait_acked(10)
        again = [edge.reading("gauge", "water_depth_cm", 1.0) for _ in range(5)]
        edge.held.update({r.seq: r for r in again})
        async with running(cfg) as hub:
            await edge.send(again)
            await edge.wait_acked(15)
            await edge.send(again)  # the same batch once more
            await edge.send(edge.readings(5))
            await edge.wait_acked(20)
            assert hub.engine.counters.duplicates == 5
    with sqlite3.connect(cfg.db_path) as conn:
        seqs = [s for (s,) in conn.execute("SELECT seq FROM records WHERE site = ? ORDER BY seq", (site_id,))]
        through = conn.execute("SELECT through_seq FROM sites WHERE site = ?", (site_id,)).fetchone()[0]
    assert seqs == list(range(1, 21))
    assert through == 20


async def test_live_updates_stream_committed_changes(api_hub: Hub, broker: RunningBroker, test_pki: PkiFixture,
                                                     site_id: str) -> None:
    """A console subscribed to /api/events sees the site come online, its values, and the alarm."""
    async with fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(api_hub, test_pki.dir / "ca.pem") as c:
        await c.login("vera")
        resp = await c.get("/api/events")
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        await edge.status(SiteState.ONLINE)
        await edge.birth([("barrier-1", "underpass", ("water_depth_cm",))])
        await edge.send([edge.reading("barrier-1", "water_depth_cm", 22.0)])
        seen: dict[str, list[dict[str, Any]]] = {}
        kind = ""
        async with asyncio.timeout(10):
            async for raw in resp.content:
                line = raw.decode().strip()
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    seen.setdefault(kind, []).append(json.loads(line[6:]))
                    if "alarm" in seen and "latest" in seen:
                        break
        resp.close()
    assert any(e.get("site") == site_id for e in seen["site"])
    assert seen["latest"][0]["points"][0]["value"] == 22.0
    assert seen["alarm"][0]["state"] == "unacknowledged"


def test_hub_run_serves_refuses_a_second_hub_on_its_database_and_stops_cleanly_on_sigterm(
        broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path) -> None:
    """``jikimi hub run`` starts from a config file, answers /api/health over HTTPS, refuses a
    second ``hub run`` on the same database, and on SIGTERM says offline (retained) and exits 0."""
    port = free_port()
    pki = test_pki.dir
    hub_id, probe = test_pki.take_hub(), test_pki.take_site()
    config = tmp_path / "hub.toml"
    config.write_text(f"""
[hub]
id = "{hub_id}"
[broker]
port = {broker.port}
ca = "{pki / 'ca.pem'}"
cert = "{pki / hub_id / 'cert.pem'}"
key = "{pki / hub_id / 'key.pem'}"
[commands]
signing_key = "{pki / 'command-signing' / 'key.pem'}"
[database]
path = "hub.db"
[api]
listen = "127.0.0.1:{port}"
""")
    proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "hub", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})

    async def health() -> dict[str, object]:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        async with aiohttp.ClientSession() as s, asyncio.timeout(20):
            while True:
                try:
                    async with s.get(f"https://localhost:{port}/api/health", ssl=ctx) as r:
                        body: dict[str, object] = await r.json()
                        if body["mqtt_connected"]:
                            return body
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)

    async def hub_status() -> HubStatus:
        async with mqtt_client(broker, test_pki.files(probe), probe) as c:
            await c.subscribe(topics.hub_status_topic(hub_id), qos=1)
            async with asyncio.timeout(5):
                async for msg in c.messages:
                    assert isinstance(msg.payload, bytes)
                    return messages.decode(HubStatus, msg.payload)
        raise AssertionError("no hub status")

    try:
        assert asyncio.run(health())["hub"] == hub_id
        assert asyncio.run(hub_status()).state is SiteState.ONLINE
        # a second hub on the same database refuses before it opens anything; the first serves on
        second = subprocess.run([sys.executable, "-m", "shared.cli", "hub", "run", "--config", str(config)],
                                capture_output=True, text=True, timeout=60, env={**os.environ}, check=False)
        assert second.returncode == 2, second.stderr
        assert f"{tmp_path / 'hub.db'}.lock: another hub is running on this state (pid {proc.pid})" \
            in second.stderr
        assert asyncio.run(health())["hub"] == hub_id
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out.decode()
    events = [json.loads(line)["event"] for line in out.decode().splitlines() if line.startswith("{")]
    assert "hub.started" in events
    assert "hub.stopped" in events
    assert asyncio.run(hub_status()).state is SiteState.OFFLINE
