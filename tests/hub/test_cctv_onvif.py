"""ONVIF cameras: an alarm's capture moves the nearest facing camera to the site's preset and stores
what it then shows; camera faults are counted per camera by kind; the config keeps passwords out."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from edge.sim import camera as render
from edge.sim import camera_onvif as onvifsim
from hub import cctv
from hub.cctv import CctvLinker
from hub.cctv_geo import Camera, CctvConfig, OnvifAccess, View
from hub.cctv_onvif import FaultKind
from hub.forward.tx import LocalWriter
from shared.errors import ConfigError
from tests.hub.forward.helpers import SITE, FakeAudit, offset

USER, PASSWORD = "jikimi", "cam-pw-0003"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def ptz_north(device_url: str, *, password: str = PASSWORD, cam_id: str = "SW-PTZ-0003",
              presets: tuple[View, ...] = (View(90, 40, 1), View(180, 40, 2))) -> Camera:
    """A PTZ camera 120 m north of the site: its preset 2 looks south, at the site."""
    return Camera(cam_id, offset(SITE, 120, 0), presets, "", onvif=OnvifAccess(device_url, USER, password))


async def test_a_capture_moves_the_nearest_facing_camera_to_the_sites_preset_and_stores_that_picture(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    at = time.time()  # the cameras' clock stands still, so their pictures can be rendered again here
    audit = FakeAudit()
    async with onvifsim.serve("SW-PTZ-0003", user=USER, password=PASSWORD, travel_s=0.4, clock=lambda: at) as ptz, \
            onvifsim.serve("SW-PTZ-0009", user=USER, password=PASSWORD, clock=lambda: at) as far, \
            LocalWriter.open(tmp_path / "hub.db", audit) as db:
        cameras = (ptz_north(ptz.device_url),
                   Camera("SW-PTZ-0009", offset(SITE, 180, 90), (View(270, 40, 1), View(0, 40, 3)), "",
                          onvif=OnvifAccess(far.device_url, USER, PASSWORD)),
                   Camera("SW-PTZ-0010", offset(SITE, 100, 180), (View(180, 40, 1),), "",  # near, looking away
                          onvif=OnvifAccess("http://127.0.0.1:9/onvif/device_service", USER, PASSWORD)))
        cfg = CctvConfig(cameras=cameras, evidence_dir=tmp_path / "evidence", max_cameras=1, ptz_settle_s=0.0)
        linker = CctvLinker(cfg, db, session)
        cap = await linker.capture(SITE, "alarm:7")
        history, preset, far_frames = ptz.sim.history, ptz.sim.preset, far.sim.frames
    assert [c.camera.id for c in cap.choices] == ["SW-PTZ-0003"]
    assert cap.failures == ()
    (ev,) = cap.evidence
    assert (history, preset, ev.preset) == ([2], 2, 2)
    stored = (cfg.evidence_dir / ev.path).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == ev.sha256
    # The picture shows preset 2: the hub waited for the move to end before taking it.
    assert stored == render.render_snapshot("SW-PTZ-0003", at, preset=2, frame=1)
    assert far_frames == 0
    assert linker.health["SW-PTZ-0003"].captures == 1
    assert linker.health["SW-PTZ-0010"].failures == {}
    assert audit.actions("cctv.") == ["cctv.capture"]


async def test_camera_faults_are_reported_by_kind_and_the_other_cameras_still_count(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with onvifsim.serve("good", user=USER, password=PASSWORD, travel_s=0.0) as good, \
            onvifsim.serve("slow", user=USER, password=PASSWORD, travel_s=30.0) as slow, \
            LocalWriter.open(tmp_path / "hub.db", FakeAudit()) as db:
        cameras = (
            ptz_north(good.device_url, password="Wr0ng-Pw-99", cam_id="bad-password"),
            ptz_north(good.device_url, cam_id="no-preset-7", presets=(View(180, 40, 7),)),
            ptz_north("http://127.0.0.1:9/onvif/device_service", cam_id="unreachable"),
            ptz_north(slow.device_url, cam_id="still-moving"),
            Camera("no-profile", offset(SITE, 120, 0), (View(180, 40, 2),), "",
                   onvif=OnvifAccess(good.device_url, USER, PASSWORD, profile="night")),
            ptz_north(good.device_url, cam_id="good"),
        )
        cfg = CctvConfig(cameras=cameras, evidence_dir=tmp_path / "evidence", max_cameras=6, timeout_s=2.0,
                         ptz_timeout_s=0.5)
        linker = CctvLinker(cfg, db, session)
        cap = await linker.capture(SITE, "alarm:8")
        good_history = good.sim.history
    assert [e.camera_id for e in cap.evidence] == ["good"]
    assert sorted(cam for cam, _ in cap.failures) == ["bad-password", "no-preset-7", "no-profile", "still-moving",
                                                      "unreachable"]
    kinds = {cam: dict(h.failures) for cam, h in linker.health.items()}
    assert kinds == {"bad-password": {FaultKind.AUTH_REFUSED: 1}, "no-preset-7": {FaultKind.PRESET_MISSING: 1},
                     "unreachable": {FaultKind.UNREACHABLE: 1}, "still-moving": {FaultKind.PTZ_TIMEOUT: 1},
                     "no-profile": {FaultKind.PROFILE_MISSING: 1}, "good": {}}
    assert linker.health["bad-password"].last_fault == FaultKind.AUTH_REFUSED
    assert "Wr0ng-Pw-99" not in linker.health["bad-password"].last_error  # no password in the error
    assert good_history == [2]  # the camera whose credentials were wrong moved nothing


# --- config ---------------------------------------------------------------------------------------


def onvif_cam(**kw: object) -> dict[str, object]:
    return {"lat": 37.26, "lon": 127.03, "onvif_url": "http://10.20.0.7/onvif/device_service", "user": "jikimi",
            "presets": [{"preset": 1, "heading_deg": 90, "fov_deg": 50}], **kw}


def test_an_onvif_camera_reads_its_password_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "hub.toml"
    (tmp_path / "cam.password").write_text("from-file\n")
    monkeypatch.setenv("JIKIMI_TEST_CAM_PW", "from-env")
    cfg = cctv.parse_config({"cameras": {"A": onvif_cam(password_file="cam.password", profile="p2"),
                                         "B": onvif_cam(password_env="JIKIMI_TEST_CAM_PW")}}, f)
    a, b = cfg.cameras
    assert a.onvif == OnvifAccess("http://10.20.0.7/onvif/device_service", "jikimi", "from-file", "p2")
    assert (b.onvif is not None and b.onvif.password) == "from-env"
    assert a.views == (View(90, 50, 1),)
    assert a.is_ptz
    assert "from-file" not in repr(a)  # a password never reaches a log line through repr


@pytest.mark.parametrize(("camera", "key", "problem"), [
    (onvif_cam(), "password_file", "exactly one"),
    (onvif_cam(password_file="a", password_env="B"), "password_file", "exactly one"),
    (onvif_cam(password_file="missing.password"), "password_file", "cannot read"),
    (onvif_cam(password_file="empty.password"), "password_file", "is empty"),
    (onvif_cam(password_env="JIKIMI_TEST_NOT_SET"), "password_env", "not set"),
    (onvif_cam(password_env="X", onvif_url="http://10.20.0.7/cgi-bin/onvif"), "onvif_url", "/onvif/device_service"),
    (onvif_cam(password_env="X", onvif_url="rtsp://10.20.0.7/onvif/device_service"), "onvif_url", "http"),
    (onvif_cam(password_env="X", user=""), "user", "empty"),
    (onvif_cam(password_env="X", snapshot_url="http://10.20.0.7/s.jpg"), "snapshot_url", "ONVIF"),
    (onvif_cam(password_env="X", password="in-the-config"), "password", "unknown key"),
    (onvif_cam(password_env="X", presets=[]), "presets", "at least one preset"),
], ids=["no-password", "two-passwords", "missing-file", "empty-file", "env-unset", "wrong-path", "not-http",
        "empty-user", "snapshot-url-too", "password-inline", "empty-presets"])
def test_onvif_camera_config_errors_name_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 camera: dict[str, object], key: str, problem: str) -> None:
    (tmp_path / "empty.password").write_text("\n")
    monkeypatch.setenv("X", "pw")
    monkeypatch.delenv("JIKIMI_TEST_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match=problem) as caught:
        cctv.parse_config({"cameras": {"SW-ONVIF-0007": camera}}, tmp_path / "hub.toml")
    assert f"cctv.cameras.SW-ONVIF-0007.{key}" in str(caught.value)
    assert "hub.toml" in str(caught.value)
