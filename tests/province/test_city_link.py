"""A real city hub reporting to the province (DESIGN §8, issue 18): an edge agent beside an
underpass simulator → the city broker → `Hub` with ``[province]`` → its province outbox, sent on
the hub's own connection → the city broker's bridge → the provincial broker → the provincial hub.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge.sim.servers import Simulator, run_simulator
from hub import receiver
from hub.config import parse
from hub.service import Hub, running
from hub.upstream import Upstream
from province.config import load
from province.service import serve
from province.store import AlarmView, ProvinceStore, RequestView
from shared.messages import AlarmRecord, CityRecord
from shared.paths import profiles_dir
from shared.profiles import load_profile
from shared.topics import CityChannel, city_of_hub, city_topic
from tests.conftest import PkiFixture, ProvincePki, mqtt_client, start_city_broker, start_province_broker
from tests.edge.harness import UNDERPASS, running_agent, write_config
from tests.hub.conftest import add_users, api_client, raw_config
from tests.province.harness import province_config
from trust.broker import RunningBroker

ROOT = Path(__file__).resolve().parents[2]
RIVER_GATE = profiles_dir() / "river-gate-jk-rg10.toml"

# Bucheon's Songnae underpass (WGS84)
SONGNAE = {"area": "gg-bucheon", "name": "송내 지하차도", "lat": 37.4876, "lon": 126.7530}


@asynccontextmanager
async def province_running(config: Path, run: bool = True) -> AsyncIterator[None]:
    if not run:
        yield
        return
    stop = asyncio.Event()
    task = asyncio.create_task(serve(load(config), stop))
    try:
        yield
    finally:
        stop.set()
        async with asyncio.timeout(15):
            await task


async def until(pred: Callable[[], bool | Awaitable[bool]], within_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(within_s):
            while True:
                got = pred()
                if not isinstance(got, bool):
                    got = await got
                if got:
                    return
                await asyncio.sleep(0.2)
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what}")


def province_alarms(db: Path, site: str) -> list[AlarmView]:
    store = ProvinceStore(db)
    try:
        return [a for a in store.alarms(time.time()) if a.site == site]
    finally:
        store.close()


@dataclass
class Federation:
    hub: Hub
    sim: Simulator
    upstream: RunningBroker
    """The provincial broker."""
    city: str
    site: str
    db: Path
    """The provincial hub's database."""
    config: Path
    """The provincial hub's config file."""

    @property
    def link(self) -> Upstream:
        assert self.hub.upstream is not None
        return self.hub.upstream

    def alarms(self) -> list[AlarmView]:
        return province_alarms(self.db, self.site)


@asynccontextmanager
async def federation(test_pki: PkiFixture, province_pki: ProvincePki, tmp_path: Path, edge_policy: str = "", *,
                     place: dict[str, object] = SONGNAE, gate: bool = False,
                     province: dict[str, object] | None = None, centre: str | None = None,
                     provincial_hub: bool = True) -> AsyncIterator[Federation]:
    """One city (its broker bridged to the provincial broker, its hub with ``[province]`` and its
    API, one real agent beside an underpass simulator at ``place``, or beside a river-gate
    simulator on a serial line with ``gate``) and the provincial hub; with ``centre`` (a CAP
    receiver's URL) the city forwards its alerts to it; without ``provincial_hub`` nothing speaks for
    the province (a test does, with its identity)."""
    hub_id = test_pki.take_hub()
    city = city_of_hub(hub_id)
    site = test_pki.take_site()
    province_pki.bridge_for(city)
    with start_province_broker(province_pki, tmp_path / "pb") as upstream, \
            start_city_broker(test_pki, province_pki, city, upstream, tmp_path / "cb") as local:
        config = province_config(tmp_path, province_pki, upstream)
        forward = {"forward": {"recipients": {"city-centre": {
            "kind": "city_centre", "url": centre, "initial_backoff_s": 0.0, "max_backoff_s": 0.0}}}} if centre else {}
        raw = raw_config(test_pki, local.port, tmp_path / "hub.db", hub_id, api={"enabled": True},
                         sites={"accept_any": False, "registry": {site: place}},
                         province={"site_state_every_s": 1.0, **(province or {})}, **forward)
        cfg = parse(raw, tmp_path / "hub.toml")
        add_users(cfg)
        device = load_profile(RIVER_GATE) if gate else load_profile(UNDERPASS)
        transport = "pty" if gate else "tcp"
        async with province_running(config, provincial_hub), run_simulator(device, transport=transport) as sim, \
                running(cfg) as hub:
            if not gate:
                sim.physics.barrier.travel_s = 1.0
                sim.physics.water.depth_cm = 3.0
            (tmp_path / "edge").mkdir()
            devices = {"gate": (RIVER_GATE, f"serial://{sim.path}")} if gate else None
            async with running_agent(write_config(tmp_path / "edge" / "site.toml", test_pki, site, local, sim,
                                                  extra_policy=edge_policy, devices=devices)):
                fed = Federation(hub, sim, upstream, city, site, tmp_path / "province.db", config)
                await until(lambda: fed.link.uplink.connected.is_set(), 15, "the city's sender is connected")
                yield fed


async def test_an_alarm_at_a_bucheon_site_appears_at_the_province_with_its_data_age(
        test_pki: PkiFixture, province_pki: ProvincePki, tmp_path: Path) -> None:
    """Water at 20 cm under a Bucheon underpass: the city hub raises its alarm, and the provincial
    hub shows that alarm at that site of that city, with the site's data age from the edge's own
    sample times; every record the city sent is acknowledged by the province and leaves the
    city's outbox."""
    async with federation(test_pki, province_pki, tmp_path, "closing_depth_cm = 40.0") as fed:
        fed.sim.physics.water.depth_cm = 20.0
        await until(lambda: any(a.rule == "closing_depth" and a.data_age_s is not None for a in fed.alarms()), 30,
                    "the alarm and its site's data age reach the province")
        [alarm] = [a for a in fed.alarms() if a.rule == "closing_depth"]
        assert alarm.city == fed.city
        assert alarm.data_age_s is not None
        assert alarm.data_age_s < 30.0
        await until(lambda: fed.link.outbox.held == 0, 30, "the province acknowledged everything the city sent")
        assert fed.link.uplink.counters.records_sent > 0


OUTAGE_S = 60.0


async def test_a_provincial_broker_down_for_a_minute_and_back_empty_loses_nothing(
        test_pki: PkiFixture, province_pki: ProvincePki, tmp_path: Path) -> None:
    """The provincial broker stops for 60 s (the bridge is down: the city broker's bridge queue and
    the city's outbox hold what the city says) and comes back without persistence (its sessions and
    queues gone). Throughout, the city closes its barrier, raises its alarm and forwards its alert
    to its city centre by itself; after, the province holds every record the city sent, each
    exactly once, with the alarm raised and the alert delivered during the outage."""
    async with receiver.serve() as centre, \
            federation(test_pki, province_pki, tmp_path, centre=centre.url) as fed:
        await until(lambda: fed.link.outbox.held == 0 and fed.link.outbox.next_seq > 1, 30,
                    "the first site state is acknowledged")
        fed.upstream.stop()
        down_at = time.monotonic()
        fed.sim.physics.water.depth_cm = 20.0
        await until(lambda: fed.sim.physics.barrier.limit_closed, 30, "the edge closes the barrier by itself")
        await centre.wait_for(lambda: "Alert" in {a.msg_type for a in centre.alerts()}, 30)
        await until(lambda: fed.link.outbox.held > 0, 30, "the city keeps recording for the province")
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        fed.upstream.restart()
        await until(lambda: fed.link.outbox.held == 0, 120, "the province acknowledged everything after the outage")
        assert any(a.rule == "closing_depth" for a in fed.alarms())
        await until(lambda: "acked" in province_deliveries(fed.db, fed.city), 30,
                    "the province sees the alert delivered to the city centre")
        epoch = fed.link.outbox.epoch
        sent = fed.link.outbox.next_seq - 1
    store = ProvinceStore(fed.db)
    try:
        committed = [(e, s) for e, s, _ in store.committed(fed.city)]
    finally:
        store.close()
    assert committed == [(epoch, s) for s in range(1, sent + 1)]


GOYANG = {"area": "gg-goyang", "name": "행주산성 한강 둔치 입구", "lat": 37.5990, "lon": 126.8110}


def province_request(config: Path, city: str, action: str, area: str) -> subprocess.CompletedProcess[str]:
    """``jikimi province request`` as a provincial operator runs it beside the running service."""
    return subprocess.run([sys.executable, "-m", "shared.cli", "province", "request", "--config", str(config),
                           "--city", city, "--action", action, "--area", area,
                           "--reason", "Hangang over the warning level", "--by", "prov-duty"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)


def province_deliveries(db: Path, city: str) -> list[str]:
    """The states of the city's alert deliveries as the province holds them."""
    store = ProvinceStore(db)
    try:
        return [str(s) for (s,) in store.db.execute("SELECT state FROM deliveries WHERE city = ?", (city,))]
    finally:
        store.close()


def province_cities(db: Path) -> list[str]:
    store = ProvinceStore(db)
    try:
        return [c.city for c in store.cities(time.time())]
    finally:
        store.close()


def province_requests(db: Path) -> list[RequestView]:
    store = ProvinceStore(db)
    try:
        return store.requests()
    finally:
        store.close()


async def test_a_provincial_evacuate_request_for_goyang_is_applied_after_the_citys_approval(
        test_pki: PkiFixture, province_pki: ProvincePki, tmp_path: Path) -> None:
    """A provincial operator asks Goyang to evacuate its riverside area. The request reaches the
    Goyang hub, which holds it for its own operator (nothing moves before); the operator accepts
    it through the city's API, the city's own operation signs the evacuate commands, every device
    command reaches verified and the gate's sign shows the evacuate text; the province sees the
    request accepted, the operation named and all its commands verified."""
    async with federation(test_pki, province_pki, tmp_path, place=GOYANG, gate=True) as fed:
        await until(lambda: fed.city in province_cities(fed.db), 30, "the province knows the city")
        done = province_request(fed.config, fed.city, "evacuate", "gg-goyang")
        assert done.returncode == 0, done.stdout + done.stderr
        async with api_client(fed.hub, test_pki.dir / "ca.pem") as api:
            assert (await api.login("olive")).status == 200

            async def pending() -> list[dict[str, Any]]:
                resp = await api.get("/api/province-requests")
                assert resp.status == 200
                return [r for r in await resp.json() if r["state"] == "pending"]

            async def held() -> bool:
                return bool(await pending())

            await until(held, 30, "the Goyang hub holds the request for its operator")
            [req] = await pending()
            assert req["action"] == "evacuate"
            assert fed.sim.physics.sign_message == ""  # the city has not acted on the request by itself
            await until(lambda: any(r.state == "pending" for r in province_requests(fed.db)), 30,
                        "the province sees the request pending at the city")
            resp = await api.post(f"/api/province-requests/{req['request_id']}/accept", {"reason": "confirmed by CCTV"})
            assert resp.status == 202, await resp.text()
            op_id = (await resp.json())["operation_id"]

            async def devices() -> list[dict[str, Any]]:
                r = await api.get(f"/api/operations/{op_id}")
                return list((await r.json())["devices"])

            async def all_verified() -> bool:
                ds = await devices()
                return bool(ds) and all(d["state"] == "verified" for d in ds)

            await until(all_verified, 30, "every device command of the operation is verified")
            assert fed.sim.physics.broadcast == "evacuate"
            again = await api.post(f"/api/province-requests/{req['request_id']}/accept", {"reason": "twice"})
            assert again.status == 422  # decided once
        await until(lambda: any(r.state == "accepted" and r.op_id == op_id and r.commands
                                and r.verified == r.commands for r in province_requests(fed.db)), 30,
                    "the province sees the request accepted and every command verified")



def city_requests(db: Path) -> list[tuple[str, str, str]]:
    """(request id, state, why) of every provincial request the city hub holds."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [(str(r), str(s), str(w)) for r, s, w in conn.execute(
            "SELECT request_id, state, why FROM province_requests ORDER BY received_at")]
    finally:
        conn.close()


async def test_hostile_or_broken_requests_from_the_province_move_nothing(
        test_pki: PkiFixture, province_pki: ProvincePki, tmp_path: Path) -> None:
    """What comes down the bridge as a request is checked at the city: garbage, a request naming
    another city, an unknown action, an over-long reason or an over-size payload are dropped and
    counted; a request for an area that is not the city's, or one already expired, is refused with
    the reason; a replayed request is stored and audited once. Nothing of it starts an operation
    or moves a device."""
    async with federation(test_pki, province_pki, tmp_path, "closing_depth_cm = 40.0", provincial_hub=False) as fed:
        topic = city_topic(fed.city, CityChannel.REQ)
        now = time.time()

        def req(**kw: Any) -> dict[str, Any]:
            return {"v": 1, "city": fed.city, "request_id": "r-" + str(len(kw)), "action": "block",
                    "area": "gg-bucheon", "reason": "test", "requested_by": "prov-duty", "ts": now,
                    "not_after": now + 600, **kw}

        bad = [b"{not json", json.dumps(req(city="suwon")).encode(), json.dumps(req(action="reopen")).encode(),
               json.dumps(req(reason="x" * 5000)).encode(), json.dumps(req(reason="x" * 300_000)).encode()]
        good_replayed = json.dumps(req(request_id="r-replay", area="gg-bucheon")).encode()
        foreign_area = json.dumps(req(request_id="r-foreign", area="gg-suwon")).encode()
        expired = json.dumps(req(request_id="r-expired", not_after=now - 60)).encode()
        province = province_pki.province
        before = fed.link.uplink.counters.bad_messages
        async with mqtt_client(fed.upstream, province_pki.files(province), province) as c:
            for payload in [*bad, good_replayed, good_replayed, foreign_area, expired, good_replayed]:
                await c.publish(topic, payload, qos=1)
        await until(lambda: len(city_requests(fed.hub.cfg.db_path)) == 3, 30, "the city holds the three requests")
        await until(lambda: fed.link.uplink.counters.bad_messages - before == len(bad), 30,
                    "every broken request is counted")
        held = {r: (state, why) for r, state, why in city_requests(fed.hub.cfg.db_path)}
        assert held["r-replay"] == ("pending", "")
        assert held["r-foreign"][0] == "refused"
        assert "gg-suwon" in held["r-foreign"][1]
        assert held["r-expired"] == ("refused", "expired before it arrived")
        conn = sqlite3.connect(f"file:{fed.hub.cfg.db_path}?mode=ro", uri=True)
        try:
            assert conn.execute("SELECT count(*) FROM operations").fetchone() == (0,)
            audited = conn.execute("SELECT count(*) FROM audit WHERE target = 'province-request/r-replay'").fetchone()
        finally:
            conn.close()
        assert audited == (1,)
        assert not fed.sim.physics.barrier.limit_closed


def start_province(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``jikimi province run`` as its own process, as systemd runs it."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "shared.cli", "province", "run", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})


async def test_a_provincial_hub_killed_mid_stream_loses_nothing_of_a_real_city(
        test_pki: PkiFixture, province_pki: ProvincePki, tmp_path: Path) -> None:
    """The provincial hub runs as its own process and is SIGKILLed while the real city hub reports
    (site states each second, then an alarm raised while the province is dead); started again, it
    holds every record the city sent, each exactly once, and the city's outbox is empty."""
    log = tmp_path / "province.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async with federation(test_pki, province_pki, tmp_path, "closing_depth_cm = 40.0",
                              provincial_hub=False) as fed:
            procs.append(start_province(fed.config, log))
            await until(lambda: fed.link.outbox.next_seq > 3 and fed.link.outbox.held == 0, 30,
                        "the province commits the city's first records")
            procs[-1].send_signal(signal.SIGKILL)
            procs[-1].wait(timeout=10)
            fed.sim.physics.water.depth_cm = 20.0
            await until(lambda: any(_is_alarm(r) for r in _held(fed.link)), 30,
                        "the city records its alarm for the dead province")
            procs.append(start_province(fed.config, log))
            await until(lambda: fed.link.outbox.held == 0, 60, "the restarted province acknowledged everything")
            await until(lambda: any(a.rule == "closing_depth" for a in fed.alarms()), 30, "the alarm at the province")
            epoch, sent = fed.link.outbox.epoch, fed.link.outbox.next_seq - 1
            procs[-1].send_signal(signal.SIGTERM)
            procs[-1].wait(timeout=15)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    store = ProvinceStore(fed.db)
    try:
        committed = [(e, s) for e, s, _ in store.committed(fed.city)]
    finally:
        store.close()
    assert committed == [(epoch, s) for s in range(1, sent + 1)], log.read_text()[-2000:]


def _held(link: Upstream) -> list[CityRecord]:
    return [link.outbox.decode_row(r) for r in link.outbox.read(1, limit=10_000)]


def _is_alarm(rec: CityRecord) -> bool:
    return isinstance(rec, AlarmRecord) and rec.rule == "closing_depth"
