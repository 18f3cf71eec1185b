"""A city broker bridged to a provincial broker (DESIGN §8), both real Mosquittos with mutual TLS:
the city's up channels reach the province, the province's requests reach the city hub, QoS 1
survives a provincial outage, a revoked bridge is refused, and no city speaks for another."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shared.tls import TlsFiles, client_context
from shared.topics import CityChannel, SiteChannel, all_cities, city_of_hub, city_topic, site_topic
from tests.conftest import PkiFixture, ProvincePki, start_city_broker, start_province_broker
from tests.trust.test_broker import _refused
from trust.broker import RunningBroker
from trust.pki import Role

pytestmark = pytest.mark.broker

NOT_AUTHORIZED = 135
DATA, REQ = CityChannel.DATA, CityChannel.REQ


class Peer:
    """A paho MQTT 5 client in its own thread that records what it receives and every reason code."""

    def __init__(self, files: TlsFiles, cn: str, broker: RunningBroker, *, session_s: int = 0) -> None:
        self.received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._acks: queue.Queue[tuple[int, list[int]]] = queue.Queue()
        self.connected = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=cn, protocol=paho.MQTTv5)
        self.client.tls_set_context(client_context(files))
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set()
        self.client.on_disconnect = lambda c, u, f, rc, p: self.connected.clear()
        self.client.on_publish = lambda c, u, mid, rc, p: self._acks.put((mid, [rc.value]))
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._acks.put((mid, [r.value for r in rcs]))
        self.client.on_message = lambda c, u, m: self.received.put((m.topic, bytes(m.payload)))
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = session_s
        self.client.connect("localhost", broker.port, clean_start=session_s == 0, properties=props)
        self.client.loop_start()
        assert self.connected.wait(10), f"{cn} could not connect"

    def _ack(self, mid: int) -> list[int]:
        while True:
            got, codes = self._acks.get(timeout=10)
            if got == mid:
                return codes

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1; the PUBACK's reason code."""
        return self._ack(self.client.publish(topic, payload, qos=1).mid)[0]

    def subscribe(self, topic_filter: str) -> int:
        """Subscribe at QoS 1; the SUBACK's reason code (1: granted QoS 1)."""
        _, mid = self.client.subscribe(topic_filter, qos=1)
        assert mid is not None
        return self._ack(mid)[0]

    def next_message(self, timeout: float = 15) -> tuple[str, bytes]:
        return self.received.get(timeout=timeout)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _bridged(province_broker: RunningBroker, cn: str, timeout_s: float = 15) -> None:
    """Wait until ``cn`` has connected to the provincial broker (its log says so)."""
    deadline = time.monotonic() + timeout_s
    while f" as {cn} " not in province_broker.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{cn} never connected: {province_broker.log_tail()}"
        time.sleep(0.05)


def _until_delivered(sender: Peer, topic: str, receiver: Peer, timeout_s: float = 15) -> tuple[str, bytes]:
    """Publish ``topic`` every half second until ``receiver`` gets it (the bridge subscribes to
    the province's side a moment after it connects, and what comes before is not for it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert sender.publish(topic, b"req-1") in (0, 16)
        try:
            return receiver.next_message(timeout=0.5)
        except queue.Empty:
            assert time.monotonic() < deadline, f"nothing arrived on {topic}"


def test_city_records_go_up_and_province_requests_come_down(
    test_pki: PkiFixture, province_pki: ProvincePki, tmp_path: Path
) -> None:
    """The city hub's data at its city broker reaches a province-* subscriber at the provincial
    broker, and a req the province publishes there reaches the city hub."""
    hub = test_pki.take_hub()
    city = city_of_hub(hub)
    bridge = province_pki.bridge_for(city)
    with start_province_broker(province_pki, tmp_path / "province") as upstream, \
            start_city_broker(test_pki, province_pki, city, upstream, tmp_path / "city") as local:
        province = Peer(province_pki.files(province_pki.province), province_pki.province, upstream)
        city_hub = Peer(test_pki.files(hub), hub, local)
        try:
            assert province.subscribe(all_cities(DATA)) == 1
            assert city_hub.subscribe(city_topic(city, REQ)) == 1
            _bridged(upstream, bridge)
            assert city_hub.publish(city_topic(city, DATA), b"batch-1") in (0, 16)
            assert province.next_message() == (city_topic(city, DATA), b"batch-1")
            assert _until_delivered(province, city_topic(city, REQ), city_hub) == (city_topic(city, REQ), b"req-1")
        finally:
            province.stop()
            city_hub.stop()


def test_qos1_published_while_the_province_is_down_arrives_after(
    test_pki: PkiFixture, province_pki: ProvincePki, tmp_path: Path
) -> None:
    """With the provincial broker stopped, the city's QoS 1 records wait in the bridge's queue at
    the city broker and all arrive, in order, once the province is back."""
    hub = test_pki.take_hub()
    city = city_of_hub(hub)
    bridge = province_pki.bridge_for(city)
    with start_province_broker(province_pki, tmp_path / "province", persistence=True) as upstream, \
            start_city_broker(test_pki, province_pki, city, upstream, tmp_path / "city") as local:
        # the provincial subscriber keeps its session across the restart (the broker persists it)
        province = Peer(province_pki.files(province_pki.province), province_pki.province, upstream,
                        session_s=3600)
        city_hub = Peer(test_pki.files(hub), hub, local)
        try:
            assert province.subscribe(all_cities(DATA)) == 1
            _bridged(upstream, bridge)
            assert city_hub.publish(city_topic(city, DATA), b"before") in (0, 16)
            assert province.next_message() == (city_topic(city, DATA), b"before")

            upstream.stop()
            sent = [f"outage-{i:02d}".encode() for i in range(20)]
            for payload in sent:
                assert city_hub.publish(city_topic(city, DATA), payload) in (0, 16)
            upstream.restart()

            got = [province.next_message(timeout=60) for _ in sent]
            assert got == [(city_topic(city, DATA), p) for p in sent]
        finally:
            province.stop()
            city_hub.stop()


def test_revoked_bridge_identity_is_refused_by_the_provincial_broker(
    test_pki: PkiFixture, province_pki: ProvincePki, tmp_path: Path
) -> None:
    """A bridge identity on the province's CRL cannot connect: its certificate is refused at the
    TLS handshake, and the city broker's bridge with it never gets a session."""
    hub = test_pki.take_hub()
    city = city_of_hub(hub)
    bridge = province_pki.bridge_for(city)
    province_pki.pki.revoke(bridge)
    with start_province_broker(province_pki, tmp_path / "province") as upstream:
        assert _refused(upstream.port, client_context(province_pki.files(bridge)), bridge)
        with start_city_broker(test_pki, province_pki, city, upstream, tmp_path / "city") as local:
            # the bridge tries (the city broker logs each attempt) and is refused each time
            deadline = time.monotonic() + 30
            while local.log.read_text(errors="replace").count(f"Connecting bridge (step 1) {bridge}") < 2:
                assert time.monotonic() < deadline, local.log_tail()
                time.sleep(0.1)
            assert f" as {bridge} " not in upstream.log.read_text(errors="replace")


def _never_gets(receiver: Peer) -> None:
    """Nothing more arrives (called once the message that would have come first has arrived elsewhere)."""
    with pytest.raises(queue.Empty):
        receiver.next_message(timeout=1.0)


def test_a_bridge_speaks_only_for_its_own_city(
    test_pki: PkiFixture, province_pki: ProvincePki, tmp_path: Path
) -> None:
    """At the provincial broker, bridge-A's certificate (used directly, as a hostile city would)
    may publish A's up channels and read A's down channels, and nothing of city B: Mosquitto
    grants the subscription to B's requests but never delivers one."""
    city_a, city_b = (city_of_hub(test_pki.take_hub()) for _ in range(2))
    bridge_a = province_pki.bridge_for(city_a)
    province_pki.bridge_for(city_b)
    with start_province_broker(province_pki, tmp_path / "province") as upstream:
        a = Peer(province_pki.files(bridge_a), bridge_a, upstream)
        province = Peer(province_pki.files(province_pki.province), province_pki.province, upstream)
        try:
            assert a.publish(city_topic(city_a, DATA), b"own") in (0, 16)
            assert a.publish(city_topic(city_b, DATA), b"forged") == NOT_AUTHORIZED
            assert a.publish(city_topic(city_b, CityChannel.STATUS), b"forged") == NOT_AUTHORIZED
            assert a.publish(city_topic(city_a, REQ), b"to itself") == NOT_AUTHORIZED
            for topic_filter in (city_topic(city_b, REQ), city_topic(city_b, CityChannel.ACK),
                                 all_cities(DATA), city_topic(city_a, REQ)):
                a.subscribe(topic_filter)
            # one publisher, one subscriber: B's request would arrive before A's
            assert province.publish(city_topic(city_b, REQ), b"for b") in (0, 16)
            assert province.publish(city_topic(city_b, CityChannel.ACK), b"for b") in (0, 16)
            assert province.publish(city_topic(city_a, REQ), b"for a") in (0, 16)
            assert a.next_message() == (city_topic(city_a, REQ), b"for a")
            _never_gets(a)
        finally:
            a.stop()
            province.stop()


def test_a_city_hub_speaks_only_for_its_own_city(
    test_pki: PkiFixture, province_pki: ProvincePki, tmp_path: Path
) -> None:
    """At a city broker bridged for city B, hub-A may not write B's up channels, and B's request
    from the province reaches B's hub but never hub-A, though hub-A subscribed to it."""
    hub_a, hub_b = test_pki.take_hub(), test_pki.take_hub()
    city_a, city_b = city_of_hub(hub_a), city_of_hub(hub_b)
    bridge = province_pki.bridge_for(city_b)
    with start_province_broker(province_pki, tmp_path / "province") as upstream, \
            start_city_broker(test_pki, province_pki, city_b, upstream, tmp_path / "city") as local:
        a, b = Peer(test_pki.files(hub_a), hub_a, local), Peer(test_pki.files(hub_b), hub_b, local)
        province = Peer(province_pki.files(province_pki.province), province_pki.province, upstream)
        try:
            assert a.publish(city_topic(city_a, DATA), b"own") in (0, 16)
            assert a.publish(city_topic(city_b, DATA), b"forged") == NOT_AUTHORIZED
            assert a.publish(city_topic(city_b, CityChannel.BIRTH), b"forged") == NOT_AUTHORIZED
            a.subscribe(city_topic(city_b, REQ))
            a.subscribe(all_cities(REQ))
            assert b.subscribe(city_topic(city_b, REQ)) == 1
            _bridged(upstream, bridge)
            assert _until_delivered(province, city_topic(city_b, REQ), b)[0] == city_topic(city_b, REQ)
            _never_gets(a)
        finally:
            for peer in (a, b, province):
                peer.stop()


def test_a_site_cannot_touch_city_topics(
    test_pki: PkiFixture, province_pki: ProvincePki, tmp_path: Path
) -> None:
    """An edge identity can neither publish nor read city channels at its city broker, and an
    edge (or a city hub) identity of the province's own PKI may do nothing at the provincial broker."""
    site = test_pki.take_site()
    hub = test_pki.take_hub()
    city = city_of_hub(hub)
    bridge = province_pki.bridge_for(city)
    stray_site, stray_hub = "gg-stray-site-01", "hub-stray"
    for cn, role in ((stray_site, Role.EDGE), (stray_hub, Role.HUB)):
        if not province_pki.pki.cert(cn).exists():
            province_pki.pki.issue(cn, role)
    with RunningBroker.start(test_pki.dir, tmp_path / "city") as local:
        edge = Peer(test_pki.files(site), site, local)
        city_hub = Peer(test_pki.files(hub), hub, local)
        try:
            for channel in CityChannel:
                assert edge.publish(city_topic(city, channel), b"x") == NOT_AUTHORIZED
                edge.subscribe(all_cities(channel))
            edge.subscribe(site_topic(site, SiteChannel.CMD))
            # one publisher, one subscriber: the city's data would arrive before the command
            assert city_hub.publish(city_topic(city, DATA), b"city data") in (0, 16)
            assert city_hub.publish(site_topic(site, SiteChannel.CMD), b"cmd") in (0, 16)
            assert edge.next_message() == (site_topic(site, SiteChannel.CMD), b"cmd")
            _never_gets(edge)
        finally:
            edge.stop()
            city_hub.stop()
    with start_province_broker(province_pki, tmp_path / "province") as upstream:
        strays = [Peer(province_pki.files(cn), cn, upstream) for cn in (stray_site, stray_hub)]
        own = Peer(province_pki.files(bridge), bridge, upstream)
        province = Peer(province_pki.files(province_pki.province), province_pki.province, upstream)
        try:
            for peer in strays:
                assert peer.publish(city_topic(city, DATA), b"x") == NOT_AUTHORIZED
                assert peer.publish(city_topic(city, REQ), b"x") == NOT_AUTHORIZED
                peer.subscribe(all_cities(REQ))
            assert own.subscribe(city_topic(city, REQ)) == 1
            assert province.publish(city_topic(city, REQ), b"req") in (0, 16)
            assert own.next_message() == (city_topic(city, REQ), b"req")
            for peer in strays:
                _never_gets(peer)
        finally:
            for peer in (*strays, own, province):
                peer.stop()
