"""Pure: what a command may be, the two-person rule for openings, and area operations.

Command lifecycle (stored in ``commands.state``; the engine moves it, this module decides):

    awaiting_approval --approve (a second, distinct supervisor; fresh low water)--> sending
    awaiting_approval --reject (supervisor) / cancel (issuer)-------------------> refused / cancelled
    sending --published--> sent --reply received--> received --terminal reply--> verified |
        rejected | expired | failed
    sending --broker unreachable--> send_failed
    sent | received --no terminal reply by not_after + reply_grace_s--> timed_out

Rules:

1. Actions and their params must fit the device's kind (from its birth) by the action vocabulary
   (shared/vocabulary.py); an unknown device is refused. All of this before anything is signed.
2. ``barrier.open`` and ``gate.open`` are never sent on one person's word: the issuer's request
   waits for a supervisor who is not the issuer. At the request and again at the approval,
   every water-depth reading of the site must be fresh (age within the limit, quality good,
   site online) and below the reopening depth; otherwise the hub refuses. A device's depth
   point is its kind's (shared/vocabulary.py ``depth_point``: ``water_depth_cm`` at an underpass,
   ``water_level_cm`` at a river gate), the same fact the edge's policy watches by default.
3. Every command sent is signed (shared.signing) and carries ``not_after = issued_at + ttl``.
4. *block* closes every barrier and gate of an area; *evacuate* sounds sirens, shows signs and
   plays broadcasts in the area. Each fans out into the commands the vocabulary gives each
   device's kind (shared/vocabulary.py), tracked as one operation.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from hub.errors import Refused
from hub.roles import Role
from shared import vocabulary
from shared.messages import Action, Operation, Quality, ReplyStatus, Scalar


class CommandState(enum.StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    SENDING = "sending"
    SENT = "sent"
    RECEIVED = "received"
    VERIFIED = "verified"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    REFUSED = "refused"
    CANCELLED = "cancelled"
    SEND_FAILED = "send_failed"

    @property
    def is_terminal(self) -> bool:
        return self not in (CommandState.AWAITING_APPROVAL, CommandState.SENDING, CommandState.SENT,
                            CommandState.RECEIVED)

    @classmethod
    def of_reply(cls, status: ReplyStatus) -> CommandState:
        return cls(status.value)


OperationKind = Operation
"""Area operations (:class:`shared.messages.Operation`, which the vocabulary plans) under the hub's name."""


@dataclass(frozen=True)
class Draft:
    site: str
    device: str
    action: Action
    params: dict[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceRef:
    site: str
    device: str
    kind: str


@dataclass(frozen=True)
class DepthReading:
    device: str
    point: str
    value: float | None
    quality: Quality
    ts: float


def check_action(kind: str | None, draft: Draft) -> None:
    """Rule 1, from the vocabulary: the device's kind offers the action and its params fit."""
    if kind is None:
        raise Refused(f"{draft.site}/{draft.device}: unknown device (no birth message names it)")
    problem = vocabulary.check(kind, draft.action, draft.params)
    if problem is not None:
        raise Refused(f"{draft.site}/{draft.device}: {problem}")


def check_fresh_low_water(depths: Sequence[DepthReading], *, now: float, site_online: bool,
                          reopening_depth_cm: float, data_age_limit_s: float) -> None:
    """Rule 2's data condition; raises :class:`Refused` saying which reading fails."""
    if not site_online:
        raise Refused("refused: the site is offline, its data cannot be fresh")
    if not depths:
        raise Refused("refused: no water-depth reading at the site to show the water is low")
    for d in depths:
        age = now - d.ts
        if d.quality is not Quality.GOOD:
            raise Refused(f"refused: {d.device} {d.point} has quality {d.quality.value}")
        if age > data_age_limit_s:
            raise Refused(f"refused: {d.device} {d.point} is stale ({age:.0f} s old, limit {data_age_limit_s:g} s)")
        if d.value is None or d.value >= reopening_depth_cm:
            raise Refused(
                f"refused: {d.device} {d.point} is {d.value} cm, not below the reopening depth "
                f"{reopening_depth_cm:g} cm"
            )


def check_second_person(issued_by: str, approver: str, approver_role: Role) -> None:
    if not approver_role.allows(Role.SUPERVISOR):
        raise Refused(f"refused: approving an opening needs a supervisor; {approver} is {approver_role.value}")
    if approver == issued_by:
        raise Refused(f"refused: two-person rule: {approver} issued this opening and cannot approve it")


def plan_operation(kind: OperationKind, devices: Sequence[DeviceRef]) -> list[Draft]:
    """One command per step the vocabulary gives the operation for each device's kind."""
    return [
        Draft(d.site, d.device, step.action, dict[str, Scalar](step.params))
        for d in sorted(devices, key=lambda d: (d.site, d.device))
        for step in vocabulary.steps(d.kind, kind)
    ]


class DeviceState(enum.StrEnum):
    """Where one device of an area operation stands (``GET /api/operations/{id}``)."""

    PLANNED = "planned"
    REFUSED = "refused"
    SENT = "sent"
    RECEIVED = "received"
    VERIFIED = "verified"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"


_DEVICE_STATE: Final = {
    CommandState.AWAITING_APPROVAL: DeviceState.PLANNED,
    CommandState.SENDING: DeviceState.PLANNED,
    CommandState.SENT: DeviceState.SENT,
    CommandState.RECEIVED: DeviceState.RECEIVED,
    CommandState.VERIFIED: DeviceState.VERIFIED,
    CommandState.REJECTED: DeviceState.REJECTED,
    CommandState.EXPIRED: DeviceState.EXPIRED,
    CommandState.FAILED: DeviceState.FAILED,
    CommandState.TIMED_OUT: DeviceState.EXPIRED,
    CommandState.SEND_FAILED: DeviceState.FAILED,
    CommandState.REFUSED: DeviceState.REFUSED,
    CommandState.CANCELLED: DeviceState.REFUSED,
}


def device_state(command: CommandState | None) -> DeviceState:
    """A device's state in an operation from its command's (None: refused before a command existed).

    No terminal reply by the deadline (``timed_out``) counts as expired, a command the broker
    never took (``send_failed``) as failed, a withdrawn opening as refused.
    """
    return DeviceState.REFUSED if command is None else _DEVICE_STATE[command]


def count_states(states: Sequence[DeviceState]) -> dict[str, int]:
    """How many devices are in each state; every state is named, zeros included."""
    return {s.value: sum(1 for x in states if x is s) for s in DeviceState}


@dataclass(frozen=True)
class ActiveExercise:
    id: str
    area: str


def exercise_for(area: str, active: Sequence[ActiveExercise], what: str) -> str:
    """The active exercise over ``area``; :class:`Refused` says that none covers ``what``."""
    for e in active:
        if e.area == area:
            return e.id
    raise Refused(f"refused: no active exercise covers {what}; a supervisor starts one first")
