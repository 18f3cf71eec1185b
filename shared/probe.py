"""A one-shot MQTT 5 connection probe: hear the broker's verdict on our certificate.

aiomqtt reports a refused client certificate as a timeout; this probe tells the cases apart
for diagnostics (the uplink's error reports, ``jikimi provision doctor``). With TLS 1.3 the
server judges the client certificate after the client's side of the handshake is done, so
its verdict arrives with the first read.
"""

from __future__ import annotations

import socket
import ssl


def connect_packet(client_id: str) -> bytes:
    """A minimal MQTT 5 CONNECT: clean start, keepalive 60, no properties."""
    cid = client_id.encode()[:100]
    body = b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + len(cid).to_bytes(2, "big") + cid
    return bytes([0x10, len(body)]) + body


def probe(host: str, port: int, ctx: ssl.SSLContext, client_id: str, timeout_s: float = 5.0) -> bytes:
    """Connect with TLS, send CONNECT, return the first bytes of the answer (b"" if closed).

    Raises ``ssl.SSLError`` (refused or unverifiable certificates) and ``OSError``.
    """
    with socket.create_connection((host, port), timeout=timeout_s) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(connect_packet(client_id))
        return tls.recv(8)


def connack_ok(answer: bytes) -> bool:
    """True for a CONNACK with reason code 0 (success)."""
    return len(answer) >= 4 and answer[0] == 0x20 and answer[3] == 0
