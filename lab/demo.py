"""``jikimi demo``: the whole system on one machine, state under ``./var/demo``.

What runs, all real parts on loopback: a fresh development PKI; Mosquitto with mutual TLS; the
hub (ingest, alarms, commands, API and console, forwarding, CCTV and live video); a reference
receiver standing for the city centre and another for 119; simulated PTZ cameras (ONVIF, H.264
over RTSP) facing the underpasses; and twelve sites in three cities (Suwon, Bucheon, Goyang),
each an edge agent with its simulated device: underpass barriers (Modbus TCP), semi-basement alarms and rain gauges
(Modbus RTU on pseudo-terminals), river gates (serial line) and a slope meter.

The real Walnut Creek storm of 2024-08-08/09 (USGS; Tropical Storm Debby) and the creek's
measured recession on 08-10/11 are replayed through the simulators, compressed so the four days
play in 85 % of the chosen time: the creek's stage rise, scaled per site, is the water at each
site, and its rain feeds the rain gauges. Water rises, the underpasses flood, their edges close
the barriers on their own, alarms and CAP alerts flow with camera snapshots, and the water falls
below every underpass's and gate's reopening depth with time left to practise a reopen (one
supervisor asks, the other approves).

At the end the edges stop producing, their outboxes drain to the hub, and only then are the
figures counted (so ``records_sent == records_committed`` does not depend on a race). The
figures of ``--json``: records sent and committed, alarms, commands, alerts and their
acknowledgements, how many CAP messages the receivers got and how many of those carried a
signature that verified against the demo CA (``cap_received``, ``cap_signed_verified``); per
underpass the latency from the water crossing 15 cm to the barrier closed and to the city
centre's acknowledgement of the crossing's own CAP alert (the first raise of the underpass's
closing-depth alarm; ``crossing_to_alarm_ms``: that raise committed at the hub); per
underpass and gate when its water fell below its reopening depth (``below_reopening_s``); and
the network forecast's alarms (``forecast_alarms``; per alarm in ``forecasts`` the site's own
depth at the raise, how long after it the site's own water reached 15 cm, and the neighbours).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trust.broker import RunningBroker
from trust.pki import Pki, Role

if TYPE_CHECKING:
    from edge.sim.physics import DevicePhysics

HUB = "hub-demo"
ALERT_SIGNER = f"alert-{HUB}"
STORM_S = 4 * 86400.0
CLOSING_CM = 15.0
"""An underpass closes at 15 cm (the hub's and the edge's default, the 2024 national guideline)."""
REOPENING_CM = 5.0
"""An underpass reopens below 5 cm (the hub's and the edge's default)."""
GATE_CLOSING_CM = 100.0
GATE_REOPENING_CM = 50.0
"""The river gates' policy, at the edge and at the hub: close at 100 cm of river, reopen below 50."""


@dataclass(frozen=True)
class SiteSpec:
    site: str
    area: str
    name: str
    profile: str
    lat: float
    lon: float
    scale: float
    """Site water = the creek's stage rise × scale (cm)."""


SITES: tuple[SiteSpec, ...] = tuple(SiteSpec(*row) for row in (
    ("gg-suwon-up-0001", "gg-suwon", "세류 지하차도", "underpass-jk-up300.toml", 37.2585, 127.0155, 0.26),
    ("gg-suwon-up-0002", "gg-suwon", "권선 지하차도", "underpass-jk-up300.toml", 37.2570, 127.0290, 0.20),
    ("gg-suwon-fa-0001", "gg-suwon", "수원 반지하 주택 1", "flood-alarm-jk-fa100.toml", 37.2800, 127.0100, 0.12),
    ("gg-suwon-rg-0001", "gg-suwon", "수원 강우계", "rain-gauge-jk-rn05.toml", 37.2700, 127.0200, 0.0),
    ("gg-bucheon-up-0001", "gg-bucheon", "부천 지하차도", "underpass-jk-up300.toml", 37.5035, 126.7660, 0.23),
    ("gg-bucheon-fa-0001", "gg-bucheon", "부천 반지하 주택 3", "flood-alarm-jk-fa100.toml", 37.4990, 126.7830, 0.10),
    ("gg-bucheon-gt-0001", "gg-bucheon", "굴포천 산책로 입구", "river-gate-jk-rg10.toml", 37.5150, 126.7720, 1.0),
    ("gg-bucheon-sl-0001", "gg-bucheon", "부천 급경사지", "displacement-jk-dx200.toml", 37.4920, 126.8000, 0.0),
    ("gg-goyang-up-0001", "gg-goyang", "고양 지하차도", "underpass-jk-up300.toml", 37.6580, 126.8320, 0.22),
    ("gg-goyang-gt-0001", "gg-goyang", "한강 산책로 입구", "river-gate-jk-rg10.toml", 37.6350, 126.8100, 1.0),
    ("gg-goyang-fa-0001", "gg-goyang", "고양 반지하 주택 2", "flood-alarm-jk-fa100.toml", 37.6450, 126.8350, 0.11),
    ("gg-goyang-rg-0001", "gg-goyang", "고양 강우계", "rain-gauge-jk-rn05.toml", 37.6500, 126.8000, 0.0),
))


STORM_FILE = Path(__file__).with_name("data") / "walnut-creek-2024-08-08_11.csv"
FOOT_CM = 30.48


def storm_series(path: Path = STORM_FILE) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Four days of the creek's stage rise (cm above 2024-08-08 00:00) and rain (mm/h), from the
    copy shipped with the package (see data/SOURCE.md)."""
    import csv
    import datetime as dt

    midnight = dt.datetime(2024, 8, 8)
    stage_ft: list[tuple[float, float]] = []
    rain: list[tuple[float, float]] = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            t = (dt.datetime.fromisoformat(row["datetime_utc"]) - midnight).total_seconds()
            if row["stage_ft"]:
                stage_ft.append((t, float(row["stage_ft"])))
            if row["rain_in_5min"]:
                rain.append((t, float(row["rain_in_5min"]) * 25.4 * 12))  # in / 5 min -> mm/h
    base = stage_ft[0][1]
    return [(t, max(0.0, v - base) * FOOT_CM) for t, v in stage_ft], rain


def fresh_pki(root: Path, edges: list[str], hub: str = HUB) -> Pki:
    """A new PKI under ``root/pki`` with the broker, the hub ``hub``, its alert signer and ``edges``."""
    pki_dir = root / "pki"
    if pki_dir.exists():
        shutil.rmtree(pki_dir)
    pki = Pki(pki_dir)
    pki.init()
    pki.issue("broker", Role.BROKER)
    pki.issue(hub, Role.HUB)
    pki.issue(f"alert-{hub}", Role.ALERT)
    pki.issue_many(list(edges), Role.EDGE)
    return pki


def play_storm(phys: DevicePhysics, spec: SiteSpec, stage: list[tuple[float, float]], rain: list[tuple[float, float]],
               speed: float) -> None:
    """Feed a simulator's physics the storm at ``speed``: the creek's rise × the site's scale as its
    water, the rain to its gauge, and a slope that creeps as the storm is compressed."""
    if spec.scale:
        phys.water.series = tuple((t / speed, v * spec.scale) for t, v in stage)
        phys.water.t_s = 0.0
    phys.rain_series = tuple((t / speed, v * speed) for t, v in rain)
    phys.barrier.travel_s = 3.0
    if "-sl-" in spec.site:
        phys.slope.rate_mm_per_h = 0.2 * speed


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    lines: list[dict[str, Any]] = field(default_factory=list)
    quiet: bool = False

    def say(self, what: str, **data: Any) -> None:
        t = round(time.monotonic() - self.started, 1)
        self.lines.append({"t_s": t, "what": what, **data})
        if not self.quiet:
            print(f"[{t:7.1f}s] {what}", flush=True)


@dataclass
class Underpass:
    site: str
    crossed_wall: float | None = None
    closed_wall: float | None = None


@dataclass
class Drains:
    """An underpass or gate: when its water fell below the reopening depth after its crossing."""

    site: str
    closing_cm: float
    reopening_cm: float
    flooded: bool = False
    below_at_s: float | None = None


def _drains(spec: SiteSpec) -> Drains | None:
    if "-up-" in spec.site:
        return Drains(spec.site, CLOSING_CM, REOPENING_CM)
    if "-gt-" in spec.site:
        return Drains(spec.site, GATE_CLOSING_CM, GATE_REOPENING_CM)
    return None


async def _watch_underpasses(sims: dict[str, Any], ups: dict[str, Underpass], drains: dict[str, Drains],
                             tl: Timeline) -> None:
    """Every 20 ms: each device's physics advanced to now; the crossing's time is interpolated
    between the last two looks, so it is never later than when the device first reported it."""
    last: dict[str, tuple[float, float]] = {}
    while True:
        for site, up in ups.items():
            sims[site].device.refresh()
            phys = sims[site].physics
            now, depth = time.time(), phys.water.depth_cm
            before = last.get(site, (now, depth))
            last[site] = (now, depth)
            if up.crossed_wall is None and depth >= CLOSING_CM:
                t0, d0 = before
                rose = d0 < CLOSING_CM and depth > d0
                up.crossed_wall = t0 + (now - t0) * (CLOSING_CM - d0) / (depth - d0) if rose else now
                tl.say(f"{site}: water crossed {CLOSING_CM:g} cm ({depth:.1f} cm)")
            if up.crossed_wall is not None and up.closed_wall is None and phys.barrier.limit_closed:
                up.closed_wall = time.time()
                tl.say(f"{site}: barrier closed (limit switch), "
                       f"{(up.closed_wall - up.crossed_wall) * 1000:.0f} ms after the crossing")
        for site, d in drains.items():
            depth = sims[site].physics.water.depth_cm
            if not d.flooded and depth >= d.closing_cm:
                d.flooded = True
            elif d.flooded and d.below_at_s is None and depth < d.reopening_cm:
                d.below_at_s = round(time.monotonic() - tl.started, 1)
                tl.say(f"{site}: water {depth:.2f} cm, below the reopening depth {d.reopening_cm:g} cm: "
                       "a reopen may be asked for (one supervisor asks, another approves)")
        await asyncio.sleep(0.02)


async def _timeline(hub: Any, tl: Timeline) -> None:
    async for ev in hub.bus.subscribe():
        body = json.loads(ev.data) if ev.data else {}
        if ev.kind == "alarm" and body.get("event") in ("activate", "clear"):
            tl.say(f"alarm {body['event']}: {body['site']} {body['point']} ({body['rule']}, {body['priority']})")
        elif ev.kind == "event" and str(body.get("kind", "")).startswith(("local.", "forecast.")):
            tl.say(f"edge event {body['site']}: {body['kind']} — {body.get('detail', '')}")
        elif ev.kind == "command":
            tl.say(f"command {body.get('cmd_id', '')[:8]}: {body.get('state', '')}")
        elif ev.kind == "escalation":
            tl.say(f"ESCALATED: {body.get('recipient')} did not acknowledge {body.get('identifier')}")


def hub_base(root: Path, pki: Pki, broker: RunningBroker, hub: str, sites: tuple[SiteSpec, ...]) -> dict[str, Any]:
    """A hub's identity, broker, database, command key, API, site registry and rules (its
    ``hub.toml`` as a dict): what every demo hub has, with its state under ``root/hub``."""
    return {
        "hub": {"id": hub},
        "broker": {"host": "localhost", "port": broker.port, "ca": str(pki.ca_chain), "cert": str(pki.cert(hub)),
                   "key": str(pki.key(hub))},
        "database": {"path": str(root / "hub" / "hub.db")},
        "commands": {"signing_key": str(pki.command_key)},
        "api": {"listen": "127.0.0.1:0", "enabled": True},
        "sites": {"accept_any": False, "registry": {
            s.site: {"area": s.area, "name": s.name, "lat": s.lat, "lon": s.lon} for s in sites}},
        "rules": {"kinds": {"river_gate": {"closing_depth_cm": GATE_CLOSING_CM,
                                           "reopening_depth_cm": GATE_REOPENING_CM}}},
    }


def _hub_raw(root: Path, pki: Pki, broker: RunningBroker, centre_url: str, fire_url: str,
             cameras: dict[str, dict[str, Any]], forward_to: str | None) -> dict[str, Any]:
    recipients: dict[str, Any] = {
        "city-centre": {"kind": "city_centre", "url": centre_url, "escalate_after_s": 60.0},
        "fire-119": {"kind": "fire_119", "url": fire_url, "priorities": ["critical"], "escalate_after_s": 60.0},
    }
    if forward_to:
        recipients["forward-to"] = {"kind": "agency", "url": forward_to}
    return {
        **hub_base(root, pki, broker, HUB, SITES),
        "forward": {"recipients": recipients, "signing_key": str(pki.key(ALERT_SIGNER)),
                    "signing_cert": str(pki.cert(ALERT_SIGNER))},
        "cctv": {"evidence_dir": str(root / "hub" / "evidence"), "ptz_settle_s": 0.0, "cameras": cameras},
        # the network forecast (hub/forecastdesk.py): scored four times a second, as the storm is compressed
        "forecast": {"every_s": 0.25, "hold_s": 0.5},
    }


def _site_config(root: Path, pki: Pki, broker: RunningBroker, spec: SiteSpec, transport: str) -> Path:
    from shared.paths import profiles_dir

    d = root / "edges" / spec.site
    d.mkdir(parents=True, exist_ok=True)
    policy = (f"closing_depth_cm = {GATE_CLOSING_CM}\nreopening_depth_cm = {GATE_REOPENING_CM}\n"
              if "gt" in spec.site else "")
    depth_source = 'depth_source = "device.water_level_cm"\n' if "gt" in spec.site else ""
    model = 'model = "flood"\n' if "-up-" in spec.site else ""
    text = f"""[site]
id = "{spec.site}"
name = "{spec.name}"
state_dir = "{d / 'state'}"

[hub]
host = "localhost"
port = {broker.port}
ca = "{pki.ca_chain}"
cert = "{pki.cert(spec.site)}"
key = "{pki.key(spec.site)}"
command_key = "{pki.command_pub}"

[policy]
verify_timeout_s = 20.0
{policy}
[devices.device]
profile = "{profiles_dir() / spec.profile}"
transport = "{transport}"
{depth_source}{model}"""
    path = d / "site.toml"
    path.write_text(text)
    return path


@contextlib.asynccontextmanager
async def _receivers(root: Path, ca: Path) -> AsyncIterator[tuple[Any, Any]]:
    """The city centre and 119: they validate CAP and verify its signature against the demo CA."""
    from hub import receiver
    from hub.forward.capread import shipped_schema

    schema = shipped_schema()
    (root / "receivers").mkdir(parents=True, exist_ok=True)
    async with receiver.serve(db=root / "receivers" / "city-centre.db", schema=schema, ca_bundle=ca) as centre, \
            receiver.serve(db=root / "receivers" / "fire-119.db", schema=schema, ca_bundle=ca) as fire:
        yield centre, fire


async def run_demo(root: Path, *, duration_s: float | None, headless: bool, json_out: Path | None,
                   forward_to: str | None, speed: float | None) -> int:
    from edge.agent import Agent
    from edge.config import load_site_config
    from edge.sim import camera_onvif, camera_rtsp
    from edge.sim.servers import run_simulator
    from hub import auth
    from hub.config import parse
    from hub.roles import Role as HubRole
    from hub.service import running
    from shared.paths import profiles_dir
    from shared.profiles import load_profile

    root = root.resolve()
    play_s = duration_s * 0.85 if duration_s else 600.0
    speed = speed or STORM_S / play_s
    tl = Timeline(quiet=headless)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    pki = fresh_pki(root, [s.site for s in SITES])
    stage, rain = storm_series()
    ups: dict[str, Underpass] = {s.site: Underpass(s.site) for s in SITES if "-up-" in s.site}
    drains = {s.site: d for s in SITES if (d := _drains(s)) is not None}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    (root / "broker").mkdir()
    with RunningBroker.start(pki.dir, root / "broker", persistence=True) as broker:
        async with contextlib.AsyncExitStack() as stack:
            centre, fire = await stack.enter_async_context(_receivers(root, pki.ca_chain))
            sims: dict[str, Any] = {}
            cameras: dict[str, dict[str, Any]] = {}
            for spec in SITES:
                profile = load_profile(profiles_dir() / spec.profile)
                sim = await stack.enter_async_context(run_simulator(profile))
                sims[spec.site] = sim
                play_storm(sim.physics, spec, stage, rain, speed)
                if spec.site in ups:  # a PTZ camera ~80 m east, preset 1 facing the underpass
                    cam_id, cam_pw = f"CCTV-{spec.site[3:]}", secrets.token_urlsafe(12)
                    pw_file = root / "cameras" / f"{cam_id}.password"
                    pw_file.parent.mkdir(exist_ok=True)
                    pw_file.write_text(cam_pw + "\n")
                    pw_file.chmod(0o600)
                    cam = await stack.enter_async_context(camera_onvif.serve(
                        cam_id, user="jikimi", password=cam_pw, travel_s=1.0))
                    stream = stack.enter_context(camera_rtsp.serve(cam_id, user="jikimi", password=cam_pw,
                                                                   preset=cam.sim.preset_now))
                    cam.sim.stream_uri = stream.url
                    cameras[cam_id] = {
                        "lat": spec.lat, "lon": spec.lon + 0.0009, "range_m": 150, "onvif_url": cam.device_url,
                        "user": "jikimi", "password_file": str(pw_file),
                        "presets": [{"preset": 1, "heading_deg": 270, "fov_deg": 60},
                                    {"preset": 2, "heading_deg": 90, "fov_deg": 60}]}
            raw = _hub_raw(root, pki, broker, centre.url, fire.url, cameras, forward_to)
            (root / "hub").mkdir(exist_ok=True)
            cfg = parse(raw, root / "hub" / "hub.toml")
            hub = await stack.enter_async_context(running(cfg))
            passwords = {name: secrets.token_urlsafe(12) for name in ("operator", "supervisor1", "supervisor2")}
            for name, role in (("operator", HubRole.OPERATOR), ("supervisor1", HubRole.SUPERVISOR),
                               ("supervisor2", HubRole.SUPERVISOR)):
                await asyncio.to_thread(auth.add_user, cfg.db_path, name, role, passwords[name], actor="demo")
            agents: list[Agent] = []
            for spec in SITES:
                sim = sims[spec.site]
                agent = Agent(load_site_config(_site_config(root, pki, broker, spec, sim.transport)))
                await agent.open(stack)
                agents.append(agent)
            console = f"https://localhost:{hub.api_port}/"
            banner = [f"jikimi demo — state in {root.resolve()}",
                      f"  console   {console}  (trust {pki.ca_chain.resolve()})",
                      *[f"  login     {n} / {p}" for n, p in passwords.items()],
                      f"  receivers {centre.url} (city centre), {fire.url} (119)",
                      f"  storm     Walnut Creek 2024-08-08/11 at {speed:.0f}× ({STORM_S / speed:.0f} s)",
                      "Ctrl-C stops everything."]
            print("\n".join(banner), flush=True)
            (root / "credentials.txt").write_text("\n".join(f"{n} {p}" for n, p in passwords.items()) + "\n")
            tl.say("twelve sites in three cities are up; the storm begins")
            async with asyncio.TaskGroup() as tg:
                producing = [tg.create_task(a.run(), name=f"edge:{a.cfg.site.id}") for a in agents]
                tasks = [tg.create_task(_watch_underpasses(sims, ups, drains, tl), name="demo.watch"),
                         tg.create_task(_timeline(hub, tl), name="demo.timeline")]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=duration_s)
                tl.say("stopping: the edges stop producing; their outboxes drain to the hub")
                senders = await _stop_producing(tg, agents, producing)
                drained = await _drain(agents, 30.0)
                tl.say("outboxes drained" if drained else "outboxes NOT drained within 30 s")
                forwarded = await _forwarding_settled(hub, 30.0)
                tl.say("every alert delivered" if forwarded else "alerts still pending after 30 s")
                figures = await _figures(hub, cfg.db_path, agents, ups, centre, fire)
                figures["outboxes_drained"] = drained
                figures["forwarding_settled"] = forwarded
                figures["below_reopening_s"] = {site: d.below_at_s for site, d in drains.items()}
                for t in tasks + senders:
                    t.cancel()
            for a in agents:
                a.close()
    tl.say("stopped cleanly")
    figures["timeline"] = tl.lines
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    if not headless:
        print(json.dumps({k: v for k, v in figures.items() if k != "timeline"}, indent=2, ensure_ascii=False))
    return 0


async def _stop_producing(tg: asyncio.TaskGroup, agents: list[Any],
                          producing: list[asyncio.Task[None]]) -> list[asyncio.Task[None]]:
    """End the agents (polling, policy, inference, health: everything that makes records), move
    what they still held in memory into their outboxes, and run their uplinks alone to send it."""
    for t in producing:
        t.cancel()
    await asyncio.wait(producing)
    for a in agents:
        a.flush()
    return [tg.create_task(a.uplink.run(), name=f"drain:{a.cfg.site.id}") for a in agents]


async def _drain(agents: list[Any], timeout_s: float) -> bool:
    """Wait until the hub has acknowledged (committed) everything every outbox holds."""
    deadline = time.monotonic() + timeout_s
    while any(a.outbox.held for a in agents):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def _forwarding_settled(hub: Any, timeout_s: float) -> bool:
    """Wait until no alert delivery is pending (the last records may have raised alarms)."""
    def pending(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT count(*) FROM fwd_deliveries WHERE state = 'pending'").fetchone()[0])

    deadline = time.monotonic() + timeout_s
    while await hub.reader.run(pending):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def _figures(hub: Any, db: Path, agents: list[Any], ups: dict[str, Underpass], centre: Any,
                   fire: Any) -> dict[str, Any]:
    def q(conn: sqlite3.Connection) -> dict[str, Any]:
        def one(sql: str) -> Any:
            return conn.execute(sql).fetchone()[0]

        # the crossing's own alert: the first raise (CAP Alert) of the underpass's closing-depth
        # alarm, queued in the transaction that raised the alarm, and the city centre's
        # acknowledgement of that message
        acked_at = {site: conn.execute(
            "SELECT d.acked_at, m.identifier, m.created_at"
            " FROM fwd_messages m JOIN alarms a ON m.thread = 'alarm:' || a.id"
            " LEFT JOIN fwd_deliveries d ON d.identifier = m.identifier AND d.recipient = 'city-centre'"
            " WHERE a.site = ? AND a.point = 'water_depth_cm' AND a.rule = 'closing_depth'"
            " AND m.msg_type = 'Alert' ORDER BY m.created_at LIMIT 1", (site,)).fetchone()
            for site in ups}
        return {
            "records_committed": one("SELECT count(*) FROM records"),
            "alarms": one("SELECT count(*) FROM alarms WHERE raised_at IS NOT NULL"),
            "commands": one("SELECT count(*) FROM commands"),
            "alerts": one("SELECT count(*) FROM fwd_messages"),
            "deliveries": one("SELECT count(*) FROM fwd_deliveries"),
            "evidence": one("SELECT count(*) FROM cctv_evidence"),
            "deliveries_acknowledged": one("SELECT count(*) FROM fwd_deliveries WHERE state = 'acked'"),
            "closed_events": [r[0] for r in conn.execute(
                "SELECT DISTINCT site FROM records WHERE type = 'event'"
                " AND body LIKE '%local.barrier.close.verified%' ORDER BY site")],
            "acked_at": acked_at,
            # each forecast alarm, with the site's own latest depth when it was raised and the
            # first time that depth reached the closing depth (None: it never did)
            "forecasts": [(site, raised, drivers, conn.execute(
                "SELECT num FROM records WHERE site = ? AND type = 'reading' AND point IN"
                " ('water_depth_cm', 'water_level_cm') AND ts <= ? ORDER BY ts DESC LIMIT 1",
                (site, raised)).fetchone(), conn.execute(
                "SELECT min(ts) FROM records WHERE site = ? AND type = 'reading' AND point = 'water_depth_cm'"
                " AND num >= ?", (site, CLOSING_CM)).fetchone()[0])
                for site, raised, drivers in conn.execute(
                "SELECT site, raised_at, drivers FROM alarms WHERE device = 'forecast' AND raised_at IS NOT NULL"
                " ORDER BY raised_at")],
        }

    got = await hub.reader.run(q)
    sent = sum(a.outbox.next_seq - 1 for a in agents)
    per_site = {}
    for site, up in ups.items():
        row = got["acked_at"].get(site)
        ack, alert, raised = row if row is not None else (None, None, None)
        per_site[site] = {
            "crossing_to_closed_ms": None if up.crossed_wall is None or up.closed_wall is None
            else round((up.closed_wall - up.crossed_wall) * 1000),
            "crossing_to_alarm_ms": None if up.crossed_wall is None or raised is None
            else round((raised - up.crossed_wall) * 1000),
            "crossing_to_cap_ack_ms": None if up.crossed_wall is None or ack is None
            else round((ack - up.crossed_wall) * 1000),
            "crossing_alert": alert,
        }
    closed = [v["crossing_to_closed_ms"] for v in per_site.values() if v["crossing_to_closed_ms"] is not None]
    acked = [v["crossing_to_cap_ack_ms"] for v in per_site.values() if v["crossing_to_cap_ack_ms"] is not None]
    alarmed = [v["crossing_to_alarm_ms"] for v in per_site.values() if v["crossing_to_alarm_ms"] is not None]
    received = centre.alerts()
    cap = [a for a in received + fire.alerts() if a.format == "cap"]
    return {
        "barrier_closed_locally": bool(got["closed_events"]),
        "barriers_closed_locally": got["closed_events"],
        "records_sent": sent,
        "records_committed": got["records_committed"],
        "alarms": got["alarms"],
        "commands": got["commands"],
        "alerts": got["alerts"],
        "alerts_acknowledged": got["deliveries_acknowledged"] == got["deliveries"] and got["deliveries"] > 0,
        "deliveries": got["deliveries"],
        "deliveries_acknowledged": got["deliveries_acknowledged"],
        "camera_snapshots": got["evidence"],
        "city_centre_received": len(received),
        "cap_received": len(cap),
        "cap_signed_verified": sum(1 for a in cap if a.verified),
        "latency_ms": {
            "crossing_to_closed": max(closed) if closed else None,
            "crossing_to_alarm": max(alarmed) if alarmed else None,
            "crossing_to_cap_ack": max(acked) if acked else None,
        },
        "underpasses": per_site,
        "forecast_alarms": len(got["forecasts"]),
        "forecast_alarms_before_own_crossing": sum(1 for _s, raised, _d, _o, crossed in got["forecasts"]
                                                   if crossed is not None and crossed > raised),
        "forecasts": [{"site": site, "raised_at": raised, "own_depth_cm": own[0] if own else None,
                       "own_crossing_after_s": None if crossed is None else round(crossed - raised, 1),
                       "neighbours": [d["site"] for d in json.loads(drivers or "[]")]}
                      for site, raised, drivers, own, crossed in got["forecasts"]],
    }


def run(root: Path, duration_s: float | None, *, headless: bool = False, json_out: Path | None = None,
        forward_to: str | None = None, speed: float | None = None) -> int:
    try:
        return asyncio.run(run_demo(root, duration_s=duration_s, headless=headless, json_out=json_out,
                                    forward_to=forward_to, speed=speed))
    except KeyboardInterrupt:
        print("jikimi demo: stopped", file=sys.stderr)
        return 130
