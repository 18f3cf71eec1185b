"""``jikimi province run``: the provincial hub's ingest of every city's stream (DESIGN §8).

Rules:

1. One MQTT connection to the provincial broker as the ``province-*`` identity, subscribed to
   every city's status, birth and data (``shared.topics.all_cities``), with manual PUBACK: a
   message is acknowledged to the broker only after the store has committed (or quarantined) it.
2. The store (province/store.py) is the file's one writer; messages are handled one at a time on
   the event loop, each one short transaction.
3. After each batch the province publishes the city's :class:`~shared.messages.CityAck` on
   ``jk/v1/city/{city}/ack``: ``through_seq`` of what is committed, ``resend_from`` for a gap.
4. A gap left by a city that has gone quiet is asked for again on a tick (every
   ``resend_interval_s``), so no city waits for its own next batch to be asked.
5. Requests down: on the same tick every request its city has not answered yet (province/store.py
   rule 6) is published on ``jk/v1/city/{city}/req`` again, since a bridge does not queue what goes
   down to a city whose link is broken; the city answers a repeat with the answer it gave.

6. The HTTPS API (province/api.py, when ``[api]`` is configured) is a task beside the ingest in
   the one TaskGroup; it reads on the hub's reader threads and writes sessions through the store.
7. With ``[forward]``, provincial CAP alerts of cross-boundary incidents (province/alerts.py):
   forwarding's loop and the incidents' tick are tasks in the same TaskGroup.

Usable in-process (tests)::

    async with running(config) as province:
        ...  # province.api_port, province.store, province.ingest.connected
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator

from hub.forward.capread import shipped_schema
from hub.forward.config import ForwardConfig
from hub.forward.deliver import Forwarder, HttpTransport
from hub.forward.tx import Detail, LocalWriter
from province import alerts, api
from province.config import ProvinceConfig
from province.store import ProvinceStore
from shared import messages, topics
from shared.errors import MqttError
from shared.mqtt import Connection, ConnectOptions, Mqtt
from shared.tls import client_context

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 3600
"""The broker keeps the province's subscriptions and queued city messages this long across a
restart of the province (clean start off)."""


class ProvinceIngest:
    """The MQTT shell around the store (rules 1-4)."""

    def __init__(self, cfg: ProvinceConfig, store: ProvinceStore) -> None:
        self.cfg = cfg
        self.store = store
        self.mqtt = Mqtt(self._options, incoming_max=cfg.ingest.incoming_max)
        self.connected = asyncio.Event()
        self._stop = asyncio.Event()

    def _options(self) -> ConnectOptions:
        b = self.cfg.broker
        return ConnectOptions(host=b.host, port=b.port, client_id=self.cfg.province_id, tls=client_context(b.tls),
                              keepalive_s=b.keepalive_s, receive_maximum=self.cfg.ingest.receive_maximum,
                              session_expiry_s=SESSION_EXPIRY_S, manual_ack=True, max_inflight=1000)

    async def _session(self, conn: Connection) -> None:
        for channel in (topics.CityChannel.STATUS, topics.CityChannel.BIRTH, topics.CityChannel.DATA):
            await conn.subscribe(topics.all_cities(channel), qos=1)
        self.connected.set()
        log.info("province.connected", extra={"id": self.cfg.province_id, "generation": conn.generation})
        try:
            async with asyncio.TaskGroup() as tg:
                receiver = tg.create_task(self._receive(conn), name="province.receive")
                ticks = tg.create_task(self._ticks(conn), name="province.resend_ticks")
                await self._stop.wait()
                receiver.cancel()
                ticks.cancel()
        finally:
            self.connected.clear()

    async def _receive(self, conn: Connection) -> None:
        """Rules 1-3: commit (or quarantine), then PUBACK, then the city's ack."""
        async for msg in conn.messages:
            ack = self.store.receive(msg.topic, msg.payload, time.time())
            self.mqtt.ack(msg.generation, [msg.mid])
            if ack is not None:
                await conn.publish(topics.city_topic(ack.city, topics.CityChannel.ACK), messages.encode(ack), qos=1)

    async def _ticks(self, conn: Connection) -> None:
        """Rules 4 and 5."""
        while True:
            await asyncio.sleep(self.cfg.ingest.resend_interval_s)
            now = time.time()
            for req in self.store.unanswered(now):
                await conn.publish(topics.city_topic(req.city, topics.CityChannel.REQ), messages.encode(req), qos=1)
            for (city, epoch), seqs in list(self.store.links.seqs.items()):
                if seqs.held and seqs.want_resend(now, self.store.links.grace_s, self.store.links.interval_s):
                    ack = messages.CityAck(city=city, epoch=epoch, through_seq=seqs.through,
                                           resend_from=seqs.through + 1)
                    await conn.publish(topics.city_topic(city, topics.CityChannel.ACK), messages.encode(ack), qos=1)

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop`` is set."""
        self._stop = stop
        await self.mqtt.run(self._session, stop=stop, on_lost=self._lost)

    async def _lost(self, exc: MqttError) -> None:
        log.warning("province.disconnected", extra={"error": self.mqtt.last_error})


class Province:
    """The provincial hub's parts: the store, the ingest and (``[api]``) the API."""

    def __init__(self, cfg: ProvinceConfig) -> None:
        self.cfg = cfg
        self.store = ProvinceStore(cfg.db_path, ingest_cfg=cfg.ingest)
        self.ingest = ProvinceIngest(cfg, self.store)
        self.api_port: int | None = None
        self.forwarder: Forwarder | None = None
        self.alerts: alerts.ProvincialAlerts | None = None

    def _listening(self, port: int) -> None:
        self.api_port = port

    def _audit(self, actor: str, action: str, target: str, detail: Detail | None = None) -> None:
        """Forwarding's audit rows, in the province's own hash chain (province/alerts.py rule 4)."""
        self.store.write(lambda tx: tx.audit(actor, action, target, detail), time.time())

    async def _alerts(self, fwd: ForwardConfig, stack: contextlib.AsyncExitStack,
                      tg: asyncio.TaskGroup) -> list[asyncio.Task[None]]:
        """Provincial CAP alerts (province/alerts.py): forwarding's writer, transport and loop."""
        writer = await stack.enter_async_context(
            LocalWriter.open(self.cfg.db_path.with_name(alerts.FORWARD_FILE), self._audit))
        transport = await stack.enter_async_context(HttpTransport.open())
        self.forwarder = Forwarder(fwd, writer, transport, schema=shipped_schema())
        distance = self.cfg.distance_m
        self.alerts = alerts.ProvincialAlerts(fwd, self.forwarder, lambda: self.store.provincial_incidents(distance),
                                              every_s=self.cfg.alert_every_s, clock=time.time)
        return [tg.create_task(self.forwarder.run(), name="province.forwarder"),
                tg.create_task(self.alerts.run(), name="province.alerts")]

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set; a crash in any task ends the province (systemd restarts it)."""
        host = api.ProvinceHost(self.cfg, self.store, connected=self.ingest.connected.is_set)
        try:
            async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as tg:
                ingest = tg.create_task(self.ingest.run(stop), name="province.ingest")
                others = []
                if self.cfg.forward is not None:
                    others = await self._alerts(self.cfg.forward, stack, tg)
                api_ready = asyncio.Event()
                served = None
                if self.cfg.api.enabled:
                    served = tg.create_task(api.serve(host, api_ready, self._listening), name="province.api")
                    await api_ready.wait()
                if ready is not None:
                    ready.set()
                await ingest
                if served is not None:
                    served.cancel()
                for task in others:
                    task.cancel()
        finally:
            host.close()
            self.store.close()


async def serve(cfg: ProvinceConfig, stop: asyncio.Event) -> None:
    await Province(cfg).run(stop)


@contextlib.asynccontextmanager
async def running(cfg: ProvinceConfig) -> AsyncIterator[Province]:
    """Start the province in this event loop (its API listening) and stop it when the block ends."""
    province = Province(cfg)
    stop, ready = asyncio.Event(), asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(province.run(stop, ready), name="province")
        await ready.wait()  # a start-up failure cancels this wait and the TaskGroup raises it
        try:
            yield province
        finally:
            stop.set()


def main(cfg: ProvinceConfig) -> int:
    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(cfg, stop)

    asyncio.run(run())
    return 0
