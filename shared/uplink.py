"""The sending side of the delivery protocol on MQTT 5: one owner of a broker connection that
sends an outbox's records and applies the receiver's acks (on :class:`shared.mqtt.Mqtt`, which
reconnects by itself).

Two senders speak it (DESIGN §3, §8): an edge to its city hub (edge/uplink.py: site topics,
:class:`~shared.messages.DataBatch`, :class:`~shared.messages.Ack`) and a city hub to the province
(hub/upstream.py: city topics, :class:`~shared.messages.CityBatch`,
:class:`~shared.messages.CityAck`). What differs is a :class:`Wire`; everything below is the same code.

Rules and invariants:

1. On every (re)connect: publish ``online`` status (retained; the Will says ``offline``),
   then the birth message (retained), then subscribe to the ack topic and the wire's others.
2. Delivery counts only when the receiver acks: PUBACK from the broker is not enough (a broker
   without persistence may drop), so records stay in the outbox until ``through_seq``.
3. Live first: records produced while connected are sent as they come. Everything older
   (produced during an outage, or not acked before a disconnect, or asked for again with
   ``resend_from``) is *replayed*, flagged ``historical=true``, at most ``replay_rate``
   records per second, and a pause in replay gives way at once to new live records.
4. Every batch carries the outbox's ``epoch`` and ``floor_seq`` (see
   :meth:`shared.outbox.Outbox.floor_seq`), and names the thinned holes among and just before
   its records (:func:`shared.outbox.thinned_holes`), so the receiver closes them at once.
   Records are marked sent before they are published (an ack deletes only sent records); an
   ack for another epoch is ignored, and when an ack makes the outbox start a new epoch every
   held record is replayed (shared/sending.py).
5. Reconnects back off with full jitter between ``reconnect_initial_s`` and
   ``reconnect_max_s`` (capped low, so the sender is back within seconds of the broker).
6. Data publishes wait for their PUBACK without a timeout of their own (``math.inf``). A
   dead connection is noticed by keepalive; it ends the receiver, and every publish still
   waiting, so the session ends.
7. A refused certificate or TLS failure is diagnosed with a direct handshake and logged and
   reported as such (``last_error`` starts with ``tls:``), never as a bare timeout or a
   closed connection (which is all MQTT can say about it).
8. A storage error in the outbox (the wire's ``outbox_error``) ends the session (like a lost
   connection), never the process: the sender reconnects and tries again.
9. An ack asking for a *rebirth* (whatever its epoch) makes the sender publish the status and
   the birth again before its next batch: the receiver lost or dropped them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from shared import messages
from shared.errors import MqttError, WireError
from shared.mqtt import Connection, ConnectOptions, Mqtt, Transport, Will
from shared.outbox import Outbox, Row, thinned_holes
from shared.probe import probe
from shared.sending import Ack as SentAck
from shared.sending import Cursors
from shared.tls import TlsFiles, client_context

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 200 * 1024

AckMessage = messages.Ack | messages.CityAck


@dataclass(frozen=True)
class UplinkConfig:
    sender: str
    """The id the batches carry: a site id (edge) or a city id (city hub)."""
    host: str
    port: int
    tls: TlsFiles
    client_id: str = ""
    """The MQTT client id (the broker binds it to the certificate); the sender's id when empty."""
    keepalive_s: int = 30
    batch_max_records: int = 500
    replay_rate: float = 2000.0
    reconnect_initial_s: float = 0.25
    reconnect_max_s: float = 3.0

    @property
    def client(self) -> str:
        return self.client_id or self.sender


@dataclass(frozen=True)
class Wire:
    """One kind of sender's topics and messages."""

    kind: Literal["site", "city"]
    status_topic: str
    birth_topic: str
    data_topic: str
    ack_topic: str
    decode_ack: Callable[[bytes], AckMessage]
    """Decodes an ack (:class:`WireError` for a bad one)."""
    status: Callable[[messages.SiteState], bytes]
    """The retained status message in a state (``offline`` is the Will)."""
    birth: Callable[[], bytes]
    outbox_error: type[Exception]
    inbound: tuple[str, ...] = ()
    """Topics besides the ack's this sender subscribes to; their messages go to ``on_message``."""
    on_message: Callable[[str, bytes], Awaitable[None]] | None = None
    """Handles a message on an ``inbound`` topic; raises :class:`WireError` for a bad one."""


@dataclass
class UplinkCounters:
    connects: int = 0
    disconnects: int = 0
    batches_sent: int = 0
    records_sent: int = 0
    records_replayed: int = 0
    acks: int = 0
    resend_requests: int = 0
    foreign_acks: int = 0
    rebirths: int = 0
    bad_messages: int = 0
    last_error: str = ""
    connected_since: float | None = None
    history: list[str] = field(default_factory=list)


class Uplink:
    """Owns the MQTT connection of one sender; run :meth:`run` as a task."""

    def __init__(self, cfg: UplinkConfig, wire: Wire, outbox: Outbox[Any], *, boot: str,
                 clock: Callable[[], float] = time.time, transport: Transport | None = None) -> None:
        self.cfg = cfg
        self.wire = wire
        self.outbox = outbox
        self.boot = boot
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._rebirth = False
        """The receiver asked for status and birth again; the sender publishes them next."""
        self.connected = asyncio.Event()
        self.counters = UplinkCounters()
        self._tls = client_context(cfg.tls)
        self._mqtt = Mqtt(self._options, transport=transport, backoff=(cfg.reconnect_initial_s, cfg.reconnect_max_s))
        self._cur = Cursors(outbox)
        """Live and replay cursors (valid while connected; shared/sending.py)."""

    def notify(self) -> None:
        """New records are in the outbox: wake the sender."""
        self._wakeup.set()

    def _options(self) -> ConnectOptions:
        # A fresh TLS context per connection picks up a renewed certificate; it trusts the
        # project's CA alone (the broker's certificate is the project's), at a few kB a context.
        self._tls = client_context(self.cfg.tls)
        will = Will(topic=self.wire.status_topic, payload=self.wire.status(messages.SiteState.OFFLINE),
                    qos=1, retain=True)
        return ConnectOptions(host=self.cfg.host, port=self.cfg.port, client_id=self.cfg.client, tls=self._tls,
                              keepalive_s=self.cfg.keepalive_s, timeout_s=10, will=will)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Connect, serve, and reconnect until cancelled (or ``stop`` is set: a clean DISCONNECT,
        so the Will is not sent)."""
        await self._mqtt.run(self._session, on_lost=self._lost, stop=stop)

    async def _session(self, client: Connection) -> None:
        try:
            await self._serve(client)
        except* self.wire.outbox_error as group:
            # rule 8: the outbox failed; end this session as if the link were lost
            raise MqttError(f"outbox: {group.exceptions[0]}") from group

    async def _lost(self, exc: MqttError) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.counters.connected_since = None
        if was_connected:
            self.counters.disconnects += 1
            self.counters.last_error = f"mqtt: {exc}"
            log.warning("uplink.disconnected", extra={"sender": self.cfg.sender, "error": str(exc)})
        else:
            self.counters.last_error = await asyncio.to_thread(self._diagnose, str(exc))
            log.warning("uplink.connect_failed", extra={"sender": self.cfg.sender, "error": self.counters.last_error})

    def _diagnose(self, mqtt_error: str) -> str:
        """Tell a TLS refusal from a broker that is simply not there."""
        try:
            answer = probe(self.cfg.host, self.cfg.port, self._tls, f"{self.cfg.client}-probe", timeout_s=3)
        except ssl.SSLError as exc:
            return f"tls: {exc.reason or exc}"
        except OSError as exc:
            return f"unreachable: {exc}"
        if not answer:
            return "tls: the broker closed the connection after the handshake (certificate refused?)"
        return f"mqtt: {mqtt_error}"

    async def _announce(self, client: Connection) -> None:
        """Status ``online`` and the birth, retained: on every connect, and again on a rebirth ask."""
        wire = self.wire
        await client.publish(wire.status_topic, wire.status(messages.SiteState.ONLINE), qos=1, retain=True)
        await client.publish(wire.birth_topic, wire.birth(), qos=1, retain=True)

    async def _start(self, client: Connection) -> None:
        """Rule 1, and the cursors of a new connection."""
        self._rebirth = False
        await self._announce(client)
        for topic in (self.wire.ack_topic, *self.wire.inbound):
            await client.subscribe(topic, qos=1)
        # Everything held is unacked: replay it; everything from now on is live.
        replay = self._cur.connected()
        self.counters.connects += 1
        self.counters.connected_since = self._clock()
        self.connected.set()
        log.info("uplink.connected", extra={"sender": self.cfg.sender, "replay": replay})

    async def _serve(self, client: Connection) -> None:
        await self._start(client)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._sender(client), name="uplink.sender")
            tg.create_task(self._receiver(client), name="uplink.receiver")

    def owns(self, topic: str) -> bool:
        """Whether a message on ``topic`` is this sender's (its ack or an ``inbound`` topic)."""
        return topic == self.wire.ack_topic or topic in self.wire.inbound

    async def attached(self, client: Connection) -> None:
        """Send over a connection another owner holds (a city hub's one broker connection, whose
        certificate is the city's voice): as :meth:`run` does on its own connection, but the
        owner's receiver hands this sender its messages (:meth:`deliver`), and the Will is the
        owner's. Returns when the connection ends; a storage error ends it (rule 8)."""
        try:
            await self._start(client)
            try:
                await self._sender(client)
            except self.wire.outbox_error as exc:
                raise MqttError(f"outbox: {exc}") from exc
        finally:
            if self.connected.is_set():
                self.connected.clear()
                self.counters.disconnects += 1
            self.counters.connected_since = None

    async def deliver(self, topic: str, payload: bytes) -> None:
        """One message on a topic this sender :meth:`owns`; a bad one is counted and logged."""
        wire = self.wire
        try:
            if topic == wire.ack_topic:
                self._on_ack(wire.decode_ack(payload))
            elif topic in wire.inbound and wire.on_message is not None:
                await wire.on_message(topic, payload)
            else:
                raise WireError(f"unexpected topic {topic}")
        except WireError as exc:
            self.counters.bad_messages += 1
            log.warning("uplink.bad_message", extra={"topic": topic, "error": str(exc)})

    async def _sender(self, client: Connection) -> None:
        data_topic = self.wire.data_topic
        limit = self.cfg.batch_max_records
        while True:
            self._wakeup.clear()
            if self._rebirth:
                self._rebirth = False
                self.counters.rebirths += 1
                log.info("uplink.rebirth", extra={"sender": self.cfg.sender})
                await self._announce(client)
            cur = self._cur
            rows = self.outbox.read(cur.live, limit=limit)
            if rows:
                payload = self._batch(rows, cur.live, historical=False)
                self.outbox.mark_sent(rows[-1].seq)
                await client.publish(data_topic, payload, qos=1, timeout_s=math.inf)
                cur.live = rows[-1].seq + 1
                self._sent(rows, replayed=False)
                continue
            if cur.replaying:
                rows = self.outbox.read(max(cur.replay, 0), limit=limit, below_seq=cur.replay_end)
                if not rows:
                    cur.replay = cur.replay_end
                    continue
                payload = self._batch(rows, max(cur.replay, 0), historical=True)
                self.outbox.mark_sent(rows[-1].seq)
                await client.publish(data_topic, payload, qos=1, timeout_s=math.inf)
                cur.replay = rows[-1].seq + 1
                self._sent(rows, replayed=True)
                # Rate limit replay, but let new live records through at once.
                pause = len(rows) / self.cfg.replay_rate
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):  # not wait_for: see drivers/scheduler.py
                        await self._wakeup.wait()
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wakeup.wait()

    def _sent(self, rows: list[Row], *, replayed: bool) -> None:
        self.counters.batches_sent += 1
        self.counters.records_sent += len(rows)
        if replayed:
            self.counters.records_replayed += len(rows)

    def _batch(self, rows: list[Row], from_seq: int, *, historical: bool) -> bytes:
        """The batch of as many of ``rows`` (read from ``from_seq`` on) as fit (the rest are
        dropped from ``rows``), from the stored record encodings, naming the thinned holes."""
        floor = self.outbox.floor_seq()
        payload, n = messages.encode_batch(
            self.cfg.sender,
            self.boot,
            [row.payload for row in rows],
            floor_seq=floor,
            epoch=self.outbox.epoch,
            thinned=thinned_holes(rows, max(from_seq, floor)),
            historical=historical,
            max_bytes=MAX_BATCH_BYTES,
            sender=self.wire.kind,
        )
        del rows[n:]
        return payload

    async def _receiver(self, client: Connection) -> None:
        async for msg in client.messages:
            await self.deliver(msg.topic, msg.payload)

    def _on_ack(self, ack: AckMessage) -> None:
        self.counters.acks += 1
        if ack.rebirth:  # the receiver lacks our status or birth, whatever epoch it speaks of
            self._rebirth = True
            self._wakeup.set()
        outcome = self._cur.on_ack(ack.epoch, ack.through_seq, ack.resend_from)
        if outcome is SentAck.FOREIGN:
            self.counters.foreign_acks += 1
            log.info("uplink.ack_other_epoch", extra={"ack_epoch": ack.epoch, "epoch": self.outbox.epoch})
            return
        if ack.resend_from is not None and outcome is not SentAck.NEW_EPOCH:
            self.counters.resend_requests += 1
        if outcome is SentAck.RESEND:
            log.info("uplink.resend", extra={"from": self._cur.replay, "to": self._cur.replay_end})
        if outcome in (SentAck.NEW_EPOCH, SentAck.RESEND):
            self._wakeup.set()
