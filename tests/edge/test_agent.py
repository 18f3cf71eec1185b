"""The edge agent with real simulators, a real mTLS broker and a hub that commits and acks."""

from __future__ import annotations

import asyncio
import contextlib
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
        (
            lambda s, k: sign_command(_command(s, m.Action.BARRIER_CLOSE, exercise=True), k).__replace__(
                exercise=False),
            m.ReplyStatus.REJECTED,
            "signature",
        ),
    ],
    ids=["forged", "expired", "unknown-device", "unknown-action", "drill-turned-real"],
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


def _selftest(site: str, key: object) -> m.Command:
    return sign_command(_command(site, m.Action.DEVICE_SELFTEST), key)  # type: ignore[arg-type]


async def test_selftest_of_a_healthy_device_is_verified_with_one_entry_per_point(
    commanded_site: tuple[str, Simulator, RealHub], test_pki: PkiFixture
) -> None:
    """Every polled point of the underpass profile is read from the device and reported good."""
    site, sim, hub = commanded_site
    sim.physics.water.depth_cm = 3.2
    requests_before = sim.device.requests
    cmd = _selftest(site, load_private_key(test_pki.pki.command_key))
    await hub.send_command(cmd)
    replies = await _terminal(hub, site, cmd.cmd_id)
    final = replies[-1]
    assert final.status is m.ReplyStatus.VERIFIED, final.reason
    assert [c.point for c in final.report] == [p.name for p in sim.device.profile.polled]
    assert all(c.ok and c.quality is m.Quality.GOOD for c in final.report)
    assert next(c.value for c in final.report if c.point == "water_depth_cm") == pytest.approx(3.2)
    assert sim.device.requests > requests_before  # it asked the device
    assert sim.device.writes == []  # a self-test writes nothing


async def test_a_repeated_selftest_gets_its_stored_result_with_the_report(
    commanded_site: tuple[str, Simulator, RealHub], test_pki: PkiFixture
) -> None:
    """The same self-test cmd_id sent again is not run again (a sensor broken since changes
    nothing in the answer), and the stored answer carries the per-point report too."""
    site, sim, hub = commanded_site
    cmd = _selftest(site, load_private_key(test_pki.pki.command_key))
    await hub.send_command(cmd)
    first = [r for r in await _terminal(hub, site, cmd.cmd_id) if r.status.is_terminal]
    assert first[0].status is m.ReplyStatus.VERIFIED
    assert len(first[0].report) == len(sim.device.profile.polled)
    sim.faults.sensor_fault.add("water_depth_cm")  # a fresh run would fail now
    await hub.send_command(cmd)
    again = [r for r in await _terminal(hub, site, cmd.cmd_id, n=2) if r.status.is_terminal]
    assert [(r.status, r.reason) for r in again] == [(first[0].status, first[0].reason)] * 2
    assert again[1].report == first[0].report


@pytest.mark.parametrize(
    ("fault", "point", "why"),
    [
        (lambda sim: sim.physics.overrides.__setitem__("travel_pct", 150), "travel_pct", "out of range 0..100"),
        (lambda sim: sim.faults.sensor_fault.add("water_depth_cm"), "water_depth_cm", "sensor_fault"),
    ],
    ids=["travel-sensor-out-of-range", "depth-sensor-fault"],
)
async def test_selftest_with_a_bad_point_fails_naming_it(
    commanded_site: tuple[str, Simulator, RealHub], test_pki: PkiFixture,
    fault: Callable[[Simulator], None], point: str, why: str,
) -> None:
    site, sim, hub = commanded_site
    fault(sim)
    cmd = _selftest(site, load_private_key(test_pki.pki.command_key))
    await hub.send_command(cmd)
    final = (await _terminal(hub, site, cmd.cmd_id))[-1]
    assert final.status is m.ReplyStatus.FAILED
    assert f"{point} ({why})" in final.reason
    bad = [c for c in final.report if not c.ok]
    assert [(c.point, c.why) for c in bad] == [(point, why)]
    assert len(final.report) == len(sim.device.profile.polled)


async def test_selftest_of_a_stopped_device_fails_with_every_point_comm_fail(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """The simulator is stopped after the agent has read it once: the self-test reads nothing
    from the cache and reports every point comm_fail."""
    site = test_pki.take_site()
    async with running_real_hub(broker, test_pki, tmp_path) as hub, contextlib.AsyncExitStack() as sims:
        sim = await sims.enter_async_context(underpass_sim())
        polled = [p.name for p in sim.device.profile.polled]
        cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        async with running_agent(cfg) as agent:
            await asyncio.wait_for(agent.uplink.connected.wait(), 10)
            await until(lambda: ("barrier", "water_depth_cm") in agent.latest, 10, "first readings")
            await sims.aclose()  # the simulator stops
            cmd = _selftest(site, load_private_key(test_pki.pki.command_key))
            await hub.send_command(cmd)
            final = (await _terminal(hub, site, cmd.cmd_id))[-1]
    assert final.status is m.ReplyStatus.FAILED
    assert "cannot be reached" in final.reason
    assert [c.point for c in final.report] == polled
    assert all(c.quality is m.Quality.COMM_FAIL and not c.ok and c.value is None for c in final.report)


async def test_an_exercise_close_is_a_dry_run_and_the_barrier_stays_open(
    commanded_site: tuple[str, Simulator, RealHub], test_pki: PkiFixture
) -> None:
    """Checked as a real close, answered verified as a dry run; the device saw no write and the
    barrier did not move. Sent again, the stored result is resent and still nothing is written."""
    site, sim, hub = commanded_site
    cmd = sign_command(_command(site, m.Action.BARRIER_CLOSE, exercise=True),
                       load_private_key(test_pki.pki.command_key))
    await hub.send_command(cmd)
    replies = await _terminal(hub, site, cmd.cmd_id)
    assert [r.status for r in replies] == [m.ReplyStatus.RECEIVED, m.ReplyStatus.VERIFIED]
    assert "dry run" in replies[-1].reason
    await hub.send_command(cmd)
    replies = await _terminal(hub, site, cmd.cmd_id, n=2)
    assert [r.reason for r in replies if r.status.is_terminal] == [replies[-1].reason] * 2
    await asyncio.sleep(1.0)  # a poll or two: a write would have moved it by now
    assert sim.device.writes == []
    assert sim.physics.barrier.position == 0.0
    assert sim.physics.values()["barrier_state"] == "open"


async def test_an_exercise_reopen_with_water_high_is_rejected_by_the_interlock(
    commanded_site: tuple[str, Simulator, RealHub], test_pki: PkiFixture
) -> None:
    site, sim, hub = commanded_site
    sim.physics.water.depth_cm = 12.0  # above reopening (5 cm), below closing (15 cm)
    sim.physics.barrier.position = 1.0
    await asyncio.sleep(1.0)  # let a poll see it
    cmd = sign_command(_command(site, m.Action.BARRIER_OPEN, approved_by=["sup-lee"], exercise=True),
                       load_private_key(test_pki.pki.command_key))
    await hub.send_command(cmd)
    final = (await _terminal(hub, site, cmd.cmd_id))[-1]
    assert final.status is m.ReplyStatus.REJECTED
    assert "reopening depth" in final.reason
    assert sim.device.writes == []
    assert sim.physics.barrier.position == 1.0


async def test_an_exercise_reopen_with_water_low_is_verified_and_nothing_moves(
    commanded_site: tuple[str, Simulator, RealHub], test_pki: PkiFixture
) -> None:
    site, sim, hub = commanded_site
    sim.physics.water.depth_cm = 1.0
    sim.physics.barrier.position = 1.0
    await asyncio.sleep(1.0)
    cmd = sign_command(_command(site, m.Action.BARRIER_OPEN, approved_by=["sup-lee"], exercise=True),
                       load_private_key(test_pki.pki.command_key))
    await hub.send_command(cmd)
    final = (await _terminal(hub, site, cmd.cmd_id))[-1]
    assert final.status is m.ReplyStatus.VERIFIED
    assert "dry run" in final.reason
    assert "barrier_cmd='open'" in final.reason
    await asyncio.sleep(1.0)
    assert sim.device.writes == []
    assert sim.physics.values()["barrier_state"] == "closed"


@pytest.mark.parametrize(("state", "writes"), [("closed", []), ("open", [("barrier_cmd", "close")])])
async def test_after_a_restart_with_water_high_the_barrier_is_closed_once_and_only_if_open(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path, state: str, writes: list[tuple[str, str]]
) -> None:
    """Stop the agent, leave the water at 20 cm, start it again: the first poll reads the depth
    before the barrier's state; the policy waits for that state (same poll) and writes a close
    only to a barrier that is open (writes counted at the device)."""
    site = test_pki.take_site()
    async with underpass_sim() as sim:
        cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        async with running_agent(cfg) as agent:
            await until(lambda: ("barrier", "barrier_state") in agent.latest, 10, "first run reads the barrier")
        sim.physics.water.depth_cm = 20.0
        sim.physics.barrier.position = 1.0 if state == "closed" else 0.0
        async with running_agent(cfg) as agent:
            await until(lambda: agent.stats.readings >= 40, 20, "several polls after the restart")
            if state == "open":
                await until(lambda: sim.physics.barrier.limit_closed, 10, "barrier closed by the edge")
            await asyncio.sleep(1.0)
    assert sim.device.writes == writes
