"""``jikimi demo --province``: three cities and the province on one machine, state under
``./var/demo-province`` (DESIGN §8).

What runs, all real parts on loopback: the province's PKI (its broker, the provincial hub's
identity, its alert signer and one bridge identity per city) and a provincial Mosquitto; the
provincial hub (province/service.py, the code of ``jikimi province run``, with its HTTPS API and
console, and its CAP alerts) and an operator account; a reference CAP receiver standing for the
province's fire headquarters; and three cities, Suwon, Bucheon and Goyang, each with its own PKI,
its own Mosquitto bridged to the provincial one over mutual TLS, its own hub (``hub-suwon``,
``hub-bucheon``, ``hub-goyang``; ``[province]`` on) with operator accounts, and three sites, each
an edge agent beside its simulated device. Scaled down from the one-city demo to fit two cores:
no cameras, no city CAP receivers, no network forecast.

The storm is lab/demo.py's (Walnut Creek, 2024-08-08/11, compressed into 85 % of the chosen time).
It crosses the Bucheon/Goyang boundary: Bucheon's northern underpass (Ojeong, by Gimpo airport) and
Goyang's southern one (Deogyang, by the Han) are 5.2 km apart. The two cities do not touch (Seoul's
Gangseo lies between; their nearest boundary points, in the shipped KOSTAT 2018 boundaries, are
4.4 km apart), so the province groups alarms within ``DISTANCE_M`` = 6 km (the province config's
``[grouping] distance_m``) and the two underpasses' alarms form one provincial incident.

At the end the edges stop producing and their outboxes drain to their city hubs; then the cities'
province outboxes drain to the provincial hub (each acknowledged through its newest record, and no
new record for a quiet spell); only then are the figures counted, the province's in one step on
the event loop that runs its store, so nothing can be committed between reading the two sides.

The figures of ``--json``: ``cities`` (per city: edge records sent and committed at its hub,
``barrier_closed_locally``, and the records it sent to the province) and ``province``
(``city_records_sent`` by the three hubs, ``city_records_committed`` at the province,
``incidents_cross_boundary``: distinct provincial incidents seen during the run, looked for every
second and followed by their alarms, since an incident's id changes when its earliest alarm
clears; each in ``cross_boundary`` with the ids it went by, its cities and sites), the provincial
CAP alerts (province/alerts.py: one thread per cross-boundary incident) as ``deliveries`` and
``deliveries_acknowledged`` to the province's fire headquarters, and how many CAP messages that
receiver got and how many carried a signature that verified against the province's CA
(``cap_received``, ``cap_signed_verified``); counted once no provincial delivery is pending.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from lab.demo import (
    STORM_S,
    Drains,
    SiteSpec,
    Timeline,
    Underpass,
    _drain,
    _drains,
    _site_config,
    _stop_producing,
    _timeline,
    _watch_underpasses,
    fresh_pki,
    hub_base,
    play_storm,
    storm_series,
)
from province.alerts import FORWARD_FILE
from province.grouping import ProvincialIncident
from trust.broker import Bridge, RunningBroker, Scope
from trust.pki import Pki, Role, bridge_cn

PROVINCE: Final = "province-gyeonggi"
DISTANCE_M: Final = 6000.0
"""The province's ``[grouping] distance_m``: wide enough for the Bucheon/Goyang pair (5.2 km)."""
SITE_STATE_EVERY_S: Final = 5.0
"""Each city hub's ``[province] site_state_every_s``: the province's data ages stay fresh."""
QUIET_S: Final = 2 * SITE_STATE_EVERY_S + 1.0
"""How long no city may append a province record before the province's figures are counted."""
ALERT_SIGNER: Final = f"alert-{PROVINCE}"
HQ: Final = "gyeonggi-119"
"""The province's one CAP recipient: its fire headquarters (every area, critical alerts)."""

CITY_SITES: Final[dict[str, tuple[SiteSpec, ...]]] = {
    city: tuple(SiteSpec(*row) for row in rows) for city, rows in {
        "suwon": (
            ("gg-suwon-up-0001", "gg-suwon", "세류 지하차도", "underpass-jk-up300.toml", 37.2585, 127.0155, 0.26),
            ("gg-suwon-fa-0001", "gg-suwon", "수원 반지하 주택 1", "flood-alarm-jk-fa100.toml", 37.2800, 127.0100,
             0.12),
            ("gg-suwon-rg-0001", "gg-suwon", "수원 강우계", "rain-gauge-jk-rn05.toml", 37.2700, 127.0200, 0.0),
        ),
        "bucheon": (
            ("gg-bucheon-up-0002", "gg-bucheon", "부천 오정 지하차도", "underpass-jk-up300.toml", 37.5370, 126.8180,
             0.23),
            ("gg-bucheon-gt-0001", "gg-bucheon", "굴포천 산책로 입구", "river-gate-jk-rg10.toml", 37.5150, 126.7720,
             1.0),
            ("gg-bucheon-fa-0001", "gg-bucheon", "부천 반지하 주택 3", "flood-alarm-jk-fa100.toml", 37.4990,
             126.7830, 0.10),
        ),
        "goyang": (
            ("gg-goyang-up-0002", "gg-goyang", "고양 덕양 지하차도", "underpass-jk-up300.toml", 37.5750, 126.8530,
             0.22),
            ("gg-goyang-gt-0001", "gg-goyang", "한강 산책로 입구", "river-gate-jk-rg10.toml", 37.6350, 126.8100, 1.0),
            ("gg-goyang-fa-0001", "gg-goyang", "고양 반지하 주택 2", "flood-alarm-jk-fa100.toml", 37.6450, 126.8350,
             0.11),
        ),
    }.items()
}
CITY_USERS: Final = ("operator", "supervisor1", "supervisor2")


def province_pki(root: Path) -> Pki:
    """The province's own PKI under ``root/pki``: its broker, the provincial hub and a bridge
    identity per city (issued before the provincial broker starts: its ACL is written then)."""
    pki_dir = root / "pki"
    if pki_dir.exists():
        shutil.rmtree(pki_dir)
    pki = Pki(pki_dir)
    pki.init()
    pki.issue("broker", Role.BROKER)
    pki.issue(PROVINCE, Role.PROVINCE)
    pki.issue(ALERT_SIGNER, Role.ALERT)
    for city in CITY_SITES:
        pki.issue(bridge_cn(city), Role.BRIDGE)
    return pki


def province_config(root: Path, pki: Pki, broker: RunningBroker, hq_url: str) -> Path:
    """``root/province.toml``, the file ``jikimi province run --config`` reads."""
    path = root / "province.toml"
    path.write_text(f"""[province]
id = "{PROVINCE}"

[broker]
host = "localhost"
port = {broker.port}
ca = "{pki.ca_chain}"
cert = "{pki.cert(PROVINCE)}"
key = "{pki.key(PROVINCE)}"

[database]
path = "{root / 'province.db'}"

[grouping]
distance_m = {DISTANCE_M}
alert_every_s = 1.0

[api]
listen = "127.0.0.1:0"

[forward]
sender = "{PROVINCE}@jikimi.example"
signing_key = "{pki.key(ALERT_SIGNER)}"
signing_cert = "{pki.cert(ALERT_SIGNER)}"

[forward.recipients.{HQ}]
kind = "fire_119"
url = "{hq_url}"
areas = ["*"]
priorities = ["critical"]
""")
    return path


@dataclass
class City:
    name: str
    root: Path
    pki: Pki
    broker: RunningBroker
    hub: Any = None
    db: Path | None = None
    agents: list[Any] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def hub_id(self) -> str:
        return f"hub-{self.name}"


@dataclass
class Seen:
    """A provincial incident as the demo followed it: the ids it went by, its cities, every site
    whose alarm it grouped, and the alarms it held when last looked at."""

    ids: list[str]
    cities: set[str] = field(default_factory=set)
    sites: set[str] = field(default_factory=set)
    alarms: set[tuple[str, str]] = field(default_factory=set)


def follow(seen: list[Seen], incidents: list[ProvincialIncident], site_of: dict[tuple[str, str], str]) -> list[Seen]:
    """Follow the provincial incidents of one look into ``seen``; returns those new at this look.

    An incident's id follows its earliest active alarm (province/grouping.py rule 3), so an
    incident is followed by its alarms instead: a group sharing an alarm with one held at the last
    look is that incident (under whatever id); any other is a new one. One not found again has
    ended, and a later group of other alarms is another incident."""
    last = [(track, track.alarms) for track in seen]
    for track in seen:
        track.alarms = set()
    new: list[Seen] = []
    for inc in incidents:
        now = set(inc.alarms)
        found = next((track for track, before in last if before & now), None)
        if found is None:
            found = Seen([inc.incident_id])
            seen.append(found)
            new.append(found)
        elif inc.incident_id not in found.ids:
            found.ids.append(inc.incident_id)
        found.alarms |= now
        found.cities.update(inc.cities)
        found.sites.update(site_of[a] for a in now if a in site_of)
    return new


async def _watch_province(province: Any, seen: list[Seen], tl: Timeline) -> None:
    """Every second: the provincial incidents (active alarms of two or more cities grouped by
    distance), followed into ``seen``."""
    while True:
        incidents = province.store.provincial_incidents(province.cfg.distance_m)
        site_of = {(a.city, a.alarm_id): a.site for a in province.store.alarms(time.time())} if incidents else {}
        for track in follow(seen, incidents, site_of):
            tl.say(f"provincial incident {track.ids[0]}: {len(track.alarms)} alarms in "
                   f"{', '.join(sorted(track.cities))}")
        await asyncio.sleep(1.0)


async def _province_drained(cities: list[City], timeout_s: float) -> bool:
    """Wait until every city's province outbox is acknowledged through its newest record and no
    city has appended one for ``QUIET_S``."""
    deadline = time.monotonic() + timeout_s
    last: tuple[int, ...] = ()
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        now_seqs = tuple(c.hub.upstream.outbox.next_seq for c in cities)
        if now_seqs != last:
            last, quiet_since = now_seqs, time.monotonic()
        held = any(c.hub.upstream.outbox.held for c in cities)
        if not held and time.monotonic() - quiet_since >= QUIET_S:
            return True
        await asyncio.sleep(0.2)
    return False


async def _city_figures(city: City) -> dict[str, Any]:
    def q(conn: sqlite3.Connection) -> tuple[int, int, list[str]]:
        return (conn.execute("SELECT count(*) FROM records").fetchone()[0],
                conn.execute("SELECT count(*) FROM alarms WHERE raised_at IS NOT NULL").fetchone()[0],
                [r[0] for r in conn.execute("SELECT DISTINCT site FROM records WHERE type = 'event'"
                                            " AND body LIKE '%local.barrier.close.verified%' ORDER BY site")])

    committed, alarms, closed = await city.hub.reader.run(q)
    return {
        "records_sent": sum(a.outbox.next_seq - 1 for a in city.agents),
        "records_committed": committed,
        "barrier_closed_locally": bool(closed),
        "barriers_closed_locally": closed,
        "alarms": alarms,
    }


def _deliveries(province: Any) -> tuple[int, int, int]:
    """(deliveries, acknowledged, pending) of the provincial CAP alerts, from forwarding's own file."""
    path = province.cfg.db_path.with_name(FORWARD_FILE)
    if not path.exists():
        return 0, 0, 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        n, acked, pending = db.execute("SELECT count(*), coalesce(sum(state = 'acked'), 0),"
                                       " coalesce(sum(state = 'pending'), 0) FROM fwd_deliveries").fetchone()
    finally:
        db.close()
    return int(n), int(acked), int(pending)


async def _alerts_settled(province: Any, timeout_s: float) -> bool:
    """Let the incidents' tick look at the drained store twice, then wait until no provincial
    delivery is pending."""
    await asyncio.sleep(2 * province.cfg.alert_every_s)
    deadline = time.monotonic() + timeout_s
    while (await asyncio.to_thread(_deliveries, province))[2]:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.2)
    return True


def _province_figures(province: Any, cities: list[City]) -> dict[str, Any]:
    """The province's counts and each city's province outbox, read in one step on the event loop
    (the province's store and the cities' outboxes are written only from it)."""
    per_city = {}
    for c in cities:
        box = c.hub.upstream.outbox
        per_city[c.name] = {"sent": box.next_seq - 1, "held": box.held,
                            "committed": len(province.store.committed(c.name))}
    now = time.time()
    return {
        "per_city": per_city,
        "cities_seen": [v.city for v in province.store.cities(now)],
        "sites": len(province.store.sites(now)),
        "alarms": len(province.store.alarms(now)),
    }


async def run_demo_province(root: Path, *, duration_s: float | None, headless: bool, json_out: Path | None,
                            speed: float | None) -> int:
    from edge.agent import Agent
    from edge.config import load_site_config
    from edge.sim.servers import run_simulator
    from hub import auth, receiver
    from hub.config import parse
    from hub.forward.capread import shipped_schema
    from hub.roles import Role as HubRole
    from hub.service import running as hub_running
    from province.config import load as load_province
    from province.service import running as province_running
    from province.store import connect as province_connect
    from shared.paths import profiles_dir
    from shared.profiles import load_profile

    root = root.resolve()
    play_s = duration_s * 0.85 if duration_s else 600.0
    speed = speed or STORM_S / play_s
    tl = Timeline(quiet=headless)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    stage, rain = storm_series()
    specs = [s for sites in CITY_SITES.values() for s in sites]
    ups = {s.site: Underpass(s.site) for s in specs if "-up-" in s.site}
    drains: dict[str, Drains] = {s.site: d for s in specs if (d := _drains(s)) is not None}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    (root / "province" / "broker").mkdir(parents=True)
    ppki = province_pki(root / "province")
    seen: list[Seen] = []
    with contextlib.ExitStack() as brokers:
        upstream = brokers.enter_context(RunningBroker.start(ppki.dir, root / "province" / "broker",
                                                             scope=Scope.PROVINCE, persistence=True))
        cities: list[City] = []
        for name, sites in CITY_SITES.items():
            croot = root / name
            croot.mkdir()
            pki = fresh_pki(croot, [s.site for s in sites], hub=f"hub-{name}")
            (croot / "broker").mkdir()
            bridge = Bridge(city=name, host=upstream.host, port=upstream.port, pki_dir=ppki.dir)
            broker = brokers.enter_context(RunningBroker.start(pki.dir, croot / "broker", bridge=bridge,
                                                               persistence=True))
            cities.append(City(name, croot, pki, broker))
        async with contextlib.AsyncExitStack() as stack:
            hq = await stack.enter_async_context(receiver.serve(
                db=root / "province" / f"{HQ}.db", schema=shipped_schema(), ca_bundle=ppki.ca_chain))
            pcfg = load_province(province_config(root / "province", ppki, upstream, hq.url))
            province = await stack.enter_async_context(province_running(pcfg))
            province_password = secrets.token_urlsafe(12)
            await asyncio.to_thread(auth.add_user, pcfg.db_path, "operator", HubRole.OPERATOR, province_password,
                                    actor="demo", opener=province_connect)
            sims: dict[str, Any] = {}
            for city in cities:
                raw = {**hub_base(city.root, city.pki, city.broker, city.hub_id, CITY_SITES[city.name]),
                       "province": {"site_state_every_s": SITE_STATE_EVERY_S}}
                (city.root / "hub").mkdir()
                cfg = parse(raw, city.root / "hub" / "hub.toml")
                city.db = cfg.db_path
                city.hub = await stack.enter_async_context(hub_running(cfg))
                city.passwords = {n: secrets.token_urlsafe(12) for n in CITY_USERS}
                for n, role in zip(CITY_USERS, (HubRole.OPERATOR, HubRole.SUPERVISOR, HubRole.SUPERVISOR),
                                   strict=True):
                    await asyncio.to_thread(auth.add_user, cfg.db_path, n, role, city.passwords[n], actor="demo")
                for spec in CITY_SITES[city.name]:
                    sim = await stack.enter_async_context(run_simulator(load_profile(profiles_dir() / spec.profile)))
                    play_storm(sim.physics, spec, stage, rain, speed)
                    sims[spec.site] = sim
                    agent = Agent(load_site_config(_site_config(city.root, city.pki, city.broker, spec,
                                                                sim.transport)))
                    await agent.open(stack)
                    city.agents.append(agent)
            agents = [a for c in cities for a in c.agents]
            banner = [f"jikimi demo --province — state in {root}",
                      f"  province  https://localhost:{province.api_port}/  (trust {ppki.ca_chain})",
                      f"            login operator / {province_password}",
                      f"  receiver  {hq.url} (the province's fire headquarters: its CAP alerts)"]
            for city in cities:
                banner += [f"  {city.name:<9} https://localhost:{city.hub.api_port}/  (trust {city.pki.ca_chain})",
                           *[f"            login {n} / {p}" for n, p in city.passwords.items()]]
            banner += [f"  storm     Walnut Creek 2024-08-08/11 at {speed:.0f}× ({STORM_S / speed:.0f} s), crossing"
                       f" the Bucheon/Goyang boundary (alarms within {DISTANCE_M:g} m are one provincial incident)",
                       "Ctrl-C stops everything."]
            print("\n".join(banner), flush=True)
            (root / "credentials.txt").write_text(
                f"province operator {province_password}\n"
                + "".join(f"{c.name} {n} {p}\n" for c in cities for n, p in c.passwords.items()))
            tl.say(f"{len(agents)} sites in three cities, bridged to the province, are up; the storm begins")
            async with asyncio.TaskGroup() as tg:
                producing = [tg.create_task(a.run(), name=f"edge:{a.cfg.site.id}") for a in agents]
                tasks = [tg.create_task(_watch_underpasses(sims, ups, drains, tl), name="demo.watch"),
                         tg.create_task(_watch_province(province, seen, tl), name="demo.province"),
                         *[tg.create_task(_timeline(c.hub, tl), name=f"demo.timeline:{c.name}") for c in cities]]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=duration_s)
                tl.say("stopping: the edges stop producing; their outboxes drain to their city hubs")
                senders = await _stop_producing(tg, agents, producing)
                drained = await _drain(agents, 30.0)
                tl.say("edge outboxes drained" if drained else "edge outboxes NOT drained within 30 s")
                city_figures = {c.name: await _city_figures(c) for c in cities}
                up_drained = await _province_drained(cities, 60.0)
                tl.say("city outboxes drained to the province" if up_drained
                       else "city outboxes NOT drained to the province within 60 s")
                prov = _province_figures(province, cities)  # one step: nothing commits in between
                settled = await _alerts_settled(province, 30.0)
                tl.say("every provincial alert delivered" if settled else "provincial alerts still pending after 30 s")
                deliveries, acked, _pending = await asyncio.to_thread(_deliveries, province)
                cap = [a for a in hq.alerts() if a.format == "cap"]
                for t in tasks + senders:
                    t.cancel()
            for a in agents:
                a.close()
    tl.say("stopped cleanly")
    for name, got in city_figures.items():
        got["province_records_sent"] = prov["per_city"][name]["sent"]
        got["province_records_committed"] = prov["per_city"][name]["committed"]
        got["below_reopening_s"] = {s.site: drains[s.site].below_at_s for s in CITY_SITES[name] if s.site in drains}
    figures: dict[str, Any] = {
        "cities": city_figures,
        "province": {
            "city_records_sent": sum(v["sent"] for v in prov["per_city"].values()),
            "city_records_committed": sum(v["committed"] for v in prov["per_city"].values()),
            "city_outboxes_drained": up_drained and not any(v["held"] for v in prov["per_city"].values()),
            "cities_seen": prov["cities_seen"],
            "sites": prov["sites"],
            "alarms": prov["alarms"],
            "distance_m": DISTANCE_M,
            "incidents_cross_boundary": len(seen),
            "cross_boundary": [{"ids": v.ids, "cities": sorted(v.cities), "sites": sorted(v.sites)} for v in seen],
            "forwarding_settled": settled,
            "deliveries": deliveries,
            "deliveries_acknowledged": acked,
            "cap_received": len(cap),
            "cap_signed_verified": sum(1 for a in cap if a.verified),
        },
        "outboxes_drained": drained,
        "timeline": tl.lines,
    }
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    if not headless:
        print(json.dumps({k: v for k, v in figures.items() if k != "timeline"}, indent=2, ensure_ascii=False))
    return 0


def run(root: Path, duration_s: float | None, *, headless: bool = False, json_out: Path | None = None,
        speed: float | None = None) -> int:
    try:
        return asyncio.run(run_demo_province(root, duration_s=duration_s, headless=headless, json_out=json_out,
                                             speed=speed))
    except KeyboardInterrupt:
        print("jikimi demo --province: stopped", file=sys.stderr)
        return 130
