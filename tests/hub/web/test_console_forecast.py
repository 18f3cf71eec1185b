"""The console shows the neighbours behind a network-forecast alarm: a real agent's underpass
rises to 11 cm while three neighbouring sites rise and cross 15 cm; the hub's forecast raises
alarms, and the site view of one lists the neighbours that drove it with their distances."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from hub.forecastdesk import DEVICE
from shared.messages import SiteState
from tests.conftest import PkiFixture
from tests.fakes.hub_edge import FakeEdge, fake_edge
from tests.hub.web.conftest import SURWON_UNDERPASS, Console, logged_in, until
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker


@pytest.fixture
def neighbours(test_pki: PkiFixture) -> list[str]:
    return [test_pki.take_site() for _ in range(3)]


@pytest.fixture
def extra_sites(neighbours: list[str]) -> dict[str, dict[str, Any]]:
    lat, lon = SURWON_UNDERPASS["lat"], SURWON_UNDERPASS["lon"]
    assert isinstance(lat, float)
    assert isinstance(lon, float)
    return {site: {"area": "gg-suwon", "name": f"이웃 {i + 1}", "lat": lat + 0.004 * (i + 1), "lon": lon}
            for i, site in enumerate(neighbours)}


@pytest.fixture
def hub_sections() -> dict[str, dict[str, Any]]:
    return {"forecast": {"hold_s": 2.0, "every_s": 0.5}}


@pytest.fixture
async def neighbour_edges(broker: RunningBroker, test_pki: PkiFixture, neighbours: list[str]
                          ) -> AsyncIterator[list[FakeEdge]]:
    async with AsyncExitStack() as stack:
        edges = []
        for site in neighbours:
            e = await stack.enter_async_context(fake_edge(broker, test_pki.files(site), site))
            await e.status(SiteState.ONLINE)
            await e.birth([("gauge", "underpass", ("water_depth_cm", "barrier_state"))])
            edges.append(e)
        yield edges


async def test_the_site_view_lists_the_neighbours_behind_a_forecast_alarm(
    browser: Browser, console: Console, neighbours: list[str], neighbour_edges: list[FakeEdge]
) -> None:
    """Water rising to 11 cm at the agent's underpass, neighbours 0.4-1.3 km north rising and
    crossing 15 cm: opening a forecast alarm that neighbours drove shows, in the site view, the
    neighbours stored with it, heaviest first, each with its distance."""
    console.sim.physics.water.depth_cm = 11.0
    desk = console.hub.engine.forecast
    assert desk is not None
    for k in range(20):  # a compressed storm: 2 cm a round, a round a second
        for i, e in enumerate(neighbour_edges):
            await e.send([e.reading("gauge", "water_depth_cm", min(40.0, 2.0 * k + 3.0 * i))])
        if desk.active_count:
            break
        await asyncio.sleep(1.0)

    def with_drivers(c: sqlite3.Connection) -> list[tuple[int, str, str]]:
        return c.execute("SELECT id, site, drivers FROM alarms WHERE device = ? AND drivers <> '[]' ORDER BY id",
                         (DEVICE,)).fetchall()

    async def raised() -> bool:
        return bool(await console.hub.reader.run(with_drivers))

    await until(raised, 20, "a forecast alarm driven by neighbours")
    alarm_id, _site, drivers_json = (await console.hub.reader.run(with_drivers))[0]
    expected = [d["site"] for d in json.loads(drivers_json)]
    async with logged_in(browser, console, "olive") as page:
        await page.locator(f'#alarm-{alarm_id} .alarm-open').first.click()
        panel = page.locator(f"#drivers-{alarm_id}")
        await expect(panel.locator("li").first).to_be_visible(timeout=15_000)
        listed = await panel.locator("li").evaluate_all("(ls) => ls.map((l) => l.dataset.site)")
        text = await panel.inner_text()
    assert listed == expected  # heaviest first, as stored with the alarm
    assert set(listed) <= {console.site, *neighbours}
    assert text.count("km") == len(expected)
