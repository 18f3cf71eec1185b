"""Enrolment end to end: token → key → CSR → certificate → the new edge publishes; refusals."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import aiomqtt
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from provisioning.enroll import _csr, _pinned_context, enroll_device, renew_device
from shared import topics
from shared.tls import TlsFiles, client_context
from trust.broker import RunningBroker
from trust.enrolment import EnrolmentError, EnrolmentService, EnrolmentStore, Token, serve_enrolment
from trust.pki import Pki, Role

pytestmark = pytest.mark.broker


@dataclass
class Hub:
    pki: Pki
    broker: RunningBroker
    service: EnrolmentService
    url: str
    clock: list[float]


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    pki = Pki(tmp_path / "pki")
    pki.init()
    pki.issue("broker", Role.BROKER)
    pki.issue("hub-test", Role.HUB)
    clock = [time.time()]
    with RunningBroker.start(pki.dir, tmp_path / "broker") as broker:
        service = EnrolmentService(pki, EnrolmentStore(tmp_path / "enrol.db"), mqtt_host="localhost",
                                   mqtt_port=broker.port, on_issued=lambda _cn: broker.reload(),
                                   clock=lambda: clock[0])
        async with serve_enrolment(service, TlsFiles.from_pki(pki.dir, "hub-test")) as url:
            yield Hub(pki, broker, service, url, clock)


async def test_enrolment_to_first_publish(hub: Hub, tmp_path: Path) -> None:
    """The whole path: the new edge's key stays 0600 on the device and its certificate works
    on the broker, which the hub reloaded when it issued it."""
    hub_files = TlsFiles.from_pki(hub.pki.dir, "hub-test")
    data = topics.site_topic("gg-new-site-01", topics.SiteChannel.DATA)
    async with aiomqtt.Client("localhost", hub.broker.port, identifier="hub-test",
                              tls_context=client_context(hub_files), protocol=aiomqtt.ProtocolVersion.V5) as h:
        await h.subscribe(data, qos=1)
        token = hub.service.register("gg-new-site-01", hub.url, actor="admin").encode()
        out = tmp_path / "device"
        await enroll_device(token, out)
        assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
        cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gg-new-site-01"
        assert (out / "hub-command.pub.pem").read_bytes() == hub.pki.command_pub.read_bytes()
        assert 'id = "gg-new-site-01"' in (out / "site.toml").read_text()
        files = TlsFiles(ca=out / "ca.pem", cert=out / "cert.pem", key=out / "key.pem")
        async with aiomqtt.Client("localhost", hub.broker.port, identifier="gg-new-site-01",
                                  tls_context=client_context(files), protocol=aiomqtt.ProtocolVersion.V5) as edge:

            stop = asyncio.Event()

            async def keep_publishing() -> None:
                # Stopped by an event, not by cancel(): on Python 3.11 asyncio.wait_for (inside
                # aiomqtt's publish) can swallow a cancellation that races its result.
                while not stop.is_set():
                    await edge.publish(data, b"hello", qos=1)
                    await asyncio.sleep(0.2)

            async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
                tg.create_task(keep_publishing())
                async for msg in h.messages:
                    assert msg.payload == b"hello"
                    stop.set()
                    break


async def test_replayed_token_is_refused(hub: Hub, tmp_path: Path) -> None:
    token = hub.service.register("gg-new-site-02", hub.url, actor="admin").encode()
    await enroll_device(token, tmp_path / "a")
    with pytest.raises(EnrolmentError, match="used already"):
        await enroll_device(token, tmp_path / "b")


async def test_expired_token_is_refused_by_the_hub(hub: Hub, tmp_path: Path) -> None:
    token = hub.service.register("gg-new-site-03", hub.url, actor="admin", ttl_s=7200).encode()
    hub.clock[0] += 3 * 3600  # the hub's clock says the token is three hours old
    with pytest.raises(EnrolmentError, match="expired"):
        await enroll_device(token, tmp_path / "a")


async def test_unknown_token_is_refused(hub: Hub, tmp_path: Path) -> None:
    real = Token.decode(hub.service.register("gg-new-site-04", hub.url, actor="admin").encode())
    forged = Token(real.site, real.url, real.ca_sha256, "guessed-secret", real.expires).encode()
    with pytest.raises(EnrolmentError, match="unknown enrolment token"):
        await enroll_device(forged, tmp_path / "a")


async def test_csr_for_another_site_is_refused(hub: Hub) -> None:
    """A valid token for site A cannot get a certificate named B."""
    from cryptography.hazmat.primitives.asymmetric import ec

    token = hub.service.register("gg-site-a-01", hub.url, actor="admin").encode()
    csr = _csr(ec.generate_private_key(ec.SECP256R1()), "gg-site-b-01")
    ctx = _pinned_context(hub.pki.ca_chain.read_bytes())
    async with aiohttp.ClientSession() as s, s.post(f"{hub.url}/enroll", json={"token": token, "csr": csr.decode()},
                                                   ssl=ctx) as resp:
        body = json.loads(await resp.text())
    assert resp.status == 400
    assert "expected 'gg-site-a-01'" in body["error"]
    assert "gg-site-b-01" not in hub.pki.active(Role.EDGE)


async def test_wrong_hub_fingerprint_is_refused(hub: Hub, tmp_path: Path) -> None:
    """A token whose pin does not match the CA the server presents is not trusted."""
    real = Token.decode(hub.service.register("gg-new-site-05", hub.url, actor="admin").encode())
    tampered = Token(real.site, real.url, "0" * 64, real.secret, real.expires).encode()
    with pytest.raises(EnrolmentError, match="does not match the token's fingerprint"):
        await enroll_device(tampered, tmp_path / "a")
    assert not (tmp_path / "a" / "key.pem").exists()


async def test_site_needing_approval_waits_for_the_admin(hub: Hub, tmp_path: Path) -> None:
    token = hub.service.register("gg-new-site-06", hub.url, actor="admin", needs_approval=True).encode()
    with pytest.raises(EnrolmentError, match="not approved"):
        await enroll_device(token, tmp_path / "a")
    hub.service.store.approve("gg-new-site-06", "admin-park")
    await enroll_device(token, tmp_path / "a")
    assert (tmp_path / "a" / "cert.pem").exists()


async def test_renewal_with_the_current_certificate(hub: Hub, tmp_path: Path) -> None:
    token = hub.service.register("gg-new-site-07", hub.url, actor="admin").encode()
    out = tmp_path / "dev"
    await enroll_device(token, out)
    old = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert not await renew_device(out, hub.url)  # fresh: not due
    later = old.not_valid_before_utc + (old.not_valid_after_utc - old.not_valid_before_utc) * 0.7
    assert await renew_device(out, hub.url, now=later)
    new = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert new.serial_number != old.serial_number
    assert new.subject == old.subject
    assert new.not_valid_after_utc > old.not_valid_after_utc - dt.timedelta(seconds=1)
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600


async def test_enrolment_through_the_hub_service(tmp_path: Path) -> None:
    """The hub runs the enrolment endpoint: a token from 'provision register' → a key and
    certificate on the device → the new edge's data is committed by that same hub."""
    from hub.config import parse
    from hub.service import running
    from shared import messages
    from tests.conftest import PkiFixture
    from tests.hub.conftest import raw_config
    from trust.broker import free_port

    pki = Pki(tmp_path / "pki")
    pki.init()
    pki.issue("broker", Role.BROKER)
    pki.issue("hub-test", Role.HUB)
    with RunningBroker.start(pki.dir, tmp_path / "broker") as broker:
        (tmp_path / "broker.pid").write_text(str(broker.proc.pid))
        port = free_port()
        fixture = PkiFixture(pki=pki, hub="hub-test", edges=[], _next=itertools.count())
        raw = raw_config(fixture, broker.port, tmp_path / "hub.db",
                         enrolment={"listen": f"127.0.0.1:{port}", "pki": str(pki.dir),
                                    "db": str(tmp_path / "enrol.db"), "broker_dir": str(broker.workdir),
                                    "broker_pid_file": str(tmp_path / "broker.pid")})
        cfg = parse(raw, tmp_path / "hub.toml")
        async with running(cfg) as hub:
            for _ in range(100):  # the endpoint starts with the hub's other tasks
                if hub.enrolment_url:
                    break
                await asyncio.sleep(0.05)
            assert hub.enrolment_url == f"https://localhost:{port}"
            admin = EnrolmentService(pki, EnrolmentStore(tmp_path / "enrol.db"), mqtt_host="localhost",
                                     mqtt_port=broker.port, on_issued=lambda _cn: None)
            token = admin.register("gg-hub-enrol-01", hub.enrolment_url, actor="admin").encode()
            out = tmp_path / "device"
            await enroll_device(token, out)
            files = TlsFiles(ca=out / "ca.pem", cert=out / "cert.pem", key=out / "key.pem")
            batch = messages.DataBatch(site="gg-hub-enrol-01", boot="b", records=[
                messages.Reading(seq=1, ts=time.time(), prio=messages.Priority.TELEMETRY, device="d",
                                 point="water_depth_cm", value=1.0, quality=messages.Quality.GOOD)])
            async with aiomqtt.Client("localhost", broker.port, identifier="gg-hub-enrol-01",
                                      tls_context=client_context(files), protocol=aiomqtt.ProtocolVersion.V5) as e:
                await e.subscribe(topics.site_topic("gg-hub-enrol-01", topics.SiteChannel.ACK), qos=1)
                async with asyncio.timeout(15):
                    while True:  # until the ACL reload lets the batch through and the hub acks it
                        await e.publish(topics.site_topic("gg-hub-enrol-01", topics.SiteChannel.DATA),
                                        messages.encode(batch), qos=1)
                        try:
                            async with asyncio.timeout(0.5):
                                msg = await anext(aiter(e.messages))
                        except TimeoutError:
                            continue
                        assert isinstance(msg.payload, bytes)
                        assert messages.decode(messages.Ack, msg.payload).through_seq == 1
                        break
