"""The command desk: the write side of commands and area operations, and the edges' replies.

Runs inside the writer's transaction. What an action may do is decided by the pure checks in
hub/commands.py; this desk records, signs and tracks.

Command states (hub/commands.py ``CommandState``), and the rules that move them:

1. ``create_command``: only an operator or above, with a reason, for an action the device's
   kind offers. A closing action is signed at once (``sending``); an opening one waits for a
   second person (``awaiting_approval``) and needs fresh low water now and again at approval.
2. ``approve_command``: only a supervisor other than the issuer, while ``awaiting_approval``;
   a refusal is audited and committed (the caller raises it). ``reject_command`` cancels (the
   issuer) or refuses (a supervisor), with a reason.
3. ``mark_sent``: ``sending`` → ``sent`` on PUBACK, or ``send_failed``; a reply that overtook the
   PUBACK wins.
4. Replies: ``received`` moves ``sending``/``sent`` on; a terminal reply ends the command once
   (a repeated one is ignored), even after ``timed_out``; a reply for a command of another site
   or an unknown one is logged, never applied. A rejection saying the edge could not
   authenticate the command (``shared.messages.UNAUTHENTICATED``) ends it only provisionally:
   the hub signed the command itself, so that reply may answer a forgery sent under its
   ``cmd_id``; any later terminal reply that is not such a rejection replaces it.
5. ``timeouts``: a command still ``sent``/``received`` past ``not_after`` plus the grace is
   ``timed_out``.
6. Every state change is audited and published (``command`` live event) after commit; an
   operation fans out into one command per device of the area (``operation`` live event), and
   records each device's plan: a device refused up front (the hub would not sign its command)
   keeps the reason and gets no command; the operation's view follows each command to its end.
7. Exercises (DESIGN §3): a supervisor starts one over an area (one active per area) and ends
   it, both audited (``exercise`` live event). A command or operation asking for ``exercise``
   is taken only while an active exercise covers its site, and is signed with ``exercise=True``
   (the edge answers with a dry run); an opening approved after its exercise ended is refused.
8. A terminal reply's self-test ``report`` is stored with the reply as received. It is shown,
   never trusted: no state, alarm or value is taken from it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub import alarms as isa
from hub.commands import (
    ActiveExercise,
    CommandState,
    DepthReading,
    DeviceRef,
    Draft,
    OperationKind,
    check_action,
    check_fresh_low_water,
    check_second_person,
    count_states,
    device_state,
    exercise_for,
    plan_operation,
)
from hub.config import HubConfig
from hub.errors import Conflict, NotFound, Refused
from hub.live import CommandChanged, ExerciseChanged, OperationChanged, OperationStarted
from hub.outlet import Outlet, live_after
from hub.roles import Role
from hub.state import HubState
from hub.store import Tx
from shared import messages, vocabulary
from shared.errors import WireError
from shared.messages import UNAUTHENTICATED, Command, Reply
from shared.signing import sign_command

log = logging.getLogger(__name__)

_enc = msgspec.json.Encoder()


@dataclass(frozen=True)
class CommandOut:
    """A command the API should publish now (signed), with its id."""

    cmd_id: str
    state: CommandState
    wire: Command | None = None
    refusal: str = ""
    """Set when the hub refused (the refusal is audited, so the transaction commits)."""


@dataclass(frozen=True)
class OperationOut:
    operation_id: str
    commands: tuple[CommandOut, ...]
    exercise_id: str | None = None


class CommandDesk:
    def __init__(self, cfg: HubConfig, state: HubState, signing_key: Ed25519PrivateKey, outlet: Outlet) -> None:
        self.cfg = cfg
        self.state = state
        self.key = signing_key
        self.outlet = outlet

    # --- state changes ---------------------------------------------------------------------

    def _set_state(self, tx: Tx, cmd_id: str, state: CommandState, detail: str) -> None:
        tx.conn.execute("UPDATE commands SET state = ?, detail = ?, updated_at = ? WHERE cmd_id = ?",
                        (state.value, detail, tx.now, cmd_id))
        live_after(tx, self.outlet, CommandChanged(cmd_id=cmd_id, state=state.value, detail=detail))
        row = tx.conn.execute("SELECT operation_id FROM commands WHERE cmd_id = ?", (cmd_id,)).fetchone()
        if row is not None and row[0] is not None:
            self._operation_changed(tx, row[0])

    def _operation_changed(self, tx: Tx, op_id: str) -> None:
        rows = tx.conn.execute(
            "SELECT c.state FROM operation_devices d LEFT JOIN commands c ON c.cmd_id = d.cmd_id"
            " WHERE d.operation_id = ?", (op_id,)).fetchall()
        counts = count_states([device_state(None if st is None else CommandState(st)) for (st,) in rows])
        live_after(tx, self.outlet, OperationChanged(id=op_id, counts=counts))

    def timeouts(self, tx: Tx) -> None:
        """Rule 5."""
        grace = self.cfg.commands.reply_grace_s
        rows = tx.conn.execute(
            "SELECT cmd_id FROM commands WHERE state IN ('sent', 'received') AND not_after < ?", (tx.now - grace,)
        ).fetchall()
        for (cmd_id,) in rows:
            self._set_state(tx, cmd_id, CommandState.TIMED_OUT, "no terminal reply by not_after + grace")
            tx.audit(isa.SYSTEM, "command.timed_out", f"command/{cmd_id}", {})

    def reply(self, tx: Tx, site: str, r: Reply, received: float) -> None:
        """Rule 4: an edge's reply to a command (intake calls it for each new reply record)."""
        conn = tx.conn
        conn.execute(
            "INSERT INTO command_replies (cmd_id, site, seq, status, reason, ts, received_at, report)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (r.cmd_id, site, r.seq, r.status.value, r.reason, r.ts, received, _enc.encode(r.report).decode()),
        )
        row = conn.execute("SELECT site, state, detail FROM commands WHERE cmd_id = ?", (r.cmd_id,)).fetchone()
        if row is None or row[0] != site:
            log.warning("command.unknown_reply", extra={"site": site, "cmd_id": r.cmd_id, "status": r.status.value})
            return
        state = CommandState(row[1])
        provisional = state is CommandState.TIMED_OUT or (
            state is CommandState.REJECTED and str(row[2]).startswith(UNAUTHENTICATED)
            and r.status.is_terminal and not r.reason.startswith(UNAUTHENTICATED))
        if state.is_terminal and not provisional:
            return  # a repeated reply (the edge re-sends the stored result)
        if r.status.is_terminal:
            self._set_state(tx, r.cmd_id, CommandState.of_reply(r.status), r.reason)
            tx.audit(site, f"command.{r.status.value}", f"command/{r.cmd_id}", {"reason": r.reason})
        elif state in (CommandState.SENDING, CommandState.SENT):
            self._set_state(tx, r.cmd_id, CommandState.RECEIVED, r.reason)

    # --- checks and signing ----------------------------------------------------------------

    def _depths(self, site: str) -> list[DepthReading]:
        """Every depth reading of the site: each device's kind's depth point (shared/vocabulary.py)."""
        st = self.state
        s = st.sites.get(site)
        if s is None:
            return []
        out = []
        for device, point in sorted(s.points):
            kind = st.kinds.get((site, device))
            if kind is not None and point == vocabulary.depth_point(kind):
                pm = st.latest[(site, device, point)]
                out.append(DepthReading(device, point, pm.num, pm.quality, pm.ts))
        return out

    def _check_water(self, tx: Tx, site: str, device: str) -> None:
        kind = self.state.kinds.get((site, device)) or ""
        params = self.cfg.rules.params(site, kind)
        s = self.state.sites.get(site)
        check_fresh_low_water(self._depths(site), now=tx.now, site_online=bool(s and s.online),
                              reopening_depth_cm=params.reopening_depth_cm, data_age_limit_s=params.data_age_limit_s)

    def _sign(self, tx: Tx, cmd_id: str, draft: Draft, issued_by: str, approved_by: list[str], reason: str,
              exercise: bool, ttl_s: float | None = None) -> Command:
        ttl = self.cfg.commands.ttl_s if ttl_s is None else ttl_s
        cmd = Command(cmd_id=cmd_id, site=draft.site, device=draft.device, action=draft.action,
                      params=dict(draft.params), issued_by=issued_by, approved_by=approved_by, issued_at=tx.now,
                      not_after=tx.now + ttl, reason=reason, exercise=exercise)
        signed = sign_command(cmd, self.key)
        try:  # what the edge will decode: a command it would drop as malformed is refused here
            messages.decode(Command, messages.encode(signed))
        except WireError as exc:
            raise Refused(f"the command does not fit the wire: {exc}") from exc
        return signed

    # --- operators' requests ---------------------------------------------------------------

    def _active_exercises(self, tx: Tx) -> list[ActiveExercise]:
        return [ActiveExercise(i, a) for i, a in tx.conn.execute(
            "SELECT id, area FROM exercises WHERE ended_at IS NULL ORDER BY started_at")]

    def _exercise_for(self, tx: Tx, site: str) -> str:
        s = self.state.sites.get(site)
        if s is None:
            raise Refused(f"refused: exercise command to {site}, a site the hub does not know")
        return exercise_for(s.area, self._active_exercises(tx), f"{site} (area {s.area})")

    def create_command(self, tx: Tx, draft: Draft, actor: str, role: Role, reason: str,
                       operation_id: str | None = None, exercise: bool = False,
                       ttl_s: float | None = None) -> CommandOut:
        """Rule 1 (and rule 7 for an exercise); ``ttl_s`` overrides ``commands.ttl_s`` (a forecast's
        prealert lasts as long as the forecast, hub/forecastdesk.py)."""
        if not role.allows(Role.OPERATOR):
            raise Refused(f"{actor} ({role.value}) may not issue commands")
        if not reason.strip():
            raise Refused("a command needs a reason")
        check_action(self.state.kinds.get((draft.site, draft.device)), draft)
        if vocabulary.action_spec(draft.action).advisory and actor != isa.SYSTEM:
            raise Refused(f"{draft.action.value} is sent by the hub's network forecast, not by {actor}")
        exercise_id = self._exercise_for(tx, draft.site) if exercise else None
        cmd_id = uuid.uuid4().hex
        wire: Command | None = None
        if vocabulary.is_opening(draft.action):
            self._check_water(tx, draft.site, draft.device)
            state = CommandState.AWAITING_APPROVAL
        else:
            wire = self._sign(tx, cmd_id, draft, actor, [], reason, exercise, ttl_s)
            state = CommandState.SENDING
        tx.conn.execute(
            "INSERT INTO commands (cmd_id, site, device, action, params, issued_by, reason, state, created_at,"
            " issued_at, not_after, updated_at, operation_id, wire, exercise_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (cmd_id, draft.site, draft.device, draft.action.value, _enc.encode(draft.params).decode(), actor, reason,
             state.value, tx.now, wire.issued_at if wire else None, wire.not_after if wire else None, tx.now,
             operation_id, messages.encode(wire).decode() if wire else None, exercise_id),
        )
        tx.audit(actor, "command.requested" if wire is None else "command.issued", f"command/{cmd_id}",
                 {"site": draft.site, "device": draft.device, "action": draft.action.value, "reason": reason,
                  **({"exercise": exercise_id} if exercise_id else {})})
        live_after(tx, self.outlet, CommandChanged(cmd_id=cmd_id, state=state.value, detail=""))
        return CommandOut(cmd_id, state, wire)

    def _command_row(self, tx: Tx, cmd_id: str) -> tuple[str, str, str, str, str, str, str, str | None]:
        row = tx.conn.execute("SELECT site, device, action, params, issued_by, reason, state, exercise_id"
                              " FROM commands WHERE cmd_id = ?", (cmd_id,)).fetchone()
        if row is None:
            raise NotFound(f"no command {cmd_id}")
        return row  # type: ignore[no-any-return]

    def approve_command(self, tx: Tx, cmd_id: str, approver: str, role: Role, reason: str) -> CommandOut:
        """Rule 2 (approval)."""
        site, device, action, params, issued_by, creason, state, exercise_id = self._command_row(tx, cmd_id)
        if state != CommandState.AWAITING_APPROVAL.value:
            raise Conflict(f"command {cmd_id} is {state}, not awaiting approval")
        try:
            check_second_person(issued_by, approver, role)
            if exercise_id is not None and not tx.conn.execute(
                    "SELECT 1 FROM exercises WHERE id = ? AND ended_at IS NULL", (exercise_id,)).fetchone():
                raise Refused(f"refused: exercise {exercise_id} has ended; its commands are no longer sent")
            self._check_water(tx, site, device)
        except Refused as exc:
            # the refusal is a fact worth keeping: audit it and commit; the caller raises it
            tx.audit(approver, "command.approval_refused", f"command/{cmd_id}", {"reason": str(exc)})
            return CommandOut(cmd_id, CommandState.AWAITING_APPROVAL, refusal=str(exc))
        draft = Draft(site, device, messages.Action(action), msgspec.json.decode(params))
        wire = self._sign(tx, cmd_id, draft, issued_by, [approver], creason, exercise_id is not None)
        tx.conn.execute(
            "UPDATE commands SET state = ?, approved_by = ?, issued_at = ?, not_after = ?, wire = ?, updated_at = ?"
            " WHERE cmd_id = ?",
            (CommandState.SENDING.value, _enc.encode([approver]).decode(), wire.issued_at, wire.not_after,
             messages.encode(wire).decode(), tx.now, cmd_id),
        )
        tx.audit(approver, "command.approved", f"command/{cmd_id}", {"reason": reason or "approved"})
        live_after(tx, self.outlet, CommandChanged(cmd_id=cmd_id, state=CommandState.SENDING.value, detail=""))
        return CommandOut(cmd_id, CommandState.SENDING, wire)

    def reject_command(self, tx: Tx, cmd_id: str, actor: str, role: Role, reason: str) -> None:
        """Rule 2 (withdrawal)."""
        _site, _device, _action, _params, issued_by, _r, state, _e = self._command_row(tx, cmd_id)
        if state != CommandState.AWAITING_APPROVAL.value:
            raise Conflict(f"command {cmd_id} is {state}, not awaiting approval")
        if actor == issued_by:
            new = CommandState.CANCELLED
        elif role.allows(Role.SUPERVISOR):
            new = CommandState.REFUSED
        else:
            raise Refused(f"only the issuer or a supervisor may withdraw command {cmd_id}")
        if not reason.strip():
            raise Refused("a reason is needed")
        self._set_state(tx, cmd_id, new, reason)
        tx.audit(actor, f"command.{new.value}", f"command/{cmd_id}", {"reason": reason})

    def mark_sent(self, tx: Tx, cmd_id: str, ok: bool, detail: str = "") -> None:
        """Rule 3."""
        row = tx.conn.execute("SELECT state FROM commands WHERE cmd_id = ?", (cmd_id,)).fetchone()
        if row is None or row[0] != CommandState.SENDING.value:
            return  # a reply overtook the PUBACK
        if ok:
            self._set_state(tx, cmd_id, CommandState.SENT, "")
        else:
            self._set_state(tx, cmd_id, CommandState.SEND_FAILED, detail)
            tx.audit(isa.SYSTEM, "command.send_failed", f"command/{cmd_id}", {"detail": detail})

    def create_operation(self, tx: Tx, kind: OperationKind, area: str, actor: str, role: Role,
                         reason: str, exercise: bool = False) -> OperationOut:
        """Rule 6: one command per device of ``area`` that takes part in ``kind``; a device the
        hub refuses up front is recorded with the reason and the others go ahead (when every
        one is refused, the whole request is, and nothing is recorded)."""
        if not role.allows(Role.OPERATOR):
            raise Refused(f"{actor} ({role.value}) may not start operations")
        if not reason.strip():
            raise Refused("an operation needs a reason")
        st = self.state
        devices = [DeviceRef(site, device, kind_) for (site, device), kind_ in st.kinds.items()
                   if site in st.sites and st.sites[site].area == area]
        drafts = plan_operation(kind, devices)
        unknown = sorted((d.site, d.device, d.kind) for d in devices if vocabulary.kind_spec(d.kind) is None)
        if not drafts:
            raise Refused(f"area {area!r} has no device that takes part in {kind.value}")
        exercise_id = exercise_for(area, self._active_exercises(tx), f"area {area}") if exercise else None
        op_id = uuid.uuid4().hex
        note = "CAP alert (responseType Evacuate) to be forwarded" if kind is OperationKind.EVACUATE else ""
        tx.conn.execute("INSERT INTO operations (id, kind, area, issued_by, reason, created_at, note, exercise_id)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (op_id, kind.value, area, actor, reason, tx.now, note, exercise_id))
        tx.audit(actor, f"operation.{kind.value}", f"operation/{op_id}",
                 {"area": area, "commands": len(drafts), "reason": reason,
                  **({"exercise": exercise_id} if exercise_id else {})})
        out: list[CommandOut] = []
        refusals: list[str] = []
        for n, d in enumerate(drafts):
            try:
                c = self.create_command(tx, d, actor, role, reason, operation_id=op_id, exercise=exercise)
            except Refused as exc:
                cmd_id, refusal = None, str(exc)
            else:
                out.append(c)
                cmd_id, refusal = c.cmd_id, ""
            tx.conn.execute(
                "INSERT INTO operation_devices (operation_id, n, site, device, kind, action, params, cmd_id, reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (op_id, n, d.site, d.device, st.kinds[(d.site, d.device)], d.action.value,
                 _enc.encode(d.params).decode(), cmd_id, refusal))
            if refusal:
                refusals.append(refusal)
                tx.audit(actor, "operation.device_refused", f"operation/{op_id}",
                         {"site": d.site, "device": d.device, "action": d.action.value, "reason": refusal})
        if not out:  # every device refused for one and the same cause: refuse the request (rolled back)
            raise Refused(refusals[0])
        for n, (site, device, dkind) in enumerate(unknown, start=len(drafts)):
            # a device of a kind the vocabulary does not know: the hub can plan nothing for it
            why = f"{site}/{device}: the vocabulary knows no kind {dkind!r}; nothing can be planned for it"
            tx.conn.execute(
                "INSERT INTO operation_devices (operation_id, n, site, device, kind, action, params, cmd_id, reason)"
                " VALUES (?, ?, ?, ?, ?, '', '{}', NULL, ?)", (op_id, n, site, device, dkind, why))
            tx.audit(actor, "operation.device_refused", f"operation/{op_id}",
                     {"site": site, "device": device, "reason": why})
        live_after(tx, self.outlet, OperationStarted(id=op_id, kind=kind.value, area=area))
        self._operation_changed(tx, op_id)
        return OperationOut(op_id, tuple(out), exercise_id)

    # --- exercises -------------------------------------------------------------------------

    def start_exercise(self, tx: Tx, area: str, actor: str, role: Role, reason: str) -> str:
        """Rule 7: a supervisor starts an exercise over ``area``; its id."""
        if not role.allows(Role.SUPERVISOR):
            raise Refused(f"{actor} ({role.value}) may not start an exercise: it needs a supervisor")
        if not reason.strip():
            raise Refused("an exercise needs a reason")
        known = {s.area for s in self.state.sites.values()} | {e.area for e in self.cfg.sites.registry.values()}
        if area not in known:
            raise Refused(f"area {area!r} has no site this hub knows")
        row = tx.conn.execute("SELECT id FROM exercises WHERE area = ? AND ended_at IS NULL", (area,)).fetchone()
        if row is not None:
            raise Conflict(f"exercise {row[0]} is already active over {area}")
        ex_id = uuid.uuid4().hex
        tx.conn.execute("INSERT INTO exercises (id, area, reason, started_by, started_at) VALUES (?, ?, ?, ?, ?)",
                        (ex_id, area, reason, actor, tx.now))
        tx.audit(actor, "exercise.started", f"exercise/{ex_id}", {"area": area, "reason": reason})
        live_after(tx, self.outlet, ExerciseChanged(id=ex_id, area=area, state="started", actor=actor, reason=reason))
        return ex_id

    def end_exercise(self, tx: Tx, ex_id: str, actor: str, role: Role, reason: str) -> None:
        """Rule 7: a supervisor ends an active exercise (ending one twice is a conflict)."""
        if not role.allows(Role.SUPERVISOR):
            raise Refused(f"{actor} ({role.value}) may not end an exercise: it needs a supervisor")
        row = tx.conn.execute("SELECT area, ended_at FROM exercises WHERE id = ?", (ex_id,)).fetchone()
        if row is None:
            raise NotFound(f"no exercise {ex_id}")
        area, ended_at = row
        if ended_at is not None:
            raise Conflict(f"exercise {ex_id} has already ended")
        why = reason.strip() or "exercise over"
        tx.conn.execute("UPDATE exercises SET ended_by = ?, ended_at = ?, end_reason = ? WHERE id = ?",
                        (actor, tx.now, why, ex_id))
        tx.audit(actor, "exercise.ended", f"exercise/{ex_id}", {"area": area, "reason": why})
        live_after(tx, self.outlet, ExerciseChanged(id=ex_id, area=area, state="ended", actor=actor, reason=why))
