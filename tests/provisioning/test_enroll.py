"""Enrolment end to end: token → key → CSR → certificate → the new edge publishes; refusals."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import ssl
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
        raw = raw_config(fixture, broker.port, tmp_path / "hub.db", "hub-test",
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


# --- a hostile network, a stolen device ---------------------------------------------------------


@contextlib.asynccontextmanager
async def _impostor(tmp_path: Path, chain_pem: bytes) -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTPS server with its own CA that serves ``chain_pem`` as the CA and records every POST."""
    from aiohttp import web

    evil = Pki(tmp_path / "evil-pki")
    evil.init()
    evil.issue("hub-evil", Role.HUB)
    posts: list[str] = []

    async def ca(_: web.Request) -> web.Response:
        return web.Response(body=chain_pem, content_type="application/x-pem-file")

    async def post(request: web.Request) -> web.Response:
        posts.append(await request.text())
        return web.json_response({"error": "captured"}, status=500)

    app = web.Application()
    app.router.add_get("/enroll/ca", ca)
    app.router.add_post("/enroll", post)
    runner = web.AppRunner(app)
    await runner.setup()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(evil.cert("hub-evil"), evil.key("hub-evil"))
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://localhost:{port}", posts
    finally:
        await runner.cleanup()


async def test_a_man_in_the_middle_with_his_ca_before_the_real_root_gets_nothing(hub: Hub, tmp_path: Path) -> None:
    """The chain [attacker CA, real root] passes no pin check: the device refuses it with a clear
    message, sends no token, installs nothing, and the token then works with the real hub."""
    evil_chain = Pki(tmp_path / "evil-pki-2")
    evil_chain.init()
    real_root = (hub.pki.dir / "root-ca" / "cert.pem").read_bytes()
    async with _impostor(tmp_path, evil_chain.ca_chain.read_bytes() + real_root) as (url, posts):
        real = Token.decode(hub.service.register("gg-mitm-site-01", hub.url, actor="admin").encode())
        via_attacker = Token(real.site, url, real.ca_sha256, real.secret, real.expires).encode()
        with pytest.raises(EnrolmentError, match="did not issue") as caught:
            await enroll_device(via_attacker, tmp_path / "dev")
        assert "the token is unspent" in str(caught.value)
        assert posts == []
        assert not (tmp_path / "dev" / "hub-command.pub.pem").exists()
    await enroll_device(Token(real.site, hub.url, real.ca_sha256, real.secret, real.expires).encode(),
                        tmp_path / "dev2")
    assert (tmp_path / "dev2" / "hub-command.pub.pem").read_bytes() == hub.pki.command_pub.read_bytes()


async def test_an_impostor_serving_only_the_real_root_cannot_complete_tls(hub: Hub, tmp_path: Path) -> None:
    """Serving the real root passes the pin, but the impostor's own certificate then fails TLS
    verification: the token is never sent to it."""
    real_root = (hub.pki.dir / "root-ca" / "cert.pem").read_bytes()
    async with _impostor(tmp_path, real_root) as (url, posts):
        real = Token.decode(hub.service.register("gg-mitm-site-02", hub.url, actor="admin").encode())
        with pytest.raises(EnrolmentError, match="failed"):
            await enroll_device(Token(real.site, url, real.ca_sha256, real.secret, real.expires).encode(),
                                tmp_path / "dev")
        assert posts == []
    assert hub.service.store.get("gg-mitm-site-02")["used_at"] is None  # type: ignore[index]


def test_a_command_key_not_certified_by_the_pinned_ca_is_not_installed(hub: Hub) -> None:
    """An answer whose command key is not the one the hub's CA certified is refused."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from provisioning.enroll import _check_issued

    token = Token.decode(hub.service.register("gg-keycheck-01", hub.url, actor="admin").encode())
    key = ec.generate_private_key(ec.SECP256R1())
    issued = hub.service.enroll(token.encode(), _csr(key, token.site))
    assert issued is not None
    body = {"cert": issued.cert_pem.decode(), "ca": issued.ca_pem.decode(), "command_key":
            issued.command_key_pem.decode(), "command_cert": issued.command_cert_pem.decode()}
    _check_issued(body, token, key)  # the real answer passes
    forged = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(EnrolmentError, match="not certified"):
        _check_issued({**body, "command_key": forged.decode()}, token, key)
    with pytest.raises(EnrolmentError, match="not for this device's key"):
        _check_issued(body, token, ec.generate_private_key(ec.SECP256R1()))


async def test_a_revoked_site_cannot_renew_itself_back(hub: Hub, tmp_path: Path) -> None:
    """After 'pki revoke', the stolen device's still-valid-looking certificate renews nothing,
    even though the enrolment endpoint loaded its CRL before the revocation."""
    token = hub.service.register("gg-stolen-01", hub.url, actor="admin").encode()
    out = tmp_path / "dev"
    await enroll_device(token, out)
    hub.pki.revoke("gg-stolen-01")
    with pytest.raises(EnrolmentError, match="revoked"):
        await renew_device(out, hub.url, force=True)
    assert "gg-stolen-01" not in hub.pki.active(Role.EDGE)


async def test_renewals_are_rate_limited(hub: Hub, tmp_path: Path) -> None:
    """Three renewals a day, then 429 until a day has passed."""
    from trust.enrolment import RENEWALS_PER_DAY

    out = tmp_path / "dev"
    await enroll_device(hub.service.register("gg-renew-rate-01", hub.url, actor="admin").encode(), out)
    for _ in range(RENEWALS_PER_DAY):
        assert await renew_device(out, hub.url, force=True)
    with pytest.raises(EnrolmentError, match="renewals in 24 hours"):
        await renew_device(out, hub.url, force=True)
    hub.clock[0] += 86400 + 1
    assert await renew_device(out, hub.url, force=True)


async def test_an_enrolment_the_hub_could_not_complete_leaves_the_token_unspent(hub: Hub, tmp_path: Path) -> None:
    """When the hub cannot make a new identity work (PKI or broker not writable, broker not
    signalable), it refuses before issuing anything, and the same token works once that is fixed."""
    problem: list[str | None] = ["/etc/jikimi/pki/index.json is not writable by the hub's account"]
    hub.service.ready = lambda: problem[0]
    token = hub.service.register("gg-not-ready-01", hub.url, actor="admin").encode()
    with pytest.raises(EnrolmentError, match="the token is unspent"):
        await enroll_device(token, tmp_path / "a")
    assert "gg-not-ready-01" not in hub.pki.active(Role.EDGE)
    problem[0] = None
    await enroll_device(token, tmp_path / "b")
    assert "gg-not-ready-01" in hub.pki.active(Role.EDGE)


def test_the_managed_broker_says_what_would_stop_an_enrolment(hub: Hub, tmp_path: Path) -> None:
    """A broker config that is missing or a broker that cannot be signalled is named before a
    token is spent; the running test broker with its pid passes."""
    from trust.broker import ManagedBroker

    pid_file = tmp_path / "broker.pid"
    pid_file.write_text(str(hub.broker.proc.pid))
    assert ManagedBroker(hub.pki.dir, hub.broker.workdir, pid_file).problem() is None
    assert "no broker config" in (ManagedBroker(hub.pki.dir, tmp_path / "nowhere").problem() or "")
    pid_file.write_text("4194304")  # above any pid_max: no such process
    assert "no broker with pid" in (ManagedBroker(hub.pki.dir, hub.broker.workdir, pid_file).problem() or "")
    pid_file.write_text("not a pid")
    assert "cannot read the broker's pid" in (ManagedBroker(hub.pki.dir, None, pid_file).problem() or "")
