"""The forwarding outbox read back: deliveries, attempts and stored payloads, for the console's
tools, the command line and tests. Read-only; the outbox's rules are in hub/forward/outbox.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from hub.errors import NotFound
from hub.forward.policy import State


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    identifier: str
    thread: str
    recipient: str
    variant: str
    state: str
    attempts: int
    next_at: float
    created_at: float
    escalate_at: float | None
    escalated_at: float | None
    escalation_of: int | None
    acked_at: float | None
    failed_at: float | None
    last_error: str


_DELIVERY_COLS: Final = ("id, identifier, thread, recipient, variant, state, attempts, next_at, created_at,"
                         " escalate_at, escalated_at, escalation_of, acked_at, failed_at, last_error")


def deliveries(conn: sqlite3.Connection, *, identifier: str | None = None, thread: str | None = None,
               state: str | None = None) -> list[DeliveryRow]:
    """Deliveries for the console and the tests, oldest first."""
    where: list[str] = []
    args: list[str] = []
    for col, value in (("identifier", identifier), ("thread", thread), ("state", state)):
        if value is not None:
            where.append(f"{col} = ?")
            args.append(value)
    sql = f"SELECT {_DELIVERY_COLS} FROM fwd_deliveries"  # noqa: S608 - constant columns; values are bound
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [DeliveryRow(*row) for row in conn.execute(sql + " ORDER BY id", args)]


@dataclass(frozen=True)
class AttemptRow:
    delivery_id: int
    n: int
    started_at: float
    finished_at: float | None
    outcome: str | None
    http_status: int | None
    error: str


def attempts(conn: sqlite3.Connection, delivery_id: int) -> list[AttemptRow]:
    return [AttemptRow(*row) for row in conn.execute(
        "SELECT delivery_id, n, started_at, finished_at, outcome, http_status, error FROM fwd_attempts"
        " WHERE delivery_id = ? ORDER BY n", (delivery_id,))]


def payload_of(conn: sqlite3.Connection, identifier: str, variant_name: str) -> bytes:
    row = conn.execute("SELECT body FROM fwd_payloads WHERE identifier = ? AND variant = ?",
                       (identifier, variant_name)).fetchone()
    if row is None:
        raise NotFound(f"no {variant_name} payload for message {identifier}")
    return bytes(row[0])


def open_deliveries(conn: sqlite3.Connection) -> Sequence[DeliveryRow]:
    return deliveries(conn, state=State.PENDING.value)
