"""The whole agent closes a barrier early on a real flood replayed through the simulator.

A 2025–26 FloodNet event (test years) on which the flood model warns is played through the
underpass simulator 30 times faster than it happened; the agent runs on a clock that is 30
times faster too, so the forecaster sees the event's own time base. The barrier write must
reach the simulated PLC at least five event-minutes before the water crossed 15 cm.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.agent import Agent
from edge.config import load_site_config
from edge.inference import evaluate as ev
from edge.inference.events import FloodEvent, Split, floodnet_csv, load_events, select
from edge.inference.flood import FloodForecaster
from edge.sim.servers import run_simulator
from shared.profiles import load_profile
from tests.conftest import PkiFixture
from tests.edge.harness import UNDERPASS, until, write_config
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker
SPEED = 30.0
STOP_S = 30.0


def _event_where_the_model_warns_early() -> FloodEvent:
    fc = FloodForecaster()
    try:
        for e in select(load_events(floodnet_csv()), Split.TEST):
            n, crossing = ev.samples_before_crossing(e.t_secs, e.depth_cm)
            if crossing is None:
                continue
            fc.reset()
            for i in range(n):
                if fc.update(float(e.t_secs[i]), float(e.depth_cm[i])).warns:
                    if crossing - float(e.t_secs[i]) >= 600.0:
                        return e
                    break
    finally:
        fc.close()
    raise AssertionError("the model warns early on no test-year event")


def _warped_clock(speed: float) -> Callable[[], float]:
    t0, m0 = time.time(), time.monotonic()
    return lambda: t0 + (time.monotonic() - m0) * speed


async def test_agent_closes_early_on_a_replayed_test_event(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    event = _event_where_the_model_warns_early()
    _, crossing = ev.samples_before_crossing(event.t_secs, event.depth_cm)
    assert crossing is not None
    series = tuple(zip((event.t_secs / SPEED).tolist(), event.depth_cm.tolist(), strict=True))
    site = test_pki.take_site()
    async with run_simulator(load_profile(UNDERPASS), transport="tcp") as sim:
        closes: list[float] = []
        original = sim.physics.command

        def spy(point: str, value: Any) -> None:  # when the close reaches the PLC, in event seconds
            if point == "barrier_cmd" and value == "close":
                closes.append(sim.physics.water.t_s * SPEED)
            original(point, value)

        sim.physics.command = spy  # type: ignore[method-assign]
        cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        cfg.write_text(cfg.read_text().replace('transport = "', 'model = "flood"\ntransport = "'))
        agent = Agent(load_site_config(cfg), clock=_warped_clock(SPEED))
        sim.physics.water.series = series
        sim.physics.water.t_s = 0.0
        from contextlib import AsyncExitStack

        async with AsyncExitStack() as stack:
            await agent.open(stack)
            task = asyncio.create_task(agent.run())
            try:
                await until(lambda: bool(closes) or sim.physics.water.t_s * SPEED > crossing + 60,
                            crossing / SPEED + 30, "the barrier is closed or the water passed 15 cm")
            finally:
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=STOP_S)
                if not done:  # say where it is stuck instead of waiting for the suite's timeout
                    for t in asyncio.all_tasks():
                        t.print_stack()
                    pytest.fail(f"the agent did not stop within {STOP_S:.0f} s of being cancelled")
        agent.close()
    assert closes, "the agent never closed the barrier"
    lead = crossing - closes[0]
    assert lead >= 300.0, f"closed only {lead:.0f} s before the 15 cm crossing"
    assert float(np.interp(closes[0], event.t_secs, event.depth_cm)) < 15.0
