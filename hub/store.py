"""The one writer of the hub's SQLite file, and the readers beside it.

Rules and invariants:

1. One :class:`Writer` task owns the write connection; it runs every transaction on its own
   single thread (SQLite work must not stall the event loop), one at a time.
2. Ingest messages wait in a bounded queue (``queue_max``). Overflow policy: *backpressure* —
   ``put`` waits, so the MQTT receiver stops taking messages and, since messages are PUBACKed
   only after commit, the broker holds the rest. Nothing is dropped.
   Every other job (an operator's command or alarm action, the forwarder's claims and results,
   the tick) goes ahead of that queue: it joins the next transaction, never waiting behind an
   ingest backlog. Under a typhoon's overload the edges' records wait (their edges hold them);
   a block command, an acknowledgement or a CAP delivery's bookkeeping does not. Those jobs come
   one per awaiting caller, so their lane needs no bound of its own.
3. The writer drains whatever is queued (the jobs ahead first, then ingest messages; up to
   ``max_records`` records, a job counting one) into one short ``BEGIN IMMEDIATE`` transaction: ingest messages
   are handled together by the ingest handler; every other job runs in its own SAVEPOINT, so
   a refused operator action (a :class:`HubError`) rolls back only itself.
4. Effects that must follow the commit (PUBACKs, acks to edges, live events, job results) are
   collected during the transaction and run in the event loop only after COMMIT returned.
5. An unexpected error (a SQLite error: disk full, I/O) rolls the transaction back and ends
   the writer with :class:`StoreError`; the TaskGroup stops the hub and systemd restarts it.
   Nothing was acknowledged, so the edges resend.

6. WAL checkpoints are taken off the commit path: the writer's connection never checkpoints
   (``wal_autocheckpoint=0``); :meth:`Writer.checkpointer` runs PASSIVE checkpoints from a
   connection of its own on its own thread. A PASSIVE checkpoint copies committed pages into
   the database file and never blocks or waits for the writer, so a commit (and the ack behind
   it) never waits for the bulk of a checkpoint's copying and fsync.
7. The WAL is bounded. SQLite starts the WAL over only when a transaction begins with every
   frame checkpointed; under continuous ingest the writer commits again while each PASSIVE
   pass runs, so that moment never comes and the WAL grows without bound (measured: 1.4 GB in
   30 s at 58,000 readings/s), each commit extending the file. So after a PASSIVE pass that
   left more than ``RESTART_PAGES`` frames, the checkpointer runs a second PASSIVE pass (the
   frames committed during the first), then a RESTART checkpoint on the writer's thread,
   between two transactions (waiting for the writer's lock instead would poll, and miss the
   short gaps between back-to-back transactions): it copies only the frames committed during
   the second pass (measured 5-27 ms at 50,000 readings/s; 46-85 ms after one pass), and the
   next transaction writes the WAL from its start. It waits for readers at most
   ``RESTART_WAIT_MS`` (then it gives up and tries again next time), so a long read never
   holds the writer off for long.

Readers use their own read-only connections (WAL lets them read while the writer writes).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from hub import audit
from hub.errors import HubError, StoreError
from hub.migrations import connect
from shared.messages import Scalar

log = logging.getLogger(__name__)

T = TypeVar("T")
RESTART_PAGES = 262_144
"""WAL frames (4 KiB pages: 1 GiB) a PASSIVE pass may leave before the checkpointer restarts the WAL
(rule 7). Large, because a restart holds the writer for a moment: at 16 MiB (every pass, under
load) the 500-site ingest bench committed 43-48k readings/s at its 50k step, against 49-54k
without restarts."""
RESTART_WAIT_MS = 100
"""How long a RESTART checkpoint waits for the writer or a reader before giving up (rule 7)."""
RECENT_TX = 20_000
"""Transactions the writer's stats remember (a benchmark reads where a step's time went)."""
Effect = Callable[[], None]
Clock = Callable[[], float]
"""The hub's clock (seconds since the epoch): ``time.time`` in service, a fake in tests."""


class Tx:
    """What a write job sees: the connection inside an open transaction, and the time."""

    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self.conn = conn
        self.now = now
        self.effects: list[Effect] = []

    def after_commit(self, effect: Effect) -> None:
        """Run ``effect`` in the event loop once the transaction has committed."""
        self.effects.append(effect)

    def audit(self, actor: str, action: str, target: str,
              detail: dict[str, Scalar | list[str]] | None = None) -> None:
        audit.append(self.conn, self.now, actor, action, target, detail)


@dataclass
class Call(Generic[T]):
    fn: Callable[[Tx], T]
    future: asyncio.Future[T]
    weight: int = 1


class Ingestible(Protocol):
    @property
    def weight(self) -> int: ...


In = TypeVar("In", bound=Ingestible)


In_contra = TypeVar("In_contra", bound=Ingestible, contravariant=True)


class IngestHandler(Protocol[In_contra]):
    def __call__(self, tx: Tx, items: Sequence[In_contra]) -> None: ...


@dataclass
class WriterStats:
    transactions: int = 0
    jobs: int = 0
    last_tx_ms: float = 0.0
    max_tx_ms: float = 0.0
    queue_high_water: int = 0
    checkpoints: int = 0
    wal_restarts: int = 0
    commit_s: float = 0.0
    busy_s: float = 0.0
    recent: collections.deque[tuple[float, int, float, float]] = field(
        default_factory=lambda: collections.deque(maxlen=RECENT_TX))
    """The last transactions: (when it ended, wall time; its weight; ms in all; ms in COMMIT)."""


@dataclass
class _Done:
    effects: list[Effect] = field(default_factory=list)
    results: list[tuple[asyncio.Future[object], object, BaseException | None]] = field(default_factory=list)


class Writer(Generic[In]):
    """The single writer: ``put`` ingest items, ``call`` anything else."""

    def __init__(self, path: Path, *, queue_max: int, max_records: int, linger_s: float = 0.0,
                 clock: Clock = time.time) -> None:
        self.path = path
        self.max_records = max_records
        self.linger_s = linger_s
        self.clock = clock
        self.stats = WriterStats()
        self._queue: asyncio.Queue[In] = asyncio.Queue(maxsize=queue_max)
        self._calls: collections.deque[Call[object]] = collections.deque()
        """Rule 2: the jobs that go ahead of the ingest queue."""
        self._wake = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-writer")
        self._conn: sqlite3.Connection | None = None
        self._handler: IngestHandler[In] | None = None
        self._on_open: Callable[[sqlite3.Connection], None] | None = None
        self.ready = asyncio.Event()

    def bind(self, handler: IngestHandler[In], on_open: Callable[[sqlite3.Connection], None]) -> None:
        self._handler = handler
        self._on_open = on_open

    # --- the event-loop side ---------------------------------------------------------------

    async def put(self, item: In) -> None:
        """Queue an ingest item; waits while the queue is full (backpressure)."""
        await self._queue.put(item)
        self._wake.set()
        size = self._queue.qsize()
        if size > self.stats.queue_high_water:
            self.stats.queue_high_water = size

    async def call(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in the next write transaction (its own savepoint), ahead of queued ingest
        (rule 2); return its result after commit."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.append(Call(fn, fut))  # type: ignore[arg-type]
        self._wake.set()
        return await fut

    def qsize(self) -> int:
        return self._queue.qsize() + len(self._calls)

    async def run(self) -> None:
        """The writer task: open (migrate, load), then batch jobs into transactions forever."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._open)
        self.ready.set()
        try:
            while True:
                while not self._calls and self._queue.empty():
                    self._wake.clear()
                    await self._wake.wait()
                if self.linger_s > 0 and self.qsize() < 8:
                    await asyncio.sleep(self.linger_s)
                jobs: list[In | Call[object]] = []
                weight = 0
                while weight < self.max_records and self._calls:
                    call = self._calls.popleft()
                    jobs.append(call)
                    weight += call.weight
                while weight < self.max_records and not self._queue.empty():
                    job = self._queue.get_nowait()
                    jobs.append(job)
                    weight += job.weight
                done = await loop.run_in_executor(self._executor, self._apply, jobs, weight)
                for effect in done.effects:
                    effect()
                for fut, result, exc in done.results:
                    if fut.done():
                        continue
                    if exc is not None:
                        fut.set_exception(exc)
                    else:
                        fut.set_result(result)
        finally:
            await asyncio.shield(loop.run_in_executor(self._executor, self._close))
            self._executor.shutdown(wait=False)

    async def checkpointer(self, every_s: float = 5.0, restart_pages: int = RESTART_PAGES) -> None:
        """Rules 6 and 7: PASSIVE checkpoints beside the writer, and a RESTART after a pass that
        left more than ``restart_pages`` frames, until cancelled."""
        await self.ready.wait()
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-checkpoint")
        loop = asyncio.get_running_loop()

        def open_() -> sqlite3.Connection:
            conn = connect(self.path, migrate=False)
            conn.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")  # only a RESTART waits (rule 7)
            return conn

        conn = await loop.run_in_executor(executor, open_)
        try:
            while True:
                await asyncio.sleep(every_s)
                left = await loop.run_in_executor(executor, self._checkpoint, conn)
                if left > restart_pages and self._conn is not None:
                    # rule 7: a second pass copies what the first missed, beside the writer; the
                    # RESTART, on the writer's thread between two of its transactions, only the rest
                    await loop.run_in_executor(executor, self._checkpoint, conn)
                    if self._conn is not None:  # (the writer may have closed meanwhile)
                        await loop.run_in_executor(self._executor, self._checkpoint, conn, "RESTART")
        finally:
            await asyncio.shield(loop.run_in_executor(executor, conn.close))
            executor.shutdown(wait=False)

    def _checkpoint(self, conn: sqlite3.Connection, mode: str = "PASSIVE") -> int:
        """One checkpoint; returns the WAL frames it left (rule 7 restarts past a bound)."""
        try:
            busy, log_pages, done = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: checkpoint failed: {exc}") from exc
        self.stats.checkpoints += 1
        if mode == "RESTART" and not busy:
            self.stats.wal_restarts += 1
        if log_pages > 100_000 and done < log_pages // 2:
            log.warning("store.wal_growing", extra={"wal_pages": log_pages, "checkpointed": done, "busy": busy})
        return int(log_pages)

    # --- the writer thread -----------------------------------------------------------------

    def _open(self) -> None:
        conn = connect(self.path)
        conn.execute("PRAGMA wal_autocheckpoint=0")
        self._conn = conn
        if self._on_open is not None:
            try:
                self._on_open(conn)
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot load the hub's state: {exc}") from exc

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _apply(self, jobs: Sequence[In | Call[object]], weight: int) -> _Done:
        conn = self._conn
        assert conn is not None
        assert self._handler is not None
        started = time.perf_counter()
        tx = Tx(conn, self.clock())
        done = _Done()
        ingest = [j for j in jobs if not isinstance(j, Call)]
        try:
            conn.execute("BEGIN IMMEDIATE")
            if ingest:
                self._handler(tx, ingest)
            for job in jobs:
                if not isinstance(job, Call):
                    continue
                before = len(tx.effects)
                conn.execute("SAVEPOINT job")
                try:
                    result = job.fn(tx)
                except HubError as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    del tx.effects[before:]
                    done.results.append((job.future, None, exc))
                else:
                    conn.execute("RELEASE job")
                    done.results.append((job.future, result, None))
            before_commit = time.perf_counter()
            conn.execute("COMMIT")
            commit_s = time.perf_counter() - before_commit
            self.stats.commit_s += commit_s
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"{self.path}: write failed: {exc}") from exc
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        ms = (time.perf_counter() - started) * 1000
        st = self.stats
        st.transactions += 1
        st.jobs += len(jobs)
        st.last_tx_ms = ms
        st.busy_s += ms / 1000
        st.max_tx_ms = max(st.max_tx_ms, ms)
        st.recent.append((time.time(), weight, ms, commit_s * 1000))
        done.effects = tx.effects
        return done


class Reader:
    """Read-only connections for the API, one per worker thread (WAL: reads never block writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def work() -> T:
            try:
                return fn(self._conn())
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: read failed: {exc}") from exc

        return await asyncio.to_thread(work)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
