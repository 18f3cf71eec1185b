"""Pure: the delivery decisions — what an answer means, when to try again, when to escalate.

- An attempt is **acknowledged** when the recipient answers HTTP 2xx *and* the body contains the
  message's identifier: a 2xx without it (a proxy's, a load balancer's) proves nothing.
- A **permanent** refusal (400, 401, 403, 404, 405, 410, 413, 415, 422) ends the delivery at once:
  the same bytes will be refused again, and a person must look (it escalates now).
- Anything else (network error, timeout, 408, 425, 429, 5xx, a 2xx without the identifier) is
  tried again after a full-jitter exponential backoff from the one retry helper, until
  ``max_attempts`` attempts have been made; then the delivery fails and escalates.
- A delivery **escalates** once, when it is unacknowledged ``escalate_after_s`` after it was
  created, or as soon as it has failed, whichever comes first. A recipient without the timer
  (``escalate_after_s = 0``) still escalates a failed delivery.
"""

from __future__ import annotations

import enum
import itertools
import random
from dataclasses import dataclass
from typing import Final

from shared.retry import backoff_delays

PERMANENT: Final = frozenset({400, 401, 403, 404, 405, 410, 413, 415, 422})


class Outcome(enum.StrEnum):
    ACKED = "acked"
    RETRY = "retry"
    REJECTED = "rejected"
    INTERRUPTED = "interrupted"
    """The hub stopped while the attempt was in flight (found open at start-up)."""


class State(enum.StrEnum):
    PENDING = "pending"
    ACKED = "acked"
    FAILED = "failed"


def classify(status: int, body: str, identifier: str) -> tuple[Outcome, str]:
    """What an HTTP answer means for the delivery of ``identifier``, and why."""
    if 200 <= status < 300:
        if identifier in body:
            return Outcome.ACKED, ""
        return Outcome.RETRY, f"HTTP {status} without the identifier: not an acknowledgement"
    if status in PERMANENT:
        return Outcome.REJECTED, f"HTTP {status}: refused"
    return Outcome.RETRY, f"HTTP {status}"


def backoff_s(attempts_made: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """The wait before the next attempt after ``attempts_made`` failed ones (0 under zero_waits)."""
    n = max(0, attempts_made - 1)
    return next(itertools.islice(backoff_delays(initial_s, max_s, rng), n, None))


@dataclass(frozen=True)
class Next:
    state: State
    next_at: float | None


def after_attempt(outcome: Outcome, attempts_made: int, max_attempts: int, now: float, wait_s: float) -> Next:
    """The delivery's state after an attempt with ``outcome`` (``attempts_made`` includes it)."""
    if outcome is Outcome.ACKED:
        return Next(State.ACKED, None)
    if outcome is Outcome.REJECTED or attempts_made >= max_attempts:
        return Next(State.FAILED, None)
    return Next(State.PENDING, now + wait_s)


def escalation_due(state: State, escalate_at: float | None, escalated_at: float | None, now: float) -> bool:
    """Whether an unacknowledged delivery escalates now (at most once)."""
    if state is State.ACKED or escalated_at is not None:
        return False
    if state is State.FAILED:
        return True
    return escalate_at is not None and now >= escalate_at
