"""Rule 6 of shared/mqtt.py with a real Mosquitto over mutual TLS: our connection's socket and the
broker's config both turn Nagle's algorithm off, so a PUBACK or an ack is not held back for the
peer's delayed ACK (a receiver that acks one batch before taking the next got ~30 a second)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

import pytest

from shared.mqtt import Connection, ConnectOptions, Mqtt
from shared.tls import client_context
from tests.conftest import PkiFixture
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker


def _sockets_to(port: int) -> list[socket.socket]:
    """This process's TCP sockets connected to ``port`` (duplicated, so closing them is ours)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            s = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue
        try:
            if s.type == socket.SOCK_STREAM and s.family in (socket.AF_INET, socket.AF_INET6) \
                    and s.getpeername()[1] == port:
                found.append(s)
                continue
        except OSError:
            pass
        s.close()
    return found


async def test_a_connection_and_the_broker_send_small_packets_at_once(
        test_pki: PkiFixture, broker: RunningBroker, tmp_path: Path) -> None:
    site = test_pki.take_site()
    seen: list[int] = []
    stop = asyncio.Event()

    async def session(conn: Connection) -> None:
        for s in _sockets_to(broker.port):
            with contextlib.closing(s):
                seen.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        stop.set()

    mqtt = Mqtt(lambda: ConnectOptions(host=broker.host, port=broker.port, client_id=site,
                                       tls=client_context(test_pki.files(site))))
    async with asyncio.timeout(20):
        await mqtt.run(session, stop=stop)
    assert seen
    assert all(seen)
    assert "set_tcp_nodelay true" in broker.config.conf.read_text().splitlines()  # and Mosquitto took it
