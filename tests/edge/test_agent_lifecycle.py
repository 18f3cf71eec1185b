"""A site's whole life with the real agent, a real simulator, a real mTLS broker and the real hub:
a replaced box, a corrupt outbox, a crash in the middle of a command."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from edge.commands import EXECUTING, Bus, CommandExecutor, WritePlan
from edge.errors import CodecError, DeviceTimeout
from shared import messages as m
from shared.signing import load_private_key, sign_command
from tests.conftest import PkiFixture
from tests.edge.harness import running_agent, underpass_sim, until, write_config
from tests.edge.real_hub import RealHub, running_real_hub
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker


async def test_a_replaced_box_is_heard_and_its_first_flood_raises_the_alarm(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """The old box delivers, then a new box (empty state dir, same site id) takes over: its seqs
    start at 1 in a new epoch, the hub stores every one of them, and 16 cm raises closing_depth."""
    site = test_pki.take_site()
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    async with underpass_sim() as sim, running_real_hub(broker, test_pki, tmp_path) as hub:
        async with running_agent(write_config(tmp_path / "old" / "site.toml", test_pki, site, broker, sim)) as old:
            await until(lambda: len(hub.seqs(site)) >= 30 and old.outbox.held < 10, 20, "old box delivers")
            old_epoch = old.outbox.epoch
        async with running_agent(write_config(tmp_path / "new" / "site.toml", test_pki, site, broker, sim)) as new:
            assert new.outbox.epoch != old_epoch
            await until(lambda: hub.epochs(site).get(new.outbox.epoch, 0) >= 20, 20, "new box's records stored")
            sim.physics.water.depth_cm = 16.0
            await until(lambda: "closing_depth" in hub.active_alarms(site), 20, "the hub judges the new box")
            await until(lambda: sim.physics.barrier.limit_closed, 10, "barrier closed locally")
            new.flush()
            await until(lambda: new.outbox.held < 10, 20, "the new box's records are acked")
            sent, unacked = new.outbox.next_seq - 1, new.outbox.held
        stored = hub.epochs(site)
    assert stored[new.outbox.epoch] >= sent - unacked  # every acked record of the new box is stored
    assert set(stored) == {old_epoch, new.outbox.epoch}


async def test_a_corrupt_outbox_is_moved_aside_and_the_barrier_still_closes(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """Garbage in outbox.db: the agent starts anyway on a new outbox (a new epoch), keeps the old
    file aside, closes the barrier at 16 cm, and tells the hub what happened."""
    site = test_pki.take_site()
    state = tmp_path / "state"
    state.mkdir()
    garbage = os.urandom(64 * 1024)
    (state / "outbox.db").write_bytes(garbage)
    async with (
        underpass_sim() as sim,
        running_real_hub(broker, test_pki, tmp_path) as hub,
        running_agent(write_config(tmp_path / "site.toml", test_pki, site, broker, sim)) as agent,
    ):
        assert agent.outbox_replaced is not None
        assert agent.outbox_replaced.moved_to is not None
        sim.physics.water.depth_cm = 16.0
        await until(lambda: sim.physics.barrier.limit_closed, 15, "barrier closed by the edge")
        await until(lambda: "outbox.replaced" in {e.kind for e in hub.events(site)}, 20, "the hub is told")
    (aside,) = state.glob("outbox.db.corrupt-*")
    assert aside.read_bytes() == garbage  # kept, untouched
    (replaced,) = [e for e in hub.events(site) if e.kind == "outbox.replaced"]
    assert replaced.values["moved_to"] == aside.name
    assert replaced.values["unreadable"] == -1


async def test_a_storage_failure_at_run_time_does_not_stop_the_local_close(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """The outbox's database goes away under the running agent: readings keep coming, the barrier
    closes at 16 cm, and the records wait in memory (counted) instead of ending the agent."""
    site = test_pki.take_site()
    async with (
        underpass_sim() as sim,
        running_agent(write_config(tmp_path / "site.toml", test_pki, site, broker, sim)) as agent,
    ):
        await until(lambda: ("barrier", "water_depth_cm") in agent.latest, 10, "first readings")
        agent.outbox._db.close()  # every later statement fails with sqlite3.ProgrammingError
        readings = agent.stats.readings
        sim.physics.water.depth_cm = 16.0
        await until(lambda: sim.physics.barrier.limit_closed, 15, "barrier closed by the edge")
        await until(lambda: agent.stats.readings > readings + 5, 10, "acquisition goes on")
        assert agent.storage_failures > 0
        pending = agent.health()["outbox.pending"]
        assert isinstance(pending, int)
        assert pending > 0


def _signed(site: str, pki: PkiFixture, action: m.Action = m.Action.BARRIER_CLOSE) -> m.Command:
    now = time.time()
    cmd = m.Command(cmd_id=uuid.uuid4().hex, site=site, device="barrier", action=action, issued_by="op-kim",
                    issued_at=now, not_after=now + 120, reason="test")
    return sign_command(cmd, load_private_key(pki.pki.command_key))


async def _terminal(hub: RealHub, site: str, cmd_id: str, n: int = 1) -> list[m.Reply]:
    await until(lambda: sum(r.status.is_terminal for r in hub.replies(site, cmd_id)) >= n, 20, "terminal reply")
    return [r for r in hub.replies(site, cmd_id) if r.status.is_terminal]


async def test_a_command_interrupted_by_a_crash_is_read_back_never_written_again(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """The agent marks a close as executing and writes it, then dies before storing the result; the
    agent started again on the same state dir gets the command redelivered and answers it from a
    read-back: the device saw exactly one write."""
    site = test_pki.take_site()
    cmd = _signed(site, test_pki)
    async with underpass_sim() as sim, running_real_hub(broker, test_pki, tmp_path) as hub:
        cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        async with running_agent(cfg) as first:
            await until(lambda: ("barrier", "water_depth_cm") in first.latest, 10, "first readings")
            plan = first._plan(cmd)
            assert isinstance(plan, WritePlan)
            first.outbox.store_command_result(cmd.cmd_id, EXECUTING, msgspec.json.encode(plan).decode())
            await first._write(plan.device, plan.point, plan.value)  # the write; then the "crash"
        assert len(sim.device.writes) == 1
        async with running_agent(cfg) as second:
            await asyncio.wait_for(second.uplink.connected.wait(), 10)
            await until(lambda: sim.physics.barrier.limit_closed, 10, "the barrier closes")
            await hub.send_command(cmd)  # redelivered
            (reply,) = await _terminal(hub, site, cmd.cmd_id)
    assert reply.status is m.ReplyStatus.VERIFIED
    assert "not written again" in reply.reason
    assert len(sim.device.writes) == 1


async def test_a_forged_command_reusing_a_real_id_touches_nothing_of_the_real_one(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """A forgery with a real cmd_id, arriving first, is rejected and stored nowhere: the real
    command still runs (one write at the device) and its repeat gets the real result."""
    site = test_pki.take_site()
    real = _signed(site, test_pki)
    forged = real.__replace__(reason="tampered")
    async with (
        underpass_sim() as sim,
        running_real_hub(broker, test_pki, tmp_path) as hub,
        running_agent(write_config(tmp_path / "site.toml", test_pki, site, broker, sim)) as agent,
    ):
        await asyncio.wait_for(agent.uplink.connected.wait(), 10)
        await until(lambda: ("barrier", "water_depth_cm") in agent.latest, 10, "first readings")
        await hub.send_command(forged)
        (first,) = await _terminal(hub, site, real.cmd_id)
        assert first.status is m.ReplyStatus.REJECTED
        assert first.reason.startswith(f"{m.UNAUTHENTICATED}signature")  # the hub lets the real result replace it
        assert agent.outbox.command_result(real.cmd_id) is None
        await hub.send_command(real)
        statuses = [r.status for r in await _terminal(hub, site, real.cmd_id, n=2)]
        await hub.send_command(forged)
        await hub.send_command(real)
        replies = await _terminal(hub, site, real.cmd_id, n=4)
    assert statuses == [m.ReplyStatus.REJECTED, m.ReplyStatus.VERIFIED]
    assert [r.status for r in replies] == [m.ReplyStatus.REJECTED, m.ReplyStatus.VERIFIED,
                                          m.ReplyStatus.REJECTED, m.ReplyStatus.VERIFIED]
    assert len(sim.device.writes) == 1


class _Store:
    def __init__(self) -> None:
        self.results: dict[str, tuple[str, str]] = {}

    def command_result(self, cmd_id: str) -> tuple[str, str] | None:
        return self.results.get(cmd_id)

    def command_report(self, cmd_id: str) -> list[m.PointCheck]:
        return []

    def store_command_result(self, cmd_id: str, status: str, reason: str,
                             report: Sequence[m.PointCheck] = ()) -> None:
        self.results[cmd_id] = (status, reason)


async def test_a_codec_or_device_error_is_the_commands_reply_and_the_executor_goes_on() -> None:
    """One command's value cannot be encoded, another's write times out: each gets its terminal
    reply and the next command still runs."""
    errors: list[Exception] = [CodecError("value out of range"), DeviceTimeout("no answer")]
    replies: list[tuple[str, m.ReplyStatus]] = []

    async def write(device: str, point: str, value: m.Scalar) -> None:
        if errors:
            raise errors.pop(0)

    async def read(device: str, point: str) -> tuple[m.Scalar, m.Quality]:
        return "closed", m.Quality.GOOD

    async def reply(cmd_id: str, status: m.ReplyStatus, reason: str, report: Sequence[m.PointCheck] = ()) -> None:
        replies.append((cmd_id, status))

    async def read_fresh(device: str, points: Sequence[str]) -> dict[str, tuple[m.Scalar, m.Quality]]:
        return {}

    plan = WritePlan("barrier", "barrier_cmd", "close", "barrier_state", "closed", 1.0)
    executor = CommandExecutor(store=_Store(), reply=reply, bus=Bus(write=write, read=read, read_fresh=read_fresh),
                               planner=lambda _: plan, authenticate=lambda _: None, clock=time.time, poll_s=0.01)
    now = time.time()
    cmds = [m.Command(cmd_id=f"c{i}", site="gg-test-0001", device="barrier", action=m.Action.BARRIER_CLOSE,
                      issued_by="op", issued_at=now, not_after=now + 60) for i in range(3)]
    for cmd in cmds:
        await executor.submit(cmd)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(executor.run())
        await until(lambda: len(replies) == 6, 5, "three commands answered")
        task.cancel()
    assert [s for _, s in replies if s.is_terminal] == [m.ReplyStatus.REJECTED, m.ReplyStatus.FAILED,
                                                         m.ReplyStatus.VERIFIED]


async def test_a_device_that_cannot_be_reached_does_not_blind_the_site(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """One Modbus device refusing connections and one serial port that is not there at start:
    the agent starts anyway, reports those devices comm_fail, polls the healthy barrier, and
    closes it at 16 cm on its own."""
    from shared.paths import profiles_dir
    from trust.broker import free_port

    site = test_pki.take_site()
    refused = free_port()  # nothing listens there
    async with underpass_sim() as sim:
        config = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        config.write_text(config.read_text() + f"""
[devices.barrier2]
profile = "{profiles_dir() / "underpass-jk-up300.toml"}"
transport = "tcp://127.0.0.1:{refused}"

[devices.gate]
profile = "{profiles_dir() / "river-gate-jk-rg10.toml"}"
transport = "serial:///dev/ttyJIKIMI-UNPLUGGED"
""")
        async with running_agent(config) as agent:
            await until(lambda: ("barrier", "water_depth_cm") in agent.latest, 15, "the healthy device's readings")
            await until(lambda: any(k[0] == "barrier2" for k in agent.latest)
                        and any(k[0] == "gate" for k in agent.latest), 15, "readings of the unreachable devices")
            assert {r.quality for k, r in agent.latest.items() if k[0] in ("barrier2", "gate")} == {m.Quality.COMM_FAIL}
            sim.physics.water.depth_cm = 16.0
            await until(lambda: sim.physics.barrier.limit_closed, 15, "barrier closed by the edge")


async def test_a_close_is_never_dropped_behind_other_local_actions(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """Local actions wait newest-per-actuator, never in a queue that drops: 40 actions for other
    actuators do not push a barrier close out, a repeated close replaces the one waiting, and the
    close then reaches the device."""
    from edge.policy import LocalAction
    from shared.messages import Action

    site = test_pki.take_site()
    async with underpass_sim() as sim:
        config = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        async with running_agent(config) as agent:
            await until(lambda: ("barrier", "water_depth_cm") in agent.latest, 15, "first readings")
            others = [LocalAction(f"alarm-{i:02d}", Action.SIREN_ON, "test") for i in range(40)]
            # no await from here to the swap below: the worker cannot run while the test queues
            for a in others:
                agent.enqueue_action(a)
            agent.enqueue_action(LocalAction("barrier", Action.BARRIER_CLOSE, "first"))
            agent.enqueue_action(LocalAction("barrier", Action.BARRIER_CLOSE, "second"))
            pending = agent.pending_actions()
            assert len(pending) == 41
            assert [a.reason for a in pending if a.device == "barrier"] == ["second"]
            agent._actions = {("barrier", "barrier_cmd"): pending[-1]}  # the rest name no real device
            await until(lambda: sim.physics.barrier.limit_closed, 15, "the close reached the device")


async def test_a_hub_that_lost_a_sites_birth_gets_it_again(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """The hub forgets a site's birth (as when it dropped or quarantined one): the next data
    the site sends is acked with a rebirth ask, the real agent publishes status and birth again,
    and the hub holds the site's devices once more."""
    site = test_pki.take_site()
    async with (
        underpass_sim() as sim,
        running_real_hub(broker, test_pki, tmp_path) as hub,
        running_agent(write_config(tmp_path / "site.toml", test_pki, site, broker, sim)) as agent,
    ):
        engine = hub.hub.engine
        await until(lambda: site in engine.state.born, 15, "the first birth")

        def forget(_tx: object) -> None:
            engine.state.born.discard(site)
            for key in [k for k in engine.state.kinds if k[0] == site]:
                del engine.state.kinds[key]

        await hub.hub.writer.call(forget)
        await until(lambda: site in engine.state.born, 15, "the birth asked for again")
        assert engine.counters.rebirth_asks == 1
        assert agent.uplink.counters.rebirths == 1
        assert (site, "barrier") in engine.state.kinds
