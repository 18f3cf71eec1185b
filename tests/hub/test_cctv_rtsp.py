"""A camera whose ONVIF profile has no snapshot URI gives one decoded frame of its RTSP stream as
evidence, taken at the site's preset; a stream that refuses the credentials, is not there, never
answers or answers garbage is a camera fault of its kind, bounded in time; a stream URI the camera
names is checked before the hub opens it."""

from __future__ import annotations

import asyncio
import hashlib
import io
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from edge.sim import camera as render
from edge.sim import camera_onvif as onvifsim
from edge.sim import camera_rtsp
from hub import cctv, cctv_rtsp
from hub.cctv import CctvLinker
from hub.cctv_geo import Camera, CctvConfig, OnvifAccess, View
from hub.cctv_onvif import CameraFault, FaultKind
from hub.forward.tx import LocalWriter
from shared.errors import ConfigError
from tests.hub.forward.helpers import SITE, FakeAudit, offset

USER, PASSWORD = "jikimi", "cam-pw-0005"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@asynccontextmanager
async def no_snapshot_camera(cam_id: str, *, rtsp_password: str = PASSWORD, stream_uri: str | None = None,
                             ) -> AsyncIterator[onvifsim.RunningOnvifCamera]:
    """An ONVIF camera without a snapshot URI, streaming over RTSP (or naming ``stream_uri`` instead)."""
    async with onvifsim.serve(cam_id, user=USER, password=PASSWORD, travel_s=0.3, snapshot_uri=False) as cam:
        if stream_uri is not None:
            cam.sim.stream_uri = stream_uri
            yield cam
            return
        with camera_rtsp.serve(cam_id, user=USER, password=rtsp_password, preset=cam.sim.preset_now) as stream:
            cam.sim.stream_uri = stream.url
            yield cam


def looking_at_site(cam_id: str, device_url: str) -> Camera:
    """A PTZ camera 120 m north of the site: its preset 2 looks south, at the site."""
    return Camera(cam_id, offset(SITE, 120, 0), (View(90, 40, 1), View(180, 40, 2)), "",
                  onvif=OnvifAccess(device_url, USER, PASSWORD))


async def test_a_camera_without_a_snapshot_uri_gives_a_decoded_rtsp_frame_at_the_sites_preset(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    audit = FakeAudit()
    async with no_snapshot_camera("SW-PTZ-0005") as cam, LocalWriter.open(tmp_path / "hub.db", audit) as db:
        cfg = CctvConfig(cameras=(looking_at_site("SW-PTZ-0005", cam.device_url),),
                         evidence_dir=tmp_path / "evidence", ptz_settle_s=0.0)
        linker = CctvLinker(cfg, db, session)
        cap = await linker.capture(SITE, "alarm:11")
        history, snapshot_refusals = cam.sim.history, cam.sim.refused
    assert cap.failures == ()
    (ev,) = cap.evidence
    stored = (cfg.evidence_dir / ev.path).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == ev.sha256
    assert hashlib.sha1(stored, usedforsecurity=False).hexdigest() == ev.sha1
    picture = Image.open(io.BytesIO(stored))
    assert (picture.format, picture.size) == ("JPEG", (render.WIDTH, render.HEIGHT))
    assert (history, render.read_preset(picture)) == ([2], 2)  # the frame was taken after the move ended
    assert snapshot_refusals == {"ter:ActionNotSupported": 1}  # it asked for a snapshot URI first
    (detail,) = [d for _, a, _, d in audit.rows if a == "cctv.capture"]
    assert detail["source"] == "rtsp"
    assert linker.health["SW-PTZ-0005"].captures == 1


@contextmanager
def silent_server(answer: bytes | None) -> Iterator[int]:
    """A TCP server that reads, says ``answer`` and hangs up (None: says nothing, ever); yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    conns: list[socket.socket] = []

    def run() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conns.append(conn)
            conn.settimeout(0.5)
            try:
                conn.recv(65536)
                if answer is not None:
                    conn.sendall(answer)
                    conn.close()
            except OSError:
                pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for c in conns:
            c.close()
        listener.close()


async def test_rtsp_faults_are_counted_by_kind_and_bounded_in_time(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    garbage = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 9999\r\n\r\n" + bytes(range(256)) * 8
    with silent_server(None) as mute_port, silent_server(garbage) as garbage_port:
        async with no_snapshot_camera("wrong-rtsp-pw", rtsp_password="another-pw") as refusing, \
                no_snapshot_camera("nothing-there", stream_uri=f"rtsp://127.0.0.1:{closed_port}/stream") as gone, \
                no_snapshot_camera("mute", stream_uri=f"rtsp://127.0.0.1:{mute_port}/stream") as mute, \
                no_snapshot_camera("garbage", stream_uri=f"rtsp://127.0.0.1:{garbage_port}/stream") as junk, \
                no_snapshot_camera("elsewhere", stream_uri="rtsp://192.0.2.7/stream") as elsewhere, \
                no_snapshot_camera("local-file", stream_uri="file:///etc/passwd") as local_file, \
                no_snapshot_camera("no-stream") as no_stream, \
                LocalWriter.open(tmp_path / "hub.db", FakeAudit()) as db:
            no_stream.sim.stream_uri = None
            cameras = tuple(looking_at_site(c, d.device_url) for c, d in (
                ("wrong-rtsp-pw", refusing), ("nothing-there", gone), ("mute", mute), ("garbage", junk),
                ("elsewhere", elsewhere), ("local-file", local_file), ("no-stream", no_stream)))
            cfg = CctvConfig(cameras=cameras, evidence_dir=tmp_path / "evidence", max_cameras=len(cameras),
                             ptz_settle_s=0.0, timeout_s=2.0, rtsp_timeout_s=2.0)
            linker = CctvLinker(cfg, db, session)
            started = time.monotonic()
            cap = await linker.capture(SITE, "alarm:12")
            took = time.monotonic() - started
    assert cap.evidence == ()
    kinds = {cam: dict(h.failures) for cam, h in linker.health.items()}
    assert kinds == {
        "wrong-rtsp-pw": {FaultKind.AUTH_REFUSED: 1},
        "nothing-there": {FaultKind.UNREACHABLE: 1},
        "mute": {FaultKind.UNREACHABLE: 1},
        "garbage": {FaultKind.PROTOCOL: 1},
        "elsewhere": {FaultKind.PROTOCOL: 1},
        "local-file": {FaultKind.PROTOCOL: 1},
        "no-stream": {FaultKind.NO_SNAPSHOT: 1},
    }
    for h in linker.health.values():
        assert PASSWORD not in h.last_error  # the credentials put in the URL never reach an error
    # every capture ran at once and each gave up by its own bound (the mute one: PyAV's I/O timeout)
    assert took < cfg.rtsp_timeout_s * 2 + 1.0 + cfg.timeout_s * 8, took


def test_a_stream_uri_is_checked_and_gets_the_credentials_quoted() -> None:
    device = "http://10.20.0.7:8080/onvif/device_service"
    url = cctv_rtsp.stream_url("c", "rtsp://10.20.0.7:554/live?ch=1#frag", device, "op@x", "p:w/@ d")
    assert url == "rtsp://op%40x:p%3Aw%2F%40%20d@10.20.0.7:554/live?ch=1"
    assert cctv_rtsp.stream_url("c", "RTSP://10.20.0.7", device, "u", "p") == "rtsp://u:p@10.20.0.7/"
    v6 = cctv_rtsp.stream_url("c", "rtsp://[fd00::7]:8554/s", "http://[fd00::7]/onvif/device_service", "u", "p")
    assert v6 == "rtsp://u:p@[fd00::7]:8554/s"
    for bad, why in (("file:///etc/passwd", "not rtsp"), ("http://10.20.0.7/s", "not rtsp"),
                     ("rtsp:///s", "not rtsp"), ("rtsp://10.20.0.8/s", "not the camera's"),
                     ("rtsp://evil@10.20.0.9/s", "not the camera's"), ("rtsp://10.20.0.7:99999/s", "bad port"),
                     ("rtsp://10.20.0.7:x/s", "bad port")):
        with pytest.raises(CameraFault, match=why) as info:
            cctv_rtsp.stream_url("c", bad, device, "u", "p")
        assert info.value.kind is FaultKind.PROTOCOL


def test_a_grab_that_gets_no_picture_in_time_is_unreachable() -> None:
    with silent_server(None) as port:
        started = time.monotonic()
        with pytest.raises(CameraFault) as info:
            cctv_rtsp.grab("c", f"rtsp://u:p@127.0.0.1:{port}/stream", 1.0)
        took = time.monotonic() - started
    assert info.value.kind is FaultKind.UNREACHABLE
    assert took < 10.0


async def test_a_live_stream_grab_reads_the_frame_the_camera_shows_now() -> None:
    preset: list[int | None] = [7]
    with camera_rtsp.serve("SW-PTZ-0006", user=USER, password=PASSWORD, preset=lambda: preset[0]) as stream:
        url = cctv_rtsp.stream_url("SW-PTZ-0006", stream.url, f"http://{stream.host}/onvif/device_service",
                                   USER, PASSWORD)
        first = await asyncio.to_thread(cctv_rtsp.grab, "SW-PTZ-0006", url, 10.0)
        preset[0] = 8
        second = await asyncio.to_thread(cctv_rtsp.grab, "SW-PTZ-0006", url, 10.0)
    assert render.read_preset(Image.open(io.BytesIO(first))) == 7
    assert render.read_preset(Image.open(io.BytesIO(second))) == 8


def test_the_rtsp_timeout_is_configured_and_a_wrong_one_names_its_key(tmp_path: Path) -> None:
    assert cctv.parse_config({"rtsp_timeout_s": 3}, tmp_path / "hub.toml").rtsp_timeout_s == 3.0
    assert cctv.parse_config({}, tmp_path / "hub.toml").rtsp_timeout_s == 10.0
    for wrong in (0, 1000, "soon"):
        with pytest.raises(ConfigError) as caught:
            cctv.parse_config({"rtsp_timeout_s": wrong}, tmp_path / "hub.toml")
        assert "cctv.rtsp_timeout_s" in str(caught.value)
        assert "hub.toml" in str(caught.value)
