"""The real Mosquitto with the generated mTLS config enforces identity, ACL, CRL and TLS 1.3."""

from __future__ import annotations

import asyncio
import queue
import socket
import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from shared import messages, topics
from shared.tls import TlsFiles, client_context
from tests.conftest import PkiFixture, mqtt_client
from trust.broker import RunningBroker
from trust.pki import Pki, Role

pytestmark = pytest.mark.broker


def _connect_packet(client_id: str) -> bytes:
    """A minimal MQTT 5 CONNECT (clean start, keepalive 60, no properties)."""
    cid = client_id.encode()
    var = b"\x00\x04MQTT" + bytes([5, 0x02]) + (60).to_bytes(2, "big") + b"\x00"
    payload = len(cid).to_bytes(2, "big") + cid
    body = var + payload
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


def mqtt_connect_raw(port: int, ctx: ssl.SSLContext, client_id: str) -> bytes:
    """TLS-connect, send CONNECT and return the first bytes the broker answers.

    With TLS 1.3 the server checks the client certificate after the client's side of the
    handshake is done, so a refusal shows on the first read as an SSL error or EOF.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(_connect_packet(client_id))
        return tls.recv(16)


def _refused(port: int, ctx: ssl.SSLContext, client_id: str) -> str:
    """Return how the connection was refused; fail the test if a CONNACK came back."""
    try:
        answer = mqtt_connect_raw(port, ctx, client_id)
    except ssl.SSLError as exc:
        return f"ssl: {exc}"
    except (ConnectionResetError, BrokenPipeError) as exc:
        return f"reset: {exc}"
    if answer == b"":
        return "closed"
    pytest.fail(f"broker answered {answer!r}: the connection was accepted")


def test_good_identity_gets_connack(broker: RunningBroker, test_pki: PkiFixture, site_id: str) -> None:
    """The control for the refusals below: a valid edge certificate gets a CONNACK (0x20)."""
    answer = mqtt_connect_raw(broker.port, client_context(test_pki.files(site_id)), site_id)
    assert answer[:1] == b"\x20"
    assert answer[3] == 0  # reason code: success


async def test_edge_publishes_to_own_data_topic_and_hub_receives(
    broker: RunningBroker, test_pki: PkiFixture, site_id: str, hub_client: object
) -> None:
    """An edge's batch on its own data topic reaches a hub subscribed to all sites."""
    import aiomqtt

    assert isinstance(hub_client, aiomqtt.Client)
    await hub_client.subscribe(topics.all_sites(topics.SiteChannel.DATA), qos=1)
    batch = messages.DataBatch(
        site=site_id,
        boot="boot-1",
        records=[
            messages.Reading(seq=1, ts=1.0, prio=messages.Priority.TELEMETRY, device="gauge",
                             point="water_depth_cm", value=12.5, quality=messages.Quality.GOOD)
        ],
    )
    async with mqtt_client(broker, test_pki.files(site_id), site_id) as edge:
        await edge.publish(topics.site_topic(site_id, topics.SiteChannel.DATA), messages.encode(batch), qos=1)
    async with asyncio.timeout(10):
        async for msg in hub_client.messages:
            parsed = topics.parse(str(msg.topic))
            if isinstance(parsed, topics.SiteTopic) and parsed.site == site_id:
                assert isinstance(msg.payload, bytes)
                assert messages.decode(messages.DataBatch, msg.payload) == batch
                break


async def test_publish_to_another_sites_topic_never_reaches_subscriber(
    broker: RunningBroker, test_pki: PkiFixture, hub_client: object
) -> None:
    """Edge A's publish to site B's data topic is dropped; A's later publish to its own
    topic arrives, so ordering proves the first one was not merely slow."""
    import aiomqtt

    assert isinstance(hub_client, aiomqtt.Client)
    a, b = test_pki.take_site(), test_pki.take_site()
    await hub_client.subscribe(topics.all_sites(topics.SiteChannel.DATA), qos=1)
    async with mqtt_client(broker, test_pki.files(a), a) as edge:
        await edge.publish(topics.site_topic(b, topics.SiteChannel.DATA), b"forged", qos=1)
        await edge.publish(topics.site_topic(a, topics.SiteChannel.DATA), b"sentinel", qos=1)
    seen: list[tuple[str, bytes]] = []
    async with asyncio.timeout(10):
        async for msg in hub_client.messages:
            assert isinstance(msg.payload, bytes)
            seen.append((str(msg.topic), msg.payload))
            if msg.payload == b"sentinel":
                break
    assert (topics.site_topic(b, topics.SiteChannel.DATA), b"forged") not in seen


def test_acl_refusal_shows_as_puback_reason_135(broker: RunningBroker, test_pki: PkiFixture) -> None:
    """MQTT 5 PUBACK carries 'Not authorized' (135) for a publish outside the edge's topics."""
    a, b = test_pki.take_site(), test_pki.take_site()
    results: queue.Queue[tuple[int, int]] = queue.Queue()
    connected = threading.Event()

    def on_connect(c: paho.Client, u: object, f: object, rc: ReasonCode, p: Properties | None) -> None:
        connected.set()

    def on_publish(c: paho.Client, u: object, mid: int, rc: ReasonCode, p: Properties | None) -> None:
        results.put((mid, rc.value))

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=a, protocol=paho.MQTTv5)
    client.tls_set_context(client_context(test_pki.files(a)))
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect("localhost", broker.port)
    client.loop_start()
    try:
        assert connected.wait(10)
        bad = client.publish(topics.site_topic(b, topics.SiteChannel.DATA), b"x", qos=1)
        good = client.publish(topics.site_topic(a, topics.SiteChannel.DATA), b"x", qos=1)
        got = dict([results.get(timeout=10), results.get(timeout=10)])
    finally:
        client.loop_stop()
        client.disconnect()
    assert got[bad.mid] == 135
    assert got[good.mid] in (0, 16)  # success, or success with "no matching subscribers"


async def test_edge_never_receives_another_sites_commands(
    broker: RunningBroker, test_pki: PkiFixture, hub_client: object
) -> None:
    """Edge A subscribed to site B's cmd topic never gets B's command; a command the hub
    sends A afterwards does arrive, so ordering proves B's was withheld, not slow."""
    import aiomqtt

    assert isinstance(hub_client, aiomqtt.Client)
    a, b = test_pki.take_site(), test_pki.take_site()
    async with mqtt_client(broker, test_pki.files(a), a) as edge:
        await edge.subscribe(topics.site_topic(b, topics.SiteChannel.CMD), qos=1)
        await edge.subscribe(topics.site_topic(a, topics.SiteChannel.CMD), qos=1)
        await hub_client.publish(topics.site_topic(b, topics.SiteChannel.CMD), b"for-b", qos=1)
        await hub_client.publish(topics.site_topic(a, topics.SiteChannel.CMD), b"for-a", qos=1)
        seen: list[bytes] = []
        async with asyncio.timeout(10):
            async for msg in edge.messages:
                assert isinstance(msg.payload, bytes)
                seen.append(msg.payload)
                if msg.payload == b"for-a":
                    break
    assert seen == [b"for-a"]


def test_revoked_certificate_is_refused(test_pki: PkiFixture, tmp_path: Path) -> None:
    """After 'pki revoke', a broker started with the new CRL refuses that certificate."""
    victim, bystander = test_pki.take_site(), test_pki.take_site()
    test_pki.pki.revoke(victim)
    with RunningBroker.start(test_pki.dir, tmp_path) as b:
        assert _refused(b.port, client_context(test_pki.files(victim)), victim)
        deadline = time.monotonic() + 5  # the broker logs the refusal after closing the connection
        while "certificate verify failed" not in b.log.read_text():
            assert time.monotonic() < deadline, b.log_tail()
            time.sleep(0.05)
        # the broker is fine with everyone else
        assert mqtt_connect_raw(b.port, client_context(test_pki.files(bystander)), bystander)[:1] == b"\x20"
    assert victim not in Pki(test_pki.dir).active(Role.EDGE)


def test_certificate_from_another_ca_is_refused(broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path) -> None:
    """A certificate with a valid-looking CN but signed by a foreign CA cannot connect."""
    site = test_pki.take_site()
    foreign = Pki(tmp_path / "foreign")
    foreign.init()
    foreign.issue(site, Role.EDGE)
    # Trust our broker (our CA) but present the foreign certificate.
    files = TlsFiles(ca=test_pki.pki.ca_chain, cert=foreign.cert(site), key=foreign.key(site))
    how = _refused(broker.port, client_context(files), site)
    assert how


def test_tls12_only_client_is_refused(broker: RunningBroker, test_pki: PkiFixture, site_id: str) -> None:
    """The listener speaks TLS 1.3 only: a client capped at TLS 1.2 fails the handshake."""
    ctx = client_context(test_pki.files(site_id))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        mqtt_connect_raw(broker.port, ctx, site_id)


def test_client_without_certificate_is_refused(broker: RunningBroker, test_pki: PkiFixture) -> None:
    """No client certificate, no connection (require_certificate)."""
    ctx = ssl.create_default_context(cafile=str(test_pki.pki.ca_chain))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    assert _refused(broker.port, ctx, "anonymous")


def test_client_rejects_broker_not_signed_by_its_ca(broker: RunningBroker, test_pki: PkiFixture,
                                                    site_id: str, tmp_path: Path) -> None:
    """Server verification is always on: trusting another CA, the client refuses our broker."""
    other = Pki(tmp_path / "other")
    other.init()
    files = TlsFiles(ca=other.ca_chain, cert=test_pki.pki.cert(site_id), key=test_pki.pki.key(site_id))
    with pytest.raises(ssl.SSLCertVerificationError):
        mqtt_connect_raw(broker.port, client_context(files), site_id)
