"""A view link sent with an alarm's alert, end to end: a real hub with a real camera and two CAP
receivers raises an alarm from an edge's reading; the operator makes a link for 112 with the
alarm; 112's receiver gets a signed, schema-valid Update carrying the link as a resource, the city
centre gets nothing of it, and the link in the alert opens the camera without a login."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from hub import receiver
from hub.forward import capread
from hub.forward.capread import CapSchema
from hub.service import running
from shared.messages import SiteState
from tests.conftest import PkiFixture
from tests.fakes.hub_edge import fake_edge
from tests.hub.conftest import ConfigFactory, add_users, api_client
from tests.hub.forward.helpers import SITE, offset
from tests.hub.live_cameras import real_camera
from tests.hub.test_liveview import _holder
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker


async def test_a_link_made_for_an_alarm_reaches_112_in_its_alert_and_opens_the_camera(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str, tmp_path: Path
) -> None:
    north = offset(SITE, 60, 0)
    fast = {"initial_backoff_s": 0.0, "max_backoff_s": 0.0}
    async with real_camera("SW-CAM-A") as cam, receiver.serve(schema=CapSchema(), strict=True) as centre, \
            receiver.serve(schema=CapSchema(), strict=True) as police:
        cfg = hub_config(
            api={"enabled": True},
            sites={"registry": {site_id: {"area": "gg-suwon", "name": "Gwonseon underpass",
                                          "lat": SITE.lat, "lon": SITE.lon}}},
            forward={"recipients": {"suwon-centre": {"kind": "city_centre", "url": centre.url, **fast},
                                    "police-112": {"kind": "police_112", "url": police.url, **fast}}},
            cctv={"evidence_dir": str(tmp_path / "evidence"),
                  "cameras": {"SW-CAM-A": cam.entry(tmp_path / "a.password", north.lat, north.lon, 180.0)}},
        )
        add_users(cfg)
        async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge:
            await edge.status(SiteState.ONLINE)
            await edge.birth([("barrier-1", "underpass", ("water_depth_cm", "barrier_state", "motor_fault"))])
            await edge.send([edge.reading("barrier-1", "water_depth_cm", 21.0)])
            await police.wait_for(lambda: "Alert" in {a.msg_type for a in police.alerts()}, 30)
            async with api_client(hub, test_pki.dir / "ca.pem") as c:
                await c.login("olive")
                alarm_id = (await (await c.get("/api/alarms")).json())[0]["id"]
                unknown = await c.post("/api/camera-links", {"camera": "SW-CAM-A", "recipient": "nobody",
                                                             "alarm": alarm_id})
                assert unknown.status == 422  # not a forwarding recipient
                no_alarm = await c.post("/api/camera-links", {"camera": "SW-CAM-A", "recipient": "police-112",
                                                              "alarm": 999_999})
                assert no_alarm.status == 404
                made = await c.post("/api/camera-links", {"camera": "SW-CAM-A", "recipient": "police-112",
                                                          "alarm": alarm_id})
                assert made.status == 201, await made.text()
                link = await made.json()
                assert link["alert"]
                # the refused attempts left no link behind
                assert [x["id"] for x in await (await c.get("/api/camera-links")).json()] == [link["id"]]

            def carried() -> list[str]:
                return [r.uri or "" for a in police.alerts() if a.identifier == link["alert"]
                        for info in capread.read(a.body).infos for r in info.resources if r.mime == "text/html"]

            await police.wait_for(lambda: bool(carried()), 30)
            assert set(carried()) == {link["url"]}
            mine = [a for a in police.alerts() if a.identifier == link["alert"]]
            assert [a.msg_type for a in mine] == ["Update"]
            assert all(a.valid for a in mine)
            assert all(link["url"].encode() not in a.body for a in centre.alerts())
            assert link["alert"] not in {a.identifier for a in centre.alerts()}
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            try:
                async with _holder(hub) as holder:
                    path = "/live/" + str(link["url"]).rsplit("/live/", 1)[1]
                    opened = await holder.post(path + "/offer", json={"sdp": pc.localDescription.sdp})
                    assert opened.status == 200
            finally:
                await pc.close()
