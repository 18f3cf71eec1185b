"""``jikimi hub run``: the hub process — one TaskGroup with the writer, the MQTT owner, the
ticker and the API as named tasks.

Usable in-process (tests, the demo, other packages' tests)::

    async with running(config) as hub:
        ...  # hub.api_port, hub.reader, hub.writer, hub.engine.counters

Start order: the writer opens the database (migrations, then the engine's memory is loaded)
before anything can produce work for it; then MQTT, the ticker and the API. Stop order: MQTT
says ``offline`` and disconnects; then the rest is cancelled; the writer finishes the
transaction it is in and closes the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import aiohttp

from hub import cctv
from hub.alerting import AlarmAlerts, EvidenceQueue, notice_for, operation_notice
from hub.cctv import CctvLinker
from hub.commands import CommandState, Draft, OperationKind
from hub.config import HubConfig
from hub.engine import CommandOut, Engine, OperationOut
from hub.errors import Refused
from hub.forward import outbox as fwd_outbox
from hub.forward.capread import CapSchema, default_schema_path
from hub.forward.deliver import Forwarder, HttpTransport
from hub.forward.outbox import Escalation
from hub.forward.plan import Change
from hub.forward.tx import WriteTx, apply_migrations
from hub.inbound import Inbound
from hub.live import Broadcaster, LiveEvent
from hub.mqtt import HubMqtt, NotConnected
from hub.roles import Role
from hub.store import Reader, Tx, Writer
from shared.messages import Ack
from shared.signing import load_private_key

log = logging.getLogger(__name__)

T = TypeVar("T")
TICK_S = 1.0


class Hub:
    """The hub's parts, wired together. :func:`running` starts and stops them."""

    def __init__(self, cfg: HubConfig, *, client_id: str | None = None,
                 observer: Callable[[Sequence[Inbound], float], None] | None = None) -> None:
        self.cfg = cfg
        self.bus = Broadcaster()
        self.writer: Writer[Inbound] = Writer(cfg.db_path, queue_max=cfg.ingest.queue_max,
                                              max_records=cfg.ingest.max_records_per_tx,
                                              linger_s=cfg.ingest.linger_s)
        self.mqtt = HubMqtt(cfg, self.writer.put, client_id=client_id)
        self.engine = Engine(cfg, load_private_key(cfg.commands.signing_key), self, observer=observer)
        self.writer.bind(self.engine.ingest, self._on_open)
        self.forwarder: Forwarder | None = None
        self.linker: CctvLinker | None = None
        self.evidence = EvidenceQueue()
        if cfg.forward is not None:
            self.engine.alerts = AlarmAlerts(cfg, wake=self._wake_forwarder,
                                             capture=self.evidence.put if cfg.cctv is not None else None)
        self.reader = Reader(cfg.db_path)
        self.started_at = time.time()
        self.api_port: int | None = None
        self.enrolment_url: str | None = None
        self._stop = asyncio.Event()

    def _on_open(self, conn: sqlite3.Connection) -> None:
        apply_migrations(conn, [fwd_outbox.migrations, cctv.migrations])
        self.engine.load(conn)

    def _wake_forwarder(self) -> None:
        if self.forwarder is not None:
            self.forwarder.wake()

    def _escalated(self, tx: WriteTx, esc: Escalation, /) -> None:
        """An alert was not acknowledged in time: the console shows it at once (and the log)."""
        log.error("forward.escalated", extra={"identifier": esc.identifier, "recipient": esc.recipient,
                                              "escalated_to": esc.escalated_to, "last_error": esc.last_error})
        body = {"delivery_id": esc.delivery_id, "identifier": esc.identifier, "thread": esc.thread,
                "recipient": esc.recipient, "headline": esc.headline, "state": esc.state,
                "attempts": esc.attempts, "last_error": esc.last_error, "escalated_to": esc.escalated_to}
        self.bus.publish(LiveEvent.of("escalation", body))

    async def _cctv(self) -> None:
        """Captures evidence for raised alarms and sends it as an update of the alert's thread."""
        assert self.linker is not None
        while True:
            facts, position = await self.evidence.queue.get()
            capture = await self.linker.capture(position, f"alarm:{facts.alarm_id}")
            if capture.evidence and self.forwarder is not None:
                notice = notice_for(facts, Change.UPDATE, position, evidence=capture.evidence)
                await self.forwarder.enqueue(notice, pictures=capture.pictures)

    async def _enrolment(self) -> None:
        """The field-enrolment endpoint (HTTPS with the hub's certificate) until cancelled."""
        from provisioning.broker import BrokerError, refresh_acl
        from provisioning.enroll import EnrolmentService, EnrolmentStore, serve_enrolment
        from provisioning.pki import Pki

        en = self.cfg.enrolment
        assert en is not None

        def on_issued(cn: str) -> None:
            if en.broker_dir is None:
                return
            pid = None
            if en.broker_pid_file is not None:
                try:
                    pid = int(en.broker_pid_file.read_text().strip())
                except (OSError, ValueError) as exc:
                    log.error("enrol.broker_pid_unreadable", extra={"file": str(en.broker_pid_file),
                                                                    "error": str(exc)})
            try:
                refresh_acl(en.pki_dir, en.broker_dir, pid)
            except BrokerError as exc:
                log.error("enrol.acl_refresh_failed", extra={"site": cn, "error": str(exc)})

        service = EnrolmentService(Pki(en.pki_dir), EnrolmentStore(en.db_path), mqtt_host=en.mqtt_host,
                                   mqtt_port=en.mqtt_port, on_issued=on_issued)
        async with serve_enrolment(service, self.cfg.broker.tls, en.host, en.port) as url:
            self.enrolment_url = url
            log.info("enrol.listening", extra={"url": url})
            await asyncio.Event().wait()

    async def _purge_evidence(self) -> None:
        assert self.linker is not None
        while True:
            await self.linker.purge()
            await asyncio.sleep(3600)

    # --- Outlet (the engine's after-commit effects) ----------------------------------------

    def send_ack(self, ack: Ack) -> None:
        self.mqtt.offer_ack(ack)

    def puback(self, generation: int, mids: list[int]) -> None:
        self.mqtt.puback(generation, mids)

    def live(self, event: LiveEvent) -> None:
        self.bus.publish(event)

    def wants_live(self) -> bool:
        return self.bus.has_subscribers

    # --- operations the API calls ----------------------------------------------------------

    async def write(self, fn: Callable[[Tx], T]) -> T:
        return await self.writer.call(fn)

    async def _dispatch(self, out: CommandOut) -> CommandOut:
        if out.wire is None:
            return out
        try:
            await self.mqtt.publish_command(out.wire)
        except NotConnected as exc:
            detail = str(exc)
            await self.writer.call(lambda tx: self.engine.mark_sent(tx, out.cmd_id, False, detail))
            return CommandOut(out.cmd_id, CommandState.SEND_FAILED, out.wire)
        await self.writer.call(lambda tx: self.engine.mark_sent(tx, out.cmd_id, True))
        return CommandOut(out.cmd_id, CommandState.SENT, out.wire)

    async def issue_command(self, draft: Draft, actor: str, role: Role, reason: str) -> CommandOut:
        out = await self.writer.call(lambda tx: self.engine.create_command(tx, draft, actor, role, reason))
        return await self._dispatch(out)

    async def approve_command(self, cmd_id: str, approver: str, role: Role, reason: str) -> CommandOut:
        out = await self.writer.call(lambda tx: self.engine.approve_command(tx, cmd_id, approver, role, reason))
        if out.refusal:
            raise Refused(out.refusal)
        return await self._dispatch(out)

    async def start_operation(self, kind: OperationKind, area: str, actor: str, role: Role,
                              reason: str) -> OperationOut:
        op = await self.writer.call(lambda tx: self.engine.create_operation(tx, kind, area, actor, role, reason))
        if self.forwarder is not None:  # evacuate (responseType Evacuate) and block go out as CAP alerts too
            notice = operation_notice(self.cfg, op.operation_id, kind.value, area, actor, reason, time.time())
            if notice is None:
                log.error("forward.area_unplaced", extra={"area": area, "operation": op.operation_id})
            else:
                await self.forwarder.enqueue(notice)
        sent = await asyncio.gather(*(self._dispatch(c) for c in op.commands))
        return OperationOut(op.operation_id, tuple(sent))

    # --- running ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            await self.writer.call(self.engine.tick)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Run until :meth:`stop`; a crash in any task ends the hub (systemd restarts it)."""
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(self.writer.run(), name="hub.writer")
            await self.writer.ready.wait()
            mqtt = tg.create_task(self.mqtt.run(self._stop), name="hub.mqtt")
            others = [tg.create_task(self._ticker(), name="hub.ticker"),
                      tg.create_task(self.writer.checkpointer(), name="hub.checkpointer")]
            stack = contextlib.AsyncExitStack()
            if self.cfg.forward is not None:
                transport = await stack.enter_async_context(HttpTransport.open())
                schema = CapSchema() if default_schema_path().is_file() else None
                if schema is None:
                    log.warning("forward.no_cap_schema", extra={"path": str(default_schema_path())})
                self.forwarder = Forwarder(self.cfg.forward, self.writer, transport, escalation=self._escalated,
                                           schema=schema)
                others.append(tg.create_task(self.forwarder.run(), name="hub.forwarder"))
            if self.cfg.enrolment is not None:
                others.append(tg.create_task(self._enrolment(), name="hub.enrolment"))
            if self.cfg.cctv is not None:
                session = await stack.enter_async_context(aiohttp.ClientSession())
                self.linker = CctvLinker(self.cfg.cctv, self.writer, session)
                others += [tg.create_task(self._cctv(), name="hub.cctv"),
                           tg.create_task(self._purge_evidence(), name="hub.evidence_purge")]
            api_ready = asyncio.Event()
            if self.cfg.api.enabled:
                from hub.api import serve  # the API sits on top of everything else

                others.append(tg.create_task(serve(self, api_ready), name="hub.api"))
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
        log.info("hub.stopped", extra={"hub": self.cfg.hub_id})


@asynccontextmanager
async def running(cfg: HubConfig, *, wait_connected: bool = True, client_id: str | None = None,
                  observer: Callable[[Sequence[Inbound], float], None] | None = None) -> AsyncIterator[Hub]:
    """Start a hub in this event loop and stop it cleanly when the block ends."""
    hub = Hub(cfg, client_id=client_id, observer=observer)
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
        await hub.run()

    asyncio.run(go())
    return 0
