"""The edge agent with real simulators, a real mTLS broker and a hub that commits and acks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from edge.sim.servers import Simulator
from shared import messages as m
from shared.signing import load_private_key, sign_command
from tests.conftest import PkiFixture
from tests.edge.harness import running_agent, underpass_sim, until, write_config
from tests.edge.real_hub import RealHub, running_real_hub
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker

async def test_barrier_closes_locally_with_broker_down_and_event_reaches_hub(
    test_pki: PkiFixture, tmp_path: Path
) -> None:
    """Broker down, water rises past 15 cm: the edge closes the barrier on its own, the limit
    switch confirms it, and the events reach the hub once the broker is back."""
    site = test_pki.take_site()
    with RunningBroker.start(test_pki.dir, tmp_path / "broker") as broker:
        async with underpass_sim() as sim:
            cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
            async with running_agent(cfg) as agent:
                await asyncio.wait_for(agent.uplink.connected.wait(), 10)
                broker.stop()
                await until(lambda: not agent.uplink.connected.is_set(), 10, "uplink notices the outage")
                sim.physics.water.depth_cm = 16.0
                await until(lambda: sim.physics.barrier.limit_closed, 10, "barrier closed by the edge")
                assert sim.physics.values()["limit_closed"] is True
                assert not agent.uplink.connected.is_set()
                broker.restart()
                async with running_real_hub(broker, test_pki, tmp_path) as hub:
                    await until(
                        lambda: (
                            {"local.barrier.close", "local.barrier.close.verified"}
                            <= {e.kind for e in hub.events(site)}
                        ),
                        20,
                        "events at the hub",
                    )
                    close = next(e for e in hub.events(site) if e.kind == "local.barrier.close")
                    assert close.prio is m.Priority.ALARM
                    assert close.historical  # produced while the broker was down
                    assert "16.0 cm" in close.detail


def _command(site: str, action: m.Action, **kw: object) -> m.Command:
    now = time.time()
    fields: dict[str, object] = {
        "cmd_id": uuid.uuid4().hex,
        "site": site,
        "device": "barrier",
        "action": action,
        "issued_by": "op-kim",
        "issued_at": now,
        "not_after": now + 60,
        "reason": "test",
    }
    fields.update(kw)
    return msgspec.convert(fields, m.Command)


@pytest.fixture
async def commanded_site(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> AsyncIterator[tuple[str, Simulator, RealHub]]:
    site = test_pki.take_site()
    async with (
        underpass_sim() as sim,
        running_real_hub(broker, test_pki, tmp_path) as hub,
    ):
        cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        async with running_agent(cfg) as agent:
            await asyncio.wait_for(agent.uplink.connected.wait(), 10)
            await until(lambda: ("barrier", "water_depth_cm") in agent.latest, 10, "first readings")
            yield site, sim, hub


async def _terminal(hub: RealHub, site: str, cmd_id: str, n: int = 1) -> list[m.Reply]:
    def done() -> bool:
        return sum(r.status.is_terminal for r in hub.replies(site, cmd_id)) >= n

    await until(done, 20, f"terminal reply to {cmd_id}")
    return hub.replies(site, cmd_id)


@pytest.mark.parametrize(
    ("make", "status", "reason"),
    [
        (
            lambda s, k: sign_command(_command(s, m.Action.BARRIER_CLOSE), k).__replace__(reason="tampered"),
            m.ReplyStatus.REJECTED,
            "signature",
        ),
        (
            lambda s, k: sign_command(_command(s, m.Action.BARRIER_CLOSE, issued_at=1.0, not_after=2.0), k),
            m.ReplyStatus.EXPIRED,
            "expired",
        ),
        (
            lambda s, k: sign_command(_command(s, m.Action.BARRIER_CLOSE, device="pump"), k),
            m.ReplyStatus.REJECTED,
            "unknown device",
        ),
        (
            lambda s, k: sign_command(_command(s, m.Action.SIREN_ON), k),
            m.ReplyStatus.REJECTED,
            "not an action of barrier",
        ),
    ],
    ids=["forged", "expired", "unknown-device", "unknown-action"],
)
async def test_bad_commands_are_refused_with_the_reason(
    commanded_site: tuple[str, Simulator, RealHub],
    test_pki: PkiFixture,
    make: Callable[[str, object], m.Command],
    status: m.ReplyStatus,
    reason: str,
) -> None:
    site, sim, hub = commanded_site
    cmd = make(site, load_private_key(test_pki.pki.command_key))
    await hub.send_command(cmd)
    replies = await _terminal(hub, site, cmd.cmd_id)
    assert [r.status for r in replies] == [m.ReplyStatus.RECEIVED, status]
    assert reason in replies[-1].reason
    assert sim.physics.barrier.position == 0.0  # nothing moved


async def test_open_while_water_is_high_is_rejected(
    commanded_site: tuple[str, Simulator, RealHub], test_pki: PkiFixture
) -> None:
    site, sim, hub = commanded_site
    sim.physics.water.depth_cm = 12.0  # above reopening (5 cm), below closing (15 cm)
    sim.physics.barrier.position = 1.0
    await asyncio.sleep(1.0)  # let a poll see it
    key = load_private_key(test_pki.pki.command_key)
    cmd = sign_command(_command(site, m.Action.BARRIER_OPEN, approved_by=["sup-lee"]), key)
    await hub.send_command(cmd)
    replies = await _terminal(hub, site, cmd.cmd_id)
    assert replies[-1].status is m.ReplyStatus.REJECTED
    assert "reopening depth" in replies[-1].reason
    assert sim.physics.barrier.position == 1.0


async def test_same_cmd_id_twice_moves_the_barrier_once(
    commanded_site: tuple[str, Simulator, RealHub], test_pki: PkiFixture
) -> None:
    """The repeat gets the stored result and does not act: the barrier, reopened by hand in
    between, stays open."""
    site, sim, hub = commanded_site
    cmd = sign_command(_command(site, m.Action.BARRIER_CLOSE), load_private_key(test_pki.pki.command_key))
    await hub.send_command(cmd)
    replies = await _terminal(hub, site, cmd.cmd_id)
    assert replies[-1].status is m.ReplyStatus.VERIFIED
    assert sim.physics.barrier.limit_closed
    sim.physics.barrier.position = 0.0  # a technician opens it locally
    await hub.send_command(cmd)
    replies = await _terminal(hub, site, cmd.cmd_id, n=2)
    assert [r.status for r in replies if r.status.is_terminal] == [m.ReplyStatus.VERIFIED] * 2
    await asyncio.sleep(1.0)
    assert sim.physics.barrier.position == 0.0


async def test_jammed_barrier_gives_failed(
    commanded_site: tuple[str, Simulator, RealHub], test_pki: PkiFixture
) -> None:
    site, sim, hub = commanded_site
    sim.physics.barrier.jammed = True
    cmd = sign_command(_command(site, m.Action.BARRIER_CLOSE), load_private_key(test_pki.pki.command_key))
    await hub.send_command(cmd)
    replies = await _terminal(hub, site, cmd.cmd_id)
    assert replies[-1].status is m.ReplyStatus.FAILED
    assert "did not reach 'closed'" in replies[-1].reason


async def test_sigkill_mid_work_loses_and_duplicates_nothing(
    test_pki: PkiFixture, broker: RunningBroker, tmp_path: Path
) -> None:
    """SIGKILL the agent process while it works, start it again: seq continues from where it
    was, the hub has every seq exactly once (dedupe by (site, seq)), no gap."""
    site = test_pki.take_site()
    async with (
        underpass_sim() as sim,
        running_real_hub(broker, test_pki, tmp_path) as hub,
    ):
        cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "shared.cli", "edge", "run", "--config", str(cfg)]
        with (tmp_path / "agent.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(*argv, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                await until(lambda: len(hub.seqs(site)) >= 50, 30, "first run delivers")
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                first_run = hub.seqs(site)
                proc = await asyncio.create_subprocess_exec(*argv, stdout=log, stderr=subprocess.STDOUT, env=env)
                await until(lambda: len(hub.seqs(site)) >= len(first_run) + 50, 30, "second run delivers")
            finally:
                if proc.returncode is None:
                    proc.terminate()
                    await proc.wait()
        seqs = hub.seqs(site)
    assert seqs == list(range(1, len(seqs) + 1)), "no gap, no duplicate"
    assert max(seqs) > max(first_run)
