"""The province's requests at a city hub (DESIGN §8): a provincial operator asks this city to
block or evacuate one of its areas; the city decides.

Rules:

1. A request is stored once (``province_requests``, by ``request_id``) and audited on receipt;
   the province repeats a request until it has the city's answer, so a repeat is answered with
   the answer the city gave (its current :class:`~shared.messages.RequestRecord`), never acted
   on again.
2. A request for an area that is not this city's, or already past its ``not_after``, is refused
   on receipt with the reason. A request the city's rules accept (``[province] auto_accept``:
   the actions accepted without an operator, e.g. ``block`` in a declared emergency) is accepted
   at once; any other waits, ``pending``, for a city operator.
3. Only a city operator (or the rule of 2) decides, once: accepting starts the city's own
   operation (hub/commanddesk.py: its plan, its signatures, its approvals) in the operator's
   name with the request named in its reason; refusing needs a reason. A decision on a request
   that is past its ``not_after`` refuses it as expired. While its operation starts a request is
   ``accepting`` (a second operator's accept is refused); an operation the city refuses (no
   device of that kind in the area) refuses the request with that reason.
4. Every answer goes to the province as a RequestRecord (hub/upstream.py); the operation it
   started reports its progress as an OperationRecord with the same ``op_id``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Final, cast

from hub.errors import Refused
from hub.store import Tx
from shared.messages import CityRequest, Operation, Priority, RequestRecord, RequestState

AUTO: Final = "city-rule"
"""The decider named when the city's own rule (``auto_accept``) accepted a request."""


@dataclass(frozen=True)
class StoredRequest:
    request_id: str
    action: Operation
    area: str
    reason: str
    requested_by: str
    requested_at: float
    not_after: float
    state: str
    """One of :data:`~shared.messages.RequestState`, or ``accepting`` while its operation starts."""
    op_id: str | None
    decided_by: str | None
    why: str

    @property
    def answer(self) -> RequestState:
        return "pending" if self.state == "accepting" else cast(RequestState, self.state)


_SELECT: Final = ("SELECT request_id, action, area, reason, requested_by, requested_at, not_after, state, op_id,"
                  " decided_by, why FROM province_requests")


def _row(r: tuple[object, ...]) -> StoredRequest:
    rid, action, area, reason, by, at, na, state, op, dec, why = r
    return StoredRequest(str(rid), Operation(str(action)), str(area), str(reason), str(by), float(str(at)),
                         float(str(na)), str(state), None if op is None else str(op),
                         None if dec is None else str(dec), str(why))


def get(tx: Tx, request_id: str) -> StoredRequest | None:
    r = tx.conn.execute(_SELECT + " WHERE request_id = ?", (request_id,)).fetchone()
    return None if r is None else _row(r)


def record(req: StoredRequest, now: float) -> RequestRecord:
    """Rule 4: the answer as the province gets it."""
    return RequestRecord(seq=0, ts=now, prio=Priority.EVENT, request_id=req.request_id, action=req.action,
                         area=req.area, state=req.answer,
                         op_id=req.op_id, decided_by=req.decided_by, why=req.why[:200])


def receive(tx: Tx, req: CityRequest, *, city_areas: frozenset[str], auto_accept: frozenset[Operation]
            ) -> tuple[StoredRequest, bool]:
    """Rules 1 and 2: store a new request (or find the stored one); returns it and whether it is
    new. A new one the rules accept is ``accepted`` with no operation yet: the caller starts it."""
    old = get(tx, req.request_id)
    if old is not None:
        return old, False
    state, why, by = "pending", "", None
    if req.area not in city_areas:
        state, why, by = "refused", f"area {req.area!r} is not one of this city's", AUTO
    elif tx.now > req.not_after:
        state, why, by = "refused", "expired before it arrived", AUTO
    elif req.action in auto_accept:
        state, why, by = "accepted", f"the city accepts {req.action.value} requests without an operator", AUTO
    tx.conn.execute(
        "INSERT INTO province_requests (request_id, action, area, reason, requested_by, requested_at, not_after,"
        " received_at, state, decided_by, why, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (req.request_id, req.action.value, req.area, req.reason, req.requested_by, req.ts, req.not_after, tx.now,
         state, by, why, tx.now if by else None))
    tx.audit(f"province:{req.requested_by}", f"province.request.{req.action.value}",
             f"province-request/{req.request_id}",
             {"area": req.area, "reason": req.reason, "not_after": req.not_after, "state": state, "why": why})
    stored = get(tx, req.request_id)
    assert stored is not None
    return stored, True


def claim(tx: Tx, request_id: str, actor: str) -> StoredRequest:
    """Rule 3, before accepting: the request must be pending (or accepted by the rule, with no
    operation yet) and within its time; an expired one is refused here."""
    req = get(tx, request_id)
    if req is None:
        raise Refused(f"no provincial request {request_id!r}")
    if not (req.state == "pending" or (req.state == "accepted" and req.op_id is None)):
        raise Refused(f"the provincial request was already {req.state}")
    if tx.now > req.not_after:
        decide(tx, request_id, "refused", AUTO, "expired before a decision")
        raise Refused("the provincial request expired before a decision")
    tx.conn.execute("UPDATE province_requests SET state = 'accepting' WHERE request_id = ?", (request_id,))
    return req


def decide(tx: Tx, request_id: str, state: str, actor: str, why: str, op_id: str | None = None) -> StoredRequest:
    """Rule 3: the request's one decision (accepted with its operation, or refused), audited."""
    tx.conn.execute("UPDATE province_requests SET state = ?, op_id = ?, decided_by = ?, why = ?, decided_at = ?"
                    " WHERE request_id = ?", (state, op_id, actor, why, tx.now, request_id))
    tx.audit(actor, f"province.request.{state}", f"province-request/{request_id}",
             {"op_id": op_id, "why": why})
    stored = get(tx, request_id)
    assert stored is not None
    return stored


def refuse(tx: Tx, request_id: str, actor: str, why: str) -> StoredRequest:
    if not why.strip():
        raise Refused("refusing a provincial request needs a reason")
    req = get(tx, request_id)
    if req is None:
        raise Refused(f"no provincial request {request_id!r}")
    if req.state != "pending":
        raise Refused(f"the provincial request was already {req.state}")
    return decide(tx, request_id, "refused", actor, why)


def listing(conn: sqlite3.Connection, limit: int = 200) -> list[StoredRequest]:
    """The newest requests first (the console's list)."""
    rows = conn.execute(_SELECT + " ORDER BY received_at DESC LIMIT ?", (limit,)).fetchall()
    return [_row(r) for r in rows]
