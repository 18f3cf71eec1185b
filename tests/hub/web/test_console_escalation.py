"""An escalated alert in real headless Chromium: a real hub forwards a real simulator's alarm to
a city centre (the reference receiver) that is down, the delivery escalates, and the console
shows a banner, sounds a tone and lists the escalation alarm until an operator acknowledges it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from hub import receiver
from tests.fakes.recipients import CentreFaults
from tests.hub.web.conftest import Console, logged_in

pytestmark = pytest.mark.broker

CENTRE = "suwon-centre"


@pytest.fixture
def faults() -> CentreFaults:
    return CentreFaults(down=True)


@pytest.fixture
async def centre(faults: CentreFaults) -> AsyncIterator[receiver.RunningReceiver]:
    async with receiver.serve(middlewares=[faults.middleware]) as rcv:
        yield rcv


@pytest.fixture
def hub_sections(centre: receiver.RunningReceiver) -> dict[str, dict[str, Any]]:
    """Forwarding to the centre, escalating after 1 s without an acknowledgement."""
    return {"forward": {"recipients": {CENTRE: {
        "kind": "city_centre", "url": centre.url, "escalate_after_s": 1.0,
        "initial_backoff_s": 0.2, "max_backoff_s": 0.5, "max_attempts": 10_000}}}}


async def test_an_escalation_is_a_banner_and_a_tone_until_an_operator_acknowledges_it(
    browser: Browser, console: Console, faults: CentreFaults
) -> None:
    """Water at 20 cm raises an alarm whose alert the centre never acknowledges: a banner names the
    centre, the alert and since when, the tone sounds (the login click was the page's user
    gesture) until muted, and the escalation alarm is in the alarm list. Acknowledging it from
    the banner removes the banner and stops the tone; when the centre is back and acknowledges,
    the escalation alarm returns to normal and leaves the list."""
    async with logged_in(browser, console, "olive") as page:
        mute = page.locator("#mute")
        await expect(mute).to_be_visible()
        await expect(mute).to_have_attribute("data-sound", "idle")
        console.sim.physics.water.depth_cm = 20.0
        banner = page.locator(".banner.escalation")
        await expect(banner).to_have_count(1, timeout=30_000)
        await expect(banner.locator(".esc-recipient")).to_contain_text(CENTRE)
        await expect(banner.locator(".esc-alert")).to_contain_text("세류 지하차도")
        await expect(banner.locator(".esc-since")).to_contain_text("발생")
        escalation = (await page.evaluate("async () => (await fetch('/api/escalations')).json()"))[0]
        assert escalation["recipient"] == CENTRE
        await expect(banner.locator(".esc-alert")).to_contain_text(escalation["alert_id"])
        row = page.locator(f'#alarm-{escalation["alarm_id"]}')
        await expect(row).to_have_attribute("data-source", "forwarding")
        await expect(row).to_have_attribute("data-state", "unacknowledged")
        await expect(row).to_contain_text(CENTRE)

        await expect(mute).to_have_attribute("data-sound", "playing")
        await expect(mute).not_to_have_attribute("data-tones", "0")
        await mute.click()
        await expect(mute).to_have_attribute("data-sound", "muted")
        await expect(mute).to_have_attribute("aria-pressed", "true")
        await expect(banner).to_have_count(1)  # silenced, still shown until acknowledged

        await banner.locator(".esc-ack").click()
        await expect(row).to_have_attribute("data-state", "acknowledged")
        await expect(banner).to_have_count(0)
        await expect(mute).to_have_attribute("data-sound", "idle")

        faults.down = False
        await expect(row).to_have_count(0, timeout=30_000)  # acknowledged by the centre: normal again
        assert await page.evaluate("async () => (await fetch('/api/escalations')).json()") == []

