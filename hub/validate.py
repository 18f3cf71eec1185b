"""Pure: what a decoded edge message must also be before the store takes it (DESIGN §3,
"Hostile input").

msgspec decoding (shared/messages.py) already bounds names, texts, payload size and refuses
non-finite numbers (NaN is not JSON; ``1e999`` is out of range) and lone surrogates. What it
lets through and the hub's store or mirror cannot hold is checked here, before the intake
changes anything:

1. Every ``seq`` (records, replies) and a batch's ``floor_seq`` is in 1..2^63-1: SQLite's
   INTEGER is signed 64-bit (a bigger value raises, or turns into a REAL through JSON).
2. A birth lists each device id once (``devices`` is keyed by (site, device)).
3. A reading's integer value fits SQLite's INTEGER, and a text value is at most
   :data:`MAX_TEXT_VALUE` characters (it is held in memory as the point's latest and sent to
   every console).
4. Nothing is dated more than ``max_skew_s`` after its receipt: a status or birth from the
   future is refused whole; a record from the future is refused alone (:attr:`Verdict.future`),
   so one bad clock reading can neither freeze a point's latest value (a reading becomes the
   latest only if not older than it) nor hold up the rest of its batch.

A refusal names its :class:`Reason`; the intake quarantines the message (or the records) with it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from hub.inbound import EdgeMessage
from shared.messages import MAX_SEQ, Birth, DataBatch, Reading, Record, Scalar, Status

MIN_INT: Final = -(2**63)
MAX_INT: Final = 2**63 - 1
MAX_TEXT_VALUE: Final = 1024


class Reason(enum.StrEnum):
    """Why a message (or a record) is in the quarantine; counted per reason."""

    MALFORMED = "malformed"
    """Not a valid message for its topic (decoding failed, wrong topic, wrong site)."""
    UNKNOWN_SITE = "unknown_site"
    SEQ_RANGE = "seq_out_of_range"
    DUPLICATE_DEVICE = "duplicate_device"
    VALUE = "value_unstorable"
    FUTURE = "future_timestamp"
    STORE = "store_error"
    """Writing it failed unexpectedly; it was rolled back alone."""


@dataclass(frozen=True)
class Refusal:
    reason: Reason
    detail: str


@dataclass(frozen=True)
class Verdict:
    refusal: Refusal | None = None
    """The whole message is refused."""
    future: frozenset[int] = frozenset()
    """Seqs of a batch's records dated too far ahead: each is refused alone."""


OK: Final = Verdict()


def _seq_ok(seq: int) -> bool:
    return 1 <= seq <= MAX_SEQ


def _value_problem(value: Scalar) -> str | None:
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return None  # floats are finite after decoding
    if isinstance(value, int):
        return None if MIN_INT <= value <= MAX_INT else "an integer value outside 64 bits"
    if len(value) > MAX_TEXT_VALUE:
        return f"a text value of {len(value)} characters (at most {MAX_TEXT_VALUE})"
    return None


def check(msg: EdgeMessage, received: float, max_skew_s: float) -> Verdict:
    """Rules 1-4 for one decoded message received at ``received`` (the hub's clock)."""
    limit = received + max_skew_s
    if isinstance(msg, DataBatch):
        return _batch(msg, limit)
    if msg.ts > limit:
        return Verdict(Refusal(Reason.FUTURE, f"{type(msg).__name__.lower()} dated {msg.ts - received:.0f} s"
                                              " after its receipt"))
    if isinstance(msg, Birth):
        seen: set[str] = set()
        for d in msg.devices:
            if d.id in seen:
                return Verdict(Refusal(Reason.DUPLICATE_DEVICE, f"birth lists device {d.id!r} twice"))
            seen.add(d.id)
    else:
        assert isinstance(msg, Status)
    return OK


def _batch(batch: DataBatch, limit: float) -> Verdict:
    if batch.floor_seq is not None and not _seq_ok(batch.floor_seq):
        return Verdict(Refusal(Reason.SEQ_RANGE, f"floor_seq {batch.floor_seq} is outside 1..2^63-1"))
    for lo, hi in batch.thinned:
        if not (_seq_ok(lo) and _seq_ok(hi)):
            return Verdict(Refusal(Reason.SEQ_RANGE, f"thinned range [{lo}, {hi}] is outside 1..2^63-1"))
    future: list[int] = []
    for r in batch.records:
        if not 1 <= r.seq <= MAX_SEQ:
            return Verdict(Refusal(Reason.SEQ_RANGE, f"record seq {r.seq} is outside 1..2^63-1"))
        if type(r) is Reading and (problem := _value_problem(r.value)) is not None:
            return Verdict(Refusal(Reason.VALUE, f"record seq {r.seq}: {problem}"))
        if r.ts > limit:
            future.append(r.seq)
    return Verdict(future=frozenset(future)) if future else OK


def future_records(batch: DataBatch, seqs: frozenset[int]) -> list[Record]:
    """The records of ``batch`` that :func:`check` refused for their time."""
    return [r for r in batch.records if r.seq in seqs]
