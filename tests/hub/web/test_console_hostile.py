"""What a hostile or broken edge sends reaches the console as text, never as markup: event kinds,
details, device ids and values full of HTML are shown literally, and an event replayed after an
outage is marked late. The edge here is the project's stand-in (tests/fakes/hub_edge.py): a real
agent would never send such records, which is the point."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from shared.messages import Event, Priority, SiteState
from tests.conftest import PkiFixture
from tests.fakes.hub_edge import fake_edge
from tests.hub.web.conftest import Console, logged_in
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker

MARKUP = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
PLACE = {"area": "gg-suwon", "name": "수원 반지하 주택 9", "lat": 37.2800, "lon": 127.0200}


@pytest.fixture
def hostile_site(test_pki: PkiFixture) -> str:
    return test_pki.take_site()


@pytest.fixture
def extra_sites(hostile_site: str) -> dict[str, dict[str, Any]]:
    return {hostile_site: PLACE}


async def test_markup_from_an_edge_is_shown_as_text_and_a_replayed_event_is_marked_late(
    browser: Browser, console: Console, broker: RunningBroker, test_pki: PkiFixture, hostile_site: str
) -> None:
    async with fake_edge(broker, test_pki.files(hostile_site), hostile_site) as edge:
        await edge.status(SiteState.ONLINE)
        await edge.birth([(MARKUP[:60], "flood_alarm", ["water_depth_cm", "alarm_active"])])
        now = time.time()
        live = Event(seq=edge.next_seq, ts=now, prio=Priority.EVENT, kind=MARKUP[:60], device=MARKUP[:60],
                     detail=MARKUP, values={"x": MARKUP})
        late = Event(seq=edge.next_seq + 1, ts=now - 300, prio=Priority.EVENT, kind="agent.health",
                     detail="replayed after the outage", historical=True)
        edge.next_seq += 2
        edge.held.update({live.seq: live, late.seq: late})
        await edge.send([live, late])
        await edge.wait_acked(late.seq)
        async with logged_in(browser, console, "olive") as page:
            await page.locator(f'.site-marker[data-site="{hostile_site}"]').press("Enter")
            events = page.locator("#site-events tbody tr")
            await expect(events).to_have_count(2)
            first = events.first
            await expect(first).to_contain_text(MARKUP)  # the detail, verbatim, as text
            await expect(first.locator("td").nth(1)).to_have_text(MARKUP[:60])
            await expect(page.locator("#site-events img, #site-events script")).to_have_count(0)
            await expect(page.locator("#site-controls .device .dev-head b")).to_have_text(MARKUP[:60])
            await expect(page.locator("#site-controls img, #site-controls script")).to_have_count(0)
            replayed = page.locator('#site-events tr[data-kind="agent.health"]')
            await expect(replayed.locator(".chip.late")).to_be_visible()
            await expect(first.locator(".chip.late")).to_have_count(0)
            assert await page.evaluate("window.__pwned") is None
