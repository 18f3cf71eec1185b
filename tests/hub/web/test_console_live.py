"""Live camera video in real headless Chromium: the alarm dialog and the command dialog play the
linked camera (a simulated ONVIF camera streaming H.264 over RTSP) through the hub's WebRTC
answer, each view audited; a 112 view link plays without a login and refuses once revoked.

The camera's preset band carries its clock here (tests/hub/live_cameras.py), so the test reads
from a frame drawn in the browser when the camera drew it: that is the glass-to-glass delay. The
startup time (offer begun → first frame shown) is read from the page. Both go to
test-artifacts/liveview.json and are printed (``-s``); they are reported, not asserted."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.async_api import Browser, Page, expect

from edge.sim.camera import read_preset
from hub.service import Hub
from tests.hub.live_cameras import CLOCK_MOD, RealCamera, centiseconds, real_camera
from tests.hub.web.conftest import ARTIFACTS, SURWON_UNDERPASS, VIEWPORT, Console, logged_in, until

pytestmark = pytest.mark.broker

CAMERA = "SW-CAM-LIVE"

GRAB = """(video) => {
  const c = document.createElement("canvas");
  c.width = video.videoWidth; c.height = video.videoHeight;
  const x = c.getContext("2d");
  x.drawImage(video, 0, 0);
  const now = Date.now();
  const d = x.getImageData(0, 0, c.width, c.height).data;
  let sum = 0, sq = 0;
  const n = d.length / 4;
  for (let i = 0; i < d.length; i += 4) { const g = (d[i] + d[i + 1] + d[i + 2]) / 3; sum += g; sq += g * g; }
  const mean = sum / n;
  return { now, w: c.width, h: c.height, mean, std: Math.sqrt(Math.max(0, sq / n - mean * mean)),
           png: c.toDataURL("image/png") };
}"""


@pytest.fixture
async def live_camera() -> AsyncIterator[RealCamera]:
    async with real_camera(CAMERA, preset=centiseconds) as cam:
        yield cam


@pytest.fixture
def hub_sections(live_camera: RealCamera, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """One camera 30 m north of the Seryu underpass, looking south at it."""
    lat, lon = float(str(SURWON_UNDERPASS["lat"])), float(str(SURWON_UNDERPASS["lon"]))
    entry = live_camera.entry(tmp_path / "camera.password", lat + 0.0003, lon, 180.0)
    return {"cctv": {"evidence_dir": str(tmp_path / "evidence"), "cameras": {CAMERA: entry}},
            "live_view": {"max_viewers": 4}}


def audit(hub: Hub, prefix: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    conn = sqlite3.connect(hub.cfg.db_path)
    try:
        rows = conn.execute("SELECT actor, action, target, detail FROM audit WHERE action LIKE ? ORDER BY id",
                            (prefix + "%",)).fetchall()
    finally:
        conn.close()
    return [(a, b, c, json.loads(d)) for a, b, c, d in rows]


async def grab(page: Page, selector: str) -> dict[str, Any]:
    got: dict[str, Any] = await page.locator(selector).evaluate(GRAB)
    return got


def glass_to_glass_ms(frame: dict[str, Any]) -> float:
    """The browser's clock when it drew the frame, less the camera's clock in the frame's band."""
    png = base64.b64decode(str(frame["png"]).split(",", 1)[1])
    drawn_cs = read_preset(Image.open(io.BytesIO(png)))
    assert drawn_cs is not None
    now_cs = int(frame["now"] / 10) % CLOCK_MOD
    return ((now_cs - drawn_cs) % CLOCK_MOD) * 10.0


def report(name: str, value: object) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "liveview.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = value
    path.write_text(json.dumps(data, indent=2))
    print(f"liveview {name}: {value}")


async def test_the_alarm_dialog_plays_the_linked_cameras_live_video_and_the_view_is_audited(
        browser: Browser, console: Console) -> None:
    """Water at 20 cm raises an alarm; its dialog plays the camera that sees the site: a frame
    drawn from the <video> is a real picture (not blank) and carries the camera's band; the view's
    start and, when the dialog closes, its stop are audited with the operator and the camera."""
    async with logged_in(browser, console, "olive") as page:
        console.sim.physics.water.depth_cm = 20.0
        row = page.locator(".alarm-row.critical").filter(has_text="세류 지하차도")
        await expect(row).to_be_visible(timeout=15_000)
        await row.locator("button.live-open").click()
        dlg = page.locator("dialog.alarm-dlg")
        video = dlg.locator("video.live-video")
        await expect(video).to_have_attribute("data-playing", "true", timeout=20_000)
        await expect(dlg.locator(".live-camera")).to_have_text(CAMERA)
        frame = await grab(page, "dialog.alarm-dlg video.live-video")
        assert (frame["w"], frame["h"]) == (640, 360)
        assert frame["std"] > 10
        assert 5 < frame["mean"] < 250
        startup_ms = int(await video.get_attribute("data-startup-ms") or "0")
        delays = []
        for _ in range(10):
            await page.wait_for_timeout(150)
            delays.append(glass_to_glass_ms(await grab(page, "dialog.alarm-dlg video.live-video")))
        report("alarm_dialog_startup_ms", startup_ms)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "alarm-dialog-live.png"))
        report("glass_to_glass_ms", {"median": statistics.median(delays), "max": max(delays), "samples": delays})
        starts = audit(console.hub, "cctv.live.start")
        assert [(a, t) for a, _x, t, _d in starts] == [("olive", f"camera:{CAMERA}")]
        await dlg.locator("#alarm-close").click()
        await until(lambda: len(audit(console.hub, "cctv.live.stop")) == 1, what="the view's stop audited")
        stop = audit(console.hub, "cctv.live.stop")[0]
        assert (stop[0], stop[2], stop[3]["view"]) == ("olive", f"camera:{CAMERA}", starts[0][3]["view"])


async def test_the_command_dialog_plays_the_camera_too(browser: Browser, console: Console) -> None:
    """The close-barrier confirm dialog plays the site's camera beside its snapshot slot; a second
    start (a warm camera stream) is timed as well."""
    console.sim.physics.water.depth_cm = 20.0
    async with logged_in(browser, console, "olive") as page:
        await page.locator(f'.site-marker[data-site="{console.site}"]').click()
        await page.locator('#site-controls button[data-action="barrier.close"]').click()
        dlg = page.locator("dialog.cmd-dlg")
        video = dlg.locator("video.live-video")
        await expect(video).to_have_attribute("data-playing", "true", timeout=20_000)
        frame = await grab(page, "dialog.cmd-dlg video.live-video")
        assert frame["std"] > 10
        report("command_dialog_startup_ms", int(await video.get_attribute("data-startup-ms") or "0"))
        await dlg.locator("#cmd-close").click()
        await until(lambda: len(audit(console.hub, "cctv.live.stop")) == 1, what="the view's stop audited")


async def test_a_112_link_plays_without_login_and_refuses_once_revoked(browser: Browser, console: Console) -> None:
    """Olive makes a link for police-112 in the alarm dialog; a browser with no session opens it
    and sees the camera live (a real picture); each use is audited as the recipient; after Olive
    revokes it in the dialog's list of open links, the page says it is refused and shows no video."""
    async with logged_in(browser, console, "olive") as page:
        console.sim.physics.water.depth_cm = 20.0
        row = page.locator(".alarm-row.critical").filter(has_text="세류 지하차도")
        await expect(row).to_be_visible(timeout=15_000)
        await row.locator("button.live-open").click()
        dlg = page.locator("dialog.alarm-dlg")
        await expect(dlg.locator("video.live-video")).to_have_attribute("data-playing", "true", timeout=20_000)
        await dlg.locator("details.share summary").click()
        await dlg.locator("#link-recipient").fill("police-112")
        await dlg.locator("#link-make").click()
        url = await dlg.locator("#link-url").input_value(timeout=10_000)
        await dlg.locator("#alarm-close").click()
    assert "/live/" in url
    ctx = await browser.new_context(viewport=VIEWPORT, ignore_https_errors=True, locale="ko-KR")
    try:
        officer = await ctx.new_page()
        await officer.goto(url)
        video = officer.locator("#link-video")
        await expect(video).to_have_attribute("data-playing", "true", timeout=20_000)
        frame = await grab(officer, "#link-video")
        assert frame["std"] > 10
        report("link_page_startup_ms", int(await video.get_attribute("data-startup-ms") or "0"))
        uses = audit(console.hub, "cctv.link.use")
        assert len(uses) == 1
        assert uses[0][0].endswith(":police-112")
        assert uses[0][3]["camera"] == CAMERA
        link_id = int(uses[0][2].split(":")[1])
        async with logged_in(browser, console, "olive") as page:  # Olive revokes it from the dialog
            row = page.locator(".alarm-row.critical").filter(has_text="세류 지하차도")
            await row.locator("button.live-open").click()
            dlg = page.locator("dialog.alarm-dlg")
            await expect(dlg.locator("video.live-video")).to_have_attribute("data-playing", "true", timeout=20_000)
            await dlg.locator("details.share summary").click()
            item = dlg.locator(f'#link-list li[data-link="{link_id}"]')
            await expect(item).to_contain_text("police-112")
            await item.locator("button.link-revoke").click()
            await expect(item).to_have_count(0)
            await dlg.locator("#alarm-close").click()
        await officer.reload()
        await expect(officer.locator("#link-state")).to_have_attribute("data-state", "refused", timeout=10_000)
        await expect(officer.locator("#link-state")).to_contain_text("revoked")
        assert await officer.locator("#link-video").is_hidden()
    finally:
        await ctx.close()
    actions = [(a.endswith(":police-112"), act) for a, act, _t, _d in audit(console.hub, "cctv.")
               if act.startswith(("cctv.link", "cctv.live")) and a.startswith("link:")]
    assert actions == [(True, "cctv.link.use"), (True, "cctv.live.start"), (True, "cctv.live.stop"),
                       (True, "cctv.link.refused")]
