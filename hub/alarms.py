"""Pure: the ISA-18.2 alarm state machine.

One alarm exists per (site, device, point, rule). It has an annunciation *state* and, apart
from it, the process *condition* (``active``: the rule says the limit is crossed). Values in,
values out: :func:`apply` takes an alarm and an action and returns the new alarm and the
transition to record, or raises :class:`hub.errors.IllegalTransition` and changes nothing.

States (ISA-18.2 §11 letters in brackets):

    normal [A]                       condition clear, nothing to acknowledge
    unacknowledged [B]               condition active, not yet acknowledged
    acknowledged [C]                 condition active, acknowledged
    rtn_unacknowledged [D]           condition returned to normal before anyone acknowledged
    shelved [F]                      silenced by an operator, with a reason and an end time
    out_of_service [H]               taken out of service (maintenance), with a reason

Transitions (event, from → to); anything not listed is illegal:

    activate   normal → unacknowledged          rtn_unacknowledged → unacknowledged
               shelved → shelved                out_of_service → out_of_service   (condition noted)
    clear      unacknowledged → rtn_unacknowledged    acknowledged → normal
               shelved → shelved                out_of_service → out_of_service   (condition noted)
    ack        unacknowledged → acknowledged    rtn_unacknowledged → normal
    shelve     normal | unacknowledged | acknowledged | rtn_unacknowledged → shelved
    unshelve   shelved → unacknowledged if the condition is active, else normal
               (by an operator, or by the system when ``shelved_until`` has passed)
    remove     any state but out_of_service → out_of_service
    restore    out_of_service → unacknowledged if the condition is active, else normal

Invariants (checked by the property tests):

1. unacknowledged and acknowledged imply an active condition; normal and
   rtn_unacknowledged imply a clear one.
2. shelved carries a non-empty reason and an end time after the shelving, at most
   ``max_shelve_s`` later; no other state carries either.
3. activate is only legal when the condition is clear, clear only when it is active.
4. Every transition names an actor and a reason (``system`` and the rule's words for process
   events); an action without them is illegal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from hub.errors import IllegalTransition


class AlarmState(enum.StrEnum):
    NORMAL = "normal"
    UNACK = "unacknowledged"
    ACKED = "acknowledged"
    RTN_UNACK = "rtn_unacknowledged"
    SHELVED = "shelved"
    OUT_OF_SERVICE = "out_of_service"

    @property
    def needs_attention(self) -> bool:
        return self in (AlarmState.UNACK, AlarmState.RTN_UNACK)


class AlarmEvent(enum.StrEnum):
    ACTIVATE = "activate"
    CLEAR = "clear"
    ACK = "ack"
    SHELVE = "shelve"
    UNSHELVE = "unshelve"
    REMOVE = "remove"
    RESTORE = "restore"

    @property
    def by_operator(self) -> bool:
        return self not in (AlarmEvent.ACTIVATE, AlarmEvent.CLEAR)


SYSTEM = "system"
"""The actor of process events and automatic unshelving."""


@dataclass(frozen=True)
class Alarm:
    state: AlarmState = AlarmState.NORMAL
    active: bool = False
    shelved_until: float | None = None
    shelve_reason: str = ""


@dataclass(frozen=True)
class Action:
    event: AlarmEvent
    actor: str
    reason: str
    ts: float
    shelve_until: float | None = None


@dataclass(frozen=True)
class Transition:
    event: AlarmEvent
    from_state: AlarmState
    to_state: AlarmState
    actor: str
    reason: str
    ts: float


_SHELVABLE = frozenset({AlarmState.NORMAL, AlarmState.UNACK, AlarmState.ACKED, AlarmState.RTN_UNACK})


def apply(alarm: Alarm, action: Action, *, max_shelve_s: float) -> tuple[Alarm, Transition]:
    """The alarm after ``action``, and the transition to record; raises IllegalTransition."""
    if not action.actor.strip():
        raise IllegalTransition(f"{action.event.value}: every transition needs an actor")
    if not action.reason.strip():
        raise IllegalTransition(f"{action.event.value}: every transition needs a reason")
    s = alarm.state
    ev = action.event
    new: Alarm
    if ev is AlarmEvent.ACTIVATE:
        if alarm.active:
            raise IllegalTransition("activate: the condition is active already")
        if s in (AlarmState.NORMAL, AlarmState.RTN_UNACK):
            new = replace(alarm, state=AlarmState.UNACK, active=True)
        else:  # shelved, out of service: note the condition, annunciate nothing
            new = replace(alarm, active=True)
    elif ev is AlarmEvent.CLEAR:
        if not alarm.active:
            raise IllegalTransition("clear: the condition is clear already")
        if s is AlarmState.UNACK:
            new = replace(alarm, state=AlarmState.RTN_UNACK, active=False)
        elif s is AlarmState.ACKED:
            new = replace(alarm, state=AlarmState.NORMAL, active=False)
        else:
            new = replace(alarm, active=False)
    elif ev is AlarmEvent.ACK:
        if s is AlarmState.UNACK:
            new = replace(alarm, state=AlarmState.ACKED)
        elif s is AlarmState.RTN_UNACK:
            new = replace(alarm, state=AlarmState.NORMAL)
        else:
            raise IllegalTransition(f"ack: nothing to acknowledge in state {s.value}")
    elif ev is AlarmEvent.SHELVE:
        if s not in _SHELVABLE:
            raise IllegalTransition(f"shelve: not from state {s.value}")
        until = action.shelve_until
        if until is None or until <= action.ts:
            raise IllegalTransition("shelve: needs an end time after now")
        if until - action.ts > max_shelve_s:
            raise IllegalTransition(f"shelve: at most {max_shelve_s:g} s")
        new = replace(alarm, state=AlarmState.SHELVED, shelved_until=until, shelve_reason=action.reason)
    elif ev is AlarmEvent.UNSHELVE:
        if s is not AlarmState.SHELVED:
            raise IllegalTransition(f"unshelve: not shelved (state {s.value})")
        new = Alarm(state=AlarmState.UNACK if alarm.active else AlarmState.NORMAL, active=alarm.active)
    elif ev is AlarmEvent.REMOVE:
        if s is AlarmState.OUT_OF_SERVICE:
            raise IllegalTransition("remove: out of service already")
        new = Alarm(state=AlarmState.OUT_OF_SERVICE, active=alarm.active)
    elif ev is AlarmEvent.RESTORE:
        if s is not AlarmState.OUT_OF_SERVICE:
            raise IllegalTransition(f"restore: not out of service (state {s.value})")
        new = Alarm(state=AlarmState.UNACK if alarm.active else AlarmState.NORMAL, active=alarm.active)
    else:  # pragma: no cover - the enum is closed
        raise IllegalTransition(f"unknown event {ev!r}")
    return new, Transition(ev, s, new.state, action.actor, action.reason, action.ts)


def check_invariants(alarm: Alarm) -> None:
    """Raise AssertionError if ``alarm`` breaks invariants 1 and 2 (for tests and debugging)."""
    if alarm.state in (AlarmState.UNACK, AlarmState.ACKED):
        assert alarm.active, alarm
    if alarm.state in (AlarmState.NORMAL, AlarmState.RTN_UNACK):
        assert not alarm.active, alarm
    if alarm.state is AlarmState.SHELVED:
        assert alarm.shelved_until is not None, alarm
        assert alarm.shelve_reason, alarm
    else:
        assert alarm.shelved_until is None, alarm
        assert not alarm.shelve_reason, alarm


def shelve_expired(alarm: Alarm, now: float) -> bool:
    return alarm.state is AlarmState.SHELVED and alarm.shelved_until is not None and now >= alarm.shelved_until
