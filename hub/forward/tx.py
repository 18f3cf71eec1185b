"""The write seam of forwarding and the CCTV linkage, and a local writer for use without the hub.

Forwarding's and the CCTV linkage's tables live in the hub's database file (their schema is in
the hub's one migration list, hub/migrations.py), and the hub has one writer per file (STYLE). So these modules never
open a write connection of their own in the hub: they hand the hub's writer small synchronous
functions of a :class:`WriteTx` through :class:`WriteGateway.call`. ``hub.store.Writer`` is such
a gateway as it is (its ``Tx`` has ``conn`` and ``audit``), so every outbox change is audited into
the hub's hash-chained log in the same transaction.

:class:`LocalWriter` is the same seam over a file of its own, for tests, tools and the demo: one
thread, ``BEGIN IMMEDIATE`` per call, and audit rows handed to an injected :class:`Audit`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol, TypeVar

from hub.errors import StoreError
from hub.migrations import upgrade
from shared.messages import Scalar

T = TypeVar("T")

Detail = dict[str, Scalar | list[str]]


class Audit(Protocol):
    """``audit(actor, action, target, detail)``: append one row to the audit log."""

    def __call__(self, actor: str, action: str, target: str, detail: Detail | None = None) -> None: ...


class WriteTx(Protocol):
    """What a write job sees: the connection inside an open transaction, and the audit log."""

    @property
    def conn(self) -> sqlite3.Connection: ...

    def audit(self, actor: str, action: str, target: str, detail: Detail | None = None) -> None: ...


class WriteGateway(Protocol):
    """Runs ``fn`` in a write transaction and returns its result once committed.

    A :class:`hub.errors.HubError` raised by ``fn`` rolls back ``fn``'s changes and is raised
    to the caller; any other error is a bug or a broken disk and ends the writer.
    """

    async def call(self, fn: Callable[[WriteTx], T]) -> T: ...


class _LocalTx:
    def __init__(self, conn: sqlite3.Connection, audit: Audit) -> None:
        self._conn = conn
        self._audit = audit
        self.pending: list[tuple[str, str, str, Detail | None]] = []

    @property
    def conn(self) -> sqlite3.Connection:
        return self._conn

    def audit(self, actor: str, action: str, target: str, detail: Detail | None = None) -> None:
        # Handed to the injected audit only after COMMIT: a rolled-back job audits nothing.
        self.pending.append((actor, action, target, detail))


class LocalWriter:
    """A one-thread writer over its own SQLite file (WAL), implementing :class:`WriteGateway`."""

    def __init__(self, path: Path, audit: Audit) -> None:
        self.path = path
        self._audit = audit
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fwd-writer")
        self._conn: sqlite3.Connection | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path, audit: Audit) -> AsyncIterator[LocalWriter]:
        """Open (and migrate, hub/migrations.py) ``path``; close it when the block ends."""
        writer = cls(path, audit)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(writer._executor, writer._open)
        try:
            yield writer
        finally:
            await loop.run_in_executor(writer._executor, writer._close)
            writer._executor.shutdown(wait=True)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            upgrade(conn)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.path}: cannot open: {exc}") from exc
        self._conn = conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def call(self, fn: Callable[[WriteTx], T]) -> T:
        loop = asyncio.get_running_loop()
        result, audits = await loop.run_in_executor(self._executor, self._apply, fn)
        for actor, action, target, detail in audits:
            self._audit(actor, action, target, detail)
        return result

    def _apply(self, fn: Callable[[WriteTx], T]) -> tuple[T, list[tuple[str, str, str, Detail | None]]]:
        conn = self._conn
        if conn is None:
            raise StoreError(f"{self.path}: the writer is closed")
        tx = _LocalTx(conn, self._audit)
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = fn(tx)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: write failed: {exc}") from exc
        finally:
            # Anything that escaped fn (a HubError it raised on purpose, or a bug) undoes it all.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return result, tx.pending

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only ``fn`` on the writer's thread (tests and tools)."""
        loop = asyncio.get_running_loop()

        def work() -> T:
            if self._conn is None:
                raise StoreError(f"{self.path}: the writer is closed")
            return fn(self._conn)

        return await loop.run_in_executor(self._executor, work)
