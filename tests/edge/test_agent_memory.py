"""After an outage's backlog drains to the hub, the agent gives the memory it took back, once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from edge.agent import BACKLOG_RECORDS, Agent
from shared import messages as m
from tests.conftest import PkiFixture
from tests.edge.harness import running_agent, underpass_sim, until, write_config
from tests.edge.real_hub import running_real_hub
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker


async def test_memory_is_released_once_when_an_outage_backlog_has_drained(
    test_pki: PkiFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Broker down, a backlog beyond ``BACKLOG_RECORDS`` builds up: nothing is released while it
    is held; once the hub has acked it, the agent releases memory exactly once."""
    released: list[int] = []
    original = Agent.release_memory

    def spy(self: Agent) -> None:  # instrumentation: when, and with what still held
        released.append(self.outbox.held)
        original(self)

    monkeypatch.setattr(Agent, "release_memory", spy)
    site = test_pki.take_site()
    with RunningBroker.start(test_pki.dir, tmp_path / "broker") as broker:
        async with underpass_sim() as sim:
            cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
            async with running_agent(cfg) as agent, running_real_hub(broker, test_pki, tmp_path) as hub:
                await asyncio.wait_for(agent.uplink.connected.wait(), 10)
                await asyncio.sleep(1.0)
                assert released == []  # steady state: no backlog, nothing to release
                broker.stop()
                await until(lambda: not agent.uplink.connected.is_set(), 10, "uplink notices the outage")
                agent._pending.extend(
                    m.Event(seq=0, ts=time.time(), prio=m.Priority.TELEMETRY, kind="test.backlog", device="barrier")
                    for _ in range(BACKLOG_RECORDS + 200)
                )
                agent.flush()
                await asyncio.sleep(0.5)
                assert agent.outbox.held >= BACKLOG_RECORDS
                assert released == []  # held, not drained
                broker.restart()
                await until(lambda: len(hub.events(site)) >= BACKLOG_RECORDS + 200, 30, "the backlog at the hub")
                await until(lambda: bool(released), 10, "memory released after the drain")
                await asyncio.sleep(1.0)
                assert len(released) == 1
                assert released[0] < BACKLOG_RECORDS // 10
