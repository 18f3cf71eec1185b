"""Screenshots of the console's main views at 1366x768 over a small typhoon scene (a real edge
with an underpass simulator, fake edges for the other kinds), kept under test-artifacts/ and
copied to docs/console.png for the README."""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from shared.messages import SiteState
from tests.conftest import PkiFixture
from tests.fakes.hub_edge import FakeEdge, fake_edge
from tests.hub.web.conftest import ARTIFACTS, Console, logged_in, until
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker

DOCS = Path(__file__).resolve().parents[3] / "docs"
# (role in the scene, registry entry); positions are real places in each city (WGS84)
SCENE: dict[str, dict[str, Any]] = {
    "flood": {"area": "gg-bucheon", "name": "부천 반지하 주택 3", "lat": 37.5035, "lon": 126.7660},
    "slope": {"area": "gg-yongin", "name": "용인 급경사지 7", "lat": 37.1750, "lon": 127.3000},
    "rain": {"area": "gg-hwaseong", "name": "화성 강우계 2", "lat": 37.1995, "lon": 126.8315},
    "gate": {"area": "gg-goyang", "name": "고양 한강 산책로 입구", "lat": 37.6584, "lon": 126.8320},
    "silent": {"area": "gg-paju", "name": "파주 문산 지하차도", "lat": 37.8590, "lon": 126.7850},
}


@pytest.fixture
def scene(test_pki: PkiFixture) -> dict[str, str]:
    return {role: test_pki.take_site() for role in SCENE}


@pytest.fixture
def extra_sites(scene: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {site: SCENE[role] for role, site in scene.items()}


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


async def _report(edge: FakeEdge, kind: str, device: str, values: dict[str, Any]) -> None:
    await edge.status(SiteState.ONLINE)
    await edge.birth([(device, kind, list(values))])
    await edge.send([edge.reading(device, point, value) for point, value in values.items()])
    await edge.wait_acked(edge.next_seq - 1)


async def _at_least(count: Awaitable[int], n: int) -> bool:
    return await count >= n


async def _shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"console-{name}.png"
    await page.screenshot(path=str(path))
    return path


async def test_screenshots_of_the_main_views_at_1366x768(browser: Browser, console: Console, broker: RunningBroker,
                                                         test_pki: PkiFixture, scene: dict[str, str]) -> None:
    """The map (worst-first alarm list beside it, the boundaries' attribution on it), a site view
    and the confirm dialog are captured at 1366x768, in Korean and in English."""
    for depth in (6.0, 11.0, 16.0, 21.0):  # a rising hydrograph for the chart
        console.sim.physics.water.depth_cm = depth
        await asyncio.sleep(0.6)
    async with AsyncExitStack() as stack:
        edges = {role: await stack.enter_async_context(fake_edge(broker, test_pki.files(site), site))
                 for role, site in scene.items() if role != "silent"}
        await _report(edges["flood"], "flood_alarm", "alarm", {"water_depth_cm": 12.5, "alarm_active": True,
                                                                "battery_v": 12.6})
        await _report(edges["slope"], "displacement", "meter", {"displacement_mm": 23.0, "tilt_x_deg": 0.4,
                                                                "tilt_y_deg": 0.2})
        await _report(edges["rain"], "rain_gauge", "gauge", {"rain_mm_total": 180.0, "rain_mm_10min": 24.0})
        await _report(edges["gate"], "river_gate", "gate", {"gate_state": "closed"})
        await edges["gate"].status(SiteState.OFFLINE)
        await until(lambda: console.agent.uplink.connected.is_set(), what="edge connected")

        async with logged_in(browser, console, "olive") as page:
            await expect(page.locator(".site-marker")).to_have_count(6)
            # offline is drawn as such (crossed out, labelled) over the colour of its worst alarm
            gate = page.locator(f'.site-marker[data-site="{scene["gate"]}"]')
            await expect(gate).to_have_class(re.compile(r"\blink-offline\b"))
            await expect(gate.locator(".cross")).to_have_count(1)
            await expect(gate.locator(".site-label")).to_contain_text("오프라인")
            await expect(page.locator(f'.site-marker[data-site="{scene["silent"]}"]')).to_have_class(
                "site-marker unknown link-unknown")
            await expect(page.locator("#alarm-list > li").first).to_have_class(
                "alarm-row critical st-unacknowledged")
            rows = page.locator("#alarm-list > li")
            await until(lambda: _at_least(rows.count(), 5), what="an alarm from each reporting site")
            await expect(page.locator("#attribution")).to_contain_text("통계청 SGIS")
            shots = [await _shot(page, "map")]
            DOCS.mkdir(exist_ok=True)
            shutil.copyfile(shots[0], DOCS / "console.png")

            await page.locator(f'.site-marker[data-site="{console.site}"] .dot').click()
            await expect(page.locator("#charts .chart-svg")).to_have_count(1)
            await expect(page.locator("#site-values tr[data-point]")).not_to_have_count(0)
            shots.append(await _shot(page, "site"))

            await page.locator('#site-controls button[data-action="barrier.close"]').click()
            await expect(page.locator("dialog.cmd-dlg #rule-fired")).to_contain_text("closing_depth")
            shots.append(await _shot(page, "confirm"))
            await page.locator("#cmd-close").click()

            await page.click("#lang")
            await page.click("#tab-map")
            await expect(page.locator("#attribution")).to_contain_text("Statistics Korea (SGIS)")
            await expect(page.locator("#tab-map")).to_contain_text("Map")
            shots.append(await _shot(page, "map-en"))
    for shot in shots:
        assert png_size(shot) == (1366, 768), shot
