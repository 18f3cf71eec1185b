"""Live updates for the console: committed changes fanned out to Server-Sent-Event subscribers.

Each kind of change is a frozen msgspec Struct below (its ``KIND`` is the SSE event name); its
fields, in order, are the JSON body the console reads (hub/web/), so adding a field is fine
and renaming one is a console change.

Overflow policy: each subscriber has a bounded queue (``maxsize``). A subscriber too slow to
keep up never slows ingest: its queue is emptied and replaced by one ``resync`` event, which
tells the console to fetch the current state again. Events are published only after commit,
so a client never sees a change the database does not hold.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import ClassVar

import msgspec

from shared.messages import Scalar

_enc = msgspec.json.Encoder()


class LatestPoint(msgspec.Struct, frozen=True):
    device: str
    point: str
    value: Scalar
    quality: str
    ts: float


class LatestChanged(msgspec.Struct, frozen=True):
    """New latest values of some points of one site."""

    KIND: ClassVar[str] = "latest"
    site: str
    points: list[LatestPoint]


class SiteEvent(msgspec.Struct, frozen=True):
    """An event record from an edge (an alarm-priority event, a local action)."""

    KIND: ClassVar[str] = "event"
    site: str
    seq: int
    kind: str
    device: str | None
    detail: str
    ts: float


class AlarmChanged(msgspec.Struct, frozen=True):
    """One ISA-18.2 transition of one alarm."""

    KIND: ClassVar[str] = "alarm"
    id: int
    site: str
    device: str
    point: str
    rule: str
    priority: str
    state: str
    active: bool
    event: str
    actor: str
    reason: str
    ts: float
    incident_id: int | None
    late: bool = False
    """Its current episode was raised or cleared from late data (hub/alarmdesk.py rule 10)."""
    source: str = "rule"
    """``rule`` (the hub's rules) or ``edge`` (the edge's events)."""


class IncidentChanged(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "incident"
    id: int
    area: str
    state: str


class CommandChanged(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "command"
    cmd_id: str
    state: str
    detail: str


class OperationStarted(msgspec.Struct, frozen=True):
    KIND: ClassVar[str] = "operation"
    id: str
    kind: str
    area: str


class OperationChanged(msgspec.Struct, frozen=True):
    """How many devices of an operation stand in each state (planned, refused, sent, ..., expired)."""

    KIND: ClassVar[str] = "operation"
    id: str
    counts: dict[str, int]


class ExerciseChanged(msgspec.Struct, frozen=True):
    """An exercise started or ended over an area (the console's exercise banner)."""

    KIND: ClassVar[str] = "exercise"
    id: str
    area: str
    state: str
    """``started`` or ``ended``."""
    actor: str
    reason: str


class SiteStateChanged(msgspec.Struct, frozen=True):
    """A site's status (online/offline) changed."""

    KIND: ClassVar[str] = "site"
    site: str
    state: str
    boot: str


class SiteBorn(msgspec.Struct, frozen=True):
    """A site (re)published its birth certificate."""

    KIND: ClassVar[str] = "site"
    site: str
    birth: str
    devices: int


class EscalationRaised(msgspec.Struct, frozen=True):
    """An alert was not acknowledged in time (hub/forward/outbox.py rule 6)."""

    KIND: ClassVar[str] = "escalation"
    delivery_id: int
    identifier: str
    thread: str
    recipient: str
    headline: str
    state: str
    attempts: int
    last_error: str
    escalated_to: str | None


class ProvinceRequestChanged(msgspec.Struct, frozen=True):
    """A request of the province arrived or was decided (hub/requestdesk.py)."""

    KIND: ClassVar[str] = "province_request"
    request_id: str
    state: str


Change = (LatestChanged | SiteEvent | AlarmChanged | IncidentChanged | CommandChanged | OperationStarted
          | OperationChanged | ExerciseChanged | SiteStateChanged | SiteBorn | EscalationRaised
          | ProvinceRequestChanged)


@dataclass(frozen=True)
class LiveEvent:
    kind: str
    """``alarm``, ``latest``, ``site``, ``command``, ``operation``, ``exercise``, ``incident``,
    ``event``, ``escalation``, ``province_request`` or ``resync``."""
    data: bytes
    """The event's JSON body, already encoded."""

    @classmethod
    def of(cls, change: Change) -> LiveEvent:
        return cls(change.KIND, _enc.encode(change))


RESYNC = LiveEvent("resync", b"{}")


class Broadcaster:
    def __init__(self, maxsize: int = 1000) -> None:
        self.maxsize = maxsize
        self._subs: set[asyncio.Queue[LiveEvent]] = set()
        self.overflows = 0

    @property
    def has_subscribers(self) -> bool:
        return bool(self._subs)

    def publish(self, event: LiveEvent) -> None:
        for q in self._subs:
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                self.overflows += 1
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(RESYNC)

    @contextlib.contextmanager
    def subscription(self) -> Iterator[asyncio.Queue[LiveEvent]]:
        """A subscriber's queue for the block's duration. Waiting on it may time out and be
        cancelled safely (unlike an ``anext`` on :meth:`subscribe`, which ends the generator)."""
        q: asyncio.Queue[LiveEvent] = asyncio.Queue(self.maxsize)
        self._subs.add(q)
        try:
            yield q
        finally:
            self._subs.discard(q)

    async def subscribe(self) -> AsyncGenerator[LiveEvent, None]:
        with self.subscription() as q:
            while True:
                yield await q.get()
