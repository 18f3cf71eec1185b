"""Live video over WebRTC and 112/119 view links, through the hub's real HTTPS API, with aiortc as
the browser: a view plays decoded H.264 and is audited from start to stop; viewers of a camera
share one pull and the one over the limit is refused; a link opens its one camera without a login
until it is revoked or expires, every use audited; hostile tokens, offers and uses are refused."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from av import VideoFrame
from PIL import Image

from edge.sim.camera import HEIGHT, WIDTH, read_preset
from hub.config import parse
from hub.liveview import MAX_SDP
from hub.service import Hub, running
from shared.errors import ConfigError
from tests.conftest import PkiFixture
from tests.hub.conftest import ApiClient, ConfigFactory, add_users, api_client, raw_config
from tests.hub.live_cameras import RealCamera, real_camera

pytestmark = pytest.mark.broker

# Both see the Seryu underpass (37.2527, 127.0166) from a few tens of metres.
PLACES = {"SW-CAM-A": (37.2530, 127.0166, 180.0), "SW-CAM-B": (37.2524, 127.0166, 0.0)}


@pytest.fixture
async def cameras() -> AsyncIterator[dict[str, RealCamera]]:
    async with real_camera("SW-CAM-A") as a, real_camera("SW-CAM-B") as b:
        yield {"SW-CAM-A": a, "SW-CAM-B": b}


@pytest.fixture
async def live_hub(hub_config: ConfigFactory, tmp_path: Path, cameras: dict[str, RealCamera]) -> AsyncIterator[Hub]:
    """A hub with two ONVIF cameras streaming RTSP, at most two live viewers per camera and one view
    per link."""
    entries = {cid: cam.entry(tmp_path / f"{cid}.password", *PLACES[cid]) for cid, cam in cameras.items()}
    cfg = hub_config(api={"enabled": True}, cctv={"evidence_dir": str(tmp_path / "evidence"), "cameras": entries},
                     live_view={"max_viewers": 2, "link_max_views": 1, "connect_timeout_s": 5.0})
    add_users(cfg)
    async with running(cfg) as hub:
        yield hub


@pytest.fixture
async def olive(live_hub: Hub, test_pki: PkiFixture) -> AsyncIterator[ApiClient]:
    async with api_client(live_hub, test_pki.dir / "ca.pem") as c:
        assert (await c.login("olive")).status == 200
        yield c


async def offer() -> tuple[RTCPeerConnection, str]:
    """A receive-only video offer, as a browser makes one (every host candidate in it)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def first_frame(pc: RTCPeerConnection, answer: str) -> np.ndarray[Any, Any]:
    """Apply the hub's answer and decode the first picture that arrives."""
    got: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    def on_track(track: MediaStreamTrack) -> None:
        if not got.done():
            got.set_result(track)

    pc.on("track", on_track)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    async with asyncio.timeout(20):
        track = await got
        frame = await track.recv()
    assert isinstance(frame, VideoFrame)
    picture: np.ndarray[Any, Any] = frame.to_ndarray(format="rgb24")
    return picture


def audit(hub: Hub, action_prefix: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    conn = sqlite3.connect(hub.cfg.db_path)
    try:
        rows = conn.execute("SELECT actor, action, target, detail FROM audit WHERE action LIKE ? ORDER BY id",
                            (action_prefix + "%",)).fetchall()
    finally:
        conn.close()
    return [(a, b, c, json.loads(d)) for a, b, c, d in rows]


async def until(pred: Any, within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while True:
            if pred():
                return
            await asyncio.sleep(0.05)


async def test_an_operator_watches_a_camera_live_and_the_view_is_audited_from_start_to_stop(
        live_hub: Hub, olive: ApiClient, cameras: dict[str, RealCamera]) -> None:
    """Olive's offer for camera A is answered with the camera's H.264; the picture decodes, is not
    blank and shows camera A's preset band; the start and, after she ends it, the stop are in the
    audit chain with her name and the camera, and the hub hangs up on the camera."""
    pc, sdp = await offer()
    try:
        resp = await olive.post("/api/cameras/SW-CAM-A/live", {"sdp": sdp})
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
        assert "H264/90000" in answer["sdp"]
        assert answer["camera"] == "SW-CAM-A"
        picture = await first_frame(pc, answer["sdp"])
        assert picture.shape[:2] == (HEIGHT, WIDTH)
        assert picture.std() > 10  # a drawn scene, not a blank frame
        assert read_preset(Image.fromarray(picture)) is None  # camera A's band: at no preset
        assert live_hub.ops.live is not None
        assert live_hub.ops.live.viewers("SW-CAM-A") == 1
        assert cameras["SW-CAM-A"].rtsp.clients == 1
        ended = await olive.session.delete(f"/api/live/{answer['view']}", headers={"X-CSRF-Token": olive.csrf})
        assert ended.status == 200
    finally:
        await pc.close()
    rows = audit(live_hub, "cctv.live.")
    assert [(a, act, tgt) for a, act, tgt, _d in rows] == [("olive", "cctv.live.start", "camera:SW-CAM-A"),
                                                          ("olive", "cctv.live.stop", "camera:SW-CAM-A")]
    assert rows[0][3]["view"] == rows[1][3]["view"] == answer["view"]
    assert rows[1][3]["why"] == "closed by the viewer"
    assert live_hub.ops.live.feeds() == 0  # the last viewer left: the camera's stream is closed
    await until(lambda: cameras["SW-CAM-A"].rtsp.clients == 0)


async def test_viewers_share_one_pull_and_the_one_over_the_limit_is_refused(
        live_hub: Hub, olive: ApiClient, cameras: dict[str, RealCamera]) -> None:
    """With max_viewers = 2, two views of camera A share one RTSP connection to it; the third is
    refused (409, saying why) and the refusal is audited; when one view ends, the third gets in."""
    pcs = [await offer() for _ in range(3)]
    try:
        views = []
        for _pc, sdp in pcs[:2]:
            resp = await olive.post("/api/cameras/SW-CAM-A/live", {"sdp": sdp})
            assert resp.status == 200
            views.append((await resp.json())["view"])
        over = await olive.post("/api/cameras/SW-CAM-A/live", {"sdp": pcs[2][1]})
        assert over.status == 409
        assert "has 2 viewers, the most it serves (2)" in (await over.json())["error"]
        assert cameras["SW-CAM-A"].rtsp.clients == 1
        assert live_hub.ops.live is not None
        assert live_hub.ops.live.feeds() == 1
        other = await olive.post("/api/cameras/SW-CAM-B/live", {"sdp": pcs[2][1]})
        assert other.status == 200  # the limit is per camera
        await olive.session.delete(f"/api/live/{(await other.json())['view']}", headers={"X-CSRF-Token": olive.csrf})
        await olive.session.delete(f"/api/live/{views[0]}", headers={"X-CSRF-Token": olive.csrf})
        pc3, sdp3 = await offer()
        pcs.append((pc3, sdp3))
        again = await olive.post("/api/cameras/SW-CAM-A/live", {"sdp": sdp3})
        assert again.status == 200
    finally:
        for pc, _ in pcs:
            await pc.close()
    refused = audit(live_hub, "cctv.live.refused")
    assert [(a, t, d["viewers"], d["max_viewers"]) for a, _x, t, d in refused] == [("olive", "camera:SW-CAM-A", 2, 2)]


async def test_nobody_ends_another_viewers_view(live_hub: Hub, olive: ApiClient, test_pki: PkiFixture) -> None:
    """Vera cannot end Olive's view by its id (404), and the view keeps its slot."""
    pc, sdp = await offer()
    try:
        view = (await (await olive.post("/api/cameras/SW-CAM-A/live", {"sdp": sdp})).json())["view"]
        async with api_client(live_hub, test_pki.dir / "ca.pem") as vera:
            await vera.login("vera")
            resp = await vera.session.delete(f"/api/live/{view}", headers={"X-CSRF-Token": vera.csrf})
            assert resp.status == 404
        assert live_hub.ops.live is not None
        assert live_hub.ops.live.viewers("SW-CAM-A") == 1
    finally:
        await pc.close()


async def _link(olive: ApiClient, camera: str = "SW-CAM-A", ttl_s: float | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"camera": camera, "recipient": "police-112"}
    if ttl_s is not None:
        body["ttl_s"] = ttl_s
    resp = await olive.post("/api/camera-links", body)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


def _holder(hub: Hub) -> aiohttp.ClientSession:
    """A browser with no session at all, the way a 112 officer opens the link."""
    import ssl

    ctx = ssl.create_default_context(cafile=str(hub.cfg.api.tls.ca))
    return aiohttp.ClientSession(base_url=f"https://localhost:{hub.api_port}", connector=aiohttp.TCPConnector(ssl=ctx))


def _path(link: dict[str, Any]) -> str:
    return "/live/" + str(link["url"]).rsplit("/live/", 1)[1]


async def test_a_link_opens_its_camera_without_login_until_revoked_and_every_use_is_audited(
        live_hub: Hub, olive: ApiClient) -> None:
    """Olive makes a 30-minute link to camera A for police-112. Without any login its page loads
    and its offer plays camera A; the hub keeps only the token's hash; revoking it ends the running
    view, and the next use is refused (403). Each use, allowed or refused, is audited as the
    recipient."""
    link = await _link(olive)
    assert link["url"].startswith(f"https://localhost:{live_hub.api_port}/live/")
    assert 1799 <= link["expires_at"] - link["created_at"] <= 1801  # the default lifetime
    token = _path(link).split("/")[2]
    conn = sqlite3.connect(live_hub.cfg.db_path)
    try:
        stored = conn.execute("SELECT token_hash FROM camera_links").fetchall()
    finally:
        conn.close()
    assert stored
    assert all(token not in row[0] for row in stored)
    pc, sdp = await offer()
    try:
        async with _holder(live_hub) as holder:
            page = await holder.get(_path(link))
            assert page.status == 200
            assert "live" in await page.text()
            resp = await holder.post(_path(link) + "/offer", json={"sdp": sdp})
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
            assert answer["camera"] == "SW-CAM-A"
            picture = await first_frame(pc, answer["sdp"])
            assert picture.std() > 10
            revoked = await olive.session.delete(f"/api/camera-links/{link['id']}",
                                                 headers={"X-CSRF-Token": olive.csrf})
            assert revoked.status == 200
            assert (await revoked.json())["revoked_by"] == "olive"
            assert live_hub.ops.live is not None
            await until(lambda: live_hub.ops.live is not None and live_hub.ops.live.viewers("SW-CAM-A") == 0)
            pc2, sdp2 = await offer()
            again = await holder.post(_path(link) + "/offer", json={"sdp": sdp2})
            await pc2.close()
            assert again.status == 403
            assert "revoked" in (await again.json())["error"]
    finally:
        await pc.close()
    actor = f"link:{link['id']}:police-112"
    rows = [(a, act, d.get("why")) for a, act, _t, d in audit(live_hub, "cctv.")]
    assert rows == [("olive", "cctv.link.create", None), (actor, "cctv.link.use", None),
                    (actor, "cctv.live.start", None), ("olive", "cctv.link.revoke", None),
                    (actor, "cctv.live.stop", "link revoked"), (actor, "cctv.link.refused",
                                                                 "this link was revoked by olive")]
    listed = await (await olive.get("/api/camera-links")).json()
    assert [(x["id"], x["url"], x["revoked_by"]) for x in listed] == [(link["id"], None, "olive")]


async def test_a_link_refuses_once_it_has_expired(live_hub: Hub, olive: ApiClient) -> None:
    """A link made for 1.5 s plays at first and is refused (403, audited) after it expired; the
    view it opened is ended by the hub."""
    link = await _link(olive, ttl_s=1.5)
    pc, sdp = await offer()
    try:
        async with _holder(live_hub) as holder:
            assert (await holder.post(_path(link) + "/offer", json={"sdp": sdp})).status == 200
            await until(lambda: len(audit(live_hub, "cctv.live.stop")) == 1)  # the hub ended the view
            pc2, sdp2 = await offer()
            late = await holder.post(_path(link) + "/offer", json={"sdp": sdp2})
            await pc2.close()
            assert late.status == 403
            assert "expired" in (await late.json())["error"]
    finally:
        await pc.close()
    whys = [(act, d.get("why")) for _a, act, _t, d in audit(live_hub, "cctv.") if act != "cctv.link.create"]
    assert whys == [("cctv.link.use", None), ("cctv.live.start", None), ("cctv.live.stop", "link expired"),
                    ("cctv.link.refused", "this link has expired")]


async def test_hostile_link_uses_are_refused(live_hub: Hub, olive: ApiClient) -> None:
    """A made-up token and garbled ones are 404 (and not audited); a second view through a link
    allowed one is 409; a link for camera A asking for camera B is 403 and audited; a link's token
    is no session: as a cookie or a header it opens no API route, not even the console's own live
    view; a cross-site offer is refused."""
    link = await _link(olive)
    token = _path(link).split("/")[2]
    _pc, sdp = await offer()
    await _pc.close()
    async with _holder(live_hub) as holder:
        for bad in (secrets.token_urlsafe(32), token[:-1] + ("A" if token[-1] != "A" else "B"), "x" * 4000,
                    "%2e%2e%2fapi%2falarms", token + "=="):
            resp = await holder.post(f"/live/{bad}/offer", json={"sdp": sdp})
            assert resp.status == 404, bad
        first = await holder.post(_path(link) + "/offer", json={"sdp": sdp})
        assert first.status == 200
        second = await holder.post(_path(link) + "/offer", json={"sdp": sdp})
        assert second.status == 409  # one view per link here: a link cannot take every seat of its camera
        assert "this link has all 1 of its views open" in (await second.json())["error"]
        ended = await holder.delete(_path(link) + f"/views/{(await first.json())['view']}")
        assert ended.status == 200
        other = await holder.post(_path(link) + "/offer", json={"sdp": sdp, "camera": "SW-CAM-B"})
        assert other.status == 403
        assert "SW-CAM-A only" in (await other.json())["error"]
        cross = await holder.post(_path(link) + "/offer", json={"sdp": sdp}, headers={"Origin": "https://evil.example"})
        assert cross.status == 403
        for path in ("/api/alarms", "/api/cameras", "/api/camera-links", "/api/audit"):
            assert (await holder.get(path, cookies={"jk_session": token})).status == 401, path
            assert (await holder.get(path, headers={"Authorization": f"Bearer {token}"})).status == 401, path
        made = await holder.post("/api/camera-links", json={"camera": "SW-CAM-B", "recipient": "x"},
                                 cookies={"jk_session": token})
        assert made.status == 401
        watch = await holder.post("/api/cameras/SW-CAM-B/live", json={"sdp": sdp}, cookies={"jk_session": token})
        assert watch.status == 401
    refused = [(d["asked"], d["why"]) for _a, act, _t, d in audit(live_hub, "cctv.link.refused")]
    assert refused == [("SW-CAM-B", "this link shows camera SW-CAM-A only")]
    assert live_hub.ops.live is not None
    assert live_hub.ops.live.viewers("SW-CAM-A") == 0


async def test_hostile_offers_are_refused_before_they_reach_webrtc(live_hub: Hub, olive: ApiClient) -> None:
    """An offer over the size limit, one that is not an SDP, one without video, one without H.264,
    and a body over the API's limit are refused with a clear error; none takes a viewer slot."""
    _pc, sdp = await offer()
    await _pc.close()
    no_h264 = "\r\n".join(line for line in sdp.split("\r\n") if "H264" not in line and "packetization" not in line)
    cases = {
        sdp + "a=x-pad:" + "A" * MAX_SDP + "\r\n": "larger than",
        "hello": "not an SDP",
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n": "no video section",
        no_h264: "H.264",
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\n"
        "a=fmtp:96 packetization-mode=1\r\n" + "a=candidate:\x00\x01 garbage\r\n": "refused",
    }
    for body, says in cases.items():
        resp = await olive.post("/api/cameras/SW-CAM-A/live", {"sdp": body})
        assert resp.status == 422, (says, resp.status, await resp.text())
        assert says in (await resp.json())["error"]
    huge = await olive.post("/api/cameras/SW-CAM-A/live", {"sdp": "v=0" + "A" * (1 << 20)})
    assert huge.status in (400, 413)
    unknown = await olive.post("/api/cameras/NOPE/live", {"sdp": sdp})
    assert unknown.status == 404
    assert live_hub.ops.live is not None
    assert live_hub.ops.live.viewers("SW-CAM-A") == 0
    assert live_hub.ops.live.feeds() == 0


async def test_making_links_is_checked(live_hub: Hub, olive: ApiClient, test_pki: PkiFixture) -> None:
    """A viewer may not make links (403); an unknown camera is 404; a lifetime over the maximum,
    a recipient name with spaces and an unknown field are 422; nothing is stored for any of them."""
    async with api_client(live_hub, test_pki.dir / "ca.pem") as vera:
        await vera.login("vera")
        assert (await vera.post("/api/camera-links", {"camera": "SW-CAM-A", "recipient": "police-112"})).status == 403
    assert (await olive.post("/api/camera-links", {"camera": "NOPE", "recipient": "police-112"})).status == 404
    for body in ({"camera": "SW-CAM-A", "recipient": "police-112", "ttl_s": 86400 * 30},
                 {"camera": "SW-CAM-A", "recipient": "police 112"},
                 {"camera": "SW-CAM-A", "recipient": "police-112", "grant": "admin"}):
        assert (await olive.post("/api/camera-links", body)).status == 422, body
    assert await (await olive.get("/api/camera-links")).json() == []


def test_live_view_config_errors_name_the_file_and_key(test_pki: PkiFixture, tmp_path: Path) -> None:
    """``[live_view]`` with an unknown key, no viewers, or a plain-HTTP public URL refuses to load."""
    for section, key in (({"max_viewer": 3}, "live_view.max_viewer"), ({"max_viewers": 0}, "live_view.max_viewers"),
                         ({"public_url": "http://hub.example"}, "live_view.public_url")):
        raw = raw_config(test_pki, 1883, tmp_path / "hub.db", live_view=section)
        with pytest.raises(ConfigError) as err:
            parse(raw, tmp_path / "hub.toml")
        assert key in str(err.value)
        assert "hub.toml" in str(err.value)


async def test_a_camera_naming_a_foreign_or_non_rtsp_stream_is_refused_before_anything_is_opened(
        live_hub: Hub, olive: ApiClient, cameras: dict[str, RealCamera]) -> None:
    """A camera whose GetStreamUri names another host (its credentials would go there) or a file
    gives a clear refusal (422); no stream is opened and no seat is taken. Put right, it plays."""
    cam = cameras["SW-CAM-B"]
    good = cam.onvif.sim.stream_uri
    assert good is not None
    for uri, says in ((good.replace("127.0.0.1", "127.0.0.2"), "is not the camera's"),
                      ("file:///etc/passwd", "is not rtsp://")):
        cam.onvif.sim.stream_uri = uri
        pc, sdp = await offer()
        await pc.close()
        resp = await olive.post("/api/cameras/SW-CAM-B/live", {"sdp": sdp})
        assert resp.status == 422
        assert says in (await resp.json())["error"]
        assert cam.rtsp.clients == 0
    assert live_hub.ops.live is not None
    assert live_hub.ops.live.viewers("SW-CAM-B") == 0
    cam.onvif.sim.stream_uri = good
    pc, sdp = await offer()
    try:
        resp = await olive.post("/api/cameras/SW-CAM-B/live", {"sdp": sdp})
        assert resp.status == 200
        assert (await first_frame(pc, (await resp.json())["sdp"])).std() > 10
    finally:
        await pc.close()


async def test_a_camera_that_goes_away_ends_its_views_and_comes_back_fresh(
        hub_config: ConfigFactory, tmp_path: Path, test_pki: PkiFixture) -> None:
    """The camera's RTSP server stops while Olive watches: her view is ended and audited ("camera
    stream ended"), the seat is free, and once the camera is back a new view plays (the hub opened
    its stream anew rather than handing out the dead one)."""
    password = tmp_path / "c.password"
    async with real_camera("SW-CAM-C") as cam:
        entry = cam.entry(password, *PLACES["SW-CAM-A"])
        cfg = hub_config(api={"enabled": True}, cctv={"evidence_dir": str(tmp_path / "evidence"),
                                                      "cameras": {"SW-CAM-C": entry}})
        add_users(cfg)
        async with running(cfg) as hub, api_client(hub, test_pki.dir / "ca.pem") as olive:
            await olive.login("olive")
            live = hub.ops.live
            assert live is not None
            pc, sdp = await offer()
            try:
                resp = await olive.post("/api/cameras/SW-CAM-C/live", {"sdp": sdp})
                assert resp.status == 200
                await first_frame(pc, (await resp.json())["sdp"])
                cam.stop_stream()  # while she watches
                await until(lambda: live.viewers("SW-CAM-C") == 0, 20)
            finally:
                await pc.close()
            cam.start_stream()
            pc2, sdp2 = await offer()
            try:
                resp = await olive.post("/api/cameras/SW-CAM-C/live", {"sdp": sdp2})
                assert resp.status == 200, await resp.text()
                assert (await first_frame(pc2, (await resp.json())["sdp"])).std() > 10
            finally:
                await pc2.close()
    stops = [d["why"] for _a, _x, _t, d in audit(hub, "cctv.live.stop")]
    assert stops[0] == "camera stream ended"


async def test_an_answered_offer_whose_browser_never_connects_gives_its_seat_back(
        live_hub: Hub, olive: ApiClient) -> None:
    """Two offers are answered and their browsers vanish without connecting: both seats of camera
    A are taken, then given back once connect_timeout_s (5 s here) has passed; each stop is audited
    as "never connected"."""
    for _ in range(2):
        pc, sdp = await offer()
        await pc.close()
        assert (await olive.post("/api/cameras/SW-CAM-A/live", {"sdp": sdp})).status == 200
    live = live_hub.ops.live
    assert live is not None
    assert live.viewers("SW-CAM-A") == 2
    await until(lambda: live.viewers("SW-CAM-A") == 0 and len(audit(live_hub, "cctv.live.stop")) == 2, 20)
    assert [d["why"] for _a, _x, _t, d in audit(live_hub, "cctv.live.stop")] == ["never connected"] * 2
