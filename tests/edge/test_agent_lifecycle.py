"""A site's whole life with the real agent, a real simulator, a real mTLS broker and the real hub:
a replaced box, a corrupt outbox, a crash in the middle of a command."""

from __future__ import annotations

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
