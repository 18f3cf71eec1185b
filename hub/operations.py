"""The hub's use cases, as the operator API calls them: commands, operations, alarm actions,
incidents, evidence, health.

Each use case is one or two write jobs on the single writer (the desks, hub/engine.py), plus
what must follow a commit: a signed command is published to its edge only after the command
row committed, and the PUBACK (or its absence) is recorded in a second job; an area operation's
CAP alert is queued for forwarding after the operation committed.

The API (hub/api.py) sees only this layer and the readers; the composition root
(hub/service.py) builds it. Nothing here reads the wall clock: ``clock`` is injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

from hub import alarms as isa
from hub import requestdesk
from hub.alerting import operation_notice
from hub.apitypes import HealthView
from hub.cctv import CctvLinker
from hub.cctv_geo import Evidence
from hub.commanddesk import CommandOut, OperationOut
from hub.commands import CommandState, Draft, OperationKind
from hub.config import HubConfig
from hub.engine import Engine
from hub.errors import NotFound, Refused
from hub.forward.deliver import Forwarder
from hub.inbound import Inbound
from hub.live import Broadcaster, LiveEvent, ProvinceRequestChanged
from hub.liveview import LiveView
from hub.roles import Role
from hub.store import Clock, Reader, Tx, Writer
from hub.upstream import Upstream
from shared.messages import CityRequest, Command

log = logging.getLogger(__name__)

T = TypeVar("T")


class CommandLink(Protocol):
    """How signed commands reach the edges (the hub's MQTT owner, adapted by the service)."""

    def is_connected(self) -> bool: ...

    async def send(self, cmd: Command) -> str | None:
        """Publish ``cmd`` and wait for its PUBACK; the reason it could not be sent, or None."""
        ...


class Operations:
    """The use-case layer over the writer, the readers and the command link."""

    def __init__(self, cfg: HubConfig, engine: Engine, writer: Writer[Inbound], reader: Reader, bus: Broadcaster,
                 link: CommandLink, *, clock: Clock) -> None:
        self.cfg = cfg
        self.engine = engine
        self.writer = writer
        self.reader = reader
        self.bus = bus
        self.link = link
        self.clock = clock
        self.started_at = clock()
        self.forwarder: Forwarder | None = None
        """Set while forwarding runs (``[forward]``): operations' CAP alerts go through it."""
        self.linker: CctvLinker | None = None
        """Set while the CCTV linkage runs (``[cctv]``): evidence is shown through it."""
        self.live: LiveView | None = None
        """Set while the CCTV linkage runs: live video and view links (hub/liveview.py)."""
        self.upstream: Upstream | None = None
        """Set when the hub reports to the province (``[province]``): requests' answers go through it."""

    async def write(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in a write transaction; its result once committed."""
        return await self.writer.call(fn)

    # --- commands and operations -----------------------------------------------------------

    async def _dispatch(self, out: CommandOut) -> CommandOut:
        if out.wire is None:
            return out
        desk = self.engine.commands
        problem = await self.link.send(out.wire)
        if problem is not None:
            await self.writer.call(lambda tx: desk.mark_sent(tx, out.cmd_id, False, problem))
            return CommandOut(out.cmd_id, CommandState.SEND_FAILED, out.wire)
        await self.writer.call(lambda tx: desk.mark_sent(tx, out.cmd_id, True))
        return CommandOut(out.cmd_id, CommandState.SENT, out.wire)

    async def issue_command(self, draft: Draft, actor: str, role: Role, reason: str,
                            exercise: bool = False) -> CommandOut:
        desk = self.engine.commands
        out = await self.writer.call(lambda tx: desk.create_command(tx, draft, actor, role, reason,
                                                                    exercise=exercise))
        return await self._dispatch(out)

    async def approve_command(self, cmd_id: str, approver: str, role: Role, reason: str) -> CommandOut:
        desk = self.engine.commands
        out = await self.writer.call(lambda tx: desk.approve_command(tx, cmd_id, approver, role, reason))
        if out.refusal:
            raise Refused(out.refusal)
        return await self._dispatch(out)

    async def reject_command(self, cmd_id: str, actor: str, role: Role, reason: str) -> None:
        desk = self.engine.commands
        await self.writer.call(lambda tx: desk.reject_command(tx, cmd_id, actor, role, reason))

    async def start_operation(self, kind: OperationKind, area: str, actor: str, role: Role,
                              reason: str, exercise: bool = False) -> OperationOut:
        desk = self.engine.commands
        op = await self.writer.call(lambda tx: desk.create_operation(tx, kind, area, actor, role, reason, exercise))
        if self.forwarder is not None:  # evacuate (responseType Evacuate) and block go out as CAP alerts too
            notice = operation_notice(self.cfg, op.operation_id, kind.value, area, actor, reason, self.clock())
            if notice is None:
                log.error("forward.area_unplaced", extra={"area": area, "operation": op.operation_id})
            else:  # an exercise's alert says so (CAP status Exercise); nothing else is marked by it
                await self.forwarder.enqueue(dataclasses.replace(notice, exercise=op.exercise_id is not None))
        sent = await asyncio.gather(*(self._dispatch(c) for c in op.commands))
        return OperationOut(op.operation_id, tuple(sent))

    # --- the province's requests (hub/requestdesk.py) -------------------------------------------

    def _answer(self, req: requestdesk.StoredRequest) -> None:
        """Rule 4: the answer goes to the province (and the console's list is refreshed)."""
        self.bus.publish(LiveEvent.of(ProvinceRequestChanged(request_id=req.request_id, state=req.answer)))
        if self.upstream is not None:
            self.upstream.report(requestdesk.record(req, self.clock()))

    async def province_request(self, req: CityRequest) -> None:
        """Rules 1-2 for a request from the province; one the city's rule accepts starts now."""
        link = self.cfg.province
        auto = link.auto_accept if link is not None else frozenset()

        def areas() -> frozenset[str]:
            return frozenset(e.area for e in self.cfg.sites.registry.values()) | frozenset(
                m.area for m in self.engine.state.sites.values())

        stored, new = await self.writer.call(
            lambda tx: requestdesk.receive(tx, req, city_areas=areas(), auto_accept=auto))
        if new:
            log.info("province.request", extra={"request": req.request_id, "action": req.action.value,
                                                "area": req.area, "state": stored.state})
        if new and stored.state == "accepted" and stored.op_id is None:
            with contextlib.suppress(Refused):  # refused: the answer says why
                await self.accept_request(req.request_id, requestdesk.AUTO, Role.OPERATOR, stored.why)
            return
        self._answer(stored)

    async def accept_request(self, request_id: str, actor: str, role: Role, reason: str) -> OperationOut:
        """Rule 3: start the city's own operation for the request, in ``actor``'s name."""
        if not role.allows(Role.OPERATOR):
            raise Refused(f"{actor} ({role.value}) may not accept provincial requests")
        req = await self.writer.call(lambda tx: requestdesk.claim(tx, request_id, actor))
        why = f"provincial request {request_id} from {req.requested_by}: {req.reason}" + (
            f" (accepted: {reason})" if reason.strip() else "")
        try:
            out = await self.start_operation(req.action, req.area, actor, role, why)
        except Refused as exc:
            why_not = f"the city could not: {exc}"
            refused = await self.writer.call(lambda tx: requestdesk.decide(tx, request_id, "refused", actor, why_not))
            self._answer(refused)
            raise
        accepted = await self.writer.call(
            lambda tx: requestdesk.decide(tx, request_id, "accepted", actor, reason, out.operation_id))
        self._answer(accepted)
        return out

    async def refuse_request(self, request_id: str, actor: str, role: Role, reason: str) -> None:
        if not role.allows(Role.OPERATOR):
            raise Refused(f"{actor} ({role.value}) may not refuse provincial requests")
        refused = await self.writer.call(lambda tx: requestdesk.refuse(tx, request_id, actor, reason))
        self._answer(refused)

    async def start_exercise(self, area: str, actor: str, role: Role, reason: str) -> str:
        desk = self.engine.commands
        return await self.writer.call(lambda tx: desk.start_exercise(tx, area, actor, role, reason))

    async def end_exercise(self, ex_id: str, actor: str, role: Role, reason: str) -> None:
        desk = self.engine.commands
        await self.writer.call(lambda tx: desk.end_exercise(tx, ex_id, actor, role, reason))

    # --- alarms, incidents, evidence -------------------------------------------------------

    async def alarm_action(self, alarm_id: int, event: isa.AlarmEvent, actor: str, reason: str,
                           shelve_s: float | None = None) -> isa.Transition:
        desk = self.engine.alarms
        return await self.writer.call(lambda tx: desk.alarm_action(tx, alarm_id, event, actor, reason, shelve_s))

    async def close_incident(self, incident_id: int, actor: str, reason: str) -> None:
        desk = self.engine.alarms
        await self.writer.call(lambda tx: desk.close_incident(tx, incident_id, actor, reason))

    async def view_evidence(self, evidence_id: int, actor: str) -> tuple[Evidence, bytes]:
        """One camera snapshot for ``actor`` (the view is audited, hub/cctv.py)."""
        if self.linker is None:
            raise NotFound("this hub has no cameras configured")
        return await self.linker.view(evidence_id, actor)

    # --- health ----------------------------------------------------------------------------

    def health(self) -> HealthView:
        connected = self.link.is_connected()
        st = self.writer.stats
        return HealthView(
            status="ok" if connected else "degraded",
            hub=self.cfg.hub_id,
            mqtt_connected=connected,
            uptime_s=round(self.clock() - self.started_at, 3),
            ingest={**dataclasses.asdict(self.engine.counters),
                    **{f"quarantined_{r}": n for r, n in self.engine.intake.quarantine.counts.items()}},
            writer={"transactions": st.transactions, "last_tx_ms": round(st.last_tx_ms, 3),
                    "max_tx_ms": round(st.max_tx_ms, 3), "queue": self.writer.qsize(),
                    "queue_high_water": st.queue_high_water},
            forecast=None if (fd := self.engine.forecast) is None else {
                "sites": len(fd.forecaster.sites), "evaluations": fd.evaluations, "late_samples": fd.late_samples,
                "skipped_sites": len(fd.skipped), "alarms_active": fd.active_count},
        )
