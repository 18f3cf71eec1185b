"""The hub's MQTT connection: one owner, reconnecting by itself; receives every site's status,
birth and data, and sends acks, commands and the hub's own status.

Rules and invariants:

1. Every message is validated (hub/inbound.py) and queued for the writer; nothing is
   decoded twice and nothing malformed stops the receiver (it is quarantined by the writer).
2. Backpressure, never loss: incoming QoS 1 messages are PUBACKed by hand, only after their
   transaction committed, and the hub asks the broker (MQTT 5 Receive Maximum) for at most
   ``receive_maximum`` unacknowledged messages. When the writer's queue is full the receiver
   waits; a conforming broker then keeps the rest (Mosquitto's queue for the hub is 1,000,000
   messages deep).
3. Overflow: Mosquitto 2.0.11 honours Receive Maximum only until the first PUBACK (measured:
   after one PUBACK it sends everything queued), so the client's incoming queue is bounded
   too (``incoming_max``). A message arriving when it is full is PUBACKed at once and dropped,
   counted (``overflow``) and logged: never silent, and never lost — the edge still holds its
   records (they are not acked end to end) and the hub's gap detection asks for them again
   with ``resend_from``.
4. A PUBACK belongs to a connection: after a reconnect the broker redelivers what was not
   acknowledged, so acks for the old connection's packet ids are dropped, not sent.
5. Acks to edges are coalesced per site (newest ``through_seq`` wins; an unsent
   ``resend_from`` is kept unless the watermark passed it) and sent at most every
   ``ack_interval_s``, so the pending set is bounded by the number of sites and a busy site
   gets a few acks a second, not one per transaction.
6. The hub's status is retained: ``online`` on every connect, ``offline`` on a clean stop and
   as the Will.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub.config import HubConfig
from hub.errors import HubError
from hub.inbound import Inbound, classify
from shared import messages, topics
from shared.messages import Ack, Command, HubStatus, SiteState
from shared.retry import backoff_delays
from shared.tls import client_context

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 300
PUBLISH_TIMEOUT_S = 10.0


class _Client(aiomqtt.Client):
    """aiomqtt's client with rule 3: a full incoming queue drops (PUBACKed, counted)."""

    def __init__(self, *args: Any, on_overflow: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_overflow = on_overflow

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._queue.full():
            self._on_overflow()
            if message.qos > 0:
                client.ack(message.mid, message.qos)
            return
        super()._on_message(client, userdata, message)


class NotConnected(HubError):
    """The hub has no broker connection just now."""


def merge_acks(old: Ack, new: Ack) -> Ack:
    """Rule 4: one pending ack per site."""
    throughs = [t for t in (old.through_seq, new.through_seq) if t is not None]
    through = max(throughs) if throughs else None
    resend = new.resend_from
    if resend is None and old.resend_from is not None and (through is None or old.resend_from > through):
        resend = old.resend_from
    return Ack(site=new.site, through_seq=through, resend_from=resend)


class HubMqtt:
    def __init__(self, cfg: HubConfig, put: Callable[[Inbound], Awaitable[None]], *,
                 client_id: str | None = None) -> None:
        self.cfg = cfg
        self._put = put
        self.client_id = client_id or cfg.hub_id
        self.generation = 0
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._acks: dict[str, Ack] = {}
        self._ack_wakeup = asyncio.Event()
        self.received = 0
        self.overflow = 0
        self.acks_sent = 0
        self.connects = 0
        self.last_error = ""

    # --- effects from the writer (event loop) ----------------------------------------------

    def puback(self, generation: int, mids: list[int]) -> None:
        client = self._client
        if client is None or generation != self.generation:
            return
        paho = client._client  # aiomqtt has no manual-ack API; paho's is public
        for mid in mids:
            paho.ack(mid, 1)

    def offer_ack(self, ack: Ack) -> None:
        old = self._acks.get(ack.site)
        self._acks[ack.site] = ack if old is None else merge_acks(old, ack)
        self._ack_wakeup.set()

    async def publish_command(self, cmd: Command) -> None:
        client = self._client
        if client is None:
            raise NotConnected("no broker connection: the command was not sent")
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await client.publish(topics.site_topic(cmd.site, topics.SiteChannel.CMD), messages.encode(cmd), qos=1)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            raise NotConnected(f"publishing the command failed: {exc}") from exc

    # --- the connection --------------------------------------------------------------------

    def _client_for(self) -> aiomqtt.Client:
        b = self.cfg.broker
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.ReceiveMaximum = self.cfg.ingest.receive_maximum
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        will = aiomqtt.Will(
            topics.hub_status_topic(self.cfg.hub_id),
            messages.encode(HubStatus(hub=self.cfg.hub_id, state=SiteState.OFFLINE, ts=time.time())),
            qos=1,
            retain=True,
        )
        client = _Client(
            hostname=b.host,
            port=b.port,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=client_context(b.tls),
            keepalive=b.keepalive_s,
            timeout=10,
            will=will,
            properties=props,
            max_inflight_messages=1000,
            max_queued_incoming_messages=self.cfg.ingest.incoming_max,
            on_overflow=self._overflowed,
        )
        client.pending_calls_threshold = 100_000
        client._client.manual_ack_set(True)  # rule 2: PUBACK after commit
        return client

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop`` is set, then say ``offline`` and disconnect."""
        delays = backoff_delays(0.2, 5.0)
        while not stop.is_set():
            try:
                await self._session(stop)
                delays = backoff_delays(0.2, 5.0)
            except* aiomqtt.MqttError as group:
                self.last_error = "; ".join(str(e) for e in group.exceptions)
                log.warning("mqtt.disconnected", extra={"error": self.last_error})
            if stop.is_set():
                break
            try:
                async with asyncio.timeout(next(delays)):
                    await stop.wait()
            except TimeoutError:
                pass

    async def _session(self, stop: asyncio.Event) -> None:
        client = self._client_for()
        try:
            async with client:
                self.generation += 1
                self.connects += 1
                gen = self.generation
                self._client = client
                await client.publish(topics.hub_status_topic(self.cfg.hub_id), self._status(SiteState.ONLINE),
                                     qos=1, retain=True)
                await client.subscribe(topics.all_sites(topics.SiteChannel.DATA), qos=1)
                await client.subscribe(topics.all_sites(topics.SiteChannel.STATUS), qos=1)
                await client.subscribe(topics.all_sites(topics.SiteChannel.BIRTH), qos=1)
                self.connected.set()
                log.info("mqtt.connected", extra={"client_id": self.client_id, "generation": gen})
                async with asyncio.TaskGroup() as tg:
                    receiver = tg.create_task(self._receive(client, gen), name="mqtt.receive")
                    acker = tg.create_task(self._send_acks(client), name="mqtt.acks")
                    await stop.wait()
                    receiver.cancel()
                    acker.cancel()
                await client.publish(topics.hub_status_topic(self.cfg.hub_id), self._status(SiteState.OFFLINE),
                                     qos=1, retain=True)
        finally:
            self._client = None
            self.connected.clear()

    def _overflowed(self) -> None:
        self.overflow += 1
        if self.overflow == 1 or self.overflow % 1000 == 0:
            log.warning("mqtt.overflow", extra={"dropped_total": self.overflow,
                                                "incoming_max": self.cfg.ingest.incoming_max})

    def _status(self, state: SiteState) -> bytes:
        return messages.encode(HubStatus(hub=self.cfg.hub_id, state=state, ts=time.time()))

    async def _receive(self, client: aiomqtt.Client, gen: int) -> None:
        async for msg in client.messages:
            payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
            self.received += 1
            inbound = classify(str(msg.topic), payload, received=time.time(), mid=msg.mid if msg.qos > 0 else 0,
                               generation=gen)
            await self._put(inbound)

    async def _send_acks(self, client: aiomqtt.Client) -> None:
        while True:
            await self._ack_wakeup.wait()
            await asyncio.sleep(self.cfg.ingest.ack_interval_s)
            self._ack_wakeup.clear()
            pending, self._acks = self._acks, {}
            await asyncio.gather(*(
                client.publish(topics.site_topic(site, topics.SiteChannel.ACK), messages.encode(ack), qos=1)
                for site, ack in pending.items()
            ))
            self.acks_sent += len(pending)
