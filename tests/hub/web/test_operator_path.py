"""The operator's path through a storm, captured at 1366x768 for the README (docs/operator-*.png):
a real hub forwarding to a city centre that is down, real agents beside an underpass and a river
gate simulator in Suwon, and real headless Chromium. Each step asserts what its picture shows."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from edge.sim.servers import Simulator
from hub import receiver
from tests.fakes.recipients import CentreFaults
from tests.hub.web.conftest import ARTIFACTS, GATE_PLACE, Console, logged_in
from tests.hub.web.test_screenshots import png_size

pytestmark = pytest.mark.broker

DOCS = Path(__file__).resolve().parents[3] / "docs"


@pytest.fixture
async def centre() -> AsyncIterator[receiver.RunningReceiver]:
    async with receiver.serve(middlewares=[CentreFaults(down=True).middleware]) as rcv:
        yield rcv


@pytest.fixture
def hub_sections(centre: receiver.RunningReceiver) -> dict[str, dict[str, Any]]:
    return {"forward": {"recipients": {"suwon-centre": {
        "kind": "city_centre", "url": centre.url, "escalate_after_s": 1.0,
        "initial_backoff_s": 0.5, "max_backoff_s": 2.0, "max_attempts": 10_000}}}}


@pytest.fixture
def extra_sites(gate_site: str) -> dict[str, dict[str, Any]]:
    return {gate_site: GATE_PLACE}


async def _shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    DOCS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"operator-{name}.png"
    await page.screenshot(path=str(path))
    shutil.copyfile(path, DOCS / path.name)
    assert png_size(path) == (1366, 768)
    return path


async def test_the_operators_path_through_a_storm(browser: Browser, console: Console, gate: Simulator,
                                                  gate_site: str) -> None:
    """Alarm and escalation → acknowledge → the site → close the barrier → evacuate the area → the
    forwarding tab; each step's screen is kept as docs/operator-N-*.png."""
    for depth in (4.0, 8.0, 12.0, 16.0, 21.0):  # the storm: the underpass floods
        console.sim.physics.water.depth_cm = depth
        await asyncio.sleep(0.6)
    async with logged_in(browser, console, "olive") as page:
        # 1. the alarm, and the city centre that has not acknowledged its alert
        await expect(page.locator(".alarm-row.critical")).to_be_visible(timeout=15_000)
        banner = page.locator(".banner.escalation")
        await expect(banner).to_have_count(1, timeout=30_000)
        await expect(page.locator('.alarm-row[data-source="forwarding"]')).to_have_count(1)
        await _shot(page, "1-alarm")

        # 2. acknowledge the escalation from its banner and the alarm from the list; open the site
        await banner.locator(".esc-ack").click()
        await expect(banner).to_have_count(0)
        await page.locator(".alarm-row.critical button.ack").click()
        await expect(page.locator(".alarm-row.critical")).to_have_attribute("data-state", "acknowledged")
        await page.locator(f'.site-marker[data-site="{console.site}"] .dot').click()
        await expect(page.locator("#charts .chart-svg")).to_have_count(1)
        await expect(page.locator("#site-values tr[data-point]")).not_to_have_count(0)
        await _shot(page, "2-site")

        # 3. close the barrier: confirm the target, the live depth and its age, then execute
        await page.locator('#site-controls button[data-action="barrier.close"]').click()
        dlg = page.locator("dialog.cmd-dlg")
        await dlg.locator("#cmd-reason").fill("water over the closing depth")
        await dlg.locator("#cmd-execute").click()
        await expect(dlg.locator("#cmd-state")).to_have_attribute("data-state", "verified", timeout=15_000)
        await _shot(page, "3-close")
        await dlg.locator("#cmd-close").click()

        # 4. evacuate the area: the gate's sign shows the preset text, its loudspeaker plays
        await page.click("#tab-map")
        await page.select_option("#area-select", "gg-suwon")
        await page.click("#evacuate-area")
        op = page.locator("dialog.op-dlg")
        await expect(op.locator('#op-plan li[data-action="sign.show"]')).to_be_visible()
        await op.locator("#op-reason").fill("river over the warning level")
        await op.locator("#op-execute").click()
        await expect(op.locator('#op-devices tr[data-state="verified"]')).to_have_count(2, timeout=20_000)
        await _shot(page, "4-evacuate")
        await op.locator("button", has_text="닫기").click()
        assert gate.physics.broadcast == "evacuate"

        # 5. forwarding: which alerts each recipient has acknowledged, and what was not forwarded
        await page.click("#tab-forwarding")
        await expect(page.locator("#forwarding tbody tr").first).to_be_visible()
        await expect(page.locator("#not-forwarded")).to_be_visible()
        await _shot(page, "5-forwarding")
