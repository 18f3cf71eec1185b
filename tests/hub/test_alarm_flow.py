"""Readings to alarms on a running hub: rules raise and clear, operators act through the API, shelving
ends by itself, an offline site goes stale, and a flood of alarms becomes one incident."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from hub.service import Hub, running
from shared.messages import SiteState
from tests.conftest import PkiFixture
from tests.fakes.hub_edge import FakeEdge, fake_edge
from tests.hub.conftest import ConfigFactory, api_client, until
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker

POINTS = ("water_depth_cm", "barrier_state", "motor_fault")


async def depth(edge: FakeEdge, value: float, device: str = "barrier-1") -> None:
    await edge.send([edge.reading(device, "water_depth_cm", value)])
    await edge.wait_acked(edge.next_seq - 1)


async def alarms_of(hub: Hub, site: str) -> list[tuple[Any, ...]]:
    def q(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
        return c.execute("SELECT id, device, rule, state, active, incident_id FROM alarms WHERE site = ? ORDER BY id",
                         (site,)).fetchall()

    return await hub.reader.run(q)


async def test_water_over_closing_depth_raises_an_alarm_that_operators_handle(
    api_hub: Hub, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """20 cm raises a critical unacknowledged alarm; an operator acknowledges it; when the water
    falls the alarm returns to normal; every transition names its actor and reason."""
    async with fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(api_hub, test_pki.dir / "ca.pem") as c:
        await edge.status(SiteState.ONLINE)
        await edge.birth([("barrier-1", "underpass", POINTS)])
        await depth(edge, 20.0)
        await c.login("olive")
        (alarm,) = await (await c.get(f"/api/alarms?site={site_id}")).json()
        assert (alarm["rule"], alarm["priority"], alarm["state"]) == ("closing_depth", "critical", "unacknowledged")
        acked = await c.post(f"/api/alarms/{alarm['id']}/ack", {"reason": "barrier closing, crew sent"})
        assert acked.status == 200
        assert (await acked.json())["alarm"]["state"] == "acknowledged"
        await depth(edge, 2.0)
        detail = await (await c.get(f"/api/alarms/{alarm['id']}")).json()
    assert detail["alarm"]["state"] == "normal"
    steps = [(t["event"], t["actor"], t["to_state"]) for t in detail["transitions"]]
    assert steps == [("activate", "system", "unacknowledged"), ("ack", "olive", "acknowledged"),
                     ("clear", "system", "normal")]
    assert all(t["reason"] for t in detail["transitions"])


async def test_a_shelved_alarm_comes_back_by_itself_when_its_time_is_over(
    api_hub: Hub, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    async with fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(api_hub, test_pki.dir / "ca.pem") as c:
        await edge.status(SiteState.ONLINE)
        await edge.birth([("barrier-1", "underpass", POINTS)])
        await depth(edge, 20.0)
        await c.login("olive")
        (alarm,) = await (await c.get(f"/api/alarms?site={site_id}")).json()
        no_reason = await c.post(f"/api/alarms/{alarm['id']}/shelve", {"duration_s": 1})
        assert no_reason.status == 409
        too_long = await c.post(f"/api/alarms/{alarm['id']}/shelve", {"reason": "gauge fouled", "duration_s": 1e6})
        assert too_long.status == 409
        shelved = await c.post(f"/api/alarms/{alarm['id']}/shelve", {"reason": "gauge fouled", "duration_s": 1})
        assert (await shelved.json())["alarm"]["state"] == "shelved"

        async def back() -> bool:
            d = await (await c.get(f"/api/alarms/{alarm['id']}")).json()
            return bool(d["alarm"]["state"] == "unacknowledged")

        await until(back)
        d = await (await c.get(f"/api/alarms/{alarm['id']}")).json()
    last = d["transitions"][-1]
    assert (last["event"], last["actor"], last["reason"]) == ("unshelve", "system", "shelve time is over")


async def test_a_site_that_goes_offline_marks_its_points_stale(
    api_hub: Hub, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    async with fake_edge(broker, test_pki.files(site_id), site_id) as edge, \
            api_client(api_hub, test_pki.dir / "ca.pem") as c:
        await edge.status(SiteState.ONLINE)
        await edge.birth([("barrier-1", "underpass", POINTS)])
        await depth(edge, 3.0)
        await c.login("vera")
        (point,) = await (await c.get(f"/api/sites/{site_id}/latest")).json()
        assert point["quality"] == "good"
        await edge.status(SiteState.OFFLINE)

        async def stale() -> bool:
            (p,) = await (await c.get(f"/api/sites/{site_id}/latest")).json()
            return bool(p["quality"] == "stale")

        await until(stale)
        rules = {(r[2], r[3]) for r in await alarms_of(api_hub, site_id)}
    assert ("stale", "unacknowledged") in rules


async def test_ten_alarms_in_an_area_become_one_incident(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    cfg = hub_config(sites={"registry": {site_id: {"area": "flood-area"}}})
    devices = [f"barrier-{i:02d}" for i in range(10)]
    async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge:
        await edge.status(SiteState.ONLINE)
        await edge.birth([(d, "underpass", POINTS) for d in devices])
        for d in devices[:9]:
            await depth(edge, 20.0, device=d)
        assert {r[5] for r in await alarms_of(hub, site_id)} == {None}
        await depth(edge, 20.0, device=devices[9])
        rows = await alarms_of(hub, site_id)
        assert len(rows) == 10
        incident = rows[0][5]
        assert incident is not None
        assert {r[5] for r in rows} == {incident}
