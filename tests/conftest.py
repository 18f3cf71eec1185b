"""Shared fixtures: a real PKI, a real Mosquitto with mutual TLS on a free port, site ids.

The broker is started once per test session (starting Mosquitto takes ~50 ms, but the PKI
behind it is shared too); every test gets its own site ids, so no two tests share a topic.
Tests that change the broker's ACL or CRL start a broker of their own.
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from shared import retry
from shared.paths import shared_data_dir
from shared.tls import TlsFiles, client_context
from trust.broker import Bridge, RunningBroker, Scope
from trust.pki import Pki, Role, bridge_cn

EDGE_POOL = 512  # issued up front: the session broker's ACL lists them from the start
HUB_POOL = 512
"""Hub identities, issued up front too: the broker binds the client id to the CN, so every
concurrent hub-side client (a running hub, a test's subscriber, a fake hub) needs its own."""
_RUN = uuid.uuid4().hex[:6]


@dataclass
class PkiFixture:
    """A PKI with a broker, a pool of hub identities and a pool of edge identities issued up front.

    ``hub`` is one fixed hub identity for tests that need no broker connection, or only one
    (the client id is the CN, so two connections with one identity throw each other off).
    """

    pki: Pki
    hub: str
    edges: list[str]
    _next: Iterator[int]
    hubs: list[str] = field(default_factory=list)
    _next_hub: Iterator[int] = field(default_factory=itertools.count)
    alert: str = "alert-hub-test"
    """The hub's CAP alert-signing identity."""

    @property
    def dir(self) -> Path:
        return self.pki.dir

    def take_site(self) -> str:
        """A site id (edge CN) no other test uses."""
        i = next(self._next)
        if i >= len(self.edges):
            raise RuntimeError(f"all {len(self.edges)} test edge identities are taken: raise EDGE_POOL")
        return self.edges[i]

    def take_hub(self) -> str:
        """A hub identity (hub CN) no other test uses."""
        i = next(self._next_hub)
        if i >= len(self.hubs):
            raise RuntimeError(f"all {len(self.hubs)} test hub identities are taken: raise HUB_POOL")
        return self.hubs[i]

    def files(self, cn: str) -> TlsFiles:
        return TlsFiles.from_pki(self.pki.dir, cn)


def build_test_pki(directory: Path, n_edges: int = EDGE_POOL, n_hubs: int = HUB_POOL) -> PkiFixture:
    pki = Pki(directory)
    pki.init()
    pki.issue("broker", Role.BROKER)
    hub = "hub-test"
    pki.issue(hub, Role.HUB)
    hubs = [f"hub-t{_RUN}-{i:03d}" for i in range(n_hubs)]
    pki.issue("alert-hub-test", Role.ALERT)
    edges = [f"gg-t{_RUN}-{i:03d}" for i in range(n_edges)]
    for cn in hubs:
        pki.issue(cn, Role.HUB)
    for cn in edges:
        pki.issue(cn, Role.EDGE)
    return PkiFixture(pki=pki, hub=hub, edges=edges, _next=itertools.count(), hubs=hubs)


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFixture:
    return build_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def broker(test_pki: PkiFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """A real Mosquitto 2 with the project's mTLS config, shared by the session."""
    if shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin") is None:
        pytest.fail("mosquitto is not installed; 'make test' installs it with apt-get")
    with RunningBroker.start(test_pki.dir, tmp_path_factory.mktemp("broker")) as b:
        yield b


@dataclass
class ProvincePki:
    """The province's own PKI (another CA than the cities'): the provincial broker's certificate,
    one provincial hub identity, and bridge identities issued per city on demand."""

    pki: Pki
    province: str = "province-test"

    @property
    def dir(self) -> Path:
        return self.pki.dir

    def bridge_for(self, city: str) -> str:
        """Issue ``bridge-<city>`` (once) and return its CN."""
        cn = bridge_cn(city)
        if not self.pki.cert(cn).exists():
            self.pki.issue(cn, Role.BRIDGE)
        return cn

    def files(self, cn: str) -> TlsFiles:
        return TlsFiles.from_pki(self.pki.dir, cn)


def build_province_pki(directory: Path) -> ProvincePki:
    pki = Pki(directory)
    pki.init()
    pki.issue("broker", Role.BROKER)
    made = ProvincePki(pki)
    pki.issue(made.province, Role.PROVINCE)
    return made


@pytest.fixture(scope="session")
def province_pki(tmp_path_factory: pytest.TempPathFactory) -> ProvincePki:
    return build_province_pki(tmp_path_factory.mktemp("province-pki"))


def start_province_broker(province: ProvincePki, workdir: Path, *, persistence: bool = False) -> RunningBroker:
    """A provincial Mosquitto: admits the bridges and provincial hubs its PKI holds *now*."""
    return RunningBroker.start(province.dir, workdir, scope=Scope.PROVINCE, persistence=persistence)


def start_city_broker(test_pki: PkiFixture, province: ProvincePki, city: str, upstream: RunningBroker,
                      workdir: Path) -> RunningBroker:
    """A city Mosquitto (the session PKI's identities) bridged to ``upstream`` as ``bridge-<city>``.
    Issue the bridge identity before starting ``upstream``: its ACL is written at start."""
    bridge = Bridge(city=city, host=upstream.host, port=upstream.port, pki_dir=province.dir)
    return RunningBroker.start(test_pki.dir, workdir, bridge=bridge, persistence=True)


@pytest.fixture
def site_id(test_pki: PkiFixture) -> str:
    return test_pki.take_site()


def mqtt_client(b: RunningBroker, files: TlsFiles, identifier: str, **kwargs: object) -> aiomqtt.Client:
    """An MQTT 5 client with mutual TLS to ``b``, verifying the broker's certificate."""
    return aiomqtt.Client(
        hostname=b.host,
        port=b.port,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=client_context(files),
        timeout=5,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
async def hub_client(broker: RunningBroker, test_pki: PkiFixture) -> AsyncIterator[aiomqtt.Client]:
    hub = test_pki.take_hub()
    async with mqtt_client(broker, test_pki.files(hub), hub) as c:
        yield c


@pytest.fixture(autouse=True)
def _zero_retry_waits() -> Iterator[None]:
    """Retries in tests do not sleep (the retry helper's test switch)."""
    with retry.zero_waits():
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only reference data beside the repo (../shared/data)."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.fail(f"reference data not found at {path}; set JIKIMI_SHARED_DATA")
    return path
