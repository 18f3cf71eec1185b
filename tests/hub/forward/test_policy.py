"""Pure delivery decisions: what counts as an acknowledgement, retries, failure, escalation."""

from __future__ import annotations

import random

import pytest

from hub.forward.policy import Next, Outcome, State, after_attempt, backoff_s, classify, escalation_due
from shared import retry


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, '{"identifier": "hub.1"}', Outcome.ACKED),
        (202, "accepted hub.1", Outcome.ACKED),
        (200, '{"result": "OK"}', Outcome.RETRY),  # a 2xx without the identifier proves nothing
        (503, "hub.1", Outcome.RETRY),
        (429, "", Outcome.RETRY),
        (408, "", Outcome.RETRY),
        (400, "", Outcome.REJECTED),
        (415, "", Outcome.REJECTED),
        (302, "", Outcome.RETRY),
    ],
)
def test_an_answer_acknowledges_only_with_2xx_and_the_identifier(status: int, body: str, outcome: Outcome) -> None:
    assert classify(status, body, "hub.1")[0] is outcome


@pytest.mark.parametrize(
    ("outcome", "made", "expected"),
    [
        (Outcome.ACKED, 1, Next(State.ACKED, None)),
        (Outcome.RETRY, 1, Next(State.PENDING, 105.0)),
        (Outcome.INTERRUPTED, 2, Next(State.PENDING, 105.0)),
        (Outcome.RETRY, 3, Next(State.FAILED, None)),
        (Outcome.REJECTED, 1, Next(State.FAILED, None)),
    ],
)
def test_state_after_an_attempt(outcome: Outcome, made: int, expected: Next) -> None:
    assert after_attempt(outcome, made, 3, now=100.0, wait_s=5.0) == expected


@pytest.mark.parametrize(
    ("state", "escalate_at", "escalated_at", "now", "due"),
    [
        (State.PENDING, 120.0, None, 119.9, False),
        (State.PENDING, 120.0, None, 120.0, True),
        (State.PENDING, 120.0, 120.0, 500.0, False),  # once only
        (State.ACKED, 120.0, None, 500.0, False),
        (State.FAILED, 120.0, None, 10.0, True),  # a failure escalates before the timer
        (State.FAILED, None, None, 10.0, True),  # ... even without one
        (State.PENDING, None, None, 1e9, False),
    ],
)
def test_escalation_is_due_once_after_the_set_time_or_on_failure(
    state: State, escalate_at: float | None, escalated_at: float | None, now: float, due: bool
) -> None:
    assert escalation_due(state, escalate_at, escalated_at, now) is due


def test_backoff_is_jittered_exponential_and_capped_and_zero_in_tests() -> None:
    rng = random.Random(7)
    with retry.zero_waits(False):
        waits = [backoff_s(n, 1.0, 60.0, rng) for n in range(1, 12)]
    assert all(0.0 <= w <= min(60.0, 2.0 ** (n - 1)) for n, w in enumerate(waits, start=1))
    assert len(set(waits)) == len(waits)
    assert backoff_s(5, 1.0, 60.0, rng) == 0.0  # the autouse fixture zeroes waits
