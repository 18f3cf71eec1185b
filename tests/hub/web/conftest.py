"""Console fixtures: a running hub with its API and test users, a real edge agent with an
underpass simulator, and real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, ViewportSize, async_playwright

from edge.agent import Agent
from edge.sim.servers import Simulator, run_simulator
from hub.config import parse
from hub.service import Hub, running
from shared.paths import profiles_dir
from shared.profiles import load_profile
from tests.conftest import PkiFixture
from tests.edge.harness import UNDERPASS, running_agent, write_config
from tests.hub.conftest import PASSWORD, add_users, raw_config
from trust.broker import RunningBroker

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT: ViewportSize = {"width": 1366, "height": 768}
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"

# Seryu underpass, Suwon (WGS84): inside the Suwon boundary on the map.
SURWON_UNDERPASS = {"area": "gg-suwon", "name": "세류 지하차도", "lat": 37.2527, "lon": 127.0166}


@dataclass
class Console:
    hub: Hub
    url: str
    site: str
    """The site the real edge agent reports as."""
    sim: Simulator
    agent: Agent


async def until(pred: Callable[[], bool | Awaitable[bool]], within_s: float = 15.0, what: str = "") -> None:
    """Wait for state owned by another task (the simulator, the hub)."""
    try:
        async with asyncio.timeout(within_s):
            while True:
                got = pred()
                if not isinstance(got, bool):
                    got = await got
                if got:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out waiting for: {what}")


@pytest.fixture
def extra_sites() -> dict[str, dict[str, Any]]:
    """More ``[sites.registry]`` entries (a test module overrides this)."""
    return {}


@pytest.fixture
def hub_sections() -> dict[str, dict[str, Any]]:
    """More sections of the hub's config, e.g. ``forward`` (a test module overrides this)."""
    return {}


@pytest.fixture
async def console(test_pki: PkiFixture, broker: RunningBroker, tmp_path: Path,
                  extra_sites: dict[str, dict[str, Any]],
                  hub_sections: dict[str, dict[str, Any]]) -> AsyncIterator[Console]:
    """A hub with its API and the test users, and one real edge agent (underpass simulator) whose
    site is registered at Seryu underpass, Suwon. Only registered sites are accepted, so retained
    messages of other tests' edges on the shared broker stay out of the picture."""
    site = test_pki.take_site()
    extra = extra_sites
    raw = raw_config(test_pki, broker.port, tmp_path / "hub.db", api={"enabled": True},
                     sites={"accept_any": False, "registry": {site: SURWON_UNDERPASS, **extra}}, **hub_sections)
    cfg = parse(raw, tmp_path / "hub.toml")
    add_users(cfg)
    async with run_simulator(load_profile(UNDERPASS), transport="tcp") as sim:
        sim.physics.barrier.travel_s = 1.0
        sim.physics.water.depth_cm = 3.0
        async with running(cfg) as hub:
            (tmp_path / "edge").mkdir()
            # The edge's own closing depth is set high so that at 20 cm the barrier stays open until
            # the operator closes it (the hub's rule still fires at the national 15 cm).
            edge_cfg = write_config(tmp_path / "edge" / "site.toml", test_pki, site, broker, sim,
                                    extra_policy="closing_depth_cm = 40.0")
            async with running_agent(edge_cfg) as agent:
                await asyncio.wait_for(agent.uplink.connected.wait(), 10)
                yield Console(hub=hub, url=f"https://127.0.0.1:{hub.api_port}", site=site, sim=sim, agent=agent)


RIVER_GATE = profiles_dir() / "river-gate-jk-rg10.toml"
# Suwon's Hwanggujicheon trail entrance (WGS84), in the same area as the underpass.
GATE_PLACE = {"area": "gg-suwon", "name": "황구지천 산책로 입구", "lat": 37.2690, "lon": 126.9740}


@pytest.fixture
def gate_site(test_pki: PkiFixture) -> str:
    return test_pki.take_site()


@pytest.fixture
async def gate(console: Console, gate_site: str, test_pki: PkiFixture, broker: RunningBroker,
               tmp_path: Path) -> AsyncIterator[Simulator]:
    """A real agent beside a river-gate simulator (serial line on a pseudo-terminal) at ``gate_site``;
    a module registers the site (``extra_sites``, e.g. at GATE_PLACE)."""
    async with run_simulator(load_profile(RIVER_GATE)) as sim:
        d = tmp_path / "gate"
        d.mkdir()
        pki = test_pki.dir
        cfg = d / "site.toml"
        cfg.write_text(f"""
[site]
id = "{gate_site}"
state_dir = "{d / "state"}"

[hub]
host = "{broker.host}"
port = {broker.port}
ca = "{pki / "ca.pem"}"
cert = "{pki / gate_site / "cert.pem"}"
key = "{pki / gate_site / "key.pem"}"
command_key = "{pki / "command-signing" / "pub.pem"}"

[policy]
verify_timeout_s = 5.0

[devices.gate]
profile = "{RIVER_GATE}"
transport = "serial://{sim.path}"
""")
        async with running_agent(cfg) as agent:
            await asyncio.wait_for(agent.uplink.connected.wait(), 10)
            yield sim


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.fail("Chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)")
    pw = await async_playwright().start()
    try:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await _within(b.close(), "Chromium did not close")
    finally:
        stopping = asyncio.ensure_future(pw.stop())
        if not await _within(stopping, "Playwright's driver did not exit after its input closed"):
            _kill_driver()  # Chromium exits with it: its control pipe closes
            await _within(stopping, "Playwright's driver outlived SIGKILL")


TEARDOWN_S = 30.0


async def _within(aw: Awaitable[object], what: str) -> bool:
    """Await a teardown step for at most TEARDOWN_S. A browser teardown that never returns once
    cost a CI run its whole test timeout; now it costs 30 s and says which step it was."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=TEARDOWN_S)
    if task in done:
        task.result()
        return True
    warnings.warn(f"{what} within {TEARDOWN_S:.0f} s", stacklevel=2)
    return False


def _kill_driver() -> None:
    """SIGKILL this process's Playwright drivers (``node … run-driver``), found through /proc:
    Playwright's public API has no handle on its driver process."""
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = stat.read_text().rsplit(")", 1)[1].split()[1]
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue  # the process went away while we looked
        if ppid == me and b"run-driver" in cmdline:
            os.kill(int(stat.parent.name), signal.SIGKILL)


@asynccontextmanager
async def logged_in(browser: Browser, console: Console, username: str) -> AsyncIterator[Page]:
    """A fresh browser context (its own cookies) with ``username`` logged in through the login form."""
    ctx: BrowserContext = await browser.new_context(viewport=VIEWPORT, ignore_https_errors=True, locale="ko-KR")
    errors: list[str] = []
    try:
        page = await ctx.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(console.url + "/")
        await page.fill("#login-user", username)
        await page.fill("#login-pass", PASSWORD)
        await page.click("#login-form button[type=submit]")
        await page.wait_for_selector("#alarms h2")
        yield page
        assert errors == [], f"JavaScript errors in the console: {errors}"
    finally:
        await ctx.close()
