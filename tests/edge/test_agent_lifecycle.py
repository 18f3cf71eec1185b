"""A site's whole life with the real agent, a real simulator, a real mTLS broker and the real hub:
a replaced box, a corrupt outbox, a crash in the middle of a command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import PkiFixture
from tests.edge.harness import running_agent, underpass_sim, until, write_config
from tests.edge.real_hub import running_real_hub
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
