"""A lean MQTT 5 client for load generators: thousands of simulated edges in one process.

``jikimi bench ingest`` runs 6,500 mutual-TLS connections on the same two cores as the hub it
measures. With aiomqtt (paho underneath) each connection cost the generators about 0.7 ms of
CPU per batch sent and acked, plus a timer per connection every second: at 40,000 records/s
the generators took as much CPU as the hub, so the rig, not the hub, set the limit. This client
does only what a simulated edge needs, on an asyncio protocol per connection:

- CONNECT (clean start, the client id, a keep-alive) and its CONNACK;
- SUBSCRIBE to one filter at QoS 1 and its SUBACK;
- PUBLISH at QoS 1 (retained or not), each awaiting its PUBACK;
- incoming QoS 1 PUBLISHes (the hub's acks) handed to a callback and PUBACKed at once;
- PINGREQ when the process's one pinger says so; DISCONNECT on close.

Everything on the wire is MQTT 5 over TLS 1.3 with the site's certificate, as a real edge
sends it: the broker checks it all (identity, ACL, packet format). Properties are never sent;
those the broker sends are skipped. A malformed packet, a refused CONNECT or SUBSCRIBE, a
PUBACK with a failure reason, or a lost connection raises :class:`LoadClientError`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from shared.errors import JikimiError

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14
_PINGREQ = bytes([PINGREQ << 4, 0])
_DISCONNECT = bytes([DISCONNECT << 4, 0])


class LoadClientError(JikimiError):
    """The broker refused or broke the connection, or sent what this client cannot read."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def _read_varint(buf: bytes | bytearray, at: int) -> tuple[int, int] | None:
    """The variable byte integer at ``at`` and where it ends; None if ``buf`` ends first."""
    value, shift = 0, 0
    for i in range(at, min(at + 4, len(buf))):
        value |= (buf[i] & 0x7F) << shift
        if not buf[i] & 0x80:
            return value, i + 1
        shift += 7
    if len(buf) >= at + 4:
        raise LoadClientError("malformed remaining length")
    return None


class LoadClient(asyncio.Protocol):
    """One connection. ``on_message(topic, payload)`` gets every message the broker delivers."""

    def __init__(self, client_id: str, on_message: Callable[[str, bytes], None], keepalive_s: int = 60) -> None:
        self.client_id = client_id
        self.on_message = on_message
        self.keepalive_s = keepalive_s
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiting: dict[int, asyncio.Future[None]] = {}
        """By packet id: PUBACKs and the SUBACK; 0 is the CONNACK."""
        self._next_mid = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect(cls, host: str, port: int, tls: ssl.SSLContext, client_id: str,
                      on_message: Callable[[str, bytes], None], *, timeout_s: float = 60.0) -> LoadClient:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            _, client = await loop.create_connection(lambda: cls(client_id, on_message), host, port, ssl=tls,
                                                     server_hostname=host)
            await client._request(0, _packet(CONNECT << 4, _string("MQTT") + bytes([5, 0x02])
                                             + client.keepalive_s.to_bytes(2, "big") + b"\x00"
                                             + _string(client_id)))
        return client

    async def subscribe(self, topic_filter: str) -> None:
        mid = self._mid()
        await self._request(mid, _packet(SUBSCRIBE << 4 | 0x02, mid.to_bytes(2, "big") + b"\x00" + _string(topic_filter)
                                         + b"\x01"))

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """QoS 1: returns once the broker's PUBACK says it took the message."""
        mid = self._mid()
        await self._request(mid, _packet(PUBLISH << 4 | 0x02 | int(retain),
                                         _string(topic) + mid.to_bytes(2, "big") + b"\x00" + payload))

    def ping(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_PINGREQ)

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_DISCONNECT)
            self._transport.close()

    def _mid(self) -> int:
        for _ in range(65535):
            self._next_mid = self._next_mid % 65535 + 1
            if self._next_mid not in self._waiting:
                return self._next_mid
        raise LoadClientError(f"{self.client_id}: 65,535 packets in flight")

    async def _request(self, key: int, packet: bytes) -> None:
        if self.closed.done() or self._transport is None:
            raise LoadClientError(f"{self.client_id}: the connection is closed")
        fut = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        self._transport.write(packet)
        try:
            await fut
        finally:
            self._waiting.pop(key, None)

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(LoadClientError(f"{self.client_id}: connection lost: {exc or 'closed by the broker'}"))

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        at = 0
        try:
            while len(buf) - at >= 2:
                length = _read_varint(buf, at + 1)
                if length is None:
                    break
                size, body_at = length
                if len(buf) < body_at + size:
                    break
                self._handle(buf[at] >> 4, buf[at] & 0x0F, bytes(buf[body_at:body_at + size]))
                at = body_at + size
        except LoadClientError as exc:
            self._fail(exc)
            if self._transport is not None:
                self._transport.abort()
        del buf[:at]

    def _handle(self, kind: int, flags: int, body: bytes) -> None:
        if kind == PUBACK:
            mid = int.from_bytes(body[:2], "big")
            fut = self._waiting.get(mid)
            if fut is not None and not fut.done():
                if len(body) > 2 and body[2] >= 0x80:
                    fut.set_exception(LoadClientError(f"{self.client_id}: PUBACK reason {body[2]:#x}"))
                else:
                    fut.set_result(None)
        elif kind == PUBLISH:
            qos = (flags >> 1) & 0x03
            n = int.from_bytes(body[:2], "big")
            topic = body[2:2 + n].decode()
            at = 2 + n
            packet_id = body[at:at + 2] if qos else b""
            props = _read_varint(body, at + len(packet_id))
            if props is None:
                raise LoadClientError(f"{self.client_id}: malformed PUBLISH")
            self.on_message(topic, body[props[1] + props[0]:])
            if packet_id and self._transport is not None:
                self._transport.write(bytes([PUBACK << 4, 2]) + packet_id)
        elif kind == CONNACK:
            self._settle(0, body[1] if len(body) > 1 else 0xFF, "CONNACK")
        elif kind == SUBACK:
            props = _read_varint(body, 2)
            reason = body[props[1] + props[0]] if props is not None and len(body) > props[1] + props[0] else 0xFF
            self._settle(int.from_bytes(body[:2], "big"), reason, "SUBACK")
        elif kind == DISCONNECT:
            raise LoadClientError(f"{self.client_id}: the broker disconnected (reason {body[0] if body else 0:#x})")
        elif kind != PINGRESP:
            raise LoadClientError(f"{self.client_id}: unexpected packet type {kind}")

    def _settle(self, key: int, reason: int, what: str) -> None:
        fut = self._waiting.get(key)
        if fut is None or fut.done():
            return
        if reason >= 0x80:
            fut.set_exception(LoadClientError(f"{self.client_id}: {what} reason {reason:#x}"))
        else:
            fut.set_result(None)

    def _fail(self, exc: LoadClientError) -> None:
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(exc)
        if not self.closed.done():
            self.closed.set_result(None)
