"""Commands end to end through the HTTPS API with no fake in the path: the real hub, a real agent
(tests/edge/harness.py) beside a real simulator, the session's mTLS broker.

- ``gate.open``: a river gate measures depth through ``water_level_cm`` (its kind's depth point,
  shared/vocabulary.py); with the water high the hub refuses with the reason, once it has fallen
  two distinct supervisors reopen the gate and the simulator's gate is open.
- An exercise ``barrier.close`` is answered with a dry run: verified, the barrier still open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from edge.sim.servers import Simulator, run_simulator
from hub.service import Hub, running
from shared.paths import profiles_dir
from shared.profiles import load_profile
from tests.conftest import PkiFixture
from tests.edge.harness import running_agent, underpass_sim, write_config
from tests.hub.conftest import ApiClient, ConfigFactory, add_users, api_client, until
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker

RIVER_GATE = profiles_dir() / "river-gate-jk-rg10.toml"
AREA = "gg-e2e"


@asynccontextmanager
async def river_gate_sim() -> AsyncIterator[Simulator]:
    async with run_simulator(load_profile(RIVER_GATE)) as sim:  # the line protocol on a pty
        sim.physics.barrier.travel_s = 1.0
        yield sim


def gate_config(path: Path, pki: PkiFixture, site: str, broker: RunningBroker, sim: Simulator) -> Path:
    """The harness's site config with the river gate in place of the barrier (no ``depth_source``:
    the agent watches the kind's own depth point, as the hub judges it)."""
    write_config(path, pki, site, broker, sim)
    text = path.read_text().split("[devices.barrier]")[0]
    path.write_text(text + f"""
[devices.gate]
profile = "{RIVER_GATE}"
transport = "serial://{sim.address}"
""")
    return path


async def latest(c: ApiClient, site: str, device: str, point: str) -> Any:
    resp = await c.get(f"/api/sites/{site}/latest")
    if resp.status == 404:  # the site has not reported yet
        return None
    assert resp.status == 200, await resp.text()
    rows = await resp.json()
    return next((r["value"] for r in rows if (r["device"], r["point"]) == (device, point)), None)


async def command(c: ApiClient, cmd_id: str) -> dict[str, Any]:
    view: dict[str, Any] = await (await c.get(f"/api/commands/{cmd_id}")).json()
    return view


async def wait_state(c: ApiClient, cmd_id: str, within_s: float = 30.0) -> dict[str, Any]:
    """Wait for the command's terminal state and return its view."""

    async def done() -> bool:
        return (await command(c, cmd_id))["state"] in ("verified", "failed", "rejected", "expired", "timed_out",
                                                        "send_failed")

    await until(done, within_s)
    return await command(c, cmd_id)


def hub_cfg(hub_config: ConfigFactory, site: str) -> Any:
    cfg = hub_config(api={"enabled": True}, sites={"registry": {site: {"area": AREA}}},
                     commands={"ttl_s": 30, "reply_grace_s": 5})
    add_users(cfg)
    return cfg


async def test_a_river_gate_is_reopened_by_its_water_level_with_two_supervisors(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """Water 12 cm: gate.close verified on the simulator, gate.open refused naming water_level_cm;
    water 2 cm: sam asks, sue approves, the edge verifies and the simulator's gate is open."""
    site = test_pki.take_site()
    ca = test_pki.dir / "ca.pem"
    async with river_gate_sim() as sim:
        sim.physics.water.depth_cm = 12.0  # over the reopening depth (5 cm), under the closing depth
        cfg = gate_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        hub: Hub
        async with running(hub_cfg(hub_config, site)) as hub, running_agent(cfg), \
                api_client(hub, ca) as sam, api_client(hub, ca) as sue:
            await sam.login("sam")
            await sue.login("sue")

            async def level_is(v: float) -> bool:
                return bool(await latest(sam, site, "gate", "water_level_cm") == v)

            await until(lambda: level_is(12), 30)
            r = await sam.post("/api/commands", {"site": site, "device": "gate", "action": "gate.close",
                                                 "reason": "river rising"})
            assert r.status == 202, await r.text()
            closed = await wait_state(sam, (await r.json())["cmd_id"])
            assert closed["state"] == "verified", closed
            assert sim.physics.barrier.limit_closed

            high = await sam.post("/api/commands", {"site": site, "device": "gate", "action": "gate.open",
                                                    "reason": "reopen the trail"})
            assert high.status == 422
            error = (await high.json())["error"]
            assert "gate water_level_cm is 12" in error
            assert "not below the reopening depth" in error

            sim.physics.water.depth_cm = 2.0
            await until(lambda: level_is(2), 30)
            ask = await sam.post("/api/commands", {"site": site, "device": "gate", "action": "gate.open",
                                                   "reason": "water has fallen, reopen the trail"})
            assert ask.status == 202, await ask.text()
            cmd_id = (await ask.json())["cmd_id"]
            assert (await ask.json())["state"] == "awaiting_approval"
            own = await sam.post(f"/api/commands/{cmd_id}/approve", {"reason": "mine"})
            assert own.status == 422
            ok = await sue.post(f"/api/commands/{cmd_id}/approve", {"reason": "checked the CCTV"})
            assert ok.status == 202, await ok.text()
            opened = await wait_state(sam, cmd_id)
            assert opened["state"] == "verified", opened
            assert opened["issued_by"] == "sam"
            assert opened["approved_by"] == ["sue"]
            assert sim.physics.barrier.limit_open
            assert sim.physics.values()["gate_state"] == "open"


async def test_an_exercise_close_is_a_dry_run_at_the_edge(
    hub_config: ConfigFactory, broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """Inside an exercise, barrier.close reaches the real agent signed with ``exercise``: the edge
    checks its interlocks and writes nothing, so the reply is verified (a dry run) and the
    simulator's barrier is still open."""
    site = test_pki.take_site()
    async with underpass_sim() as sim:
        sim.physics.water.depth_cm = 3.0
        cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        async with running(hub_cfg(hub_config, site)) as hub, running_agent(cfg), \
                api_client(hub, test_pki.dir / "ca.pem") as sam:
            await sam.login("sam")

            async def depth_seen() -> bool:
                return bool(await latest(sam, site, "barrier", "water_depth_cm") == 3.0)

            await until(depth_seen, 30)
            ex = await sam.post("/api/exercises", {"area": AREA, "reason": "yearly drill"})
            assert ex.status == 201, await ex.text()
            r = await sam.post("/api/commands", {"site": site, "device": "barrier", "action": "barrier.close",
                                                 "reason": "drill: close the underpass", "exercise": True})
            assert r.status == 202, await r.text()
            view = await wait_state(sam, (await r.json())["cmd_id"])
            assert view["exercise_id"] == (await ex.json())["id"]
            assert view["state"] == "verified", view
            assert sim.physics.barrier.limit_open
            assert sim.physics.barrier.position == 0.0
