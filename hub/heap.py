"""Garbage-collector pauses: the hub's long-lived state is moved out of the collector's way.

CPython's full collection scans every object the collector tracks, holding the GIL. A city
hub's mirror of 6,500 sites (hub/state.py: sites, points, rules, sequence trackers) is about
260,000 such objects, and one full collection of them paused the whole hub for about 200 ms
(``jikimi bench ingest`` at 55,000-60,000 records/s: 16 pauses of 130-225 ms in a two-minute
run, each one a backlog that the p99 latency showed).

Rules:

1. After an automatic full collection that took :data:`SLOW_MS` or longer, everything alive is
   moved to the permanent generation (``gc.freeze``), which later collections do not scan. The
   next full collections then scan only what was created since, and a mirror that grows a lot
   again (new sites) is frozen again the same way.
2. The freeze comes right after a full collection, so nothing that was garbage then is frozen.
   A frozen object is still freed when its last reference goes; only a frozen object that
   later ends in a reference cycle is never freed. The mirror's objects form no cycles, so
   that is a bounded few (what was briefly alive at a freeze, such as a request's task).
3. Process-wide, like logging: only entry points turn it on (``jikimi hub run``, and the
   benchmarks that run the hub as it runs there), never a library or a test's hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

SLOW_MS = 20.0
"""A full collection this long or longer freezes the heap (rule 1)."""


class HeapKeeper:
    """Rule 1 on one event loop (the collector's callback may run in any thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, slow_ms: float = SLOW_MS) -> None:
        self._loop = loop
        self._slow_ms = slow_ms
        self._started = 0.0
        self._due = False
        self.freezes = 0

    def _collected(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        ms = (time.perf_counter() - self._started) * 1000
        if ms >= self._slow_ms and not self._due:
            self._due = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
                self._loop.call_soon_threadsafe(self._freeze, ms)

    def _freeze(self, pause_ms: float) -> None:
        self._due = False
        gc.freeze()
        self.freezes += 1
        log.info("hub.heap_frozen", extra={"pause_ms": round(pause_ms, 1), "frozen": gc.get_freeze_count()})


@contextlib.contextmanager
def kept(loop: asyncio.AbstractEventLoop, *, slow_ms: float = SLOW_MS) -> Iterator[HeapKeeper]:
    """Rule 1 while the block runs (rule 3: an entry point's)."""
    keeper = HeapKeeper(loop, slow_ms=slow_ms)
    gc.callbacks.append(keeper._collected)
    try:
        yield keeper
    finally:
        gc.callbacks.remove(keeper._collected)
