"""CCTV linkage: the nearest camera that faces the site is picked; evidence is stored, audited, purged."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from edge.sim import camera as camsim
from hub import cctv
from hub.cctv import CctvLinker
from hub.cctv_geo import Camera, CctvConfig, GeoPoint, View, bearing_deg, distance_m, pick_cameras
from hub.errors import NotFound
from hub.forward.errors import EvidenceError
from hub.forward.tx import LocalWriter
from shared.errors import ConfigError
from tests.hub.forward.helpers import SITE, T0, Clock, FakeAudit, offset


def cam(cam_id: str, distance: float, bearing_from_site: float, heading: float, fov: float = 60.0, *,
        range_m: float = 200.0, presets: tuple[View, ...] = (), jurisdiction: str = "suwon") -> Camera:
    """A camera ``distance`` m from the site, in direction ``bearing_from_site`` as seen from the site."""
    views = presets or (View(heading, fov),)
    return Camera(cam_id, offset(SITE, distance, bearing_from_site), views, "http://127.0.0.1:9/snapshot.jpg",
                  range_m=range_m, ptz_preset_url="http://127.0.0.1:9/ptz/preset/{preset}" if presets else None,
                  jurisdiction=jurisdiction)


def test_distance_and_bearing_match_known_values() -> None:
    seoul, busan = GeoPoint(37.5665, 126.9780), GeoPoint(35.1796, 129.0756)
    assert distance_m(seoul, busan) == pytest.approx(325_000, rel=0.01)
    assert bearing_deg(GeoPoint(37.0, 127.0), GeoPoint(37.1, 127.0)) == pytest.approx(0.0, abs=1e-6)
    assert bearing_deg(GeoPoint(37.0, 127.0), GeoPoint(37.0, 127.1)) == pytest.approx(90.0, abs=0.1)
    assert distance_m(SITE, offset(SITE, 123.0, 42.0)) == pytest.approx(123.0, abs=0.01)


# A camera east of the site (bearing 90 from the site) looks at it with heading 270.
@pytest.mark.parametrize(
    ("cameras", "expected"),
    [
        # the nearest camera that faces the site wins over a nearer one that looks away
        ([cam("near-away", 40, 90, heading=90), cam("far-facing", 120, 90, heading=270)], ["far-facing"]),
        # the nearest of two that face it comes first
        ([cam("b", 150, 0, heading=180), cam("a", 80, 200, heading=20)], ["a", "b"]),
        # at the edge of the view: 29° off a 60° view is in, 31° is out
        ([cam("in", 50, 90, heading=270 + 29), cam("out", 50, 270, heading=90 + 31)], ["in"]),
        # out of range however well it faces
        ([cam("short", 180, 0, heading=180, range_m=150)], []),
        # a PTZ camera sees it with the preset that points at it
        ([cam("ptz", 100, 0, heading=0, presets=(View(90, 40, preset=1), View(178, 40, preset=2)))], ["ptz@2"]),
        # a camera at the site sees it whatever its heading
        ([cam("on-site", 2, 0, heading=0, fov=10)], ["on-site"]),
        # a 360° camera sees all round
        ([cam("dome", 90, 45, heading=0, fov=360)], ["dome"]),
        # only two are taken
        ([cam("c1", 10, 0, heading=180), cam("c2", 20, 0, heading=180), cam("c3", 30, 0, heading=180)],
         ["c1", "c2"]),
    ],
)
def test_the_nearest_cameras_that_face_the_site_are_picked(cameras: list[Camera], expected: list[str]) -> None:
    got = pick_cameras(cameras, SITE, limit=2)
    assert [c.camera.id + (f"@{c.view.preset}" if c.view.preset is not None else "") for c in got] == expected


def test_cameras_can_be_limited_to_jurisdictions() -> None:
    cams = [cam("suwon-1", 50, 0, heading=180), cam("yongin-1", 30, 0, heading=180, jurisdiction="yongin")]
    assert [c.camera.id for c in pick_cameras(cams, SITE, jurisdictions=frozenset({"suwon"}))] == ["suwon-1"]


def test_the_camera_config_is_read_and_errors_name_the_key(tmp_path: Path) -> None:
    f = tmp_path / "hub.toml"
    raw = {"cameras": {
        "SW-1": {"lat": 37.26, "lon": 127.03, "heading_deg": 90, "fov_deg": 60,
                 "snapshot_url": "http://10.0.0.1/snapshot.jpg"},
        "SW-PTZ": {"lat": 37.26, "lon": 127.03, "snapshot_url": "http://10.0.0.2/snapshot.jpg",
                   "ptz_preset_url": "http://10.0.0.2/ptz/preset/{preset}",
                   "presets": [{"preset": 1, "heading_deg": 10, "fov_deg": 50}]},
    }, "retention_days": 30}
    cfg = cctv.parse_config(raw, f)
    assert [c.id for c in cfg.cameras] == ["SW-1", "SW-PTZ"]
    assert cfg.cameras[1].views[0].preset == 1
    with pytest.raises(ConfigError, match=r"cctv\.cameras\.SW-1\.fov_deg"):
        cctv.parse_config({"cameras": {"SW-1": {"lat": 37.0, "lon": 127.0, "heading_deg": 0,
                                                "snapshot_url": "http://x/s.jpg"}}}, f)
    with pytest.raises(ConfigError, match=r"must contain \{preset\}"):
        cctv.parse_config({"cameras": {"P": {"lat": 37.0, "lon": 127.0, "snapshot_url": "http://x/s.jpg",
                                             "ptz_preset_url": "http://x/ptz"}}}, f)
    with pytest.raises(ConfigError, match="unknown key"):
        cctv.parse_config({"cameras": {}, "retention_dayz": 3}, f)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_a_capture_moves_the_ptz_camera_stores_the_picture_and_audits(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    audit = FakeAudit()
    clock = Clock()
    async with camsim.serve("SW-PTZ-0003") as ptz, camsim.serve("SW-CCTV-0012") as fixed, \
            LocalWriter.open(tmp_path / "hub.db", audit) as db:
        cameras = (
            Camera("SW-PTZ-0003", offset(SITE, 120, 0), (View(90, 40, 1), View(180, 40, 2)), ptz.snapshot_url,
                   ptz_preset_url=ptz.ptz_preset_url),
            Camera("SW-CCTV-0012", offset(SITE, 60, 270), (View(90, 60),), fixed.snapshot_url),
            Camera("SW-CCTV-0099", offset(SITE, 30, 0), (View(0, 60),), "http://127.0.0.1:9/never.jpg"),
        )
        cfg = CctvConfig(cameras=cameras, evidence_dir=tmp_path / "evidence", ptz_settle_s=0.0)
        linker = CctvLinker(cfg, db, session, clock=clock)
        cap = await linker.capture(SITE, "alarm:42")
        assert [c.camera.id for c in cap.choices] == ["SW-CCTV-0012", "SW-PTZ-0003"]
        assert ptz.sim.presets == [2]
        assert fixed.sim.presets == []
        assert cap.failures == ()
        for ev in cap.evidence:
            data = (cfg.evidence_dir / ev.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == ev.sha256 == hashlib.sha256(cap.pictures[ev.id]).hexdigest()
            assert hashlib.sha1(data, usedforsecurity=False).hexdigest() == ev.sha1
            assert data[:3] == b"\xff\xd8\xff"
        assert ev.expires_at == pytest.approx(T0 + 30 * 86400)
        assert await db.read(lambda c: cctv.evidence_for(c, "alarm:42")) == list(cap.evidence)
        seen, data = await linker.view(cap.evidence[0].id, "olive")
        assert hashlib.sha256(data).hexdigest() == seen.sha256
    assert audit.actions("cctv.") == ["cctv.capture", "cctv.capture", "cctv.evidence.view"]
    assert audit.rows[-1][0] == "olive"


async def test_evidence_is_purged_after_its_retention_and_tampering_is_caught(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    audit = FakeAudit()
    clock = Clock()
    async with camsim.serve("SW-CCTV-0012") as fixed, \
            LocalWriter.open(tmp_path / "hub.db", audit) as db:
        cameras = (Camera("SW-CCTV-0012", offset(SITE, 60, 270), (View(90, 60),), fixed.snapshot_url),)
        cfg = CctvConfig(cameras=cameras, evidence_dir=tmp_path / "evidence", retention_days=30)
        linker = CctvLinker(cfg, db, session, clock=clock)
        (old,) = (await linker.capture(SITE, "alarm:1")).evidence
        clock.advance(20 * 86400)
        (new,) = (await linker.capture(SITE, "alarm:2")).evidence
        (cfg.evidence_dir / new.path).write_bytes(b"edited")
        with pytest.raises(EvidenceError, match="no longer matches"):
            await linker.view(new.id, "olive")
        clock.advance(10 * 86400)
        assert await linker.purge() == 1
        assert not (cfg.evidence_dir / old.path).exists()
        assert (cfg.evidence_dir / new.path).exists()
        with pytest.raises(NotFound):
            await linker.view(old.id, "olive")
    assert "cctv.evidence.purge" in audit.actions()


async def test_a_camera_that_does_not_answer_is_reported_and_the_others_still_count(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with camsim.serve("SW-CCTV-0012") as fixed, \
            LocalWriter.open(tmp_path / "hub.db", FakeAudit()) as db:
        cameras = (Camera("dead", offset(SITE, 20, 270), (View(90, 60),), "http://127.0.0.1:9/snapshot.jpg"),
                   Camera("SW-CCTV-0012", offset(SITE, 60, 270), (View(90, 60),), fixed.snapshot_url))
        cfg = CctvConfig(cameras=cameras, evidence_dir=tmp_path / "evidence", timeout_s=2.0)
        cap = await CctvLinker(cfg, db, session).capture(SITE, "alarm:3")
    assert [e.camera_id for e in cap.evidence] == ["SW-CCTV-0012"]
    assert [cam_id for cam_id, _ in cap.failures] == ["dead"]
