"""``jikimi hub run``: the hub process — one TaskGroup with the writer, the MQTT owner, the
ticker and the API as named tasks. This is the composition root: it builds the parts, wires
them, and runs them; the work is the parts'.

Usable in-process (tests, the demo, other packages' tests)::

    async with running(config) as hub:
        ...  # hub.api_port, hub.reader, hub.writer, hub.ops (use cases), hub.engine.counters

Wiring: the writer runs the engine (hub/engine.py: ingest, tick, the desks); the engine's
after-commit effects go to a :class:`~hub.outlet.HubOutlet` (acks and PUBACKs to MQTT, live
events to the console's broadcaster); the API (hub/api.py) calls the use-case layer
(hub/operations.py). One clock (``clock``) is passed to every part that reads the time.

Start order: the writer opens the database (migrations, then the engine's memory is loaded)
before anything can produce work for it; then MQTT, the ticker and the API. Stop order: MQTT
says ``offline`` and disconnects; then the rest is cancelled; the writer finishes the
transaction it is in and closes the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from hub import api, evidence, heap
from hub.alerting import AlarmAlerts, EvidenceQueue, count_drops
from hub.anchor import Anchor
from hub.cctv import CctvLinker
from hub.commanddesk import CommandOut
from hub.config import HubConfig
from hub.engine import Engine
from hub.errors import HubError
from hub.forward.capread import shipped_schema
from hub.forward.deliver import Forwarder, HttpTransport
from hub.forward.outbox import Escalation
from hub.forward.tx import WriteTx
from hub.inbound import Inbound
from hub.intake import Observer
from hub.live import Broadcaster, EscalationRaised, LiveEvent
from hub.liveview import LiveView, RtspOpener, SourceOpener
from hub.mqtt import HubMqtt, NotConnected
from hub.operations import Operations
from hub.outlet import HubOutlet
from hub.store import Clock, Reader, Tx, Writer
from hub.upstream import Upstream, deliveries_now, sites_now
from shared.messages import CityRequest, Command
from shared.signing import load_private_key

log = logging.getLogger(__name__)

TICK_S = 1.0


class _MqttLink:
    """The use cases' :class:`~hub.operations.CommandLink` over the MQTT owner."""

    def __init__(self, mqtt: HubMqtt) -> None:
        self.mqtt = mqtt

    def is_connected(self) -> bool:
        return self.mqtt.connected.is_set()

    async def send(self, cmd: Command) -> str | None:
        try:
            await self.mqtt.publish_command(cmd)
        except NotConnected as exc:
            return str(exc)
        return None


class Hub:
    """The hub's parts, wired together. :func:`running` starts and stops them."""

    def __init__(self, cfg: HubConfig, *, client_id: str | None = None, observer: Observer | None = None,
                 clock: Clock = time.time, live_sources: SourceOpener | None = None) -> None:
        self.cfg = cfg
        self.live_sources = live_sources or RtspOpener(cfg.live_view.open_timeout_s)
        """Where live video comes from (hub/liveview.py): the cameras' RTSP streams."""
        self.clock = clock
        self.bus = Broadcaster()
        self.writer: Writer[Inbound] = Writer(cfg.db_path, queue_max=cfg.ingest.queue_max,
                                              max_records=cfg.ingest.max_records_per_tx,
                                              linger_s=cfg.ingest.linger_s, clock=clock)
        self.mqtt = HubMqtt(cfg, self.writer.put, client_id=client_id, clock=clock)
        self.outlet = HubOutlet(self.mqtt.offer_ack, self.mqtt.puback, self.bus)
        self.upstream: Upstream | None = None
        if cfg.province is not None:
            self.upstream = Upstream(cfg, cfg.province, boot=f"{int(clock())}-{secrets.token_hex(3)}", clock=clock)
            self.outlet.on_change = self.upstream.changed
            self.mqtt.upstream = self.upstream.uplink
        self.engine = Engine(cfg, load_private_key(cfg.commands.signing_key), self.outlet, observer=observer,
                             clock=clock)
        self.writer.bind(self.engine.ingest, self.engine.load)
        self.captures = EvidenceQueue()
        if cfg.forward is not None:
            self.engine.alerts = AlarmAlerts(cfg, wake=self._wake_forwarder,
                                             capture=self.captures.put if cfg.cctv is not None else None)
            self.engine.alerts.desk = self.engine.alarms  # escalations are alarms (hub/alerting.py rule 6)
        self.reader = Reader(cfg.db_path)
        self.ops = Operations(cfg, self.engine, self.writer, self.reader, self.bus, _MqttLink(self.mqtt), clock=clock)
        self._requests: set[asyncio.Task[None]] = set()
        if self.upstream is not None:
            self.ops.upstream = self.upstream
            self.upstream.on_request = self._province_request
        self.anchor = Anchor(cfg.audit, clock) if cfg.audit is not None else None
        """Signs checkpoints of the audit chain's head (hub/anchor.py)."""
        self.api_port: int | None = None
        self.enrolment_url: str | None = None
        self._stop = asyncio.Event()

    def _wake_forwarder(self) -> None:
        if self.ops.forwarder is not None:
            self.ops.forwarder.wake()

    def _escalated(self, tx: WriteTx, esc: Escalation, /) -> None:
        """An alert was not acknowledged in time: an alarm in the console (hub/alerting.py rule 6),
        the live event once committed, and the log."""
        assert isinstance(tx, Tx)  # the forwarder writes through the hub's writer
        alerts = self.engine.alerts
        if alerts is not None:
            alerts.escalated(tx, esc)
        log.error("forward.escalated", extra={"identifier": esc.identifier, "recipient": esc.recipient,
                                              "escalated_to": esc.escalated_to, "last_error": esc.last_error})
        event = LiveEvent.of(EscalationRaised(
            delivery_id=esc.delivery_id, identifier=esc.identifier, thread=esc.thread, recipient=esc.recipient,
            headline=esc.headline, state=esc.state, attempts=esc.attempts, last_error=esc.last_error,
            escalated_to=esc.escalated_to))
        # after the commit, on the event loop (the transaction runs on the writer's thread)
        tx.after_commit(lambda: self.bus.publish(event))

    async def _enrolment(self) -> None:
        """The field-enrolment endpoint (HTTPS with the hub's certificate) until cancelled."""
        from trust.broker import BrokerError, ManagedBroker
        from trust.enrolment import EnrolmentService, EnrolmentStore, serve_enrolment
        from trust.pki import Pki

        en = self.cfg.enrolment
        assert en is not None
        managed = ManagedBroker(en.pki_dir, en.broker_dir, en.broker_pid_file)

        def on_issued(cn: str) -> None:
            try:
                managed.refresh()
            except (BrokerError, OSError) as exc:
                log.error("enrol.acl_refresh_failed", extra={"site": cn, "error": str(exc)})

        service = EnrolmentService(Pki(en.pki_dir), EnrolmentStore(en.db_path), mqtt_host=en.mqtt_host,
                                   mqtt_port=en.mqtt_port, on_issued=on_issued, ready=managed.problem)
        async with serve_enrolment(service, self.cfg.broker.tls, en.host, en.port) as url:
            self.enrolment_url = url
            log.info("enrol.listening", extra={"url": url})
            await asyncio.Event().wait()

    def _listening(self, port: int) -> None:
        self.api_port = port

    # --- running ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            drops = self.captures.take_uncounted()
            await self.writer.call(functools.partial(self._tick, dropped_captures=drops))

    async def _prealerts(self, outbox: asyncio.Queue[CommandOut]) -> None:
        """Publish the network forecast's signed prealerts (hub/forecastdesk.py rule 4) as the
        operators' commands are: PUBACK marks them sent, a failure ``send_failed``."""
        link = _MqttLink(self.mqtt)
        desk = self.engine.commands
        while True:
            out = await outbox.get()
            assert out.wire is not None
            problem = await link.send(out.wire)
            await self.writer.call(functools.partial(desk.mark_sent, cmd_id=out.cmd_id, ok=problem is None,
                                                     detail=problem or ""))

    def _province_request(self, req: CityRequest) -> None:
        """A request from the province: decided in its own task, so the receiver goes on."""

        async def decide() -> None:
            try:
                await self.ops.province_request(req)
            except HubError as exc:
                log.error("province.request_failed", extra={"request": req.request_id, "error": str(exc)})

        task = asyncio.create_task(decide(), name=f"hub.province_request:{req.request_id}")
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _report_sites(self, upstream: Upstream) -> None:
        """hub/upstream.py rule 5: every site's state and data age, and every alert delivery, when
        changed, every few seconds (at once on start: rule 6)."""
        every = upstream.link.site_state_every_s
        since = 0.0
        while True:
            now = self.clock()
            sites, deliveries = await self.writer.call(
                functools.partial(lambda tx, after: (sites_now(self.engine.state), deliveries_now(tx.conn, after)),
                                  after=since))
            upstream.report_sites(sites)
            upstream.report_deliveries(deliveries)
            since = now - 2 * every  # a delivery settled during the last query is seen by the next
            await asyncio.sleep(every)

    def _tick(self, tx: Tx, dropped_captures: int) -> None:
        self.engine.tick(tx)
        if self.engine.alerts is not None:
            self.engine.alerts.settle(tx)
            count_drops(tx, dropped_captures)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Run until :meth:`stop`; a crash in any task ends the hub (systemd restarts it)."""
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(self.writer.run(), name="hub.writer")
            await self.writer.ready.wait()
            mqtt = tg.create_task(self.mqtt.run(self._stop), name="hub.mqtt")
            others = [tg.create_task(self._ticker(), name="hub.ticker"),
                      tg.create_task(self.writer.checkpointer(), name="hub.checkpointer")]
            if self.anchor is not None:
                others.append(tg.create_task(self.anchor.run(self.reader), name="hub.audit_anchor"))
            if self.upstream is not None:
                others.append(tg.create_task(self._report_sites(self.upstream), name="hub.province_sites"))
            if self.engine.forecast is not None:
                others.append(tg.create_task(self._prealerts(self.engine.forecast.outbox),
                                             name="hub.forecast_prealerts"))
            stack = contextlib.AsyncExitStack()
            if self.cfg.forward is not None:
                transport = await stack.enter_async_context(HttpTransport.open())
                self.ops.forwarder = Forwarder(self.cfg.forward, self.writer, transport, escalation=self._escalated,
                                               schema=shipped_schema())  # CAP is refused unless it validates
                others.append(tg.create_task(self.ops.forwarder.run(), name="hub.forwarder"))
            if self.cfg.enrolment is not None:
                others.append(tg.create_task(self._enrolment(), name="hub.enrolment"))
            if self.cfg.cctv is not None:
                session = await stack.enter_async_context(aiohttp.ClientSession())
                linker = self.ops.linker = CctvLinker(self.cfg.cctv, self.writer, session, clock=self.clock)
                others += [tg.create_task(evidence.capture_loop(self.captures, linker, self.ops.forwarder),
                                          name="hub.cctv"),
                           tg.create_task(evidence.purge_loop(linker), name="hub.evidence_purge")]
                live = self.ops.live = LiveView(self.cfg.live_view, self.cfg.cctv.cameras, self.writer,
                                                self.live_sources, clock=self.clock)
                others.append(tg.create_task(live.run(), name="hub.liveview"))
            api_ready = asyncio.Event()
            if self.cfg.api.enabled:
                others.append(tg.create_task(api.serve(self.ops, api_ready, self._listening), name="hub.api"))
            else:
                api_ready.set()
            await api_ready.wait()
            log.info("hub.started", extra={"hub": self.cfg.hub_id, "db": str(self.cfg.db_path),
                                           "api_port": self.api_port})
            if ready is not None:
                ready.set()
            await self._stop.wait()
            await mqtt
            for task in others:
                task.cancel()
            await asyncio.wait(others)  # the API and ticker end before the writer does
            await stack.aclose()
            writer.cancel()
        self.reader.close()
        if self.upstream is not None:
            self.upstream.close()
        if self.anchor is not None:  # the writer has closed: this checkpoint sees the last row
            await asyncio.to_thread(self.anchor.final, self.cfg.db_path)
        log.info("hub.stopped", extra={"hub": self.cfg.hub_id})


@asynccontextmanager
async def running(cfg: HubConfig, *, wait_connected: bool = True, client_id: str | None = None,
                  observer: Observer | None = None, clock: Clock = time.time,
                  live_sources: SourceOpener | None = None) -> AsyncIterator[Hub]:
    """Start a hub in this event loop and stop it cleanly when the block ends."""
    hub = Hub(cfg, client_id=client_id, observer=observer, clock=clock, live_sources=live_sources)
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(hub.run(ready), name="hub")
        await ready.wait()  # a start-up failure cancels this wait and the TaskGroup raises it
        if wait_connected:
            async with asyncio.timeout(15):
                await hub.mqtt.connected.wait()
        try:
            yield hub
        finally:
            hub.stop()


def main(cfg: HubConfig) -> int:
    """The entry point of ``jikimi hub run``: run until SIGTERM or Ctrl-C."""

    async def go() -> None:
        hub = Hub(cfg)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, hub.stop)
        with heap.kept(loop):
            await hub.run()

    asyncio.run(go())
    return 0
