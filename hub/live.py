"""Live updates for the console: committed changes fanned out to Server-Sent-Event subscribers.

Overflow policy: each subscriber has a bounded queue (``maxsize``). A subscriber too slow to
keep up never slows ingest: its queue is emptied and replaced by one ``resync`` event, which
tells the console to fetch the current state again. Events are published only after commit,
so a client never sees a change the database does not hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import msgspec

_enc = msgspec.json.Encoder()


@dataclass(frozen=True)
class LiveEvent:
    kind: str
    """``alarm``, ``latest``, ``site``, ``command``, ``operation``, ``incident``, ``event`` or ``resync``."""
    data: bytes
    """The event's JSON body, already encoded."""

    @classmethod
    def of(cls, kind: str, body: object) -> LiveEvent:
        return cls(kind, _enc.encode(body))


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

    async def subscribe(self) -> AsyncGenerator[LiveEvent, None]:
        q: asyncio.Queue[LiveEvent] = asyncio.Queue(self.maxsize)
        self._subs.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._subs.discard(q)
