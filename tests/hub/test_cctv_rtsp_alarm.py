"""A real hub with a camera whose ONVIF profile has no snapshot URI: an edge's reading raises an
alarm, the alert goes out, and the Update carries one decoded frame of the camera's RTSP stream,
taken at the site's preset, with its digest."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image

from edge.sim import camera as render
from edge.sim import camera_onvif as onvifsim
from edge.sim import camera_rtsp
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


async def test_an_alarm_takes_an_rtsp_frame_from_a_camera_without_a_snapshot_uri(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str, tmp_path: Path
) -> None:
    (tmp_path / "cam.password").write_text("cam-pw-0007\n")
    north = offset(SITE, 120, 0)
    async with onvifsim.serve("SW-PTZ-0007", user="jikimi", password="cam-pw-0007", travel_s=0.3,
                              snapshot_uri=False) as cam, \
            receiver.serve(schema=CapSchema(), strict=True) as centre:
        with camera_rtsp.serve("SW-PTZ-0007", user="jikimi", password="cam-pw-0007",
                               preset=cam.sim.preset_now) as stream:
            cam.sim.stream_uri = stream.url
            cfg = hub_config(
                api={"enabled": True},
                sites={"registry": {site_id: {"area": "gg-suwon", "name": "Gwonseon underpass",
                                              "lat": SITE.lat, "lon": SITE.lon}}},
                forward={"recipients": {"suwon-centre": {"kind": "city_centre", "url": centre.url,
                                                         "initial_backoff_s": 0.0, "max_backoff_s": 0.0}}},
                cctv={"evidence_dir": str(tmp_path / "evidence"), "ptz_settle_s": 0.0, "rtsp_timeout_s": 20.0,
                      "cameras": {"SW-PTZ-0007": {
                          "lat": north.lat, "lon": north.lon, "onvif_url": cam.device_url, "user": "jikimi",
                          "password_file": "cam.password",
                          "presets": [{"preset": 1, "heading_deg": 90, "fov_deg": 40},
                                      {"preset": 2, "heading_deg": 180, "fov_deg": 40}]}}},
            )
            async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge:
                await edge.status(SiteState.ONLINE)
                await edge.birth([("barrier-1", "underpass", ("water_depth_cm", "barrier_state", "motor_fault"))])
                await edge.send([edge.reading("barrier-1", "water_depth_cm", 21.0)])
                await centre.wait_for(lambda: {a.msg_type for a in centre.alerts()} >= {"Alert", "Update"}, 60)
                add_users(cfg)
                async with api_client(hub, test_pki.dir / "ca.pem") as c:
                    await c.login("vera")
                    cameras = {row["id"]: row for row in await (await c.get("/api/cameras")).json()}
            history, streamed = cam.sim.history, stream.frames
        alerts = centre.alerts()
    by_type = {a.msg_type: a for a in alerts}
    assert all(a.valid for a in by_type.values()), [a.problems for a in by_type.values()]
    (stored,) = list((tmp_path / "evidence").rglob("*.jpg"))
    picture = stored.read_bytes()
    assert stored.name == f"{hashlib.sha256(picture).hexdigest()}.jpg"
    frame = Image.open(io.BytesIO(picture))
    assert frame.format == "JPEG"
    assert render.read_preset(frame) == 2  # the stream's frame, after the move to the site's preset
    assert history == [2]
    assert streamed > 0
    update = capread.read(by_type["Update"].body)
    assert {r.digest for info in update.infos for r in info.resources} == {
        hashlib.sha1(picture, usedforsecurity=False).hexdigest()}
    assert cameras["SW-PTZ-0007"]["captures"] == 1
    assert cameras["SW-PTZ-0007"]["failures"] == {}
