"""Hub fixtures: a config for the session's broker and PKI with a fresh database per test."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hub import auth
from hub.config import HubConfig, parse
from hub.roles import Role
from hub.service import Hub, running
from tests.conftest import PkiFixture
from trust.broker import RunningBroker

ConfigFactory = Callable[..., HubConfig]


async def eventually(cond: Callable[[], bool], within_s: float = 10.0) -> None:
    """Wait until ``cond()`` holds (a counter the hub owns); fail after ``within_s``."""
    async with asyncio.timeout(within_s):
        while not cond():  # noqa: ASYNC110 - polling state owned by another task, no event to wait on
            await asyncio.sleep(0.02)


async def until(pred: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    """Wait until the awaited ``pred()`` holds (e.g. a database read); fail after ``within_s``."""
    async with asyncio.timeout(within_s):
        while not await pred():  # noqa: ASYNC110 - polling the database, no event to wait on
            await asyncio.sleep(0.05)


def raw_config(pki: PkiFixture, port: int, db: Path, hub: str | None = None, /,
               **sections: dict[str, Any]) -> dict[str, Any]:
    """A hub's config; its identity is ``hub`` or one of its own from the pool (the broker binds
    the client id to the CN, so two hubs with one identity would throw each other off)."""
    hub = hub or pki.take_hub()
    raw: dict[str, Any] = {
        "hub": {"id": hub},
        "broker": {"host": "localhost", "port": port, "ca": str(pki.dir / "ca.pem"),
                   "cert": str(pki.dir / hub / "cert.pem"), "key": str(pki.dir / hub / "key.pem")},
        "database": {"path": str(db)},
        "commands": {"signing_key": str(pki.dir / "command-signing" / "key.pem"), "ttl_s": 30,
                     "reply_grace_s": 5},
        "api": {"listen": "127.0.0.1:0", "enabled": False},
        "ingest": {"gap_grace_s": 0.1, "resend_interval_s": 1.0},
    }
    for name, body in sections.items():
        raw[name] = {**raw.get(name, {}), **body}
    if "forward" in raw:  # CAP recipients get signed alerts only: the test PKI's alert-signing key
        raw["forward"] = {"signing_key": str(pki.dir / pki.alert / "key.pem"),
                          "signing_cert": str(pki.dir / pki.alert / "cert.pem"), **raw["forward"]}
    return raw


@pytest.fixture
def hub_config(test_pki: PkiFixture, broker: RunningBroker, tmp_path: Path) -> ConfigFactory:
    """``hub_config(api={"enabled": True}, ...)``: a HubConfig for the session broker; sections merge."""

    def make(**sections: dict[str, Any]) -> HubConfig:
        return parse(raw_config(test_pki, broker.port, tmp_path / "hub.db", **sections), tmp_path / "hub.toml")

    return make


PASSWORD = "correct horse battery"
USERS = {"vera": Role.VIEWER, "olive": Role.OPERATOR, "sam": Role.SUPERVISOR, "sue": Role.SUPERVISOR,
         "ada": Role.ADMIN}


def add_users(cfg: HubConfig) -> None:
    for name, role in USERS.items():
        auth.add_user(cfg.db_path, name, role, PASSWORD, actor="test")


@dataclass
class ApiClient:
    """An HTTPS client for the hub's API that trusts the test CA and keeps its cookies."""

    session: aiohttp.ClientSession
    csrf: str = ""

    async def login(self, username: str, password: str = PASSWORD) -> aiohttp.ClientResponse:
        resp = await self.session.post("/api/session", json={"username": username, "password": password})
        if resp.status == 200:
            self.csrf = (await resp.json())["csrf"]
        return resp

    async def post(self, path: str, body: dict[str, Any] | None = None, **headers: str) -> aiohttp.ClientResponse:
        h = {"X-CSRF-Token": self.csrf, **headers}
        return await self.session.post(path, json=body or {}, headers=h)

    async def get(self, path: str) -> aiohttp.ClientResponse:
        return await self.session.get(path)


@asynccontextmanager
async def api_client(hub: Hub, ca: Path) -> AsyncIterator[ApiClient]:
    ctx = ssl.create_default_context(cafile=str(ca))
    async with aiohttp.ClientSession(base_url=f"https://localhost:{hub.api_port}",
                                     connector=aiohttp.TCPConnector(ssl=ctx),
                                     cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield ApiClient(session)


@pytest.fixture
async def api_hub(hub_config: ConfigFactory) -> AsyncIterator[Hub]:
    """A running hub with its API and the test users (vera viewer, olive operator, sam and sue
    supervisors, ada admin)."""
    cfg = hub_config(api={"enabled": True})
    add_users(cfg)
    async with running(cfg) as hub:
        yield hub
