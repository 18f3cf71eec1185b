"""A request of the province in the city's console (hub/requestdesk.py), in real headless Chromium
against the real hub and a real agent beside a river-gate simulator: the request is a banner for
everyone; only an operator may review it, and nothing moves until they accept it in the dialog,
which shows the request and the plan; a refusal needs a reason and reaches the province's answer.

The request is handed to the hub's province link as the city broker's bridge would deliver it (the
whole path through real bridges is tests/province/test_city_link.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from edge.sim.servers import Simulator
from hub.upstream import Upstream
from shared import messages
from shared.messages import CityRequest, Operation, RequestRecord
from shared.topics import CityChannel, city_topic
from tests.hub.web.conftest import GATE_PLACE, Console, logged_in

pytestmark = pytest.mark.broker


@pytest.fixture
def extra_sites(gate_site: str) -> dict[str, dict[str, Any]]:
    return {gate_site: GATE_PLACE}


@pytest.fixture
def hub_sections() -> dict[str, dict[str, Any]]:
    return {"province": {}}


async def _request(up: Upstream, request_id: str, action: Operation = Operation.EVACUATE) -> None:
    now = time.time()
    req = CityRequest(city=up.city, request_id=request_id, action=action, area="gg-suwon",
                      reason="황구지천 범람 우려 — river over the warning level", requested_by="prov-duty",
                      ts=now, not_after=now + 600)
    await up.uplink.deliver(city_topic(up.city, CityChannel.REQ), messages.encode(req))


def _answers(up: Upstream, request_id: str) -> list[RequestRecord]:
    """The city's answers to a request, as its province outbox holds them for the province."""
    records = (up.outbox.decode_row(r) for r in up.outbox.read(1, limit=10_000))
    return [r for r in records if isinstance(r, RequestRecord) and r.request_id == request_id]


def _link(console: Console) -> Upstream:
    assert console.hub.upstream is not None
    return console.hub.upstream


async def test_a_province_request_is_a_banner_and_acts_only_when_an_operator_accepts_it(
        browser: Browser, console: Console, gate: Simulator, gate_site: str) -> None:
    up = _link(console)
    await _request(up, "req-evac-1")
    async with logged_in(browser, console, "vera") as page:
        banner = page.locator("#preq-req-evac-1")
        await expect(banner).to_contain_text("prov-duty")
        await expect(banner.locator("button.preq-review")).to_have_count(0)  # a viewer may look, not decide
    async with logged_in(browser, console, "olive") as page:
        banner = page.locator("#preq-req-evac-1")
        await expect(banner).to_contain_text("gg-suwon")
        assert gate.physics.sign_message == ""  # nothing has moved on the request alone
        await banner.locator("button.preq-review").click()
        dlg = page.locator("dialog.op-dlg")
        await expect(dlg.locator("#op-request")).to_contain_text("황구지천 범람 우려")
        await expect(dlg.locator("#op-plan li")).to_have_count(2)  # the gate's sign and broadcast
        await dlg.locator("#op-reason").fill("confirmed on CCTV")
        await dlg.locator("#op-execute").click()
        await expect(dlg.locator('#op-devices tr[data-state="verified"]')).to_have_count(2, timeout=20_000)
        await dlg.locator("button", has_text="닫기").click()
        await expect(page.locator("#preq-req-evac-1")).to_have_count(0)
    assert gate.physics.broadcast == "evacuate"
    [answer] = [r for r in _answers(up, "req-evac-1") if r.state == "accepted"]
    assert answer.decided_by == "olive"
    assert answer.op_id


async def test_refusing_a_province_request_needs_a_reason_and_moves_nothing(
        browser: Browser, console: Console, gate: Simulator, gate_site: str) -> None:
    up = _link(console)
    await _request(up, "req-evac-2")
    async with logged_in(browser, console, "olive") as page:
        await page.locator("#preq-req-evac-2 button.preq-review").click()
        dlg = page.locator("dialog.op-dlg")
        await dlg.locator("#op-refuse").click()
        await expect(dlg.locator("#op-error")).not_to_be_empty()  # no reason: nothing sent
        await dlg.locator("#op-reason").fill("the river is falling; the trail is already closed")
        await dlg.locator("#op-refuse").click()
        await expect(page.locator("#preq-req-evac-2")).to_have_count(0)
    assert gate.physics.sign_message == ""
    [refused] = [r for r in _answers(up, "req-evac-2") if r.state == "refused"]
    assert (refused.decided_by, refused.why) == ("olive", "the river is falling; the trail is already closed")
