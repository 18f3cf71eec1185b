"""The operator console in real headless Chromium against a running hub, a real edge agent and
an underpass simulator: live alarms, acknowledgement, select-before-operate commands, the
two-person reopen, and what a viewer may not do."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, expect

from tests.hub.web.conftest import Console, logged_in

pytestmark = pytest.mark.broker


async def test_a_simulator_alarm_appears_live_and_the_operator_acknowledges_it(browser: Browser,
                                                                               console: Console) -> None:
    """Water at 20 cm in the simulator raises a critical alarm that appears in the list without a
    reload; the operator acknowledges it from the list and the list shows it acknowledged."""
    async with logged_in(browser, console, "olive") as page:
        await expect(page.locator(f'.site-marker[data-site="{console.site}"]')).to_be_visible()
        await page.evaluate("window.__sameDocument = true")
        console.sim.physics.water.depth_cm = 20.0
        row = page.locator(".alarm-row.critical").filter(has_text="세류 지하차도")
        await expect(row).to_be_visible(timeout=15_000)
        await expect(row).to_have_attribute("data-state", "unacknowledged")
        assert await page.evaluate("window.__sameDocument") is True  # no reload happened
        await expect(page.locator(f'.site-marker[data-site="{console.site}"]')).to_have_class(
            "site-marker critical link-normal")
        await row.locator("button.ack").click()
        await expect(row).to_have_attribute("data-state", "acknowledged")


async def test_closing_a_barrier_through_the_confirm_dialog_is_verified(browser: Browser, console: Console) -> None:
    """With water at 20 cm the operator selects "close barrier": the dialog shows the target, the
    live water depth with its age, the rule that fired, the snapshot slot and a countdown; only
    Execute sends; the barrier closes and the dialog shows the command verified."""
    console.sim.physics.water.depth_cm = 20.0
    async with logged_in(browser, console, "olive") as page:
        await page.locator(f'.site-marker[data-site="{console.site}"]').press("Enter")
        await expect(page.locator("#site-title")).to_contain_text("세류 지하차도")
        close = page.locator('#site-controls button[data-action="barrier.close"]')
        await expect(close).to_be_visible()
        await expect(page.locator("#state-barrier-barrier_state")).to_have_attribute("data-value", "open")
        await close.click()
        dlg = page.locator("dialog.cmd-dlg")
        target = dlg.locator("#cmd-target")
        await expect(target).to_contain_text(f"세류 지하차도 ({console.site}) / barrier / 차단기 닫기")
        depth = dlg.locator('tr[data-point="barrier/water_depth_cm"]')
        await expect(depth).to_contain_text("20 cm")
        await expect(depth.locator(".age")).to_have_text(re.compile(r"^\d+ 초$"))  # its age, ticking
        await expect(dlg.locator("#rule-fired")).to_contain_text("closing_depth")
        await expect(dlg.locator(".snapshot")).to_be_visible()
        await expect(dlg.locator(".select-cd .countdown")).to_contain_text("선택 만료까지")
        assert console.sim.physics.barrier.position == 0.0  # nothing sent yet
        await dlg.locator("#cmd-reason").fill("water over the closing depth")
        await dlg.locator("#cmd-execute").click()
        await expect(dlg.locator("#cmd-state")).to_have_attribute("data-state", "verified", timeout=15_000)
        assert console.sim.physics.barrier.limit_closed
        await dlg.locator("#cmd-close").click()
        await expect(page.locator("#state-barrier-barrier_state")).to_have_attribute("data-value", "closed")


async def test_a_reopen_waits_until_a_second_supervisor_approves_from_their_own_session(
    browser: Browser, console: Console
) -> None:
    """Sam asks to reopen a closed barrier over low water: his dialog says it waits for a second
    approver and the barrier stays shut; Sue, in another browser context, approves it from the
    pending list; Sam's dialog then shows the command verified and the barrier is open."""
    console.sim.physics.barrier.position = 1.0
    console.sim.physics.water.depth_cm = 2.0
    async with logged_in(browser, console, "sam") as sam:
        await sam.locator(f'.site-marker[data-site="{console.site}"]').click()
        await expect(sam.locator("#state-barrier-barrier_state")).to_have_attribute("data-value", "closed")
        await sam.locator('#site-controls button[data-action="barrier.open"]').click()
        dlg = sam.locator("dialog.cmd-dlg")
        await dlg.locator("#cmd-reason").fill("water gone, road inspected")
        await dlg.locator("#cmd-execute").click()
        await expect(dlg.locator("#cmd-waiting")).to_have_text("⏳ 두 번째 승인자 대기 중")
        await expect(sam.locator("#approvals-btn")).to_have_count(0)  # not his own to approve
        async with logged_in(browser, console, "sue") as sue:
            await sue.locator("#approvals-btn").click()
            await sue.locator("#commands button.approve").click()
            approve = sue.locator("dialog.approve-dlg")
            await expect(approve).to_contain_text("sam — water gone, road inspected")
            await expect(approve.locator('tr[data-point="barrier/water_depth_cm"]')).to_contain_text("2 cm")
            assert console.sim.physics.barrier.position == 1.0  # still shut before the approval
            await approve.locator("#approve-reason").fill("checked on CCTV")
            await approve.locator("#approve-ok").click()
            await expect(approve.locator("#cmd-state")).to_have_attribute("data-state", "verified", timeout=15_000)
        await expect(dlg.locator("#cmd-state")).to_have_attribute("data-state", "verified")
        await expect(dlg.locator("#cmd-waiting")).to_have_count(0)
        assert console.sim.physics.barrier.limit_open


async def test_a_viewer_cannot_command(browser: Browser, console: Console) -> None:
    """A viewer sees the site and its alarm (and may watch its camera) but no command, acknowledge
    or area buttons, and the hub refuses a command posted from the viewer's session anyway (403)."""
    console.sim.physics.water.depth_cm = 20.0
    async with logged_in(browser, console, "vera") as page:
        await expect(page.locator(".alarm-row.critical")).to_be_visible(timeout=15_000)
        await expect(page.locator("#block-area")).to_have_count(0)
        await expect(page.locator("#evacuate-area")).to_have_count(0)
        # only "open site" and "live video"
        await expect(page.locator(".alarm-row button:not(.alarm-open):not(.live-open)")).to_have_count(0)
        await page.locator(".alarm-row .alarm-open").click()
        await expect(page.locator("#site-controls .view-only")).to_be_visible()
        await expect(page.locator("#site-controls button")).to_have_count(0)
        status = await page.evaluate("""async (site) => {
            const me = await (await fetch("/api/session")).json();
            const r = await fetch("/api/commands", {method: "POST", headers: {"Content-Type": "application/json",
                "X-CSRF-Token": me.csrf}, body: JSON.stringify({site, device: "barrier", action: "barrier.close",
                reason: "trying"})});
            return r.status;
        }""", console.site)
        assert status == 403
    assert console.sim.physics.barrier.position == 0.0


async def test_blocking_an_area_from_the_map_lists_its_devices_and_closes_them(browser: Browser,
                                                                               console: Console) -> None:
    """From the map the operator picks the area and "block": the dialog lists every device the
    block will act on before anything is sent; after Execute the barrier closes and verifies."""
    async with logged_in(browser, console, "olive") as page:
        await expect(page.locator(f'.site-marker[data-site="{console.site}"]')).to_be_visible()
        await page.select_option("#area-select", "gg-suwon")
        await page.click("#block-area")
        dlg = page.locator("dialog.op-dlg")
        await expect(dlg.locator("#op-plan li")).to_have_count(1)
        await expect(dlg.locator("#op-plan li")).to_contain_text(f"({console.site}) / barrier → 차단기 닫기")
        assert console.sim.physics.barrier.position == 0.0
        await dlg.locator("#op-reason").fill("typhoon: close the underpasses")
        await dlg.locator("#op-execute").click()
        await expect(dlg.locator('#op-devices tr[data-state="verified"]')).to_have_count(1, timeout=15_000)
        assert console.sim.physics.barrier.limit_closed


async def test_a_device_gets_only_the_buttons_the_vocabulary_offers(browser: Browser, console: Console) -> None:
    """The console has no action table of its own: the underpass's buttons are exactly what the
    hub's /api/vocabulary offers an underpass (no siren: its profile has none), less the advisory
    forecast.prealert that only the hub's forecast sends."""
    async with logged_in(browser, console, "olive") as page:
        await page.locator(f'.site-marker[data-site="{console.site}"]').press("Enter")
        buttons = page.locator('#site-controls .device[data-device="barrier"] button[data-action]')
        await expect(buttons.first).to_be_visible()
        shown = await buttons.evaluate_all("(bs) => bs.map((b) => b.dataset.action)")
        offered = await page.evaluate("""async () => {
            const v = await (await fetch("/api/vocabulary")).json();
            const advisory = new Set(v.actions.filter((a) => a.advisory).map((a) => a.action));
            return v.kinds.find((k) => k.kind === "underpass").actions.filter((a) => !advisory.has(a));
        }""")
    assert shown == offered == ["barrier.close", "barrier.open", "device.selftest"]
