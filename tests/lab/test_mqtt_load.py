"""The load generators' MQTT client reads the broker's packets however TCP splits them, and
says what went wrong when the broker refuses or sends garbage. (Against the real broker and
hub it runs in tests/lab/test_bench_ingest.py.)"""

from __future__ import annotations

import asyncio

import pytest

from lab.mqtt_load import PUBACK, PUBLISH, LoadClient, LoadClientError, _packet, _string


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


def _client() -> tuple[LoadClient, _Transport, list[tuple[str, bytes]]]:
    got: list[tuple[str, bytes]] = []
    client = LoadClient("gg-a-01", lambda topic, payload: got.append((topic, payload)))
    transport = _Transport()
    client.connection_made(transport)
    return client, transport, got


def _incoming(topic: str, mid: int, payload: bytes) -> bytes:
    return _packet(PUBLISH << 4 | 0x02, _string(topic) + mid.to_bytes(2, "big") + b"\x00" + payload)


async def test_messages_split_or_joined_by_tcp_are_each_delivered_once_and_pubacked() -> None:
    client, transport, got = _client()
    big = b"x" * 300  # a two-byte remaining length
    stream = _incoming("jk/v1/site/gg-a-01/ack", 7, b'{"a":1}') + _incoming("jk/v1/site/gg-a-01/ack", 8, big)
    for i in range(len(stream)):  # one byte at a time
        client.data_received(stream[i:i + 1])
    client.data_received(stream)  # and both at once
    assert got == [("jk/v1/site/gg-a-01/ack", b'{"a":1}'), ("jk/v1/site/gg-a-01/ack", big)] * 2
    assert transport.written == [bytes([PUBACK << 4, 2, 0, 7]), bytes([PUBACK << 4, 2, 0, 8])] * 2


async def test_a_puback_settles_its_publish_and_a_refusal_fails_it() -> None:
    client, _, _ = _client()
    ok = asyncio.ensure_future(client.publish("jk/v1/site/gg-a-01/data", b"{}"))
    refused = asyncio.ensure_future(client.publish("jk/v1/site/gg-a-01/data", b"{}"))
    await asyncio.sleep(0)
    client.data_received(bytes([PUBACK << 4, 2, 0, 1]) + bytes([PUBACK << 4, 4, 0, 2, 0x87, 0]))
    await ok
    with pytest.raises(LoadClientError, match="PUBACK reason 0x87"):
        await refused


async def test_garbage_or_a_lost_connection_fails_what_waits_and_says_so() -> None:
    client, transport, _ = _client()
    waiting = asyncio.ensure_future(client.publish("jk/v1/site/gg-a-01/data", b"{}"))
    await asyncio.sleep(0)
    client.data_received(bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF]))  # a remaining length of five bytes
    with pytest.raises(LoadClientError, match="malformed remaining length"):
        await waiting
    assert transport.aborted
    assert client.closed.done()

    client, _, _ = _client()
    waiting = asyncio.ensure_future(client.publish("jk/v1/site/gg-a-01/data", b"{}"))
    await asyncio.sleep(0)
    client.connection_lost(None)
    with pytest.raises(LoadClientError, match="connection lost"):
        await waiting
    with pytest.raises(LoadClientError, match="closed"):
        await client.publish("jk/v1/site/gg-a-01/data", b"{}")
