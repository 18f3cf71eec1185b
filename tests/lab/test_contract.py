"""The whole-system contract (issue 14): the HTTPS API, the real hub, real agents beside real
simulators of all five profiles, and a real CAP receiver. No fake edge.

The matrix is generated from the action vocabulary (shared/vocabulary.py): every (kind, action)
it offers is sent through the API and must reach ``verified``, with the simulator's own state
showing it (read from the simulator, never from the hub); every action a kind does not offer is
refused by the API with a reason. A new action or kind is tested without editing this file.

Then the operator's storm workflow over one area: evacuate (every device command verified, the
CAP alert with responseType Evacuate acknowledged by the receiver), block (every barrier and
gate closed at its simulator), and the reopen of a barrier and of a gate once the water has
fallen below each one's reopening depth, issued by one supervisor and approved by another.

One hub, one receiver and five agents serve the whole module (module-scoped fixtures).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from edge.agent import Agent
from edge.config import load_site_config
from edge.sim.servers import Simulator, run_simulator
from hub import receiver
from hub.config import parse
from hub.forward import capread
from hub.forward.capread import shipped_schema
from hub.service import Hub, running
from shared import vocabulary
from shared.messages import Action, Operation, Quality
from shared.paths import profiles_dir
from shared.profiles import Kind, Profile, load_profile
from tests.conftest import PkiFixture
from tests.hub.conftest import ApiClient, add_users, api_client, raw_config
from trust.broker import RunningBroker

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

AREA = "gg-contract"
DEVICE = "device"
GATE_CLOSING_CM = 100.0
GATE_REOPENING_CM = 50.0
"""A river gate's policy (as the demo's): it closes at 100 cm of river and reopens below 50 cm."""
DEPTH = {Kind.UNDERPASS: "water_depth_cm", Kind.RIVER_GATE: "water_level_cm"}
"""The point whose water an opening is checked against: the underpass's own depth (the edge's
default) and the gate's river level (its ``depth_source``)."""
PROFILES: dict[Kind, Path] = {load_profile(p).kind: p for p in sorted(profiles_dir().glob("*.toml"))}
COMMAND_S = 40.0
"""Generous: a command's whole path, poll to read-back, is a few seconds here."""


@dataclass
class Site:
    site: str
    kind: Kind
    profile: Profile
    sim: Simulator
    agent: Agent

    def shows(self, point: str) -> Any:
        """What the simulated device itself holds for ``point`` now (its physics, not the hub)."""
        self.sim.device.refresh()
        return self.sim.device.value(self.profile.points[point])


@dataclass
class System:
    hub: Hub
    sites: dict[Kind, Site]
    ca: Path
    centre: receiver.RunningReceiver


def _site_toml(path: Path, pki: PkiFixture, broker: RunningBroker, site: str, kind: Kind, profile_path: Path,
               transport: str) -> Path:
    d = pki.dir
    gate = kind is Kind.RIVER_GATE
    policy = f"closing_depth_cm = {GATE_CLOSING_CM}\nreopening_depth_cm = {GATE_REOPENING_CM}\n" if gate else ""
    depth_source = f'depth_source = "{DEVICE}.{DEPTH[Kind.RIVER_GATE]}"\n' if gate else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""[site]
id = "{site}"
state_dir = "{path.parent / "state"}"

[hub]
host = "{broker.host}"
port = {broker.port}
ca = "{d / "ca.pem"}"
cert = "{d / site / "cert.pem"}"
key = "{d / site / "key.pem"}"
command_key = "{d / "command-signing" / "pub.pem"}"

[policy]
verify_timeout_s = 10.0
{policy}
[devices.{DEVICE}]
profile = "{profile_path}"
transport = "{transport}"
{depth_source}""")
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(test_pki: PkiFixture, broker: RunningBroker,
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    work = tmp_path_factory.mktemp("contract")
    ca = test_pki.dir / "ca.pem"
    async with AsyncExitStack() as stack:
        centre = await stack.enter_async_context(receiver.serve(schema=shipped_schema(), ca_bundle=ca))
        sims: dict[Kind, tuple[str, Profile, Path, Simulator]] = {}
        for kind, path in PROFILES.items():
            profile = load_profile(path)
            sim = await stack.enter_async_context(run_simulator(profile))
            sim.physics.barrier.travel_s = 1.0
            sims[kind] = (test_pki.take_site(), profile, path, sim)
        raw = raw_config(
            test_pki, broker.port, work / "hub.db",
            api={"enabled": True},
            sites={"accept_any": False, "registry": {
                site: {"area": AREA, "name": f"contract {kind.value}", "lat": 37.26 + i / 1000, "lon": 127.02}
                for i, (kind, (site, *_)) in enumerate(sims.items())}},
            rules={"kinds": {Kind.RIVER_GATE.value: {"closing_depth_cm": GATE_CLOSING_CM,
                                                     "reopening_depth_cm": GATE_REOPENING_CM}}},
            forward={"recipients": {"city-centre": {"kind": "city_centre", "url": centre.url,
                                                    "initial_backoff_s": 0.0, "max_backoff_s": 0.0}}},
        )
        cfg = parse(raw, work / "hub.toml")
        add_users(cfg)
        hub = await stack.enter_async_context(running(cfg))
        sites: dict[Kind, Site] = {}
        for kind, (site, profile, path, sim) in sims.items():
            toml = _site_toml(work / site / "site.toml", test_pki, broker, site, kind, path, sim.transport)
            agent = Agent(load_site_config(toml))
            await agent.open(stack)
            sites[kind] = Site(site, kind, profile, sim, agent)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(s.agent.run(), name=f"agent:{s.site}") for s in sites.values()]
            try:
                system = System(hub, sites, ca, centre)
                async with client(system, "olive") as c:
                    for site in (s.site for s in sites.values()):  # the hub knows every device (its birth)
                        await _until(partial(_has_device, c, site), 30.0, f"{site} reported its device")
                yield system
            finally:
                for t in tasks:
                    t.cancel()
        for s in sites.values():
            s.agent.close()


@asynccontextmanager
async def client(system: System, user: str) -> AsyncIterator[ApiClient]:
    """An HTTPS API session logged in as ``user`` (tests/hub/conftest.py USERS)."""
    async with api_client(system.hub, system.ca) as c:
        r = await c.login(user)
        assert r.status == 200, await r.text()
        yield c


async def _has_device(c: ApiClient, site: str) -> bool:
    r = await c.get(f"/api/sites/{site}/latest")
    return r.status == 200 and any(row.get("device") == DEVICE for row in await r.json())


async def _until(pred: Callable[[], Any], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while True:
        got = pred()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within_s:g} s waiting for: {what}")
        await asyncio.sleep(0.1)


async def _command(c: ApiClient, cmd_id: str) -> dict[str, Any]:
    r = await c.get(f"/api/commands/{cmd_id}")
    assert r.status == 200, await r.text()
    body: dict[str, Any] = await r.json()
    return body


async def _terminal(c: ApiClient, cmd_id: str) -> dict[str, Any]:
    """The command once it is terminal (fails the test if it never gets there)."""
    out: dict[str, Any] = {}

    async def done() -> bool:
        out.update(await _command(c, cmd_id))
        return out["state"] not in ("awaiting_approval", "sending", "sent", "received")

    await _until(done, COMMAND_S, f"command {cmd_id} to end")
    return out


# --- what the vocabulary says a command should do to the device ---------------------------------


def _params(spec: vocabulary.ActionSpec, site: Site) -> dict[str, Any]:
    """Parameters for ``spec``: a choice the device does not show already, so the change is seen."""
    params: dict[str, Any] = {}
    for p in spec.params:
        now = site.shows(spec.readback) if spec.readback and spec.write and spec.write.param == p.name else None
        choices = [v for v in p.choices if v != now and v != ""] or list(p.choices)
        params[p.name] = choices[0]
    return params


def _expected(site: Site, action: Action, params: dict[str, Any]) -> tuple[str, Any]:
    """The read-back point and the value it must show at the device after ``action``."""
    spec = vocabulary.action_spec(action)
    write = vocabulary.write_of(action, params)
    assert write is not None
    assert spec.readback is not None
    point, value = write
    expect = site.profile.points[point].expect
    return spec.readback, expect.get(str(value), value) if isinstance(value, str) else value


async def _move_away(site: Site, action: Action, params: dict[str, Any]) -> None:
    """Put the simulated device in a state other than the one ``action`` leads to, so a verified
    command is a change the device really made (the device's own panel does this, not the hub)."""
    readback, want = _expected(site, action, params)
    if site.shows(readback) != want:
        return
    point, value = vocabulary.write_of(action, params) or ("", None)
    p = site.profile.points[point]
    other = (not value) if isinstance(value, bool) else next(v for v in p.allowed if v != value)
    site.sim.physics.command(point, other)
    await _until(lambda: site.shows(readback) not in (want, "closing", "opening", "moving"), 10.0,
                 f"{site.site} {readback} away from {want!r}")


async def _water(system: System, site: Site, depth_cm: float) -> None:
    """The simulator's water at ``depth_cm`` and the hub's API showing it as the latest reading."""
    site.sim.physics.water.series = ()
    site.sim.physics.water.rain_mm_per_h = 0.0
    site.sim.physics.water.depth_cm = depth_cm
    point = DEPTH[site.kind]
    async with client(system, "vera") as c:
        async def seen() -> bool:
            r = await c.get(f"/api/sites/{site.site}/latest")
            return any(row.get("point") == point and row.get("value") is not None
                       and abs(float(row["value"]) - depth_cm) < 1.0 for row in await r.json())

        await _until(seen, 30.0, f"the hub to see {point} = {depth_cm:g} at {site.site}")


def _low_water(kind: Kind) -> float:
    return GATE_REOPENING_CM - 20.0 if kind is Kind.RIVER_GATE else 1.0


async def _send(system: System, site: Site, action: Action, params: dict[str, Any]) -> dict[str, Any]:
    """``action`` through the API: issued by sam; an opening is approved by sue (a second supervisor)."""
    async with client(system, "sam") as sam, client(system, "sue") as sue:
        r = await sam.post("/api/commands", {"site": site.site, "device": DEVICE, "action": action.value,
                                             "params": params, "reason": "contract test"})
        assert r.status == 202, f"{site.kind.value} {action.value}: {r.status} {await r.text()}"
        cmd_id = (await r.json())["cmd_id"]
        if vocabulary.is_opening(action):
            r = await sue.post(f"/api/commands/{cmd_id}/approve", {"reason": "water is down"})
            assert r.status == 202, f"{site.kind.value} {action.value} approval: {r.status} {await r.text()}"
        return await _terminal(sam, cmd_id)


# --- the matrix ---------------------------------------------------------------------------------

OFFERED = [(k, a) for k in PROFILES for a in vocabulary.offers(k) if not vocabulary.action_spec(a).advisory]
ADVISORY = [(k, a) for k in PROFILES for a in vocabulary.offers(k) if vocabulary.action_spec(a).advisory]
"""Offered, but sent by the hub itself (the network forecast's prealert), never by an operator."""
NOT_OFFERED = [(k, a) for k in PROFILES for a in Action if a not in vocabulary.offers(k)]


def _id(case: tuple[Kind, Action]) -> str:
    return f"{case[0].value}-{case[1].value}"


@pytest.mark.asyncio(loop_scope="module")
async def test_the_matrix_covers_every_profile_and_every_action() -> None:
    assert set(PROFILES) == set(Kind)  # one shipped profile of every kind
    assert {a for _k, a in OFFERED} | {a for _k, a in ADVISORY} | {a for _k, a in NOT_OFFERED} == set(Action)
    assert NOT_OFFERED  # some kind does not take some action: the refusal half is not empty


@pytest.mark.parametrize("case", OFFERED, ids=_id)
async def test_an_offered_action_is_verified_and_the_device_shows_it(system: System, case: tuple[Kind, Action]) -> None:
    kind, action = case
    site = system.sites[kind]
    spec = vocabulary.action_spec(action)
    if spec.opening:  # two distinct supervisors and water below the reopening depth (DESIGN §5)
        await _water(system, site, _low_water(kind))
    writes_before = len(site.sim.device.writes)
    if spec.write is None:  # a self-test reads every point and writes nothing
        cmd = await _send(system, site, action, {})
        assert cmd["state"] == "verified", cmd
        assert len(site.sim.device.writes) == writes_before
        return
    params = _params(spec, site)
    await _move_away(site, action, params)
    cmd = await _send(system, site, action, params)
    assert cmd["state"] == "verified", cmd
    readback, want = _expected(site, action, params)
    assert site.shows(readback) == want
    assert site.sim.device.writes[writes_before:][-1:] == [vocabulary.write_of(action, params)]


@pytest.mark.parametrize("case", ADVISORY, ids=_id)
async def test_an_advisory_action_from_an_operator_is_refused_before_anything_is_signed(
        system: System, case: tuple[Kind, Action]) -> None:
    """The prealert is the hub's own (hub/forecastdesk.py): an operator's, even well formed, is refused
    with the reason, and the device sees nothing."""
    kind, action = case
    site = system.sites[kind]
    params = {p.name: p.lo if p.lo is not None else p.choices[0] for p in vocabulary.action_spec(action).params}
    writes_before = len(site.sim.device.writes)
    async with client(system, "sam") as sam:
        r = await sam.post("/api/commands", {"site": site.site, "device": DEVICE, "action": action.value,
                                             "params": params, "reason": "contract test"})
        assert r.status == 422, f"{kind.value} {action.value}: {r.status} {await r.text()}"
        assert "network forecast" in (await r.json())["error"]
    assert len(site.sim.device.writes) == writes_before


SELFTESTS = [k for k in PROFILES if Action.DEVICE_SELFTEST in vocabulary.offers(k)]
SENSOR_FAULTS = [(k, p.name) for k in SELFTESTS for p in load_profile(PROFILES[k]).polled if p.sensor_fault is not None]
"""Points whose profile declares the raw value the device reports when the sensor failed."""


@pytest.mark.parametrize("case", SENSOR_FAULTS, ids=lambda c: f"{c[0].value}-{c[1]}")
async def test_a_selftest_of_a_device_with_a_failed_sensor_fails_naming_the_point(
        system: System, case: tuple[Kind, str]) -> None:
    kind, point = case
    site = system.sites[kind]
    site.sim.faults.sensor_fault.add(point)
    try:
        cmd = await _send(system, site, Action.DEVICE_SELFTEST, {})
    finally:
        site.sim.faults.sensor_fault.discard(point)
    assert cmd["state"] == "failed", cmd
    assert point in cmd["detail"], cmd


@pytest.mark.parametrize("kind", SELFTESTS, ids=lambda k: k.value)
async def test_a_selftest_of_a_device_that_does_not_answer_fails(system: System, kind: Kind) -> None:
    site = system.sites[kind]
    site.sim.faults.silent = True
    try:
        cmd = await _send(system, site, Action.DEVICE_SELFTEST, {})
    finally:
        site.sim.faults.silent = False
        back = time.time()
    assert cmd["state"] == "failed", cmd
    assert cmd["detail"], cmd
    await _until(lambda: any(r.ts > back and r.quality is Quality.GOOD for r in site.agent.latest.values()),
                 COMMAND_S, f"{site.site} answering again")


@pytest.mark.parametrize("case", NOT_OFFERED, ids=_id)
async def test_an_action_a_kind_does_not_offer_is_refused_by_the_api_with_a_reason(
        system: System, case: tuple[Kind, Action]) -> None:
    kind, action = case
    site = system.sites[kind]
    spec = vocabulary.action_spec(action)
    params = {p.name: p.choices[0] if p.choices else "x" for p in spec.params}
    writes_before = len(site.sim.device.writes)
    async with client(system, "sam") as sam:
        r = await sam.post("/api/commands", {"site": site.site, "device": DEVICE, "action": action.value,
                                             "params": params, "reason": "contract test"})
        assert r.status == 422, await r.text()
        reason = (await r.json())["error"]
        assert action.value in reason, reason
        assert kind.value in reason, reason
        r = await sam.get(f"/api/commands?site={site.site}&limit=10000")
        assert all(c["action"] != action.value for c in await r.json())  # nothing was signed or stored
    assert len(site.sim.device.writes) == writes_before


@pytest.mark.parametrize("params", [{"text": "OPEN THE ROAD"}, {"text": 7}, {"txt": "산책로 통제 중"}, {}],
                         ids=["text-not-a-preset", "text-not-a-string", "unknown-param", "no-param"])
async def test_params_the_vocabulary_does_not_allow_are_refused_before_signing(
        system: System, params: dict[str, Any]) -> None:
    site = system.sites[Kind.RIVER_GATE]
    writes_before = len(site.sim.device.writes)
    async with client(system, "sam") as sam:
        r = await sam.post("/api/commands", {"site": site.site, "device": DEVICE, "action": Action.SIGN_SHOW.value,
                                             "params": params, "reason": "hostile sender"})
        assert r.status in (400, 422), await r.text()
        assert (await r.json())["error"]
    assert len(site.sim.device.writes) == writes_before


@pytest.mark.parametrize(("device", "action", "status", "says"), [
    ("barrier-9", Action.BARRIER_CLOSE.value, 422, "unknown device"),
    (DEVICE, "barrier.explode", 422, "barrier.explode"),
], ids=["unknown-device", "unknown-action"])
async def test_a_command_for_no_such_device_or_action_is_refused(
        system: System, device: str, action: str, status: int, says: str) -> None:
    site = system.sites[Kind.UNDERPASS]
    writes_before = len(site.sim.device.writes)
    async with client(system, "sam") as sam:
        r = await sam.post("/api/commands", {"site": site.site, "device": device, "action": action,
                                             "reason": "hostile sender"})
        assert r.status == status, await r.text()
        assert says in (await r.json())["error"]
    assert len(site.sim.device.writes) == writes_before


# --- the operator's storm: evacuate, block, reopen ----------------------------------------------


async def _operation(system: System, kind: Operation) -> list[dict[str, Any]]:
    async with client(system, "olive") as olive:
        r = await olive.post("/api/operations", {"kind": kind.value, "area": AREA, "reason": f"contract {kind}"})
        assert r.status == 202, await r.text()
        accepted = await r.json()
        return [await _terminal(olive, c["cmd_id"]) for c in accepted["commands"]]


def _planned(system: System, kind: Operation) -> list[tuple[str, str, dict[str, Any]]]:
    """What the vocabulary says ``kind`` sends to the area's devices."""
    return sorted((s.site, step.action.value, dict(step.params)) for k, s in system.sites.items()
                  for step in vocabulary.steps(k, kind))


async def test_evacuate_verifies_every_device_command_and_the_centre_acknowledges_the_cap_alert(
        system: System) -> None:
    for s in system.sites.values():  # warnings off, so that evacuate visibly turns them on
        for step in vocabulary.steps(s.kind, Operation.EVACUATE):
            await _move_away(s, step.action, step.params)
    before = {a.identifier for a in system.centre.alerts()}
    cmds = await _operation(system, Operation.EVACUATE)
    assert sorted((c["site"], c["action"], c["params"]) for c in cmds) == _planned(system, Operation.EVACUATE)
    assert {Kind.FLOOD_ALARM, Kind.RIVER_GATE} <= {k for k, s in system.sites.items()  # and an underpass: no steps
                                                  if any(c["site"] == s.site for c in cmds)}
    assert {c["state"] for c in cmds} == {"verified"}, cmds
    kinds = {s.site: s for s in system.sites.values()}
    for c in cmds:
        readback, want = _expected(kinds[c["site"]], Action(c["action"]), c["params"])
        assert kinds[c["site"]].shows(readback) == want, c
    await system.centre.wait_for(lambda: any(
        _is_evacuate(a) for a in system.centre.alerts() if a.identifier not in before), 30.0)
    (alert,) = [a for a in system.centre.alerts() if a.identifier not in before and _is_evacuate(a)]
    assert alert.valid, alert.problems
    assert alert.verified, alert.signature_problem
    async with client(system, "vera") as vera:
        async def acknowledged() -> bool:
            r = await vera.get("/api/forwarding")
            rows = (await r.json())["deliveries"]
            return any(d["alert_id"] == alert.identifier and d["recipient"] == "city-centre"
                       and d["state"] == "acknowledged" for d in rows)

        await _until(acknowledged, 30.0, f"the city centre's acknowledgement of {alert.identifier}")


def _is_evacuate(a: receiver.Received) -> bool:
    if a.format != "cap" or not a.valid:
        return False
    return "Evacuate" in {rt for info in capread.read(a.body).infos for rt in info.response_types}


async def test_block_closes_every_barrier_and_gate_at_the_simulator(system: System) -> None:
    for s in system.sites.values():
        for step in vocabulary.steps(s.kind, Operation.BLOCK):
            await _water(system, s, _low_water(s.kind))  # the edge's own policy is not what closes it
            await _move_away(s, step.action, step.params)
    cmds = await _operation(system, Operation.BLOCK)
    assert sorted((c["site"], c["action"], c["params"]) for c in cmds) == _planned(system, Operation.BLOCK)
    assert {Kind.UNDERPASS, Kind.RIVER_GATE} <= {k for k, s in system.sites.items()
                                                if any(c["site"] == s.site for c in cmds)}
    assert {c["state"] for c in cmds} == {"verified"}, cmds
    by_site = {s.site: s for s in system.sites.values()}
    for c in cmds:
        readback, want = _expected(by_site[c["site"]], Action(c["action"]), c["params"])
        assert want == "closed"
        assert by_site[c["site"]].shows(readback) == "closed", c


@pytest.mark.parametrize("kind", [Kind.UNDERPASS, Kind.RIVER_GATE], ids=lambda k: k.value)
async def test_reopen_after_the_water_falls_needs_two_supervisors_and_is_verified(system: System, kind: Kind) -> None:
    site = system.sites[kind]
    opening = next(a for a in vocabulary.offers(kind) if vocabulary.is_opening(a))
    closing = next(s.action for s in vocabulary.steps(kind, Operation.BLOCK))
    readback, closed = _expected(site, closing, {})
    high = GATE_CLOSING_CM + 20.0 if kind is Kind.RIVER_GATE else 25.0
    await _water(system, site, high)
    await _until(lambda: site.shows(readback) == closed, 30.0, f"{site.site} closed at high water")
    async with client(system, "sam") as sam, client(system, "sue") as sue:
        req: dict[str, Any] = {"site": site.site, "device": DEVICE, "action": opening.value, "params": {},
                               "reason": "reopen"}
        r = await sam.post("/api/commands", req)
        assert r.status == 422, await r.text()  # the water is high: refused, with the reading that fails
        assert "reopening depth" in (await r.json())["error"]
        await _water(system, site, _low_water(kind))
        r = await sam.post("/api/commands", req)
        assert r.status == 202, await r.text()
        cmd_id = (await r.json())["cmd_id"]
        assert (await _command(sam, cmd_id))["state"] == "awaiting_approval"
        r = await sam.post(f"/api/commands/{cmd_id}/approve", {"reason": "me again"})
        assert r.status == 422, await r.text()  # the issuer cannot approve his own opening
        assert (await _command(sam, cmd_id))["state"] == "awaiting_approval"
        assert site.shows(readback) == closed
        r = await sue.post(f"/api/commands/{cmd_id}/approve", {"reason": "water is down"})
        assert r.status == 202, await r.text()
        cmd = await _terminal(sam, cmd_id)
    assert cmd["state"] == "verified", cmd
    assert cmd["issued_by"] == "sam"
    assert cmd["approved_by"] == ["sue"]
    assert site.shows(readback) == _expected(site, opening, {})[1]
