"""A real hub with ONVIF cameras: an edge's reading raises an alarm, the alert goes out, the facing
PTZ camera is moved to the site's preset and its picture rides in the Update; the camera whose
credentials are wrong is reported by the API and delays nothing."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest

from edge.sim import camera as render
from edge.sim import camera_onvif as onvifsim
from hub import receiver
from hub.forward import capread
from hub.forward.capread import CapSchema
from hub.service import running
from shared.messages import SiteState
from tests.conftest import PkiFixture
from tests.fakes.hub_edge import fake_edge
from tests.hub.conftest import ConfigFactory, add_users, api_client
from tests.hub.forward.helpers import SITE, offset
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker


async def test_an_alarm_moves_the_facing_onvif_camera_and_a_refused_camera_is_reported(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str, tmp_path: Path
) -> None:
    at = time.time()
    (tmp_path / "good.password").write_text("cam-pw-0003\n")
    (tmp_path / "bad.password").write_text("not-the-password\n")
    north, east = offset(SITE, 120, 0), offset(SITE, 60, 90)
    async with onvifsim.serve("SW-PTZ-0003", user="jikimi", password="cam-pw-0003", travel_s=0.3,
                              clock=lambda: at) as good, \
            onvifsim.serve("SW-PTZ-0004", user="jikimi", password="cam-pw-0004") as refusing, \
            receiver.serve(schema=CapSchema(), strict=True) as centre:
        cfg = hub_config(
            api={"enabled": True},
            sites={"registry": {site_id: {"area": "gg-suwon", "name": "Gwonseon underpass",
                                          "lat": SITE.lat, "lon": SITE.lon}}},
            forward={"recipients": {"suwon-centre": {"kind": "city_centre", "url": centre.url,
                                                     "initial_backoff_s": 0.0, "max_backoff_s": 0.0}}},
            cctv={"evidence_dir": str(tmp_path / "evidence"), "ptz_settle_s": 0.0, "max_cameras": 2, "cameras": {
                "SW-PTZ-0003": {"lat": north.lat, "lon": north.lon, "onvif_url": good.device_url, "user": "jikimi",
                                "password_file": "good.password",
                                "presets": [{"preset": 1, "heading_deg": 90, "fov_deg": 40},
                                            {"preset": 2, "heading_deg": 180, "fov_deg": 40}]},
                "SW-PTZ-0004": {"lat": east.lat, "lon": east.lon, "onvif_url": refusing.device_url,
                                "user": "jikimi", "password_file": "bad.password",
                                "presets": [{"preset": 4, "heading_deg": 270, "fov_deg": 40}]},
            }},
        )
        async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge:
            await edge.status(SiteState.ONLINE)
            await edge.birth([("barrier-1", "underpass", ("water_depth_cm", "barrier_state", "motor_fault"))])
            await edge.send([edge.reading("barrier-1", "water_depth_cm", 21.0)])
            await centre.wait_for(lambda: {a.msg_type for a in centre.alerts()} >= {"Alert", "Update"}, 30)
            add_users(cfg)
            async with api_client(hub, test_pki.dir / "ca.pem") as c:
                await c.login("vera")
                cameras = {cam["id"]: cam for cam in await (await c.get("/api/cameras")).json()}
        alerts = centre.alerts()
        good_history, refused_history = good.sim.history, refusing.sim.history
    by_type = {a.msg_type: a for a in alerts}
    assert all(a.valid for a in alerts), [a.problems for a in alerts]
    (stored,) = list((tmp_path / "evidence").rglob("*.jpg"))
    picture = stored.read_bytes()
    assert picture == render.render_snapshot("SW-PTZ-0003", at, preset=2, frame=1)  # taken at the site's preset
    update = capread.read(by_type["Update"].body)
    assert {r.digest for info in update.infos for r in info.resources} == {
        hashlib.sha1(picture, usedforsecurity=False).hexdigest()}
    assert (good_history, refused_history) == ([2], [])
    assert cameras["SW-PTZ-0003"]["captures"] == 1
    assert cameras["SW-PTZ-0003"]["failures"] == {}
    assert cameras["SW-PTZ-0004"]["failures"] == {"auth_refused": 1}
    assert cameras["SW-PTZ-0004"]["last_fault"] == "auth_refused"
    assert cameras["SW-PTZ-0004"]["access"] == "onvif"
    assert "not-the-password" not in str(cameras)


async def test_a_camera_that_never_answers_does_not_hold_back_the_alert(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str, tmp_path: Path
) -> None:
    """The camera accepts the connection and stays silent; the Alert goes out while its capture waits."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    (tmp_path / "cam.password").write_text("pw\n")
    east = offset(SITE, 60, 90)
    try:
        async with receiver.serve(schema=CapSchema(), strict=True) as centre:
            cfg = hub_config(
                sites={"registry": {site_id: {"area": "gg-suwon", "name": "Gwonseon underpass",
                                              "lat": SITE.lat, "lon": SITE.lon}}},
                forward={"recipients": {"suwon-centre": {"kind": "city_centre", "url": centre.url,
                                                         "initial_backoff_s": 0.0, "max_backoff_s": 0.0}}},
                cctv={"evidence_dir": str(tmp_path / "evidence"), "timeout_s": 60.0, "cameras": {
                    "SW-PTZ-0005": {"lat": east.lat, "lon": east.lon, "user": "jikimi", "password_file": "cam.password",
                                    "onvif_url": f"http://127.0.0.1:{port}/onvif/device_service",
                                    "presets": [{"preset": 1, "heading_deg": 270, "fov_deg": 40}]}}},
            )
            async with running(cfg), fake_edge(broker, test_pki.files(site_id), site_id) as edge:
                await edge.status(SiteState.ONLINE)
                await edge.birth([("barrier-1", "underpass", ("water_depth_cm", "barrier_state", "motor_fault"))])
                await edge.send([edge.reading("barrier-1", "water_depth_cm", 21.0)])
                await centre.wait_for(lambda: "Alert" in {a.msg_type for a in centre.alerts()}, 30)
                for _ in range(300):  # the capture has started by now, or starts soon: it is not awaited first
                    if held:
                        break
                    await asyncio.sleep(0.05)
                capture_waiting = bool(held) and not any(w.is_closing() for w in held)
                types = [a.msg_type for a in centre.alerts()]
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()
    assert capture_waiting
    assert types == ["Alert"]  # no Update: the camera gave nothing, and the Alert did not wait for it
