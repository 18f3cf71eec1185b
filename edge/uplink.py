"""The edge's MQTT 5 uplink: one owner of the broker connection (on :class:`shared.mqtt.Mqtt`,
which reconnects by itself).

Rules and invariants:

1. On every (re)connect: publish ``online`` status (retained; the Will says ``offline``),
   then the birth message (retained), then subscribe to this site's ``cmd`` and ``ack``.
2. Delivery counts only when the hub acks: PUBACK from the broker is not enough (a broker
   without persistence may drop), so records stay in the outbox until ``Ack.through_seq``.
3. Live first: records produced while connected are sent as they come. Everything older
   (produced during an outage, or not acked before a disconnect, or asked for again with
   ``Ack.resend_from``) is *replayed*, flagged ``historical=true``, at most
   ``replay_rate`` records per second, and a pause in replay gives way at once to new live
   records.
4. Every batch carries the outbox's ``epoch`` and ``floor_seq`` (see
   :meth:`edge.outbox.Outbox.floor_seq`), and names the thinned holes among and just before
   its records (:func:`shared.outbox.thinned_holes`), so the hub closes them at once. Records are marked
   sent before they are published (an ack deletes only sent records); an ack for another
   epoch is ignored, and when an ack makes the outbox start a new epoch every held record is
   replayed.
5. Reconnects back off with full jitter between ``reconnect_initial_s`` and
   ``reconnect_max_s`` (capped low, so the edge is back within seconds of the broker).
6. Data publishes wait for their PUBACK without a timeout of their own (``math.inf``). A
   dead connection is noticed by keepalive; it ends the receiver, and every publish still
   waiting, so the session ends.
7. A refused certificate or TLS failure is diagnosed with a direct handshake and logged and
   reported as such (``last_error`` starts with ``tls:``), never as a bare timeout or a
   closed connection (which is all MQTT can say about it).
8. A storage error in the outbox ends the session (like a lost connection), never the agent:
   the uplink reconnects and tries again.
9. An ack asking for a *rebirth* (whatever its epoch) makes the sender publish the status and
   the birth again before its next batch: the hub lost or dropped them.
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

from edge.errors import OutboxError
from edge.outbox import Outbox, Row
from shared import messages, topics
from shared.errors import MqttError, WireError
from shared.mqtt import Connection, ConnectOptions, Mqtt, Transport, Will
from shared.outbox import thinned_holes
from shared.probe import probe
from shared.sending import Ack as SentAck
from shared.sending import Cursors
from shared.tls import TlsFiles, client_context

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 200 * 1024


@dataclass(frozen=True)
class UplinkConfig:
    site: str
    host: str
    port: int
    tls: TlsFiles
    keepalive_s: int = 30
    batch_max_records: int = 500
    replay_rate: float = 2000.0
    reconnect_initial_s: float = 0.25
    reconnect_max_s: float = 3.0


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
    """Owns the MQTT connection of one site; run :meth:`run` as a task."""

    def __init__(
        self,
        cfg: UplinkConfig,
        outbox: Outbox,
        *,
        boot: str,
        birth: Callable[[], messages.Birth],
        on_command: Callable[[messages.Command], Awaitable[None]],
        clock: Callable[[], float] = time.time,
        transport: Transport | None = None,
    ) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self.boot = boot
        self._birth = birth
        self._on_command = on_command
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._rebirth = False
        """The hub asked for status and birth again; the sender publishes them next."""
        self.connected = asyncio.Event()
        self.counters = UplinkCounters()
        self._tls = client_context(cfg.tls)
        self._mqtt = Mqtt(self._options, transport=transport, backoff=(cfg.reconnect_initial_s, cfg.reconnect_max_s))
        self._cur = Cursors(outbox)
        """Live and replay cursors (valid while connected; shared/sending.py)."""

    def notify(self) -> None:
        """New records are in the outbox: wake the sender."""
        self._wakeup.set()

    def _status(self, state: messages.SiteState) -> bytes:
        return messages.encode(messages.Status(site=self.cfg.site, state=state, boot=self.boot, ts=self._clock()))

    def _options(self) -> ConnectOptions:
        # A fresh TLS context per connection picks up a renewed certificate; it trusts the
        # project's CA alone (the broker's certificate is the project's), at a few kB a context.
        self._tls = client_context(self.cfg.tls)
        will = Will(
            topic=topics.site_topic(self.cfg.site, topics.SiteChannel.STATUS),
            payload=self._status(messages.SiteState.OFFLINE),
            qos=1,
            retain=True,
        )
        return ConnectOptions(
            host=self.cfg.host,
            port=self.cfg.port,
            client_id=self.cfg.site,
            tls=self._tls,
            keepalive_s=self.cfg.keepalive_s,
            timeout_s=10,
            will=will,
        )

    async def run(self) -> None:
        """Connect, serve, and reconnect forever (until cancelled)."""
        await self._mqtt.run(self._session, on_lost=self._lost)

    async def _session(self, client: Connection) -> None:
        try:
            await self._serve(client)
        except* OutboxError as group:
            # rule 8: the outbox failed; end this session as if the link were lost
            raise MqttError(f"outbox: {group.exceptions[0]}") from group

    async def _lost(self, exc: MqttError) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.counters.connected_since = None
        if was_connected:
            self.counters.disconnects += 1
            self.counters.last_error = f"mqtt: {exc}"
            log.warning("uplink.disconnected", extra={"error": str(exc)})
        else:
            self.counters.last_error = await asyncio.to_thread(self._diagnose, str(exc))
            log.warning("uplink.connect_failed", extra={"error": self.counters.last_error})

    def _diagnose(self, mqtt_error: str) -> str:
        """Tell a TLS refusal from a broker that is simply not there."""
        try:
            answer = probe(self.cfg.host, self.cfg.port, self._tls, f"{self.cfg.site}-probe", timeout_s=3)
        except ssl.SSLError as exc:
            return f"tls: {exc.reason or exc}"
        except OSError as exc:
            return f"unreachable: {exc}"
        if not answer:
            return "tls: the broker closed the connection after the handshake (certificate refused?)"
        return f"mqtt: {mqtt_error}"

    async def _announce(self, client: Connection) -> None:
        """Status ``online`` and the birth, retained: on every connect, and again on a rebirth ask."""
        cfg = self.cfg
        await client.publish(
            topics.site_topic(cfg.site, topics.SiteChannel.STATUS),
            self._status(messages.SiteState.ONLINE),
            qos=1,
            retain=True,
        )
        await client.publish(
            topics.site_topic(cfg.site, topics.SiteChannel.BIRTH), messages.encode(self._birth()), qos=1, retain=True
        )

    async def _serve(self, client: Connection) -> None:
        cfg = self.cfg
        self._rebirth = False
        await self._announce(client)
        await client.subscribe(topics.site_topic(cfg.site, topics.SiteChannel.ACK), qos=1)
        await client.subscribe(topics.site_topic(cfg.site, topics.SiteChannel.CMD), qos=1)
        # Everything held is unacked: replay it; everything from now on is live.
        replay = self._cur.connected()
        self.counters.connects += 1
        self.counters.connected_since = self._clock()
        self.connected.set()
        log.info("uplink.connected", extra={"site": cfg.site, "replay": replay})
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._sender(client), name="uplink.sender")
            tg.create_task(self._receiver(client), name="uplink.receiver")

    async def _sender(self, client: Connection) -> None:
        data_topic = topics.site_topic(self.cfg.site, topics.SiteChannel.DATA)
        limit = self.cfg.batch_max_records
        while True:
            self._wakeup.clear()
            if self._rebirth:
                self._rebirth = False
                self.counters.rebirths += 1
                log.info("uplink.rebirth", extra={"site": self.cfg.site})
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
        """The DataBatch of as many of ``rows`` (read from ``from_seq`` on) as fit (the rest are
        dropped from ``rows``), from the stored record encodings, naming the thinned holes."""
        floor = self.outbox.floor_seq()
        payload, n = messages.encode_batch(
            self.cfg.site,
            self.boot,
            [row.payload for row in rows],
            floor_seq=floor,
            epoch=self.outbox.epoch,
            thinned=thinned_holes(rows, max(from_seq, floor)),
            historical=historical,
            max_bytes=MAX_BATCH_BYTES,
        )
        del rows[n:]
        return payload

    async def _receiver(self, client: Connection) -> None:
        async for msg in client.messages:
            payload = msg.payload
            try:
                parsed = topics.parse(msg.topic)
                if not isinstance(parsed, topics.SiteTopic) or parsed.site != self.cfg.site:
                    raise WireError(f"unexpected topic {msg.topic}")
                if parsed.channel is topics.SiteChannel.ACK:
                    self._on_ack(messages.decode(messages.Ack, payload))
                elif parsed.channel is topics.SiteChannel.CMD:
                    await self._on_command(messages.decode(messages.Command, payload))
            except WireError as exc:
                self.counters.bad_messages += 1
                log.warning("uplink.bad_message", extra={"topic": msg.topic, "error": str(exc)})

    def _on_ack(self, ack: messages.Ack) -> None:
        self.counters.acks += 1
        if ack.rebirth:  # the hub lacks our status or birth, whatever epoch it speaks of
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
