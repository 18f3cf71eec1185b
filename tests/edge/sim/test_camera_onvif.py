"""The ONVIF camera simulator speaks ONVIF to a client that is not ours, and refuses hostile SOAP cleanly."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from lxml import etree
from onvif import ONVIFCamera
from zeep.exceptions import Fault

from edge.sim import camera, camera_onvif
from edge.sim.camera_onvif import ENV, PASSWORD_DIGEST, TER, TPTZ, TRT, WSSE, WSU
from shared.cli import build_cli
from shared.errors import ConfigError

USER, PASSWORD = "jikimi", "s3cret-pw"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
async def cam() -> AsyncIterator[camera_onvif.RunningOnvifCamera]:
    async with camera_onvif.serve("SW-PTZ-0003", user=USER, password=PASSWORD, presets=4, travel_s=0.5,
                                  stream_uri="rtsp://127.0.0.1:8554/live") as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_an_onvif_client_reads_the_device_and_moves_it_to_a_preset(
    cam: camera_onvif.RunningOnvifCamera,
) -> None:
    client = ONVIFCamera(cam.host, cam.port, USER, PASSWORD, no_cache=True)
    try:
        await client.update_xaddrs()
        device = await client.create_devicemgmt_service()
        info = await device.GetDeviceInformation()
        assert (info.Manufacturer, info.SerialNumber) == ("jikimi", "SW-PTZ-0003")
        now = (await device.GetSystemDateAndTime()).UTCDateTime
        assert now.Date.Year == datetime.now(UTC).year
        caps = await device.GetCapabilities({"Category": "All"})
        assert caps.PTZ.XAddr == f"{cam.sim.base_url}{camera_onvif.PTZ_PATH}"
        media = await client.create_media_service()
        (profile,) = await media.GetProfiles()
        assert profile.PTZConfiguration is not None
        stream = await media.GetStreamUri({"ProfileToken": profile.token,
                                           "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}})
        assert stream.Uri == "rtsp://127.0.0.1:8554/live"
        ptz = await client.create_ptz_service()
        assert [p.token for p in await ptz.GetPresets({"ProfileToken": profile.token})] == ["1", "2", "3", "4"]
        await ptz.GotoPreset({"ProfileToken": profile.token, "PresetToken": "3"})
        assert (await ptz.GetStatus({"ProfileToken": profile.token})).MoveStatus.PanTilt == "MOVING"
        assert cam.sim.preset is None  # not there yet: the picture still shows where it was
        for _ in range(100):
            if (await ptz.GetStatus({"ProfileToken": profile.token})).MoveStatus.PanTilt == "IDLE":
                break
            await asyncio.sleep(0.05)
        assert cam.sim.preset == 3
        picture = await client.get_snapshot(profile.token)  # GetSnapshotUri, then HTTP digest
    finally:
        await client.close()
    assert picture is not None
    assert picture[:3] == b"\xff\xd8\xff"
    assert cam.sim.history == [3]
    assert cam.sim.frames == 1


async def test_the_snapshot_shows_the_camera_id_time_and_current_preset() -> None:
    """The picture is the renderer's for (id, the camera's clock, preset, frame): the preset is in it."""
    at = time.time()
    async with camera_onvif.serve("SW-PTZ-0003", user=USER, password=PASSWORD, travel_s=0.0,
                                  clock=lambda: at) as running:
        client = ONVIFCamera(running.host, running.port, USER, PASSWORD, no_cache=True)
        try:
            await client.update_xaddrs()
            ptz = await client.create_ptz_service()
            await ptz.GotoPreset({"ProfileToken": camera_onvif.PROFILE, "PresetToken": "2"})
            await ptz.GetStatus({"ProfileToken": camera_onvif.PROFILE})
            picture = await client.get_snapshot(camera_onvif.PROFILE)
        finally:
            await client.close()
    assert picture == camera.render_snapshot("SW-PTZ-0003", at, preset=2, frame=1)
    assert picture != camera.render_snapshot("SW-PTZ-0003", at, preset=1, frame=1)


async def test_wrong_credentials_are_refused_for_soap_and_for_the_snapshot(
    cam: camera_onvif.RunningOnvifCamera, http: aiohttp.ClientSession
) -> None:
    client = ONVIFCamera(cam.host, cam.port, USER, "wrong", no_cache=True)
    try:
        await client.update_xaddrs()  # pre-authentication operations answer anyone
        media = await client.create_media_service()
        with pytest.raises(Fault) as caught:
            await media.GetProfiles()
    finally:
        await client.close()
    assert any(q.localname == "NotAuthorized" for q in caught.value.subcodes)
    url = f"http://{cam.host}:{cam.port}{camera_onvif.SNAPSHOT_PATH}"
    async with http.get(url) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Digest ")
    wrong = aiohttp.DigestAuthMiddleware(USER, "wrong")
    async with http.get(url, middlewares=(wrong,)) as resp:
        assert resp.status == 401
    assert cam.sim.frames == 0


# --- hostile SOAP -------------------------------------------------------------------------------


def token(password: str = PASSWORD, *, created: str | None = None, nonce: bytes | None = None) -> str:
    nonce = nonce if nonce is not None else os.urandom(16)
    created = created or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = camera_onvif.password_digest(nonce, created, password)
    return (f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
            f'<wsse:Username>{USER}</wsse:Username><wsse:Password Type="{PASSWORD_DIGEST}">{digest}</wsse:Password>'
            f'<wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce><wsu:Created>{created}</wsu:Created>'
            f'</wsse:UsernameToken></wsse:Security>')


def envelope(body: str, header: str = "") -> str:
    return (f'<env:Envelope xmlns:env="{ENV}" xmlns:trt="{TRT}" xmlns:tptz="{TPTZ}">'
            f'<env:Header>{header}</env:Header><env:Body>{body}</env:Body></env:Envelope>')


PROFILES = "<trt:GetProfiles/>"


async def post(http: aiohttp.ClientSession, cam: camera_onvif.RunningOnvifCamera, data: str | bytes,
               path: str = camera_onvif.MEDIA_PATH) -> tuple[int, str]:
    async with http.post(f"http://{cam.host}:{cam.port}{path}", data=data,
                         headers={"Content-Type": "application/soap+xml"}) as resp:
        return resp.status, await resp.text()


def subcodes(text: str) -> list[str]:
    root = etree.fromstring(text.encode())
    return [v.text for v in root.iter(f"{{{ENV}}}Value")][1:]


async def test_a_correct_request_answers(cam: camera_onvif.RunningOnvifCamera, http: aiohttp.ClientSession) -> None:
    status, text = await post(http, cam, envelope(PROFILES, token()))
    assert status == 200
    assert 'token="profile_1"' in text


LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + "".join(f'<!ENTITY lol{i} "{"&lol{};".format(i - 1 if i > 1 else "") * 10}">' for i in range(1, 10))
          + f']><env:Envelope xmlns:env="{ENV}"><env:Body>&lol9;</env:Body></env:Envelope>')
XXE = (f'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       f'<env:Envelope xmlns:env="{ENV}" xmlns:trt="{TRT}"><env:Body><trt:GetSnapshotUri>'
       f'<trt:ProfileToken>&x;</trt:ProfileToken></trt:GetSnapshotUri></env:Body></env:Envelope>')


@pytest.mark.parametrize(("data", "status", "subcode"), [
    ("<env:Envelope", 400, "ter:WellFormed"),
    ("", 400, "ter:WellFormed"),
    ("<Envelope>not soap</Envelope>", 400, "ter:WellFormed"),
    (f'<env:Envelope xmlns:env="{ENV}"><env:Body/></env:Envelope>', 400, "ter:WellFormed"),
    (LAUGHS, 400, "ter:WellFormed"),
    (XXE, 400, "ter:WellFormed"),
    (envelope(PROFILES), 400, "ter:NotAuthorized"),
    (envelope(PROFILES, token("wrong")), 400, "ter:NotAuthorized"),
    (envelope(PROFILES, token(created="2020-01-01T00:00:00Z")), 400, "ter:NotAuthorized"),
    (envelope(PROFILES, token(created=datetime.fromtimestamp(time.time() + 3600, UTC).isoformat())), 400,
     "ter:NotAuthorized"),
    (envelope(PROFILES, token(created="yesterday")), 400, "ter:NotAuthorized"),
    (envelope(PROFILES, token().replace("<wsse:Nonce>", "<wsse:Nonce>!!")), 400, "ter:NotAuthorized"),
    (envelope(PROFILES, token().replace(PASSWORD_DIGEST, PASSWORD_DIGEST.replace("Digest", "Text"))), 400,
     "ter:NotAuthorized"),
    (envelope("<trt:SetSomethingElse/>", token()), 500, "ter:ActionNotSupported"),
    (envelope("<trt:GetSnapshotUri><trt:ProfileToken>nope</trt:ProfileToken></trt:GetSnapshotUri>", token()), 400,
     "ter:InvalidArgVal"),
], ids=["truncated", "empty", "not-soap", "empty-body", "billion-laughs", "xxe", "no-token", "wrong-password",
        "stale-created", "future-created", "bad-created", "bad-nonce", "plain-text-password", "unknown-operation",
        "unknown-profile"])
async def test_hostile_or_broken_soap_is_refused_with_a_fault(
    cam: camera_onvif.RunningOnvifCamera, http: aiohttp.ClientSession, data: str, status: int, subcode: str
) -> None:
    got, text = await post(http, cam, data)
    assert got == status
    assert subcodes(text)[0] == subcode
    assert "root:" not in text  # nothing of a local file comes back
    assert sum(cam.sim.refused.values()) == 1


async def test_a_replayed_request_is_refused(cam: camera_onvif.RunningOnvifCamera,
                                            http: aiohttp.ClientSession) -> None:
    request = envelope(PROFILES, token())
    assert (await post(http, cam, request))[0] == 200
    status, text = await post(http, cam, request)
    assert (status, subcodes(text)[0]) == (400, "ter:NotAuthorized")
    assert "used before" in text


async def test_a_huge_body_is_refused_unread(cam: camera_onvif.RunningOnvifCamera,
                                            http: aiohttp.ClientSession) -> None:
    huge = envelope(PROFILES, token() + "<x>" + "a" * (camera_onvif.MAX_BODY + 1) + "</x>")
    assert (await post(http, cam, huge))[0] == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(camera_onvif.MAX_BODY // 1024 + 2):
            yield b"<a>" + b"x" * 1021

    async with http.post(f"{cam.sim.base_url}{camera_onvif.MEDIA_PATH}", data=chunks()) as resp:
        assert resp.status == 413
    assert cam.sim.refused == {"too_large": 2}


async def test_a_move_to_a_missing_preset_is_refused(cam: camera_onvif.RunningOnvifCamera,
                                                    http: aiohttp.ClientSession) -> None:
    move: Callable[[str], str] = lambda t: envelope(  # noqa: E731 - one line per request below
        f"<tptz:GotoPreset><tptz:ProfileToken>profile_1</tptz:ProfileToken><tptz:PresetToken>{t}"
        "</tptz:PresetToken></tptz:GotoPreset>", token())
    for bad in ("9", "0", "-1", "x" * 1000):
        status, text = await post(http, cam, move(bad), camera_onvif.PTZ_PATH)
        assert (status, subcodes(text)) == (400, ["ter:InvalidArgVal", "ter:NoToken"])
    assert cam.sim.history == []
    assert TER in text


# --- the command --------------------------------------------------------------------------------


async def test_the_camera_command_serves_an_onvif_device_any_client_can_use() -> None:
    argv = ["sim", "camera", "--onvif", "127.0.0.1:0", "--id", "SW-PTZ-0021", "--user", USER, "--password", PASSWORD,
            "--presets", "2"]
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "shared.cli", *argv, cwd=REPO,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            started = json.loads(await proc.stdout.readline())
        assert started["event"] == "camera.onvif_listening"
        url = urlsplit(started["device_url"])
        assert url.path == "/onvif/device_service"
        client = ONVIFCamera(str(url.hostname), int(url.port or 80), USER, PASSWORD, no_cache=True)
        try:
            await client.update_xaddrs()
            ptz = await client.create_ptz_service()
            presets = [p.token for p in await ptz.GetPresets({"ProfileToken": camera_onvif.PROFILE})]
        finally:
            await client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await proc.wait()
    assert presets == ["1", "2"]
    assert code == 0


@pytest.mark.parametrize(("argv", "key"), [
    (["--onvif", "127.0.0.1:0", "--password", "p"], "--user"),
    (["--onvif", "127.0.0.1:0", "--user", "u"], "--user"),
    (["--onvif", "no-port", "--user", "u", "--password", "p"], "--onvif"),
    (["--onvif", "127.0.0.1:0", "--user", "u", "--password", "p", "--presets", "0"], "--presets"),
    (["--onvif", "127.0.0.1:0", "--user", "u", "--password", "p", "--travel-s", "-1"], "--travel-s"),
    ([], "--onvif"),
])
def test_the_camera_command_refuses_incomplete_options(argv: list[str], key: str) -> None:
    cli = build_cli(("edge.cli",))
    args = cli.parser.parse_args(["sim", "camera", "--id", "CAM-1", *argv])
    with pytest.raises(ConfigError, match=key):
        args.handler(args)


async def test_hostile_or_replayed_digest_headers_get_no_picture(
    cam: camera_onvif.RunningOnvifCamera, http: aiohttp.ClientSession
) -> None:
    url = f"{cam.sim.base_url}{camera_onvif.SNAPSHOT_PATH}"
    async with http.get(url, middlewares=(aiohttp.DigestAuthMiddleware(USER, PASSWORD),)) as resp:
        assert resp.status == 200
        authorization = resp.request_info.headers["Authorization"]
    for header in (authorization,  # the same header again: a replay
                   authorization.replace("nc=00000001", "nc=zz"),
                   authorization.replace('uri="/onvif/snapshot.jpg"', 'uri="/other"'),
                   'Digest username="jikimi", nonce="made-up", uri="/onvif/snapshot.jpg", response="00"',
                   'Digest username="jikimi", nonce="' + "a" * 5000 + '"',
                   "Digest ,,,===\"", "Basic amlraW1pOnMzY3JldC1wdw=="):
        async with http.get(url, headers={"Authorization": header}) as resp:
            assert resp.status == 401, header[:80]
    assert cam.sim.frames == 1
