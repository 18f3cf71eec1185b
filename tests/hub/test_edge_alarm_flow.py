"""Edge alarms and late data end to end, with real parts: a real underpass simulator beside a real
agent, the session's Mosquitto (mTLS), the real hub and the reference CAP receiver.

- A jammed barrier: the agent's local close fails, and the hub raises a critical alarm in the
  very transaction that stores ``local.barrier.close.failed``, and forwards it as CAP.
- An uplink outage (the agent reaches the broker only through a proxy the test cuts): the water
  crosses 15 cm and falls again while the hub sees nothing; after reconnect the alarm is raised
  and returned to normal at the readings' own times, marked late.
- The site's events and the alarm views through the HTTPS API, with what a hostile caller sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from hub import receiver
from hub.forward import capread
from hub.forward.capread import CapSchema
from hub.service import Hub, running
from shared.messages import Action, Event, Priority, SiteState
from shared.site_events import local_outcome
from tests.conftest import PkiFixture
from tests.edge.harness import running_agent, underpass_sim, write_config
from tests.fakes.hub_edge import FakeEdge, fake_edge
from tests.hub.conftest import ConfigFactory, api_client, until
from tests.hub.forward.helpers import SITE
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker

CLOSE_FAILED = local_outcome(Action.BARRIER_CLOSE, False)


async def rows(hub: Hub, sql: str, *args: object) -> list[tuple[Any, ...]]:
    def q(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
        return c.execute(sql, args).fetchall()

    return await hub.reader.run(q)


async def test_a_jammed_barrier_raises_a_critical_alarm_with_its_failure_event_and_a_cap_alert(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """Water at 20 cm makes the agent close the barrier; the barrier is jammed, so the close fails.
    The hub stores the edge's ``local.barrier.close.failed`` and, in the same commit, a critical
    alarm of source ``edge``; the city centre receives it as a valid, signed CAP Alert."""
    site = test_pki.take_site()
    async with receiver.serve(schema=CapSchema(), strict=True) as centre, underpass_sim() as sim:
        cfg = hub_config(
            sites={"registry": {site: {"area": "gg-suwon", "name": "Gwonseon underpass", "lat": SITE.lat,
                                       "lon": SITE.lon}}},
            forward={"recipients": {"suwon-centre": {"kind": "city_centre", "url": centre.url,
                                                     "initial_backoff_s": 0.0, "max_backoff_s": 0.0}}},
        )
        sim.physics.barrier.jammed = True
        agent_cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        async with running(cfg) as hub, running_agent(agent_cfg):
            await until(lambda: _has_birth(hub, site), 30)
            sim.physics.water.depth_cm = 20.0

            async def failed_stored() -> bool:
                return bool(await rows(hub, "SELECT 1 FROM records WHERE site = ? AND type = 'event'"
                                            " AND body ->> 'kind' = ?", site, CLOSE_FAILED))

            await until(failed_stored, 40)
            # one read, one snapshot: whatever committed the event committed the alarm with it
            (alarm,) = await rows(
                hub, "SELECT a.priority, a.state, a.source, a.late, a.point FROM alarms a WHERE a.site = ?"
                     " AND a.rule = ? AND EXISTS (SELECT 1 FROM records r WHERE r.site = a.site AND r.type = 'event'"
                     " AND r.body ->> 'kind' = a.rule)", site, CLOSE_FAILED)
            assert alarm == ("critical", "unacknowledged", "edge", 0, "barrier_state")

            def edge_alert() -> bool:
                return any(a.msg_type == "Alert" and CLOSE_FAILED in _headlines(a.body) for a in centre.alerts())

            await centre.wait_for(edge_alert, 30)
        alerts = [a for a in centre.alerts() if CLOSE_FAILED in _headlines(a.body)]
    assert alerts
    assert all(a.valid for a in alerts), [a.problems for a in alerts]


async def _has_birth(hub: Hub, site: str) -> bool:
    return bool(await rows(hub, "SELECT 1 FROM devices WHERE site = ?", site))


def _headlines(body: bytes) -> str:
    return " ".join(info.headline for info in capread.read(body).infos)


class Proxy:
    """A TCP proxy to the broker that the test opens and cuts: while cut, connections are closed
    as soon as they are accepted and the live ones are dropped (the uplink is down)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.open = False
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        w.close()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if not self.open:
            w.close()
            return
        br, bw = await asyncio.open_connection("localhost", self.target)
        self._writers |= {w, bw}
        try:
            await asyncio.gather(self._pipe(r, bw), self._pipe(br, w))
        finally:
            self._writers -= {w, bw}

    def cut(self) -> None:
        self.open = False
        for w in list(self._writers):
            w.close()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Proxy]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self.cut()
            server.close()
            await server.wait_closed()


async def test_a_flood_during_an_uplink_outage_is_an_alarm_raised_and_cleared_at_its_own_times_marked_late(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """The agent starts with its uplink cut. The water rises to 20 cm for a few seconds and falls
    to 2 cm; the hub hears nothing. When the uplink comes back the replay raises the
    closing-depth alarm and returns it to normal at the readings' times (inside the outage, before
    the reconnect), both transitions and the alarm marked late."""
    site = test_pki.take_site()
    async with underpass_sim() as sim, Proxy(broker.port).serving() as proxy:
        sim.physics.water.depth_cm = 2.0
        sim.physics.water.drain_cm_per_h = 0.0
        agent_cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        agent_cfg.write_text(agent_cfg.read_text().replace(f"port = {broker.port}", f"port = {proxy.port}"))
        async with running(hub_config()) as hub, running_agent(agent_cfg) as agent:
            await asyncio.sleep(2.0)
            rose = time.time()
            sim.physics.water.depth_cm = 20.0
            await asyncio.sleep(3.0)
            sim.physics.water.depth_cm = 2.0
            fell = time.time()
            await asyncio.sleep(2.0)
            assert agent.uplink.counters.connects == 0
            assert await rows(hub, "SELECT 1 FROM records WHERE site = ?", site) == []
            reconnect = time.time()
            proxy.open = True

            async def back_to_normal() -> bool:
                return bool(await rows(hub, "SELECT 1 FROM alarms WHERE site = ? AND rule = 'closing_depth'"
                                            " AND active = 0", site))

            await until(back_to_normal, 40)
            ((alarm_id, state, late, raised_at),) = await rows(
                hub, "SELECT id, state, late, raised_at FROM alarms WHERE site = ? AND rule = 'closing_depth'", site)
            transitions = await rows(hub, "SELECT event, ts, late FROM alarm_transitions WHERE alarm_id = ?"
                                          " ORDER BY id", alarm_id)
    assert (state, late) == ("rtn_unacknowledged", 1)
    assert [(e, bool(lt)) for e, _ts, lt in transitions] == [("activate", True), ("clear", True)]
    (_, raised, _), (_, cleared, _) = transitions
    assert raised == raised_at
    assert rose - 0.1 <= raised < cleared <= fell + 1.0 < reconnect


async def test_site_events_and_alarm_views_through_the_api(
    api_hub: Hub, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """``GET /api/sites/{site}/events`` lists the newest first with the alarm priority of each
    kind (none for an unknown one); alarm list and detail say ``source`` and ``late``; a bad
    limit is 400, an unknown site 404."""
    async with fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(api_hub, test_pki.dir / "ca.pem") as c:
        await edge.status(SiteState.ONLINE)
        await edge.birth([("barrier-1", "underpass", ("water_depth_cm", "barrier_state", "motor_fault"))])
        now = time.time()
        recs = [_event(edge, now - 3, "no.such.kind", detail="junk", device="barrier-1"),
                _event(edge, now - 2, CLOSE_FAILED, detail="did not reach 'closed'", device="barrier-1"),
                _event(edge, now - 1, "agent.health", device=None)]
        await edge.send(recs)
        await edge.wait_acked(edge.next_seq - 1)
        await c.login("vera")
        events = await (await c.get(f"/api/sites/{site_id}/events?limit=2")).json()
        every = await (await c.get(f"/api/sites/{site_id}/events")).json()
        (alarm,) = await (await c.get(f"/api/alarms?site={site_id}")).json()
        detail = await (await c.get(f"/api/alarms/{alarm['id']}")).json()
        statuses = [(await c.get(p)).status for p in (f"/api/sites/{site_id}/events?limit=0",
                                                      f"/api/sites/{site_id}/events?limit=x",
                                                      f"/api/sites/{site_id}/events?limit=100000",
                                                      "/api/sites/gg-nowhere-0000/events")]
        spec = await (await c.get("/api/openapi.json")).json()
    assert [(e["kind"], e["alarm"], e["prio"]) for e in events] == [("agent.health", None, "alarm"),
                                                                    (CLOSE_FAILED, "critical", "alarm")]
    assert [e["kind"] for e in every] == ["agent.health", CLOSE_FAILED, "no.such.kind"]
    assert (every[2]["detail"], every[2]["historical"], every[2]["device"]) == ("junk", False, "barrier-1")
    assert (alarm["rule"], alarm["source"], alarm["late"], alarm["priority"]) == (CLOSE_FAILED, "edge", False,
                                                                                  "critical")
    assert [t["late"] for t in detail["transitions"]] == [False]
    assert statuses == [400, 400, 400, 404]
    assert "/api/sites/{site}/events" in spec["paths"]
    assert {"late", "source"} <= set(spec["components"]["schemas"]["AlarmView"]["properties"])


def _event(edge: FakeEdge, ts: float, kind: str, *, device: str | None, detail: str = "") -> Event:
    ev = Event(seq=edge.next_seq, ts=ts, prio=Priority.ALARM, kind=kind, device=device, detail=detail)
    edge.next_seq += 1
    edge.held[ev.seq] = ev
    return ev
