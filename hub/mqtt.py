"""The hub's MQTT connection: one owner (on :class:`shared.mqtt.Mqtt`, which reconnects by
itself); receives every site's status, birth and data, and sends acks, commands and the hub's
own status.

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
   too (``incoming_max``), and the connection stops reading its socket while that queue is
   half full (:mod:`shared.mqtt` rule 4): the broker keeps the rest. Should a message still
   arrive when the queue is full, it is PUBACKed at once and dropped, counted (``overflow``)
   and logged: never silent, and never lost — the edge still holds its records (they are not
   acked end to end) and the hub's gap detection asks for them again with ``resend_from``.
4. A PUBACK belongs to a connection: after a reconnect the broker redelivers what was not
   acknowledged, so acks for the old connection's packet ids are dropped, not sent
   (:meth:`shared.mqtt.Mqtt.ack` by generation).
5. Acks to edges are coalesced per site (newest ``through_seq`` wins; an unsent
   ``resend_from`` is kept unless the watermark passed it) and sent at most every
   ``ack_interval_s``, so the pending set is bounded by the number of sites and a busy site
   gets a few acks a second, not one per transaction.
6. The hub's status is retained: ``online`` on every connect, ``offline`` on a clean stop and
   as the Will.
7. When the hub reports to the province, the city's sender (hub/upstream.py rule 4) runs on this
   connection: the receiver hands it the city's acks and requests (PUBACKed once handled), and
   a clean stop says the city ``offline`` too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

from hub.config import HubConfig
from hub.errors import HubError
from hub.inbound import Inbound, classify
from shared import messages, topics
from shared.errors import MqttError
from shared.messages import Ack, Command, HubStatus, SiteState
from shared.mqtt import Connection, ConnectOptions, Mqtt, Transport, Will
from shared.mqtt_process import ProcessTransport
from shared.tls import client_context
from shared.uplink import Uplink

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 300
PUBLISH_TIMEOUT_S = 10.0
RECONNECT_S = (0.2, 5.0)
"""Reconnect backoff: first and largest wait (full jitter)."""


class NotConnected(HubError):
    """The hub has no broker connection just now."""


def merge_acks(old: Ack, new: Ack) -> Ack:
    """Rule 5: one pending ack per site (an ack for a newer epoch replaces one for another)."""
    if old.epoch != new.epoch:
        return new
    throughs = [t for t in (old.through_seq, new.through_seq) if t is not None]
    through = max(throughs) if throughs else None
    resend = new.resend_from
    if resend is None and old.resend_from is not None and (through is None or old.resend_from > through):
        resend = old.resend_from
    return Ack(site=new.site, epoch=new.epoch, through_seq=through, resend_from=resend,
               rebirth=old.rebirth or new.rebirth)


class HubMqtt:
    def __init__(self, cfg: HubConfig, put: Callable[[Inbound], Awaitable[None]], *,
                 client_id: str | None = None, transport: Transport | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self._put = put
        self.client_id = client_id or cfg.hub_id
        self.connected = asyncio.Event()
        self._process: ProcessTransport | None = None
        if transport is None and cfg.broker.client_process:
            # the child's window under half the inbox's bound (shared/mqtt_process.py rule 4)
            transport = self._process = ProcessTransport(cfg.broker.tls, window=max(1, cfg.ingest.incoming_max // 4))
        self._mqtt = Mqtt(self._options, transport=transport, incoming_max=cfg.ingest.incoming_max,
                          backoff=RECONNECT_S, on_overflow=self._overflowed)
        self._stop = asyncio.Event()
        self._acks: dict[str, Ack] = {}
        self._ack_wakeup = asyncio.Event()
        self.received = 0
        self.acks_sent = 0
        self.upstream: Uplink | None = None
        """The city's sender to the province (hub/upstream.py rule 4), served on this connection."""

    @property
    def generation(self) -> int:
        return self._mqtt.generation

    @property
    def connects(self) -> int:
        return self._mqtt.connects

    @property
    def client_pid(self) -> int | None:
        """The MQTT client's child process (``broker.client_process``), while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def overflow(self) -> int:
        return self._mqtt.overflow

    @property
    def last_error(self) -> str:
        return self._mqtt.last_error

    # --- effects from the writer (event loop) ----------------------------------------------

    def puback(self, generation: int, mids: list[int]) -> None:
        self._mqtt.ack(generation, mids)

    def offer_ack(self, ack: Ack) -> None:
        old = self._acks.get(ack.site)
        self._acks[ack.site] = ack if old is None else merge_acks(old, ack)
        self._ack_wakeup.set()

    async def publish_command(self, cmd: Command) -> None:
        conn = self._mqtt.connection
        if conn is None:
            raise NotConnected("no broker connection: the command was not sent")
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await conn.publish(topics.site_topic(cmd.site, topics.SiteChannel.CMD), messages.encode(cmd), qos=1)
        except (MqttError, TimeoutError) as exc:
            raise NotConnected(f"publishing the command failed: {exc}") from exc

    # --- the connection --------------------------------------------------------------------

    def _options(self) -> ConnectOptions:
        b = self.cfg.broker
        return ConnectOptions(
            host=b.host,
            port=b.port,
            client_id=self.client_id,
            tls=client_context(b.tls),
            keepalive_s=b.keepalive_s,
            timeout_s=10,
            will=Will(topics.hub_status_topic(self.cfg.hub_id), self._status(SiteState.OFFLINE), qos=1, retain=True),
            receive_maximum=self.cfg.ingest.receive_maximum,
            session_expiry_s=SESSION_EXPIRY_S,
            manual_ack=True,  # rule 2: PUBACK after commit
            max_inflight=1000,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop`` is set, then say ``offline`` and disconnect."""
        self._stop = stop
        await self._mqtt.run(self._session, stop=stop, on_lost=self._lost)

    async def _lost(self, exc: MqttError) -> None:
        log.warning("mqtt.disconnected", extra={"error": self._mqtt.last_error})

    async def _session(self, conn: Connection) -> None:
        try:
            await conn.publish(topics.hub_status_topic(self.cfg.hub_id), self._status(SiteState.ONLINE),
                               qos=1, retain=True)
            await conn.subscribe(topics.all_sites(topics.SiteChannel.DATA), qos=1)
            await conn.subscribe(topics.all_sites(topics.SiteChannel.STATUS), qos=1)
            await conn.subscribe(topics.all_sites(topics.SiteChannel.BIRTH), qos=1)
            self.connected.set()
            log.info("mqtt.connected", extra={"client_id": self.client_id, "generation": conn.generation})
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._receive(conn), name="mqtt.receive"),
                         tg.create_task(self._send_acks(conn), name="mqtt.acks")]
                if self.upstream is not None:
                    tasks.append(tg.create_task(self.upstream.attached(conn), name="mqtt.upstream"))
                await self._stop.wait()
                for task in tasks:
                    task.cancel()
            await conn.publish(topics.hub_status_topic(self.cfg.hub_id), self._status(SiteState.OFFLINE),
                               qos=1, retain=True)
            if self.upstream is not None:
                wire = self.upstream.wire
                await conn.publish(wire.status_topic, wire.status(SiteState.OFFLINE), qos=1, retain=True)
        finally:
            self.connected.clear()

    def _overflowed(self) -> None:
        if self.overflow == 1 or self.overflow % 1000 == 0:
            log.warning("mqtt.overflow", extra={"dropped_total": self.overflow,
                                                "incoming_max": self.cfg.ingest.incoming_max})

    def _status(self, state: SiteState) -> bytes:
        return messages.encode(HubStatus(hub=self.cfg.hub_id, state=state, ts=self.clock()))

    async def _receive(self, conn: Connection) -> None:
        async for msg in conn.messages:
            if self.upstream is not None and self.upstream.owns(msg.topic):
                await self.upstream.deliver(msg.topic, msg.payload)  # the province's ack or request
                self._mqtt.ack(msg.generation, [msg.mid])
                continue
            self.received += 1
            # received: when the MQTT client read it off the socket, not when it left the inbox
            inbound = classify(msg.topic, msg.payload, received=msg.received or self.clock(),
                               mid=msg.mid if msg.qos > 0 else 0,
                               generation=msg.generation)
            await self._put(inbound)

    async def _send_acks(self, conn: Connection) -> None:
        while True:
            await self._ack_wakeup.wait()
            await asyncio.sleep(self.cfg.ingest.ack_interval_s)
            self._ack_wakeup.clear()
            pending, self._acks = self._acks, {}
            # one deadline for the round, not a timer per ack (a busy hub sends a thousand a second)
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                    await asyncio.gather(*(
                        conn.publish(topics.site_topic(site, topics.SiteChannel.ACK), messages.encode(ack), qos=1,
                                     timeout_s=math.inf)
                        for site, ack in pending.items()
                    ))
            except TimeoutError:
                raise MqttError(f"{len(pending)} acks not taken by the broker within {PUBLISH_TIMEOUT_S:g} s") from None
            self.acks_sent += len(pending)
