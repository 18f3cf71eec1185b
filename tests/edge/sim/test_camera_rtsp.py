"""The simulated camera's RTSP server: any RTSP client plays its H.264 stream, the picture shows the
ONVIF PTZ preset as soon as a move ends, wrong credentials get no media, and hostile requests do not
take the server down."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import av
import av.error
import pytest
from onvif import ONVIFCamera
from PIL import Image

from edge.sim import camera, camera_onvif, camera_rtsp
from edge.sim.camera_rtsp import RtspCameraServer

USER, PASSWORD = "jikimi", "rtsp pw:@/1"  # characters that must be quoted in a URL
REPO = Path(__file__).resolve().parents[3]
NO_PROBE = {"rtsp_transport": "tcp", "analyzeduration": "0", "probesize": "32"}


@pytest.fixture
def preset_box() -> list[int | None]:
    return [None]


@pytest.fixture
def server(preset_box: list[int | None]) -> Iterator[RtspCameraServer]:
    with camera_rtsp.serve("SW-PTZ-0031", user=USER, password=PASSWORD, preset=lambda: preset_box[0]) as running:
        yield running


def frames(url: str, until: Callable[[av.VideoFrame], bool], timeout_s: float = 20.0) -> list[av.VideoFrame]:
    """Decode the stream from its first keyframe until ``until(frame)`` holds; every frame read."""
    got: list[av.VideoFrame] = []
    deadline = time.monotonic() + timeout_s
    with av.open(url, format="rtsp", options=NO_PROBE, timeout=(10.0, 10.0)) as container:
        keyframe = False
        for packet in container.demux(video=0):
            keyframe = keyframe or packet.is_keyframe
            if not keyframe:
                continue
            for frame in packet.decode():
                got.append(frame)
                if until(frame):
                    return got
            assert time.monotonic() < deadline, f"gave up after {len(got)} frames"
    raise AssertionError("the stream ended")


def shows(frame: av.VideoFrame) -> int | None:
    image: Image.Image = frame.to_image()  # type: ignore[no-untyped-call]  # PyAV leaves it unannotated
    return camera.read_preset(image)


def test_the_preset_band_reads_back_through_jpeg_and_refuses_a_picture_without_one() -> None:
    for preset in (None, 0, 1, 2, 7, 255, 4096, camera.MAX_PRESET):
        jpeg = camera.render_snapshot("SW-PTZ-0031", time.time(), preset=preset, quality=20)
        assert camera.read_preset(Image.open(io.BytesIO(jpeg))) == preset
    with pytest.raises(ValueError, match="preset"):
        camera.render_frame("SW-PTZ-0031", time.time(), preset=camera.MAX_PRESET + 1)
    with pytest.raises(ValueError, match="band"):
        camera.read_preset(Image.new("RGB", (camera.WIDTH, camera.HEIGHT), (0, 0, 0)))
    with pytest.raises(ValueError, match="neither dark nor light"):
        camera.read_preset(Image.new("RGB", (camera.WIDTH, camera.HEIGHT), (128, 128, 128)))
    # one block flipped: the parity no longer holds
    img = camera.render_frame("SW-PTZ-0031", time.time(), preset=5)
    cell = camera.WIDTH / camera.BAND_CELLS
    x = int(cell * 3.5)
    img.paste((255, 255, 255) if img.getpixel((x, camera.HEIGHT - 10)) == (0, 0, 0) else (0, 0, 0),
              (int(cell * 3), camera.HEIGHT - camera.BAND_H, int(cell * 4) - 1, camera.HEIGHT))
    with pytest.raises(ValueError, match="band"):
        camera.read_preset(img)


def test_pyav_plays_the_h264_stream_with_the_cameras_picture(server: RtspCameraServer,
                                                            preset_box: list[int | None]) -> None:
    preset_box[0] = 2
    (first,) = frames(server.url_with_credentials(), lambda f: True)
    assert (first.width, first.height) == (camera.WIDTH, camera.HEIGHT)
    assert first.key_frame
    assert shows(first) == 2
    with av.open(server.url_with_credentials(), format="rtsp", options={"rtsp_transport": "tcp"},
                 timeout=10.0) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        assert video.codec_context.has_b_frames is False  # no B-frames: the decoder need not wait
    assert server.frames > 0


def test_the_picture_follows_the_preset_while_a_client_watches(server: RtspCameraServer,
                                                              preset_box: list[int | None]) -> None:
    seen: list[int | None] = []

    def watch(frame: av.VideoFrame) -> bool:
        seen.append(shows(frame))
        if len(seen) == 3:
            preset_box[0] = 4
        return len(seen) > 3 and seen[-1] == 4

    frames(server.url_with_credentials(), watch)
    assert seen[:3] == [None, None, None]
    assert set(seen) == {None, 4}


async def test_ffprobe_plays_the_stream_of_the_camera_command_and_onvif_names_it() -> None:
    """The command line camera with --rtsp and --no-snapshot: ONVIF GetStreamUri names its stream, ffprobe reads it."""
    argv = ["sim", "camera", "--onvif", "127.0.0.1:0", "--rtsp", "127.0.0.1:0", "--no-snapshot", "--id", "SW-PTZ-0032",
            "--user", USER, "--password", PASSWORD]
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "shared.cli", *argv, cwd=REPO,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            while (started := json.loads(await proc.stdout.readline()))["event"] != "camera.onvif_listening":
                pass
        assert started["snapshot"] is False
        device = urlsplit(started["device_url"])
        client = ONVIFCamera(str(device.hostname), int(device.port or 80), USER, PASSWORD, no_cache=True)
        try:
            await client.update_xaddrs()
            media = await client.create_media_service()
            stream = await media.GetStreamUri({"ProfileToken": camera_onvif.PROFILE, "StreamSetup": {
                "Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}})
            snapshot_uri = await client.get_snapshot_uri(camera_onvif.PROFILE)
        finally:
            await client.close()
        assert stream.Uri == started["stream_uri"]
        assert snapshot_uri is None  # the profile has none: a client must take a frame of the stream
        parts = urlsplit(stream.Uri)
        assert parts.scheme == "rtsp"
        assert parts.username is None  # no credentials in the URI
        with_credentials = stream.Uri.replace("rtsp://", "rtsp://jikimi:rtsp%20pw%3A%40%2F1@")
        probe = await asyncio.create_subprocess_exec(
            "ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_entries",
            "stream=codec_name,width,height,has_b_frames", "-of", "json", with_credentials,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(30):
            out, err = await probe.communicate()
        assert probe.returncode == 0, err
        (info,) = json.loads(out)["streams"]
        assert info == {"codec_name": "h264", "width": 640, "height": 360, "has_b_frames": 0}
        refused = await asyncio.create_subprocess_exec(
            "ffprobe", "-v", "error", "-rtsp_transport", "tcp", stream.Uri.replace("rtsp://", "rtsp://jikimi:wrong@"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(30):
            _, err = await refused.communicate()
        assert refused.returncode != 0
        assert b"401" in err
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await proc.wait()
    assert code == 0


def test_wrong_or_missing_credentials_get_no_media(server: RtspCameraServer) -> None:
    for url in (server.url, server.url_with_credentials().replace("rtsp%20pw", "rtsp%20PW")):
        with pytest.raises(av.error.HTTPUnauthorizedError):
            av.open(url, format="rtsp", options={"rtsp_transport": "tcp"}, timeout=10.0)
    reply = rtsp_exchange(server, f"DESCRIBE {server.url} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
    assert reply.startswith(b"RTSP/1.0 401")
    challenge = [line for line in reply.split(b"\r\n") if line.lower().startswith(b"www-authenticate:")]
    assert challenge
    assert all(b"Digest" in line for line in challenge)  # never Basic: no password in the clear
    assert b"m=video" not in reply


def rtsp_exchange(server: RtspCameraServer, data: bytes, timeout_s: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server says until it closes or goes quiet."""
    with socket.create_connection((server.host, server.port), timeout=timeout_s) as s:
        try:
            s.sendall(data)
        except OSError:
            return b""  # the server closed on us mid-send: that is an answer too
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


HOSTILE = {
    "garbage": bytes(range(256)) * 64,
    "http_to_rtsp": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "huge_header": b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX-Pad: " + b"A" * (4 * 1024 * 1024) + b"\r\n\r\n",
    "many_headers": b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n" + b"X-H: v\r\n" * 100_000 + b"\r\n",
    "huge_body": b"ANNOUNCE rtsp://x/stream RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 999999999999\r\n\r\n" + b"x" * 65536,
    "bad_cseq": b"OPTIONS * RTSP/1.0\r\nCSeq: -99999999999999999999\r\n\r\n",
    "forged_digest": (b"DESCRIBE rtsp://127.0.0.1/stream RTSP/1.0\r\nCSeq: 2\r\nAuthorization: Digest username="
                      b'"jikimi", realm="x", nonce="' + b"n" * 100_000 + b'", uri="/", response="00"\r\n\r\n'),
    "interleaved_junk": b"$\x00\xff\xff" + b"\x00" * 65535,
    "half_request": b"DESCRIBE rtsp://127.0.0.1/stream RTSP/1.0\r\nCSe",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_requests_do_not_crash_the_server_and_get_no_media(name: str, server: RtspCameraServer,
                                                                 preset_box: list[int | None]) -> None:
    reply = rtsp_exchange(server, HOSTILE[name], timeout_s=3.0)
    assert b"m=video" not in reply  # nothing about the media leaks to an unauthenticated sender
    preset_box[0] = 3
    (frame,) = frames(server.url_with_credentials(), lambda f: True)  # and a real client is still served
    assert shows(frame) == 3


def test_a_client_joining_a_running_stream_gets_a_keyframe_at_once(server: RtspCameraServer) -> None:
    """PLAY forces a keyframe: a viewer joining mid-stream need not wait out the group of pictures (FPS frames)."""
    stop = threading.Event()

    def watch() -> None:
        with av.open(server.url_with_credentials(), format="rtsp", options=NO_PROBE, timeout=10.0) as c:
            for _ in c.demux(video=0):
                if stop.is_set():
                    return

    watcher = threading.Thread(target=watch)
    watcher.start()
    waits: list[int] = []
    try:
        for _ in range(6):
            time.sleep(0.3)  # join at a different point of the watcher's group of pictures each time
            with av.open(server.url_with_credentials(), format="rtsp", options=NO_PROBE, timeout=10.0) as c:
                for n, packet in enumerate(c.demux(video=0), start=1):
                    if packet.is_keyframe:
                        waits.append(n)
                        break
    finally:
        stop.set()
        watcher.join(20)
    assert max(waits) <= 3, waits  # without the forced keyframe: up to FPS - 1 packets first


def test_a_connection_that_does_not_reach_play_is_closed(server: RtspCameraServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(camera_rtsp, "HANDSHAKE_S", 1.0)
    with socket.create_connection((server.host, server.port), timeout=20.0) as silent, \
            socket.create_connection((server.host, server.port), timeout=20.0) as stuck:
        stuck.sendall(f"DESCRIBE {server.url} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
        assert stuck.recv(65536).startswith(b"RTSP/1.0 401")
        assert silent.recv(1) == b""  # closed by the camera, not by the 20 s timeout here
        assert stuck.recv(1) == b""
    assert server.stalled == 2
    watched = frames(server.url_with_credentials(), lambda f: f.time is not None and f.time > 3.0)
    assert len(watched) > 3 * camera_rtsp.FPS // 2  # a client that plays is kept well past the handshake time
    assert server.stalled == 2


def test_connections_over_the_cap_are_closed_and_the_rest_are_served(server: RtspCameraServer,
                                                                      capfd: pytest.CaptureFixture[str]) -> None:
    """One over the cap is closed on arrival, cleanly: closing a connection the server has not
    attached yet left its watch polling a closed connection forever (a GLib critical per turn);
    once a CI run's log grew to 1.6 GB of them."""
    held = [socket.create_connection((server.host, server.port), timeout=5.0) for _ in range(camera_rtsp.MAX_CLIENTS)]
    try:
        deadline = time.monotonic() + 10
        while server.clients < camera_rtsp.MAX_CLIENTS:
            assert time.monotonic() < deadline, server.clients
            time.sleep(0.05)
        with socket.create_connection((server.host, server.port), timeout=5.0) as extra:
            assert extra.recv(1) == b""  # closed by the server on arrival
        assert server.refused == 1
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 10
    while server.clients > 0:
        assert time.monotonic() < deadline, server.clients
        time.sleep(0.05)
    (frame,) = frames(server.url_with_credentials(), lambda f: True)
    assert frame.width == camera.WIDTH
    assert "CRITICAL" not in capfd.readouterr().err


async def test_the_stream_shows_where_onvif_moved_the_camera() -> None:
    """A GotoPreset through a real ONVIF client: once the camera reports IDLE, the stream shows the new preset."""
    async with camera_onvif.serve("SW-PTZ-0033", user=USER, password=PASSWORD, travel_s=0.5) as cam:
        with camera_rtsp.serve("SW-PTZ-0033", user=USER, password=PASSWORD, preset=cam.sim.preset_now) as stream:
            (before,) = await asyncio.to_thread(frames, stream.url_with_credentials(), lambda f: True)
            client = ONVIFCamera(cam.host, cam.port, USER, PASSWORD, no_cache=True)
            try:
                await client.update_xaddrs()
                ptz = await client.create_ptz_service()
                await ptz.GotoPreset({"ProfileToken": camera_onvif.PROFILE, "PresetToken": "3"})
                for _ in range(200):
                    if (await ptz.GetStatus({"ProfileToken": camera_onvif.PROFILE})).MoveStatus.PanTilt == "IDLE":
                        break
                    await asyncio.sleep(0.05)
            finally:
                await client.close()
            (after,) = await asyncio.to_thread(frames, stream.url_with_credentials(), lambda f: True)
    assert (shows(before), shows(after)) == (None, 3)


def test_a_port_in_use_is_refused_with_a_clear_error(server: RtspCameraServer) -> None:
    with pytest.raises(camera_rtsp.RtspUnavailable, match="cannot listen"), \
            camera_rtsp.serve("x", user=USER, password=PASSWORD, preset=lambda: None, port=server.port):
        pass
