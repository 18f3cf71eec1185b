"""An operator's workflows in real headless Chromium against the real hub and real agents beside
real simulators (an underpass and a river gate in one area): an evacuate with the sign's message
preset, a sign command offering exactly the vocabulary's presets, a self-test report with its
failure highlighted, and an exercise over the area from start to end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from edge.sim.servers import Simulator
from tests.hub.web.conftest import GATE_PLACE, Console, logged_in

pytestmark = pytest.mark.broker


@pytest.fixture
def extra_sites(gate_site: str) -> dict[str, dict[str, Any]]:
    return {gate_site: GATE_PLACE}


async def _open_site(page: Page, site: str) -> None:
    await page.locator(f'.site-marker[data-site="{site}"]').press("Enter")
    await expect(page.locator("#site-controls .device button[data-action]").first).to_be_visible()


async def test_an_evacuate_sends_the_signs_preset_and_shows_each_devices_state(
    browser: Browser, console: Console, gate: Simulator, gate_site: str
) -> None:
    """Evacuate over Suwon lists, before anything is sent, the gate's sign with the vocabulary's
    evacuate preset and its broadcast value (the underpass has nothing to do in an evacuate);
    after Execute the operation view shows each device verified, and the gate's simulator shows
    the preset text and plays the evacuate broadcast."""
    vocab_text = await _evacuate_arg(browser, console, "sign.show", "text")
    async with logged_in(browser, console, "olive") as page:
        await expect(page.locator(f'.site-marker[data-site="{gate_site}"]')).to_be_visible()
        await page.select_option("#area-select", "gg-suwon")
        await page.click("#evacuate-area")
        dlg = page.locator("dialog.op-dlg")
        plan = dlg.locator("#op-plan li")
        await expect(plan).to_have_count(2)
        await expect(dlg.locator('#op-plan li[data-action="sign.show"]')).to_contain_text(
            f"({gate_site}) / gate → 전광판 표시 · 표시 문구: “{vocab_text}”")
        await expect(dlg.locator('#op-plan li[data-action="broadcast.play"]')).to_contain_text("방송 내용: 대피")
        assert gate.physics.sign_message == ""  # nothing sent yet
        await dlg.locator("#op-reason").fill("river over the warning level")
        await dlg.locator("#op-execute").click()
        rows = dlg.locator("#op-devices tbody tr")
        await expect(rows).to_have_count(2)
        await expect(dlg.locator('#op-devices tr[data-state="verified"]')).to_have_count(2, timeout=20_000)
        await expect(dlg.locator('#op-counts [data-state="verified"]')).to_have_attribute("data-n", "2")
        assert gate.physics.sign_message == vocab_text
        assert gate.physics.broadcast == "evacuate"


async def test_a_sign_command_offers_exactly_the_vocabularys_presets(
    browser: Browser, console: Console, gate: Simulator, gate_site: str
) -> None:
    """The gate's "show sign" dialog offers the vocabulary's sign texts and nothing else (the page
    keeps no list of its own); the operator picks one, executes, and the sign shows it."""
    async with logged_in(browser, console, "olive") as page:
        await _open_site(page, gate_site)
        await page.locator('#site-controls button[data-action="sign.show"]').click()
        dlg = page.locator("dialog.cmd-dlg")
        offered = await dlg.locator("#cmd-param-text option").evaluate_all("(os) => os.map((o) => o.value)")
        choices = await page.evaluate("""async () => {
            const v = await (await fetch("/api/vocabulary")).json();
            return v.actions.find((a) => a.action === "sign.show").params.find((p) => p.name === "text").choices;
        }""")
        assert offered == choices
        assert len(choices) > 1
        pick = next(c for c in choices if c and c != gate.physics.sign_message)
        await dlg.locator("#cmd-param-text").select_option(pick)
        await dlg.locator("#cmd-reason").fill("trail closed for the storm")
        await dlg.locator("#cmd-execute").click()
        await expect(dlg.locator("#cmd-state")).to_have_attribute("data-state", "verified", timeout=15_000)
    assert gate.physics.sign_message == pick


async def test_a_self_test_shows_the_per_point_report_and_highlights_a_failure(
    browser: Browser, console: Console
) -> None:
    """A self-test of the healthy underpass is verified with one good row per point; with the
    travel sensor reading out of range, the next self-test fails and that point's row, and only
    it, is marked failed with why."""
    async with logged_in(browser, console, "olive") as page:
        await _open_site(page, console.site)
        await page.locator('#site-controls button[data-action="device.selftest"]').click()
        dlg = page.locator("dialog.cmd-dlg")
        await dlg.locator("#cmd-reason").fill("weekly check")
        await dlg.locator("#cmd-execute").click()
        await expect(dlg.locator("#cmd-state")).to_have_attribute("data-state", "verified", timeout=15_000)
        report = dlg.locator("#cmd-report tbody tr")
        polled = [p.name for p in console.sim.device.profile.polled]
        await expect(report).to_have_count(len(polled))
        await expect(dlg.locator("#cmd-report tr.fail")).to_have_count(0)
        await dlg.locator("#cmd-close").click()

        console.sim.physics.overrides["travel_pct"] = 150
        await page.locator('#site-controls button[data-action="device.selftest"]').click()
        dlg = page.locator("dialog.cmd-dlg")
        await dlg.locator("#cmd-reason").fill("travel looks wrong")
        await dlg.locator("#cmd-execute").click()
        await expect(dlg.locator("#cmd-state")).to_have_attribute("data-state", "failed", timeout=15_000)
        bad = dlg.locator("#cmd-report tr.fail")
        await expect(bad).to_have_count(1)
        await expect(bad).to_have_attribute("data-point", "travel_pct")
        await expect(bad).to_contain_text("out of range 0..100")
        await expect(dlg.locator("#cmd-report tbody tr").first).to_have_attribute("data-point", "travel_pct")


async def test_an_exercise_is_a_banner_for_everyone_and_marks_its_dry_run_commands(
    browser: Browser, console: Console
) -> None:
    """Sam (supervisor) starts an exercise over Suwon: the banner appears live in Olive's console
    too; Olive's close-barrier dialog offers "send as exercise" (unticked), she ticks it, and the
    close is verified as a dry run while the barrier stays open; the command is marked as an
    exercise in the commands view; Sam ends it and the banner leaves both consoles."""
    async with logged_in(browser, console, "sam") as sam, logged_in(browser, console, "olive") as olive:
        await expect(olive.locator(".exercise-banner")).to_have_count(0)
        await expect(olive.locator("#exercise-start")).to_have_count(0)  # an operator cannot start one
        await sam.select_option("#area-select", "gg-suwon")
        await sam.click("#exercise-start")
        await sam.locator("#ex-reason").fill("annual flood drill")
        await sam.locator("#ex-ok").click()
        banner = olive.locator('.exercise-banner[data-area="gg-suwon"]')
        await expect(banner).to_be_visible(timeout=10_000)
        await expect(banner).to_contain_text("annual flood drill")
        await expect(banner).to_contain_text("sam")
        await expect(banner.locator(".exercise-end")).to_have_count(0)  # only a supervisor ends it

        await _open_site(olive, console.site)
        await olive.locator('#site-controls button[data-action="barrier.close"]').click()
        dlg = olive.locator("dialog.cmd-dlg")
        box = dlg.locator("#send-exercise")
        await expect(box).not_to_be_checked()
        await box.check()
        await dlg.locator("#cmd-reason").fill("drill: close the underpass")
        await dlg.locator("#cmd-execute").click()
        await expect(dlg.locator("#cmd-state")).to_have_attribute("data-state", "verified", timeout=15_000)
        await expect(dlg.locator("#cmd-state .chip.exercise")).to_be_visible()
        await asyncio.sleep(1.5)  # a real close would have moved the barrier by now (travel 1 s)
        assert console.sim.physics.barrier.position == 0.0
        assert console.sim.device.writes == []
        await dlg.locator("#cmd-close").click()
        await olive.click("#tab-commands")
        await expect(olive.locator("#commands tbody tr").first.locator(".chip.exercise")).to_be_visible()

        await sam.locator('.exercise-banner[data-area="gg-suwon"] .exercise-end').click()
        await expect(banner).to_have_count(0, timeout=10_000)
        await expect(sam.locator(".exercise-banner")).to_have_count(0)


async def _evacuate_arg(browser: Browser, console: Console, action: str, name: str) -> str:
    """What the hub's vocabulary says an evacuate sends a river gate for ``action``'s ``name``."""
    async with logged_in(browser, console, "vera") as page:
        value: str = await page.evaluate("""async ([action, name]) => {
            const v = await (await fetch("/api/vocabulary")).json();
            const step = v.kinds.find((k) => k.kind === "river_gate").evacuate.find((s) => s.action === action);
            return step.args.find((a) => a.name === name).value;
        }""", [action, name])
    return value


async def test_a_barrier_that_jams_at_the_edge_is_a_critical_alarm_and_an_event_of_the_site(
    browser: Browser, console: Console
) -> None:
    """The water passes the edge's own closing depth and the barrier jams: the edge's failed local
    close arrives as a critical alarm from the edge in the list, and the site view's recent
    events list the failure with that priority."""
    console.sim.physics.barrier.jammed = True
    async with logged_in(browser, console, "olive") as page:
        await _open_site(page, console.site)
        console.sim.physics.water.depth_cm = 45.0  # over the edge's closing depth (40 cm here)
        row = page.locator('#alarms .alarm-row.critical[data-source="edge"]')
        await expect(row).to_be_visible(timeout=30_000)
        await expect(row).to_contain_text("현장 장치")
        failed = page.locator('#site-events tr[data-kind="local.barrier.close.failed"]')
        await expect(failed).to_be_visible(timeout=10_000)
        await expect(failed.locator(".prio.critical")).to_be_visible()
        await expect(failed.locator(".chip.late")).to_have_count(0)  # it came live
