"""Pure: the edge's event kinds, the one list of them, and which of them are alarms at the hub.

DESIGN §6: alarms come from the hub's rules on readings *and* from the edge's own alarm-priority
events (a barrier that failed to close, a siren that sounded, a slope alarm). This module says,
for every event kind an edge sends (edge/agent.py, edge/policy.py, edge/outbox.py), what it
means and whether it raises an ISA-18.2 alarm at the hub: at which priority (the hub's
``AlarmPriority`` values), about which point, and which later event kinds, or which readings of
the same device, return it to normal.

Kinds (``<action>`` is a local action, :data:`LOCAL_ACTIONS`):

====================================  ==========================================================
``local.<action>``                    the edge started a local action (its outcome follows)
``local.<action>.verified``           the local action was written and read back
``local.<action>.failed``             the local action did not reach its state in time
``displacement.normal|warning|alarm`` a slope meter's velocity grade changed
``forecast.flood_warning``            the flood model says the closing depth comes soon
``policy.depth_untrusted``            a depth that cannot be trusted: no local action on it
``outbox.thinned|new_epoch|replaced`` the edge's outbox thinned telemetry, or started afresh
``agent.health``                      the agent's periodic health counters
====================================  ==========================================================

Alarms (all others raise none; the hub's own rules already speak for the readings behind
``policy.depth_untrusted``, the rest is bookkeeping):

- ``local.barrier.close.failed`` / ``local.gate.close.failed`` → critical, about the barrier's
  (gate's) state; normal again on a later ``…close.verified`` or a reading of ``closed``.
- ``local.siren.on.failed`` → critical (nobody was warned); normal on a later
  ``local.siren.on.verified`` or a ``siren_on`` reading of true.
- ``local.siren.on.verified`` → high (a siren sounded at a semi-basement); normal when
  ``siren_on`` reads false again.
- ``displacement.alarm`` → critical; normal on ``displacement.normal`` or ``displacement.warning``
  (the grade fell; the warning is its own alarm).
- ``displacement.warning`` → high; normal on ``displacement.normal``.
- ``forecast.flood_warning`` → high, about the depth; normal once the barrier (or gate) of that
  device is closed: a later ``…close.verified`` or a reading of ``closed``. (The edge sends no
  event when the forecast stops warning; a closed barrier is what the warning asked for.)

A kind not in :data:`KINDS` (an edge newer than the hub, or a hostile one) is stored by the hub
and raises nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from shared.messages import Action

Priority = Literal["critical", "high", "medium", "low"]
"""The hub's alarm priorities (hub/rules.py ``AlarmPriority`` values; a test keeps them equal)."""

LOCAL_ACTIONS: Final = (Action.BARRIER_CLOSE, Action.GATE_CLOSE, Action.SIREN_ON)
"""The actions an edge takes on its own (DESIGN §5: closing is fail-safe and local)."""

VERIFIED: Final = "verified"
FAILED: Final = "failed"


def local(action: Action) -> str:
    """``local.<action>``: the edge started a local action."""
    return f"local.{action.value}"


def local_outcome(action: Action, verified: bool) -> str:
    """``local.<action>.verified`` or ``local.<action>.failed``."""
    return f"{local(action)}.{VERIFIED if verified else FAILED}"


def displacement(grade: str) -> str:
    """``displacement.<grade>`` for a grade ``normal``, ``warning`` or ``alarm``."""
    return f"displacement.{grade}"


DISPLACEMENT_GRADES: Final = ("normal", "warning", "alarm")
FORECAST_FLOOD_WARNING: Final = "forecast.flood_warning"
POLICY_DEPTH_UNTRUSTED: Final = "policy.depth_untrusted"
OUTBOX_THINNED: Final = "outbox.thinned"
OUTBOX_NEW_EPOCH: Final = "outbox.new_epoch"
OUTBOX_REPLACED: Final = "outbox.replaced"
AGENT_HEALTH: Final = "agent.health"


@dataclass(frozen=True)
class ClearingReading:
    """A reading of the alarm's device that returns it to normal: ``point`` showing one of
    ``values`` (as text: ``true``/``false`` for booleans), with good quality."""

    point: str
    values: frozenset[str]


@dataclass(frozen=True)
class EventAlarm:
    """The ISA-18.2 alarm an event kind raises at the hub, one per (site, device, ``name``)."""

    name: str
    """The alarm's rule name at the hub (its ``source`` is ``edge``)."""
    priority: Priority
    point: str
    """The point of the device the alarm is about (where the console shows it)."""
    cleared_by: tuple[str, ...]
    """Event kinds of the same device that return it to normal."""
    cleared_when: tuple[ClearingReading, ...] = ()
    """Readings of the same device that return it to normal."""


@dataclass(frozen=True)
class EventKind:
    kind: str
    meaning: str
    alarm: EventAlarm | None = None


_CLOSE_STATE: Final = {Action.BARRIER_CLOSE: "barrier_state", Action.GATE_CLOSE: "gate_state"}


def _kinds() -> tuple[EventKind, ...]:
    out: list[EventKind] = []
    for action in LOCAL_ACTIONS:
        out.append(EventKind(local(action), f"the edge started {action.value} on its own"))
        verified, failed = local_outcome(action, True), local_outcome(action, False)
        state = _CLOSE_STATE.get(action)
        if state is not None:
            closed = (ClearingReading(state, frozenset({"closed"})),)
            out.append(EventKind(verified, f"the edge's {action.value} was read back"))
            out.append(EventKind(failed, f"the edge's {action.value} did not reach its state in time", EventAlarm(
                name=failed, priority="critical", point=state, cleared_by=(verified,), cleared_when=closed)))
        else:  # siren.on
            out.append(EventKind(verified, "a siren sounded", EventAlarm(
                name=verified, priority="high", point="siren_on", cleared_by=(),
                cleared_when=(ClearingReading("siren_on", frozenset({"false"})),))))
            out.append(EventKind(failed, "a siren did not sound", EventAlarm(
                name=failed, priority="critical", point="siren_on", cleared_by=(verified,),
                cleared_when=(ClearingReading("siren_on", frozenset({"true"})),))))
    normal, warning, alarm = (displacement(g) for g in DISPLACEMENT_GRADES)
    out += [
        EventKind(normal, "a slope meter's velocity is back to normal"),
        EventKind(warning, "a slope meter's velocity reached the warning grade", EventAlarm(
            name=warning, priority="high", point="displacement_mm", cleared_by=(normal,))),
        EventKind(alarm, "a slope meter's velocity reached the alarm grade", EventAlarm(
            name=alarm, priority="critical", point="displacement_mm", cleared_by=(normal, warning))),
        EventKind(FORECAST_FLOOD_WARNING, "the flood model says the closing depth comes soon", EventAlarm(
            name=FORECAST_FLOOD_WARNING, priority="high", point="water_depth_cm",
            cleared_by=tuple(local_outcome(a, True) for a in _CLOSE_STATE),
            cleared_when=tuple(ClearingReading(p, frozenset({"closed"})) for p in _CLOSE_STATE.values()))),
        EventKind(POLICY_DEPTH_UNTRUSTED, "a depth the edge cannot trust: no local action on it"),
        EventKind(OUTBOX_THINNED, "the outbox was full and thinned telemetry"),
        EventKind(OUTBOX_NEW_EPOCH, "the outbox started a new epoch"),
        EventKind(OUTBOX_REPLACED, "a corrupt outbox was moved aside and replaced"),
        EventKind(AGENT_HEALTH, "the agent's health counters"),
    ]
    return tuple(out)


KINDS: Final[Mapping[str, EventKind]] = MappingProxyType({k.kind: k for k in _kinds()})
"""Every event kind an edge sends, by kind."""

ALARMS: Final[tuple[EventAlarm, ...]] = tuple(k.alarm for k in KINDS.values() if k.alarm is not None)


_ByReading = tuple[tuple[EventAlarm, frozenset[str]], ...]


def _index() -> tuple[Mapping[str, tuple[EventAlarm, ...]], Mapping[str, _ByReading]]:
    by_event: dict[str, list[EventAlarm]] = {}
    by_point: dict[str, list[tuple[EventAlarm, frozenset[str]]]] = {}
    for a in ALARMS:
        for kind in a.cleared_by:
            by_event.setdefault(kind, []).append(a)
        for c in a.cleared_when:
            by_point.setdefault(c.point, []).append((a, c.values))
    return (MappingProxyType({k: tuple(v) for k, v in by_event.items()}),
            MappingProxyType({k: tuple(v) for k, v in by_point.items()}))


_CLEARED_BY_EVENT, _CLEARED_BY_POINT = _index()


def alarm_of(kind: str) -> EventAlarm | None:
    """The alarm ``kind`` raises; None for a kind that raises none, or an unknown kind."""
    k = KINDS.get(kind)
    return k.alarm if k is not None else None


def cleared_by_event(kind: str) -> tuple[EventAlarm, ...]:
    """The alarms an event of ``kind`` returns to normal (at the same device)."""
    return _CLEARED_BY_EVENT.get(kind, ())


def cleared_by_reading(point: str) -> _ByReading:
    """The alarms a reading of ``point`` may return to normal, each with the values that do."""
    return _CLEARED_BY_POINT.get(point, ())
