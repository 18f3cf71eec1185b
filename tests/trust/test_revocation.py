"""Revocation cuts a stolen device off at once, without disturbing the others."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from shared import topics
from shared.cli import main
from shared.tls import TlsFiles, client_context
from tests.trust.test_broker import _refused
from trust.broker import RunningBroker, refresh_acl
from trust.pki import Pki, Role

pytestmark = pytest.mark.broker


class Edge:
    """A paho MQTT 5 client in its own thread that records what happens to it."""

    def __init__(self, pki: Pki, cn: str, port: int) -> None:
        self.cn = cn
        self.acks: queue.Queue[tuple[int, int]] = queue.Queue()
        self.received: queue.Queue[bytes] = queue.Queue()
        self.disconnects = 0
        self.connected = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=cn, protocol=paho.MQTTv5)
        self.client.tls_set_context(client_context(TlsFiles.from_pki(pki.dir, cn)))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = lambda c, u, mid, rc, p: self.acks.put((mid, rc.value))
        self.client.on_message = lambda c, u, msg: self.received.put(bytes(msg.payload))
        self.client.connect("localhost", port)
        self.client.loop_start()
        assert self.connected.wait(10)
        self.client.subscribe(topics.site_topic(cn, topics.SiteChannel.CMD), qos=1)

    def _on_connect(self, c: paho.Client, u: object, f: object, rc: ReasonCode, p: Properties | None) -> None:
        self.connected.set()

    def _on_disconnect(self, c: paho.Client, u: object, f: object, rc: ReasonCode, p: Properties | None) -> None:
        self.disconnects += 1

    def publish_own(self, payload: bytes) -> int:
        """Publish to its own data topic; return the PUBACK reason code."""
        info = self.client.publish(topics.site_topic(self.cn, topics.SiteChannel.DATA), payload, qos=1)
        while True:
            mid, rc = self.acks.get(timeout=10)
            if mid == info.mid:
                return rc

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_revoked_edge_is_cut_off_and_others_stay(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.init()
    pki.issue("broker", Role.BROKER)
    pki.issue("hub-test", Role.HUB)
    names = ["gg-rev-a-01", "gg-rev-b-01", "gg-rev-c-01"]
    for cn in names:
        pki.issue(cn, Role.EDGE)
    with RunningBroker.start(pki.dir, tmp_path / "broker") as broker:
        hub_client = paho.Client(CallbackAPIVersion.VERSION2, client_id="hub-test", protocol=paho.MQTTv5)
        hub_client.tls_set_context(client_context(TlsFiles.from_pki(pki.dir, "hub-test")))
        hub_client.connect("localhost", broker.port)
        hub_client.loop_start()
        edges = [Edge(pki, cn, broker.port) for cn in names]
        try:
            stolen, others = edges[0], edges[1:]
            assert all(e.publish_own(b"before") in (0, 16) for e in edges)

            # the admin revokes the stolen device: CRL + ACL, one reload, no restart
            assert main(["pki", "revoke", "--dir", str(pki.dir), "--cn", stolen.cn,
                         "--broker-out", str(broker.workdir), "--broker-pid", str(broker.proc.pid)]) == 0
            deadline = time.monotonic() + 10
            while stolen.publish_own(b"after") != 135:  # the reload is asynchronous
                assert time.monotonic() < deadline, "the ACL reload never took effect"
                time.sleep(0.1)

            # its open connection can no longer receive commands; the others still can
            for e in edges:
                hub_client.publish(topics.site_topic(e.cn, topics.SiteChannel.CMD), f"cmd-{e.cn}".encode(), qos=1)
            for e in others:
                assert e.received.get(timeout=10) == f"cmd-{e.cn}".encode()
            with pytest.raises(queue.Empty):
                stolen.received.get(timeout=1.0)  # the others' commands arrived; this one never will

            # it cannot reconnect: the reloaded CRL refuses the certificate
            assert _refused(broker.port, client_context(TlsFiles.from_pki(pki.dir, stolen.cn)), stolen.cn)

            # the other two stayed connected throughout and still publish
            for e in others:
                assert e.disconnects == 0
                assert e.publish_own(b"still here") in (0, 16)
        finally:
            for e in edges:
                e.stop()
            hub_client.loop_stop()
            hub_client.disconnect()


def test_refresh_acl_without_a_broker_config_says_so(tmp_path: Path) -> None:
    from trust.broker import BrokerError

    pki = Pki(tmp_path / "pki")
    pki.init()
    with pytest.raises(BrokerError, match="no broker config here"):
        refresh_acl(pki.dir, tmp_path / "nothing", None)
