"""The ISA-18.2 alarm state machine: a table of legal moves and Hypothesis over random action runs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.alarms import SYSTEM, Action, Alarm, AlarmEvent, AlarmState, apply, check_invariants, shelve_expired
from hub.errors import IllegalTransition

MAX_SHELVE = 3600.0
A = AlarmState
E = AlarmEvent

# Every legal (state, active, event) and where it leads; everything else must raise.
LEGAL: dict[tuple[AlarmState, bool, AlarmEvent], AlarmState] = {
    (A.NORMAL, False, E.ACTIVATE): A.UNACK,
    (A.RTN_UNACK, False, E.ACTIVATE): A.UNACK,
    (A.SHELVED, False, E.ACTIVATE): A.SHELVED,
    (A.OUT_OF_SERVICE, False, E.ACTIVATE): A.OUT_OF_SERVICE,
    (A.UNACK, True, E.CLEAR): A.RTN_UNACK,
    (A.ACKED, True, E.CLEAR): A.NORMAL,
    (A.SHELVED, True, E.CLEAR): A.SHELVED,
    (A.OUT_OF_SERVICE, True, E.CLEAR): A.OUT_OF_SERVICE,
    (A.UNACK, True, E.ACK): A.ACKED,
    (A.RTN_UNACK, False, E.ACK): A.NORMAL,
    **{(s, act, E.SHELVE): A.SHELVED for s, act in
       ((A.NORMAL, False), (A.UNACK, True), (A.ACKED, True), (A.RTN_UNACK, False))},
    (A.SHELVED, True, E.UNSHELVE): A.UNACK,
    (A.SHELVED, False, E.UNSHELVE): A.NORMAL,
    **{(s, act, E.REMOVE): A.OUT_OF_SERVICE for s, act in
       ((A.NORMAL, False), (A.UNACK, True), (A.ACKED, True), (A.RTN_UNACK, False), (A.SHELVED, True),
        (A.SHELVED, False))},
    (A.OUT_OF_SERVICE, True, E.RESTORE): A.UNACK,
    (A.OUT_OF_SERVICE, False, E.RESTORE): A.NORMAL,
}

# The reachable (state, condition) pairs: invariant 1.
REACHABLE = [(A.NORMAL, False), (A.UNACK, True), (A.ACKED, True), (A.RTN_UNACK, False), (A.SHELVED, True),
             (A.SHELVED, False), (A.OUT_OF_SERVICE, True), (A.OUT_OF_SERVICE, False)]


def make(state: AlarmState, active: bool) -> Alarm:
    if state is A.SHELVED:
        return Alarm(state, active, shelved_until=500.0, shelve_reason="nuisance while the pump is serviced")
    return Alarm(state, active)


def act(event: AlarmEvent, ts: float = 100.0, actor: str = "kim", reason: str = "checked on CCTV") -> Action:
    return Action(event, actor, reason, ts, shelve_until=ts + 60 if event is E.SHELVE else None)


@pytest.mark.parametrize(("state", "active"), REACHABLE)
@pytest.mark.parametrize("event", list(AlarmEvent))
def test_every_move_is_legal_exactly_as_the_table_says(state: AlarmState, active: bool, event: AlarmEvent) -> None:
    """The transition table of the module docstring, move by move, legal and illegal."""
    alarm = make(state, active)
    expected = LEGAL.get((state, active, event))
    if expected is None:
        with pytest.raises(IllegalTransition):
            apply(alarm, act(event), max_shelve_s=MAX_SHELVE)
        return
    new, tr = apply(alarm, act(event), max_shelve_s=MAX_SHELVE)
    assert new.state is expected
    assert (tr.from_state, tr.to_state, tr.event) == (state, expected, event)
    check_invariants(new)


@pytest.mark.parametrize(("actor", "reason"), [("", "why"), ("kim", ""), ("  ", "why"), ("kim", " ")])
def test_a_transition_without_actor_or_reason_is_illegal(actor: str, reason: str) -> None:
    """Every transition stores who and why: without either there is no transition."""
    with pytest.raises(IllegalTransition):
        apply(Alarm(), Action(E.ACTIVATE, actor, reason, 1.0), max_shelve_s=MAX_SHELVE)


def test_shelving_needs_an_end_within_the_maximum() -> None:
    """Shelving is bounded: no end time, an end in the past, or beyond the maximum is refused."""
    for until in (None, 99.0, 100.0 + MAX_SHELVE + 1):
        with pytest.raises(IllegalTransition):
            apply(Alarm(A.UNACK, True), Action(E.SHELVE, "kim", "noisy", 100.0, shelve_until=until),
                  max_shelve_s=MAX_SHELVE)
    new, _ = apply(Alarm(A.UNACK, True), Action(E.SHELVE, "kim", "noisy", 100.0, shelve_until=100.0 + MAX_SHELVE),
                   max_shelve_s=MAX_SHELVE)
    assert not shelve_expired(new, 100.0 + MAX_SHELVE - 1)
    assert shelve_expired(new, 100.0 + MAX_SHELVE)


actions = st.builds(
    Action,
    event=st.sampled_from(AlarmEvent),
    actor=st.sampled_from(["kim", "lee", SYSTEM, ""]),
    reason=st.sampled_from(["water at 17 cm", "checked", ""]),
    ts=st.floats(0, 10_000),
    shelve_until=st.none() | st.floats(0, 20_000),
)


@settings(max_examples=400)
@given(st.lists(actions, max_size=40))
def test_no_sequence_of_actions_reaches_an_illegal_state(run: list[Action]) -> None:
    """Whatever is tried in whatever order, every alarm state reached keeps the invariants, each
    accepted action is a table move with an actor and a reason, and a refused one changes nothing."""
    alarm = Alarm()
    for action in run:
        try:
            new, tr = apply(alarm, action, max_shelve_s=MAX_SHELVE)
        except IllegalTransition:
            continue
        check_invariants(new)
        assert tr.actor.strip()
        assert tr.reason.strip()
        assert tr.ts == action.ts
        assert LEGAL[(alarm.state, alarm.active, action.event)] is new.state
        assert (new.state, new.active) in REACHABLE
        alarm = new
