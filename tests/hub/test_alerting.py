"""A real hub forwards its alarms: an edge's reading raises an alarm, the city centre gets a
valid CAP Alert, then an Update carrying the facing camera's picture (digest = stored
evidence), and a Cancel when the water falls."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edge.sim import camera as camsim
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


async def test_alarm_is_forwarded_with_camera_evidence_and_cancelled(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str, tmp_path: Path
) -> None:
    schema = CapSchema()
    cam_at = offset(SITE, 80, 90)  # 80 m east of the site, looking west at it
    async with camsim.serve("SW-CCTV-0012") as cam, receiver.serve(schema=schema, strict=True) as centre:
        cfg = hub_config(
            api={"enabled": True},
            sites={"registry": {site_id: {"area": "gg-suwon", "name": "Gwonseon underpass",
                                          "lat": SITE.lat, "lon": SITE.lon}}},
            forward={"recipients": {"suwon-centre": {"kind": "city_centre", "url": centre.url,
                                                     "initial_backoff_s": 0.0, "max_backoff_s": 0.0}}},
            cctv={"evidence_dir": str(tmp_path / "evidence"), "ptz_settle_s": 0.0,
                  "cameras": {"SW-CCTV-0012": {"lat": cam_at.lat, "lon": cam_at.lon, "heading_deg": 265,
                                               "fov_deg": 60, "range_m": 150, "snapshot_url": cam.snapshot_url}}},
        )
        async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge:
            await edge.status(SiteState.ONLINE)
            await edge.birth([("barrier-1", "underpass", ("water_depth_cm", "barrier_state", "motor_fault"))])
            await edge.send([edge.reading("barrier-1", "water_depth_cm", 21.0)])
            await centre.wait_for(lambda: {a.msg_type for a in centre.alerts()} >= {"Alert", "Update"}, 30)
            await edge.send([edge.reading("barrier-1", "water_depth_cm", 1.0)])
            await centre.wait_for(lambda: "Cancel" in {a.msg_type for a in centre.alerts()}, 30)
            evidence_files = list((tmp_path / "evidence").rglob("*.jpg"))
            assert hub.engine.alerts is not None
            assert hub.engine.alerts.unplaced == 0
            add_users(cfg)
            async with api_client(hub, test_pki.dir / "ca.pem") as c, \
                    api_client(hub, test_pki.dir / "ca.pem") as sup:
                await c.login("vera")  # a viewer may look, and the look is audited
                (alarm,) = await (await c.get(f"/api/alarms?site={site_id}")).json()
                detail = await (await c.get(f"/api/alarms/{alarm['id']}")).json()
                (ev,) = detail["evidence"]
                picture = await (await c.get(f"/api/evidence/{ev['id']}")).read()
                forwarding = await (await c.get("/api/forwarding")).json()
                await sup.login("sam")
                audit = await (await sup.get("/api/audit")).json()
        alerts = centre.alerts()
        frames = cam.sim.frames
    by_type = {a.msg_type: a for a in alerts}
    assert all(a.valid for a in alerts), [a.problems for a in alerts]
    assert {by_type["Alert"].event_id} == {by_type["Update"].event_id} == {by_type["Cancel"].event_id}
    (stored,) = evidence_files
    update = capread.read(by_type["Update"].body)
    digests = {r.digest for info in update.infos for r in info.resources}
    assert digests == {hashlib.sha1(stored.read_bytes(), usedforsecurity=False).hexdigest()}
    assert frames == 1
    assert hashlib.sha256(picture).hexdigest() == ev["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert {d["state"] for d in forwarding["deliveries"]} == {"acknowledged"}
    assert len(forwarding["deliveries"]) == 3  # Alert, Update, Cancel to the one city centre
    views = [r for r in audit if r["action"] == "cctv.evidence.view"]
    assert [(r["actor"], r["target"]) for r in views] == [("vera", f"evidence:{ev['id']}")]


async def test_evacuate_goes_out_as_a_cap_alert_with_response_evacuate(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, site_id: str
) -> None:
    """An operator's evacuate of an area becomes one CAP Alert (responseType Evacuate) whose area
    covers the area's registered sites."""
    schema = CapSchema()
    async with receiver.serve(schema=schema, strict=True) as centre:
        cfg = hub_config(
            api={"enabled": True},
            sites={"registry": {site_id: {"area": "gg-suwon", "name": "Gwonseon", "lat": SITE.lat, "lon": SITE.lon}}},
            forward={"recipients": {"suwon-centre": {"kind": "city_centre", "url": centre.url,
                                                     "initial_backoff_s": 0.0, "max_backoff_s": 0.0}}},
        )
        async with running(cfg) as hub, fake_edge(broker, test_pki.files(site_id), site_id) as edge:
            await edge.status(SiteState.ONLINE)
            await edge.birth([("alarm-1", "flood_alarm", ("water_depth_cm", "alarm_active", "siren", "battery_v"))])
            await edge.send([edge.reading("alarm-1", "water_depth_cm", 1.0)])
            await edge.wait_acked(edge.next_seq - 1)
            add_users(cfg)
            async with api_client(hub, test_pki.dir / "ca.pem") as c:
                await c.login("olive")
                r = await c.post("/api/operations", {"kind": "evacuate", "area": "gg-suwon",
                                                     "reason": "river over the warning level"})
                assert r.status == 202, await r.text()
            await centre.wait_for(lambda: bool(centre.alerts()), 30)
        (alert,) = centre.alerts()
    assert alert.valid, alert.problems
    assert alert.msg_type == "Alert"
    doc = capread.read(alert.body)
    assert {rt for info in doc.infos for rt in info.response_types} == {"Evacuate"}
