"""``jikimi bench latency``: from the water crossing the closing depth to each party acting on it.

A real deployment on this machine, each part its own process where it matters: Mosquitto with
mutual TLS, the hub (``jikimi hub run``), the edge agent (``jikimi edge run``) beside an underpass
simulator (Modbus TCP, in this process so the crossing and the barrier write are timed at the
device), and a reference city-centre receiver (``hub/receiver.py``, in this process) that
validates, verifies and acknowledges each CAP alert. An operator's browser is stood in for by an
HTTPS client logged in as a viewer and reading the console's live stream (``/api/events``).

Each trial sets the water from below the closing depth to above it (a random phase against the
agent's polls) and measures, from that instant (wall clock, one machine):

- ``crossing_to_write_ms``: → the barrier's close command arriving at the simulated PLC;
- ``crossing_to_alarm_ms``: → the hub's ``alarm`` ``activate`` event for the site's depth in the
  live stream;
- ``crossing_to_cap_ack_ms``: → the city centre's acknowledgement of the CAP alert of *that*
  activation (the forwarding outbox's message keyed by the alarm id and the activation);
- ``alarm_to_snapshot_ms``: from that ``activate`` in the live stream → the evidence of that alarm
  stored: the nearest facing camera (a simulated ONVIF PTZ camera, in this process) moved to the
  site's preset (``CAMERA_TRAVEL_S`` of travel: it is sent back to another preset between trials),
  reported stopped, and its snapshot fetched over digest auth and stored with its digest.

After the trials, ``live_view_startup_ms``: ``LIVE_VIEWS`` times, a WebRTC client (aiortc, standing
in for the console's browser; it does not include the browser's own decode and paint) posts its
offer for the camera (``POST /api/cameras/{camera}/live``) and times until it decodes the first
picture: the hub opening the camera's RTSP stream (the camera's H.264 over GStreamer's RTSP
server), ICE and DTLS on loopback, and the first keyframe. Each view is ended before the next, so
each opens the camera's stream afresh.

Between trials the water drops, the hub's alarm clears, and the barrier is set open again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import socket
import sqlite3
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import tomli_w

from edge.sim.servers import run_simulator
from shared.paths import profiles_dir
from shared.profiles import load_profile
from trust.broker import RunningBroker
from trust.pki import Pki, Role

SITE = "gg-bench-lat-01"
HUB = "hub-bench-latency"
SIGNER = f"alert-{HUB}"
CLOSING_CM = 15.0
PROFILE = "underpass-jk-up300.toml"
RULE = "closing_depth"
"""The hub's rule for an underpass's depth at the closing depth (hub/rules.py)."""
SITE_LAT, SITE_LON = 37.2585, 127.0155
CAMERA = "SW-PTZ-BENCH"
CAMERA_TRAVEL_S = 1.0
"""The simulated PTZ move to a preset (real domes take about 0.5-3 s)."""
CAMERA_PRESET, CAMERA_PARKED = 2, 1
LIVE_VIEWS = 10


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _summary(values: list[float]) -> dict[str, Any]:
    return {"p50": _pct(values, 0.5), "p99": _pct(values, 0.99),
            "max": round(max(values), 1) if values else None, "n": len(values)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until(cond: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():  # state owned by other tasks
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@contextlib.asynccontextmanager
async def _process(args: list[str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli", *args, stdout=out, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class _LiveStream:
    """The console's live stream, read over HTTPS as a logged-in viewer."""

    def __init__(self) -> None:
        self.activations: dict[int, float] = {}
        """alarm id → wall time of its latest ``activate`` by the closing-depth rule."""
        self.clears: dict[int, float] = {}

    async def read(self, session: aiohttp.ClientSession) -> None:
        async with session.get("/api/events") as resp:
            resp.raise_for_status()
            kind = ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:") and kind == "alarm":
                    body = json.loads(line[5:])
                    if body.get("site") == SITE and body.get("rule") == RULE:
                        if body.get("event") == "activate":
                            self.activations[int(body["id"])] = time.time()
                        elif body.get("event") == "clear":
                            self.clears[int(body["id"])] = time.time()


async def measure_latency(trials: int = 20, seed: int = 7) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="jikimi-bench-latency-") as tmp:
        return await _run(Path(tmp), trials, seed)


async def _run(work: Path, trials: int, seed: int) -> dict[str, Any]:
    from edge.sim import camera_onvif, camera_rtsp
    from hub import receiver
    from hub.forward.capread import shipped_schema

    pki = Pki(work / "pki")
    pki.init()
    for cn, role in (("broker", Role.BROKER), (HUB, Role.HUB), (SIGNER, Role.ALERT), (SITE, Role.EDGE)):
        pki.issue(cn, role)
    (work / "broker").mkdir()
    profile = load_profile(profiles_dir() / PROFILE)
    poll_s = profile.points["water_depth_cm"].poll_s
    password = secrets.token_urlsafe(16)
    write_at: list[float] = []
    with RunningBroker.start(pki.dir, work / "broker") as broker:
        async with contextlib.AsyncExitStack() as stack:
            centre = await stack.enter_async_context(
                receiver.serve(db=work / "centre.db", schema=shipped_schema(), ca_bundle=pki.ca_chain))
            sim = await stack.enter_async_context(run_simulator(profile, transport="tcp"))
            cam_password = secrets.token_urlsafe(12)
            (work / "camera.password").write_text(cam_password + "\n")
            cam = await stack.enter_async_context(camera_onvif.serve(
                CAMERA, user="jikimi", password=cam_password, travel_s=CAMERA_TRAVEL_S))
            stream = stack.enter_context(camera_rtsp.serve(CAMERA, user="jikimi", password=cam_password,
                                                           preset=cam.sim.preset_now))
            cam.sim.stream_uri = stream.url
            phys = sim.physics
            phys.barrier.travel_s = 0.5
            phys.water.depth_cm = 5.0
            original = phys.command

            def spy(point: str, value: Any) -> None:  # instrumentation: when the write arrives
                if point == "barrier_cmd" and value == "close":
                    write_at.append(time.time())
                original(point, value)

            phys.command = spy  # type: ignore[method-assign]
            api_port = _free_port()
            db = work / "hub" / "hub.db"
            db.parent.mkdir()
            hub_cfg = work / "hub" / "hub.toml"
            hub_cfg.write_text(tomli_w.dumps({
                "hub": {"id": HUB},
                "broker": {"host": "localhost", "port": broker.port, "ca": str(pki.ca_chain),
                           "cert": str(pki.cert(HUB)), "key": str(pki.key(HUB))},
                "database": {"path": str(db)},
                "commands": {"signing_key": str(pki.command_key)},
                "api": {"listen": f"127.0.0.1:{api_port}"},
                "sites": {"accept_any": False, "registry": {
                    SITE: {"area": "gg-suwon", "name": "bench underpass", "lat": SITE_LAT, "lon": SITE_LON}}},
                "cctv": {"evidence_dir": str(work / "hub" / "evidence"), "ptz_settle_s": 0.0, "cameras": {
                    CAMERA: {"lat": SITE_LAT + 0.0009, "lon": SITE_LON, "onvif_url": cam.device_url,  # ~100 m north
                             "user": "jikimi", "password_file": str(work / "camera.password"),
                             "presets": [{"preset": CAMERA_PARKED, "heading_deg": 0, "fov_deg": 40},
                                         {"preset": CAMERA_PRESET, "heading_deg": 180, "fov_deg": 40}]}}},
                "forward": {"signing_key": str(pki.key(SIGNER)), "signing_cert": str(pki.cert(SIGNER)),
                            "recipients": {"city-centre": {"kind": "city_centre", "url": centre.url}}},
            }))
            hub_proc = await stack.enter_async_context(_process(["hub", "run", "--config", str(hub_cfg)],
                                                                 work / "hub.log"))
            ctx = ssl.create_default_context(cafile=str(pki.ca_chain))
            session = await stack.enter_async_context(aiohttp.ClientSession(
                base_url=f"https://localhost:{api_port}", connector=aiohttp.TCPConnector(ssl=ctx),
                cookie_jar=aiohttp.CookieJar(unsafe=True)))
            if not await _healthy(session, hub_proc, 60):
                tail = (work / "hub.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError("the hub did not come up: " + " | ".join(tail))
            from hub import auth
            from hub.roles import Role as HubRole

            await asyncio.to_thread(auth.add_user, db, "viewer", HubRole.VIEWER, password, actor="bench")
            async with session.post("/api/session", json={"username": "viewer", "password": password}) as r:
                r.raise_for_status()
                session.headers["X-CSRF-Token"] = (await r.json())["csrf"]
            live = _LiveStream()
            reader = asyncio.create_task(live.read(session), name="bench.live")
            stack.callback(reader.cancel)
            site_cfg = work / "edge" / "site.toml"
            site_cfg.parent.mkdir()
            site_cfg.write_text(tomli_w.dumps({
                "site": {"id": SITE, "state_dir": str(work / "edge" / "state")},
                "hub": {"host": "localhost", "port": broker.port, "ca": str(pki.ca_chain),
                        "cert": str(pki.cert(SITE)), "key": str(pki.key(SITE)),
                        "command_key": str(pki.command_pub)},
                "devices": {"barrier": {"profile": str(profiles_dir() / PROFILE), "transport": sim.address}},
            }))
            await stack.enter_async_context(_process(["edge", "run", "--config", str(site_cfg)], work / "edge.log"))
            if not await _until(lambda: _site_known(db), 60):
                raise RuntimeError(f"the edge did not reach the hub: see {work / 'edge.log'}")
            rng = random.Random(seed)  # noqa: S311 - phases of a benchmark, not secrets
            rows: list[dict[str, float | None]] = []
            for _ in range(trials):
                cam.sim.preset = CAMERA_PARKED  # each trial's alarm moves the camera
                rows.append(await _trial(phys, live, write_at, db, rng.uniform(0, poll_s)))
            startups = [await _live_view_startup(session) for _ in range(LIVE_VIEWS)]
    write = [r["write"] for r in rows if r["write"] is not None]
    alarm = [r["alarm"] for r in rows if r["alarm"] is not None]
    ack = [r["cap_ack"] for r in rows if r["cap_ack"] is not None]
    snap = [r["snapshot"] for r in rows if r["snapshot"] is not None]
    return {
        "trials": trials, "poll_period_ms": round(poll_s * 1000), "closing_depth_cm": CLOSING_CM,
        "crossing_to_write_ms": _summary(write),
        "crossing_to_alarm_ms": _summary(alarm),
        "crossing_to_cap_ack_ms": _summary(ack),
        "alarm_to_snapshot_ms": _summary(snap),
        "live_view_startup_ms": _summary([s for s in startups if s is not None]),
        "live_views": LIVE_VIEWS,
        "camera_travel_s": CAMERA_TRAVEL_S,
        "parts": "Mosquitto, `jikimi hub run` and `jikimi edge run` as processes; simulator, ONVIF camera, "
                 "receiver and the live-stream client in the benchmark's process",
    }


async def _healthy(session: aiohttp.ClientSession, proc: asyncio.subprocess.Process, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.returncode is None:
        try:
            async with session.get("/api/health") as r:
                if r.status == 200 and (await r.json()).get("mqtt_connected"):
                    return True
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    return False


def _site_known(db: Path) -> bool:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        row = conn.execute("SELECT count(*) FROM latest WHERE site = ? AND point = 'water_depth_cm'",
                           (SITE,)).fetchone()
        return bool(row and row[0])
    except sqlite3.Error:
        return False
    finally:
        conn.close()


async def _live_view_startup(session: aiohttp.ClientSession) -> float | None:
    """Offer → first decoded picture of the camera's live view, in ms (None: no picture in 20 s)."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    got: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
    def on_track(track: MediaStreamTrack) -> None:
        if not got.done():
            got.set_result(track)

    pc.on("track", on_track)
    pc.addTransceiver("video", direction="recvonly")
    view = None
    try:
        await pc.setLocalDescription(await pc.createOffer())
        started = time.monotonic()
        async with session.post(f"/api/cameras/{CAMERA}/live", json={"sdp": pc.localDescription.sdp}) as r:
            r.raise_for_status()
            answer = await r.json()
        view = answer["view"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        try:
            async with asyncio.timeout(20):
                await (await got).recv()
        except TimeoutError:
            return None
        return (time.monotonic() - started) * 1000
    finally:
        if view is not None:  # ended by the viewer, then hung up
            async with session.delete(f"/api/live/{view}") as r:
                r.raise_for_status()
        await pc.close()


def _evidence_at(db: Path, alarm_id: int, after: float) -> float | None:
    """When the evidence of alarm ``alarm_id`` taken after ``after`` was captured and stored."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT min(captured_at) FROM cctv_evidence WHERE ref = ? AND captured_at >= ?",
                           (f"alarm:{alarm_id}", after)).fetchone()
    finally:
        conn.close()
    return float(row[0]) if row and row[0] is not None else None


def _cap_acked_at(db: Path, alarm_id: int, after: float) -> float | None:
    """The city centre's acknowledgement of the alert of alarm ``alarm_id``'s activation after ``after``."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT min(d.acked_at) FROM fwd_messages m JOIN fwd_deliveries d ON d.identifier = m.identifier"
            " WHERE m.notice_key LIKE ? AND m.created_at >= ? AND d.recipient = 'city-centre'"
            " AND d.acked_at IS NOT NULL", (f"alarm:{alarm_id}:activate:%", after)).fetchone()
    finally:
        conn.close()
    return float(row[0]) if row and row[0] is not None else None


async def _trial(phys: Any, live: _LiveStream, write_at: list[float], db: Path,
                 phase_s: float) -> dict[str, float | None]:
    # reset: water low, the hub's alarm cleared, the barrier open again
    phys.water.depth_cm = 5.0
    await _until(lambda: all(live.clears.get(a, 0) >= t for a, t in live.activations.items()), 30)
    phys.barrier.position, phys.barrier.moving = 0.0, 0
    await asyncio.sleep(1.0 + phase_s)
    writes_before = len(write_at)
    crossed = time.time()
    phys.water.depth_cm = CLOSING_CM + 3.0
    got: dict[str, float | None] = {"write": None, "alarm": None, "cap_ack": None, "snapshot": None}
    if await _until(lambda: len(write_at) > writes_before, 10):
        got["write"] = (write_at[writes_before] - crossed) * 1000
    if await _until(lambda: any(t >= crossed for t in live.activations.values()), 10):
        alarm_id, at = max(live.activations.items(), key=lambda kv: kv[1])
        got["alarm"] = (at - crossed) * 1000
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (got["cap_ack"] is None or got["snapshot"] is None):
            if got["cap_ack"] is None:
                acked = await asyncio.to_thread(_cap_acked_at, db, alarm_id, crossed)
                got["cap_ack"] = None if acked is None else (acked - crossed) * 1000
            if got["snapshot"] is None:
                stored = await asyncio.to_thread(_evidence_at, db, alarm_id, crossed)
                got["snapshot"] = None if stored is None else (stored - at) * 1000
            await asyncio.sleep(0.02)
    await _until(lambda: phys.barrier.limit_closed, 10)
    return got
