"""A hub's forecast.prealert at a real agent beside a real simulator, through a real mTLS broker
and the real hub: it is answered verified and, where the site's policy says so, sounds a
semi-basement siren before the water does; a barrier is not closed early by default; forged,
expired and malformed prealerts are refused and change nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import msgspec
import pytest

from edge.agent import Agent
from edge.sim.servers import Simulator, run_simulator
from shared import messages as m
from shared.paths import profiles_dir
from shared.profiles import load_profile
from shared.signing import load_private_key, sign_command
from tests.conftest import PkiFixture
from tests.edge.harness import running_agent, underpass_sim, until, write_config
from tests.edge.real_hub import RealHub, running_real_hub
from tests.fakes.hub_edge import fake_edge
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker

FLOOD = profiles_dir() / "flood-alarm-jk-fa100.toml"


def _flood_site(tmp_path: Path, pki: PkiFixture, site: str, broker: RunningBroker, pty: str, policy: str) -> Path:
    return write_config(tmp_path / "site.toml", pki, site, broker, extra_policy=policy,
                        devices={"alarm": (FLOOD, f"rtu://{pty}")})


def prealert(site: str, device: str, **kw: object) -> m.Command:
    now = time.time()
    fields: dict[str, object] = {
        "cmd_id": uuid.uuid4().hex, "site": site, "device": device, "action": m.Action.FORECAST_PREALERT,
        "params": {"expected_minutes": 30, "probability": 0.7}, "issued_by": "system", "issued_at": now,
        "not_after": now + 900, "reason": "network forecast"}
    fields.update(kw)
    return msgspec.convert(fields, m.Command)


@asynccontextmanager
async def flood_site(broker: RunningBroker, pki: PkiFixture, tmp_path: Path, policy: str = ""
                     ) -> AsyncIterator[tuple[str, Simulator, RealHub, Agent]]:
    site = pki.take_site()
    async with run_simulator(load_profile(FLOOD), transport="pty") as sim, \
            running_real_hub(broker, pki, tmp_path) as hub:
        sim.physics.water.depth_cm = 2.0
        cfg = _flood_site(tmp_path, pki, site, broker, sim.address, policy)
        async with running_agent(cfg) as agent:
            await asyncio.wait_for(agent.uplink.connected.wait(), 10)
            await until(lambda: ("alarm", "water_depth_cm") in agent.latest, 15, "first readings")
            yield site, sim, hub, agent


async def terminal(hub: RealHub, site: str, cmd_id: str) -> m.Reply:
    await until(lambda: any(r.status.is_terminal for r in hub.replies(site, cmd_id)), 20,
                f"terminal reply to {cmd_id}")
    return next(r for r in hub.replies(site, cmd_id) if r.status.is_terminal)


async def test_a_prealert_sounds_a_semi_basement_siren_before_the_water_does(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """Water at 2 cm (siren depth 10 cm): a signed prealert is answered verified, the policy
    sounds the siren (prealert_warn is on by default) and the hub hears why."""
    async with flood_site(broker, test_pki, tmp_path) as (site, sim, hub, _agent):
        assert sim.physics.siren is False
        cmd = sign_command(prealert(site, "alarm"), load_private_key(test_pki.pki.command_key))
        await hub.send_command(cmd)
        reply = await terminal(hub, site, cmd.cmd_id)
        assert reply.status is m.ReplyStatus.VERIFIED
        assert "siren early" in reply.reason
        await until(lambda: sim.physics.siren, 15, "siren sounded by the prealert")
        await until(lambda: any(e.kind == "local.siren.on" for e in hub.events(site)), 15, "event at the hub")
        ev = next(e for e in hub.events(site) if e.kind == "local.siren.on")
        assert "prealert" in ev.detail
        assert sim.physics.water.depth_cm < 10.0


async def test_with_prealert_warn_off_the_prealert_is_taken_and_the_siren_stays_off(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """The site turned pre-warning off: verified (taken, nothing early), and the siren stays silent."""
    async with flood_site(broker, test_pki, tmp_path, "prealert_warn = false") as (site, sim, hub, _agent):
        cmd = sign_command(prealert(site, "alarm"), load_private_key(test_pki.pki.command_key))
        await hub.send_command(cmd)
        reply = await terminal(hub, site, cmd.cmd_id)
        assert reply.status is m.ReplyStatus.VERIFIED
        assert "nothing early" in reply.reason
        await asyncio.sleep(2.0)  # several polls
        assert sim.physics.siren is False


@pytest.mark.parametrize(
    ("fields", "forge", "status", "reason"),
    [
        ({"params": {"expected_minutes": 30, "probability": 1.5}}, False, m.ReplyStatus.REJECTED, "outside 0..1"),
        ({"params": {"expected_minutes": 0, "probability": 0.5}}, False, m.ReplyStatus.REJECTED, "outside 1..240"),
        ({"params": {"expected_minutes": "soon", "probability": 0.5}}, False, m.ReplyStatus.REJECTED, "must be a int"),
        ({"params": {"probability": 0.5}}, False, m.ReplyStatus.REJECTED, "needs params.expected_minutes"),
        ({"params": {"expected_minutes": 30, "probability": 0.5, "close": True}}, False, m.ReplyStatus.REJECTED,
         "does not take params.close"),
        ({}, True, m.ReplyStatus.REJECTED, "signature"),
        ({"issued_at": 1.0, "not_after": 2.0}, False, m.ReplyStatus.EXPIRED, "expired"),
    ],
    ids=["probability-over-1", "zero-minutes", "text-minutes", "missing-param", "extra-param", "forged", "expired"],
)
async def test_bad_prealerts_are_refused_and_sound_nothing(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path, fields: dict[str, object], forge: bool,
    status: m.ReplyStatus, reason: str
) -> None:
    """What a hostile or broken sender would send: each refused with its reason, the siren silent."""
    async with flood_site(broker, test_pki, tmp_path) as (site, sim, hub, agent):
        cmd = sign_command(prealert(site, "alarm", **fields), load_private_key(test_pki.pki.command_key))
        if forge:
            cmd = cmd.__replace__(params={"expected_minutes": 5, "probability": 1.0})
        await hub.send_command(cmd)
        reply = await terminal(hub, site, cmd.cmd_id)
        assert reply.status is status
        assert reason in reply.reason
        assert agent.prealerts == {}
        await asyncio.sleep(1.0)
        assert sim.physics.siren is False


async def test_a_barrier_is_not_closed_early_by_default(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """An underpass takes the prealert (verified) but, prealert_close being off by default, its
    barrier stays open: only its own 15 cm rule closes it."""
    site = test_pki.take_site()
    async with underpass_sim() as sim, running_real_hub(broker, test_pki, tmp_path) as hub:
        sim.physics.water.depth_cm = 3.0
        cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        async with running_agent(cfg) as agent:
            await asyncio.wait_for(agent.uplink.connected.wait(), 10)
            await until(lambda: ("barrier", "barrier_state") in agent.latest, 10, "first readings")
            cmd = sign_command(prealert(site, "barrier"), load_private_key(test_pki.pki.command_key))
            await hub.send_command(cmd)
            reply = await terminal(hub, site, cmd.cmd_id)
            assert reply.status is m.ReplyStatus.VERIFIED
            assert "barrier" in agent.prealerts
            await asyncio.sleep(2.0)
            assert sim.physics.barrier.position == 0.0


async def test_with_prealert_close_on_a_barrier_closes_early(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """A site that turned prealert_close on closes its barrier on the prealert, water at 3 cm."""
    site = test_pki.take_site()
    async with underpass_sim() as sim, running_real_hub(broker, test_pki, tmp_path) as hub:
        sim.physics.water.depth_cm = 3.0
        cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim, extra_policy="prealert_close = true")
        async with running_agent(cfg) as agent:
            await asyncio.wait_for(agent.uplink.connected.wait(), 10)
            await until(lambda: ("barrier", "barrier_state") in agent.latest, 10, "first readings")
            cmd = sign_command(prealert(site, "barrier"), load_private_key(test_pki.pki.command_key))
            await hub.send_command(cmd)
            assert (await terminal(hub, site, cmd.cmd_id)).status is m.ReplyStatus.VERIFIED
            await until(lambda: sim.physics.barrier.limit_closed, 15, "barrier closed early")


async def test_the_hubs_forecast_prealert_reaches_a_real_agent_which_sounds_its_siren_early(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """End to end: three neighbours (edges that only send depth) rise and cross 15 cm beside a
    semi-basement alarm holding 11 cm (its own siren depth set to 14 cm, so its own rule stays
    silent); the hub's forecast raises its alarm and sends a forecast.prealert, the real agent
    answers it verified and sounds the siren, water still at 11 cm."""
    target = test_pki.take_site()
    neighbours = [test_pki.take_site() for _ in range(3)]
    base = (37.2636, 127.0286)
    registry: dict[str, dict[str, object]] = {target: {"area": "suwon", "lat": base[0], "lon": base[1]}}
    for i, site in enumerate(neighbours):
        registry[site] = {"area": "suwon", "lat": base[0] + 0.004 * (i + 1), "lon": base[1]}
    async with run_simulator(load_profile(FLOOD), transport="pty") as sim, \
            running_real_hub(broker, test_pki, tmp_path, sites={"registry": registry},
                             forecast={"hold_s": 2.0, "every_s": 0.5}) as hub:
        sim.physics.water.depth_cm = 11.0
        cfg = _flood_site(tmp_path, test_pki, target, broker, sim.address, "siren_depth_cm = 14.0")
        async with running_agent(cfg) as agent, AsyncExitStack() as stack:
            await asyncio.wait_for(agent.uplink.connected.wait(), 10)
            await until(lambda: ("alarm", "water_depth_cm") in agent.latest, 15, "first readings")
            edges = []
            for site in neighbours:
                e = await stack.enter_async_context(fake_edge(broker, test_pki.files(site), site))
                await e.status(m.SiteState.ONLINE)
                await e.birth([("gauge", "underpass", ("water_depth_cm", "barrier_state"))])
                edges.append(e)
            for k in range(14):  # a compressed storm: 2 cm a round, a round a second
                for i, e in enumerate(edges):
                    await e.send([e.reading("gauge", "water_depth_cm", min(40.0, 2.0 * k + 3.0 * i))])
                if agent.prealerts:
                    break
                await asyncio.sleep(1.0)
            await until(lambda: bool(agent.prealerts), 20, "the hub's prealert taken by the agent")
            await until(lambda: sim.physics.siren, 15, "siren sounded early")
            assert sim.physics.water.depth_cm == pytest.approx(11.0, abs=0.5)
            # the hub's own record of it: issued by the forecast, answered verified by the edge
            await until(lambda: [r[0] for r in hub._rows(
                "SELECT state FROM commands WHERE site = ? AND action = ?",
                (target, m.Action.FORECAST_PREALERT.value))] == ["verified"], 15, "the prealert verified at the hub")
            (issuer,) = hub._rows("SELECT issued_by FROM commands WHERE site = ?", (target,))
            assert issuer == ("system",)
