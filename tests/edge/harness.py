"""Shared parts of the edge tests: a site config for the test PKI, a running agent, a simulator."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from edge.agent import Agent
from edge.config import load_site_config
from edge.sim.servers import Simulator, run_simulator
from shared.paths import profiles_dir
from shared.profiles import load_profile
from tests.conftest import PkiFixture
from trust.broker import RunningBroker

UNDERPASS = profiles_dir() / "underpass-jk-up300.toml"


def write_config(
    path: Path, pki: PkiFixture, site: str, broker: RunningBroker, sim: Simulator | None = None, *,
    extra_policy: str = "", devices: dict[str, tuple[Path, str]] | None = None,
) -> Path:
    """A site config beside ``path``: the underpass barrier on ``sim``, or ``devices`` (name →
    (profile, transport))."""
    d = pki.dir
    if devices is None:
        assert sim is not None, "give the simulator or the devices"
        devices = {"barrier": (UNDERPASS, sim.address)}
    device_tables = "".join(f"""
[devices.{name}]
profile = "{profile}"
transport = "{transport}"
""" for name, (profile, transport) in devices.items())
    path.write_text(f"""
[site]
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
verify_timeout_s = 5.0
{extra_policy}
{device_tables}""")
    return path


async def until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll state owned by other tasks until ``cond`` holds."""
    try:
        async with asyncio.timeout(timeout_s):
            while not cond():  # noqa: ASYNC110 - state belongs to other tasks
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out waiting for: {what}")


@asynccontextmanager
async def running_agent(config: Path) -> AsyncIterator[Agent]:
    agent = Agent(load_site_config(config))
    async with AsyncExitStack() as stack:
        await agent.open(stack)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(agent.run(), name="agent")
            try:
                yield agent
            finally:
                task.cancel()
    agent.close()


@asynccontextmanager
async def underpass_sim() -> AsyncIterator[Simulator]:
    async with run_simulator(load_profile(UNDERPASS), transport="tcp") as sim:
        sim.physics.barrier.travel_s = 1.0
        yield sim


@asynccontextmanager
async def edge_process(config: Path, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``jikimi edge run``; SIGKILLed on leaving, unless it has already exited."""
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli", "edge", "run", "--config", str(config), stdout=out,
            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
