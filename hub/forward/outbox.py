"""The durable forwarding outbox: messages, per-recipient deliveries, attempts, escalations.

It lives in the hub's database (tables ``fwd_*``, created by hub/migrations.py), and every
function here runs inside a write transaction the caller holds (:class:`hub.forward.tx.WriteTx`:
the hub's writer, or a ``LocalWriter``).

Rules and invariants:

1. **One message per notice.** :func:`enqueue` plans a notice (:mod:`hub.forward.plan`); the
   message, its payloads (rendered, CAP signed, once per format variant), one delivery per
   recipient and the thread's new state are written in one transaction. A notice key seen
   before enqueues nothing.
2. **A delivery's identifier never changes.** Every attempt sends the same stored bytes, so the
   receiver's dedupe by identifier makes delivery exactly-once from its point of view.
3. **Delivery states:** ``pending`` → ``acked`` | ``failed`` (terminal); only an operator's
   :func:`requeue` takes a failed delivery back to pending, for a fresh round of attempts.
   ``attempts`` counts every attempt ever started (attempt numbers are never reused); the
   attempts of the current round (``attempts - round_start``) never exceed the recipient's
   ``max_attempts``.
4. **Attempts are recorded before they are made.** :func:`claim` opens an attempt row and leases
   the delivery (``next_at`` moves past the request's timeout) in the same transaction;
   :func:`finish` closes it. An attempt found open at start-up (the hub died mid-request) is
   closed by :func:`recover` as ``interrupted`` and the delivery is due again at once.
5. **Order per recipient and thread.** A delivery is not claimed while an earlier delivery of
   the same thread to the same recipient is still pending: an Update never overtakes its Alert.
6. **Escalation happens once per delivery** (``escalated_at``), when :func:`policy.escalation_due`
   says so: the injected :class:`EscalationSink` is called in the same transaction (the hub
   raises its console alarm there), and the message is queued to the recipient's
   ``escalate_to`` (which then also gets the rest of the thread). Escalation deliveries escalate
   only to the console, so escalation never loops.
7. Every enqueue, attempt, outcome, escalation and requeue is audited through ``tx.audit``.
8. What is not forwarded is counted by reason (``fwd_not_forwarded``) in the transaction that
   decided it: a delivery that fails (``delivery_failed``: refused, or its attempts used up)
   and one that cannot be sent at all (``undeliverable``: its recipient left the config); the
   hub adds its own reasons (hub/alerting.py rule 5).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Final, Protocol

from hub.errors import NotFound, Refused
from hub.forward import policy
from hub.forward.cap import Reference
from hub.forward.capread import CapSchema
from hub.forward.config import ForwardConfig, Recipient
from hub.forward.plan import Notice, Planned, Thread, plan
from hub.forward.policy import Outcome, State
from hub.forward.render import payload, variant
from hub.forward.tx import WriteTx

ACTOR: Final = "system:forward"
LEASE_MARGIN_S: Final = 30.0
"""A claimed delivery is not due again until its request's timeout plus this has passed."""

# --- enqueue --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enqueued:
    identifier: str
    msg_type: str
    event_id: str
    deliveries: tuple[tuple[int, str], ...]
    """(delivery id, recipient name) for each delivery created."""


def new_identifier(config: ForwardConfig) -> str:
    """A message identifier: the sender's local part and 16 random hex digits (no reuse after a
    database reset, unlike a row number)."""
    local = config.sender.split("@", 1)[0]
    return f"{local}.{secrets.token_hex(8)}"


def load_thread(conn: sqlite3.Connection, key: str) -> Thread | None:
    row = conn.execute("SELECT event_id, open, refs, recipients FROM fwd_threads WHERE key = ?", (key,)).fetchone()
    if row is None:
        return None
    refs = tuple(Reference.parse(r) for r in json.loads(row[2]))
    return Thread(key=key, event_id=str(row[0]), open=bool(row[1]), refs=refs,
                  recipients=frozenset(json.loads(row[3])))


def _save_thread(conn: sqlite3.Connection, thread: Thread, now: float) -> None:
    conn.execute(
        "INSERT INTO fwd_threads (key, event_id, open, refs, recipients, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET event_id = excluded.event_id, open = excluded.open,"
        " refs = excluded.refs, recipients = excluded.recipients, updated_at = excluded.updated_at",
        (thread.key, thread.event_id, int(thread.open), json.dumps([str(r) for r in thread.refs]),
         json.dumps(sorted(thread.recipients)), now),
    )


def enqueue(tx: WriteTx, notice: Notice, config: ForwardConfig, *, now: float, identifier: str | None = None,
            pictures: dict[int, bytes] | None = None, schema: CapSchema | None = None) -> Enqueued | None:
    """Plan ``notice`` and queue one delivery per recipient; None if there is nothing to send
    (a clear without an open thread, or a notice key seen before)."""
    conn = tx.conn
    if conn.execute("SELECT 1 FROM fwd_messages WHERE notice_key = ?", (notice.key,)).fetchone():
        return None
    thread = load_thread(conn, notice.thread)
    planned = plan(notice, thread, config, identifier or new_identifier(config), pictures)
    if planned is None:
        return None
    facts = planned.facts
    conn.execute(
        "INSERT INTO fwd_messages (identifier, notice_key, thread, event_id, msg_type, sent, source, area, priority,"
        " site, headline, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (facts.identifier, notice.key, notice.thread, planned.event_id, facts.msg_type.value, facts.sent_text,
         notice.source.value, notice.area, notice.priority.value, notice.site, facts.headline.ko, now),
    )
    targets = list(planned.recipients)
    for r in planned.recipients:  # render for escalation targets too, while the facts are at hand
        target = config.recipient(r.escalate_to) if r.escalate_to else None
        if target is not None:
            targets.append(target)
    stored: set[str] = set()
    for r in targets:
        v = variant(r, planned)
        if v in stored:
            continue
        p = payload(planned, r, schema, config.signer)
        conn.execute("INSERT INTO fwd_payloads (identifier, variant, content_type, body) VALUES (?, ?, ?, ?)",
                     (facts.identifier, p.variant, p.content_type, p.body))
        stored.add(v)
    created = tuple((_insert_delivery(conn, planned, r, now), r.name) for r in planned.recipients)
    _save_thread(conn, planned.thread, now)
    tx.audit(ACTOR, "forward.enqueue", f"message:{facts.identifier}", {
        "thread": notice.thread, "notice": notice.key, "msg_type": facts.msg_type.value,
        "event_id": planned.event_id, "recipients": [name for _, name in created],
    })
    return Enqueued(facts.identifier, facts.msg_type.value, planned.event_id, created)


def _insert_delivery(conn: sqlite3.Connection, planned: Planned, r: Recipient, now: float,
                     escalation_of: int | None = None) -> int:
    escalate_at = None if r.escalate_after_s is None else now + r.escalate_after_s
    cur = conn.execute(
        "INSERT INTO fwd_deliveries (identifier, thread, recipient, variant, state, next_at, created_at, escalate_at,"
        " escalation_of) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
        (planned.facts.identifier, planned.notice.thread, r.name, variant(r, planned), now, now, escalate_at,
         escalation_of),
    )
    return int(cur.lastrowid or 0)


# --- attempts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One attempt to make now."""

    delivery_id: int
    attempt_id: int
    n: int
    in_round: int
    """The attempt's number in the current round (``n`` unless an operator requeued it)."""
    identifier: str
    recipient: Recipient
    body: bytes
    content_type: str


def claim(tx: WriteTx, config: ForwardConfig, now: float, limit: int) -> list[Claim]:
    """Open an attempt for up to ``limit`` due deliveries (oldest due first, in thread order)."""
    if limit <= 0:
        return []
    conn = tx.conn
    rows = conn.execute(
        "SELECT d.id, d.identifier, d.recipient, d.attempts, d.round_start, p.body, p.content_type"
        " FROM fwd_deliveries d"
        " LEFT JOIN fwd_payloads p ON p.identifier = d.identifier AND p.variant = d.variant"
        " WHERE d.state = 'pending' AND d.next_at <= ? AND NOT EXISTS ("
        "  SELECT 1 FROM fwd_deliveries e WHERE e.recipient = d.recipient AND e.thread = d.thread"
        "  AND e.state = 'pending' AND e.id < d.id)"
        " ORDER BY d.next_at, d.id LIMIT ?",
        (now, limit),
    ).fetchall()
    out: list[Claim] = []
    for did, identifier, name, attempts, round_start, body, content_type in rows:
        recipient = config.recipient(str(name))
        if recipient is None or body is None:
            why = f"recipient {name!r} is no longer configured" if recipient is None else "no payload for it"
            _fail(tx, int(did), now, why)
            continue
        n = int(attempts) + 1
        cur = conn.execute("INSERT INTO fwd_attempts (delivery_id, n, started_at) VALUES (?, ?, ?)", (did, n, now))
        conn.execute("UPDATE fwd_deliveries SET attempts = ?, next_at = ? WHERE id = ?",
                     (n, now + recipient.timeout_s + LEASE_MARGIN_S, did))
        tx.audit(ACTOR, "forward.attempt", f"delivery:{did}",
                 {"identifier": str(identifier), "recipient": recipient.name, "n": n, "url": recipient.url})
        out.append(Claim(int(did), int(cur.lastrowid or 0), n, n - int(round_start), str(identifier), recipient,
                         bytes(body), str(content_type)))
    return out


DELIVERY_FAILED: Final = "delivery_failed"
UNDELIVERABLE: Final = "undeliverable"


def count_not_forwarded(conn: sqlite3.Connection, reason: str, now: float, n: int = 1) -> None:
    """Count ``n`` things not forwarded, by ``reason`` (rule 8), in the caller's transaction."""
    conn.execute("INSERT INTO fwd_not_forwarded (reason, count, last_at) VALUES (?, ?, ?)"
                 " ON CONFLICT (reason) DO UPDATE SET count = count + excluded.count, last_at = excluded.last_at",
                 (reason, n, now))


def not_forwarded(conn: sqlite3.Connection) -> dict[str, int]:
    """The counts of rule 8, by reason."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'fwd_not_forwarded'").fetchone():
        return {}
    return {str(r): int(n) for r, n in conn.execute("SELECT reason, count FROM fwd_not_forwarded ORDER BY reason")}


def _fail(tx: WriteTx, delivery_id: int, now: float, why: str) -> None:
    tx.conn.execute("UPDATE fwd_deliveries SET state = 'failed', failed_at = ?, last_error = ? WHERE id = ?",
                    (now, why, delivery_id))
    count_not_forwarded(tx.conn, UNDELIVERABLE, now)
    tx.audit(ACTOR, "forward.outcome", f"delivery:{delivery_id}", {"outcome": "failed", "error": why})


def finish(tx: WriteTx, c: Claim, outcome: Outcome, *, now: float, error: str = "", status: int | None = None,
           wait_s: float = 0.0) -> policy.Next:
    """Close attempt ``c`` with ``outcome`` and move its delivery on (:func:`policy.after_attempt`)."""
    conn = tx.conn
    conn.execute("UPDATE fwd_attempts SET finished_at = ?, outcome = ?, http_status = ?, error = ? WHERE id = ?",
                 (now, outcome.value, status, error, c.attempt_id))
    nxt = policy.after_attempt(outcome, c.in_round, c.recipient.max_attempts, now, wait_s)
    _apply(conn, c.delivery_id, nxt, now, error)
    detail: dict[str, str | int | float | bool | list[str] | None] = {
        "identifier": c.identifier, "recipient": c.recipient.name, "n": c.n, "outcome": outcome.value,
        "state": nxt.state.value, "http_status": status, "error": error,
    }
    if nxt.next_at is not None:
        detail["retry_in_s"] = round(nxt.next_at - now, 3)
    tx.audit(ACTOR, "forward.outcome", f"delivery:{c.delivery_id}", detail)
    return nxt


def _apply(conn: sqlite3.Connection, delivery_id: int, nxt: policy.Next, now: float, error: str) -> None:
    if nxt.state is State.ACKED:
        conn.execute("UPDATE fwd_deliveries SET state = 'acked', acked_at = ?, last_error = '' WHERE id = ?",
                     (now, delivery_id))
    elif nxt.state is State.FAILED:
        conn.execute("UPDATE fwd_deliveries SET state = 'failed', failed_at = ?, last_error = ? WHERE id = ?",
                     (now, error, delivery_id))
        count_not_forwarded(conn, DELIVERY_FAILED, now)
    else:
        conn.execute("UPDATE fwd_deliveries SET next_at = ?, last_error = ? WHERE id = ?",
                     (nxt.next_at, error, delivery_id))


def recover(tx: WriteTx, config: ForwardConfig, now: float) -> int:
    """Close attempts left open by a hub that stopped mid-request; their deliveries are due now."""
    conn = tx.conn
    rows = conn.execute(
        "SELECT a.id, a.delivery_id, a.n, d.round_start, d.recipient FROM fwd_attempts a"
        " JOIN fwd_deliveries d ON d.id = a.delivery_id WHERE a.finished_at IS NULL"
    ).fetchall()
    for attempt_id, did, n, round_start, name in rows:
        why = "the hub stopped during the attempt"
        conn.execute("UPDATE fwd_attempts SET finished_at = ?, outcome = ?, error = ? WHERE id = ?",
                     (now, Outcome.INTERRUPTED.value, why, attempt_id))
        r = config.recipient(str(name))
        in_round = int(n) - int(round_start)
        max_attempts = r.max_attempts if r is not None else in_round
        # Due again at once (this also ends the stopped hub's lease on the delivery).
        nxt = policy.after_attempt(Outcome.INTERRUPTED, in_round, max_attempts, now, 0.0)
        _apply(conn, int(did), nxt, now, why)
        tx.audit(ACTOR, "forward.outcome", f"delivery:{did}",
                 {"n": int(n), "outcome": Outcome.INTERRUPTED.value, "state": nxt.state.value, "error": why})
    return len(rows)


# --- escalation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Escalation:
    """A delivery that was not acknowledged in time (or failed): for the console and the log."""

    delivery_id: int
    identifier: str
    thread: str
    recipient: str
    headline: str
    state: str
    attempts: int
    last_error: str
    created_at: float
    escalated_at: float
    escalated_to: str | None
    """The recipient the message was also queued to (None: the console only)."""
    escalation_delivery_id: int | None
    site: str = ""
    """The alert's site ('' for an alert of a whole area, such as an operation's)."""
    area: str = ""


class EscalationSink(Protocol):
    """Called inside the escalation's transaction: the hub raises its console alarm here."""

    def __call__(self, tx: WriteTx, escalation: Escalation, /) -> None: ...


def escalate(tx: WriteTx, config: ForwardConfig, now: float, sink: EscalationSink) -> list[Escalation]:
    """Escalate every delivery that is due (:func:`policy.escalation_due`), once each."""
    conn = tx.conn
    rows = conn.execute(
        "SELECT d.id, d.identifier, d.thread, d.recipient, d.state, d.attempts, d.last_error, d.created_at,"
        " d.escalate_at, d.escalated_at, d.escalation_of, m.headline, m.site, m.area FROM fwd_deliveries d"
        " JOIN fwd_messages m ON m.identifier = d.identifier"
        " WHERE d.escalated_at IS NULL AND d.state <> 'acked' AND (d.state = 'failed' OR d.escalate_at <= ?)"
        " ORDER BY d.id",
        (now,),
    ).fetchall()
    out: list[Escalation] = []
    for (did, identifier, thread, name, state, attempts, last_error, created_at, escalate_at, escalated_at,
         escalation_of, headline, site, area) in rows:
        if not policy.escalation_due(State(state), escalate_at, escalated_at, now):
            continue
        conn.execute("UPDATE fwd_deliveries SET escalated_at = ? WHERE id = ?", (now, did))
        r = config.recipient(str(name))
        target = config.recipient(r.escalate_to) if (r is not None and r.escalate_to) else None
        new_id: int | None = None
        if target is not None and escalation_of is None:
            new_id = _queue_escalation(conn, int(did), str(identifier), str(thread), target, now)
        esc = Escalation(int(did), str(identifier), str(thread), str(name), str(headline), str(state), int(attempts),
                         str(last_error), float(created_at), now, target.name if target else None, new_id,
                         site=str(site), area=str(area))
        tx.audit(ACTOR, "forward.escalate", f"delivery:{did}", {
            "identifier": esc.identifier, "recipient": esc.recipient, "state": esc.state, "attempts": esc.attempts,
            "escalated_to": esc.escalated_to, "escalation_delivery": new_id,
        })
        sink(tx, esc)
        out.append(esc)
    return out


def _queue_escalation(conn: sqlite3.Connection, delivery_id: int, identifier: str, thread: str, target: Recipient,
                      now: float) -> int | None:
    """Queue ``identifier`` to ``target`` (unless it has it already); it joins the thread."""
    if conn.execute("SELECT 1 FROM fwd_deliveries WHERE identifier = ? AND recipient = ?",
                    (identifier, target.name)).fetchone():
        return None
    variants = [str(r[0]) for r in conn.execute("SELECT variant FROM fwd_payloads WHERE identifier = ?",
                                                (identifier,))]
    wanted = [v for v in variants if v.split("+")[0] == target.format.value]
    if not wanted:
        return None  # the target was configured after the message was rendered: the console has it
    chosen = next((v for v in wanted if v.endswith("+pictures") == target.embed_evidence), wanted[0])
    escalate_at = None if target.escalate_after_s is None else now + target.escalate_after_s
    cur = conn.execute(
        "INSERT INTO fwd_deliveries (identifier, thread, recipient, variant, state, next_at, created_at, escalate_at,"
        " escalation_of) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
        (identifier, thread, target.name, chosen, now, now, escalate_at, delivery_id),
    )
    th = conn.execute("SELECT recipients FROM fwd_threads WHERE key = ?", (thread,)).fetchone()
    if th is not None:
        names = sorted(set(json.loads(th[0])) | {target.name})
        conn.execute("UPDATE fwd_threads SET recipients = ? WHERE key = ?", (json.dumps(names), thread))
    return int(cur.lastrowid or 0)


# --- operator actions and reads -------------------------------------------------------------


def requeue(tx: WriteTx, delivery_id: int, actor: str, reason: str, *, now: float) -> None:
    """An operator sends a failed delivery again (fresh attempts; escalation may happen again)."""
    row = tx.conn.execute("SELECT state, identifier, recipient FROM fwd_deliveries WHERE id = ?",
                          (delivery_id,)).fetchone()
    if row is None:
        raise NotFound(f"no delivery {delivery_id}")
    if row[0] != State.FAILED.value:
        raise Refused(f"delivery {delivery_id} is {row[0]}; only a failed delivery can be sent again")
    if not reason.strip():
        raise Refused("sending a delivery again needs a reason")
    tx.conn.execute("UPDATE fwd_deliveries SET state = 'pending', round_start = attempts, next_at = ?,"
                    " failed_at = NULL, escalated_at = NULL WHERE id = ?", (now, delivery_id))
    tx.audit(actor, "forward.requeue", f"delivery:{delivery_id}",
             {"identifier": str(row[1]), "recipient": str(row[2]), "reason": reason})


def next_wake(conn: sqlite3.Connection) -> float | None:
    """When something is next due: a claimable delivery, or an escalation.

    A delivery waiting behind an earlier one of its thread (rule 5) does not count: it becomes
    claimable only when that one finishes, and the forwarder looks again then.
    """
    row = conn.execute(
        "SELECT min(t) FROM ("
        " SELECT min(d.next_at) AS t FROM fwd_deliveries d WHERE d.state = 'pending' AND NOT EXISTS ("
        "  SELECT 1 FROM fwd_deliveries e WHERE e.recipient = d.recipient AND e.thread = d.thread"
        "  AND e.state = 'pending' AND e.id < d.id)"
        " UNION ALL SELECT min(escalate_at) FROM fwd_deliveries WHERE escalated_at IS NULL AND state <> 'acked')"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])
