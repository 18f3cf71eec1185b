"""The single writer's WAL on a real SQLite file: bounded under continuous writes (hub/store.py rule 7)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from hub.store import Tx, Writer

PAGE = 4096


class _Nothing:
    weight = 1


class _Numbered:
    weight = 1

    def __init__(self, n: int) -> None:
        self.n = n


def _no_ingest(tx: Tx, items: Sequence[_Nothing]) -> None:
    return None


def _open(conn: sqlite3.Connection) -> None:
    return None


def _write(tx: Tx) -> None:
    # about 40 pages of new rows a transaction, in a table of the test's own
    tx.conn.execute("CREATE TABLE IF NOT EXISTS filler (id INTEGER PRIMARY KEY, blob BLOB NOT NULL)")
    tx.conn.executemany("INSERT INTO filler (blob) VALUES (randomblob(4000))", [()] * 40)


async def test_the_checkpointer_restarts_the_wal_while_the_writer_never_pauses(tmp_path: Path) -> None:
    """With write transactions queued back to back (the writer never idle, so SQLite never starts
    the WAL over by itself), the checkpointer restarts the WAL: the file stays far smaller than
    what was written through it."""
    path = tmp_path / "hub.db"
    writer: Writer[_Nothing] = Writer(path, queue_max=100, max_records=1)
    writer.bind(_no_ingest, _open)
    transactions = 400
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(writer.run(), name="hub-writer")
        ckpt = tg.create_task(writer.checkpointer(every_s=0.05, restart_pages=200), name="hub-checkpointer")
        await writer.ready.wait()
        await asyncio.gather(*(writer.call(_write) for _ in range(transactions)))
        wal = path.with_name("hub.db-wal").stat().st_size  # (a clean close removes the file)
        run.cancel()
        ckpt.cancel()
    written = transactions * 40 * PAGE
    assert writer.stats.wal_restarts >= 1
    assert wal < written / 2, f"WAL {wal} bytes after {written} bytes written"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM filler").fetchone() == (transactions * 40,)


async def test_a_long_read_does_not_hold_the_writer_off(tmp_path: Path) -> None:
    """A reader holding a snapshot makes the RESTART give up after its short wait; the writer's
    transactions go on committing meanwhile, and nothing is lost."""
    path = tmp_path / "hub.db"
    writer: Writer[_Nothing] = Writer(path, queue_max=100, max_records=1)
    writer.bind(_no_ingest, _open)
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(writer.run(), name="hub-writer")
        await writer.ready.wait()
        await writer.call(_write)
        reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM filler").fetchone()  # holds its snapshot until COMMIT
        ckpt = tg.create_task(writer.checkpointer(every_s=0.02, restart_pages=10), name="hub-checkpointer")
        async with asyncio.timeout(30):
            for _ in range(100):
                await writer.call(_write)
        assert writer.stats.checkpoints >= 1
        reader.execute("COMMIT")
        reader.close()
        run.cancel()
        ckpt.cancel()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM filler").fetchone() == (101 * 40,)


async def test_an_operators_job_goes_ahead_of_an_ingest_backlog(tmp_path: Path) -> None:
    """Rule 2: with twenty ingest messages queued behind a slow transaction, a job (an operator's
    command, the forwarder's bookkeeping) runs in the next transaction, not after the backlog;
    every message is still handled, in order."""
    handled: list[str] = []
    started = threading.Event()

    def slow_ingest(tx: Tx, items: Sequence[_Numbered]) -> None:
        started.set()
        time.sleep(0.05)  # the writer's thread: a transaction that takes a while
        handled.extend(f"m{i.n}" for i in items)

    def job(tx: Tx) -> str:
        handled.append("job")
        return "done"

    writer: Writer[_Numbered] = Writer(tmp_path / "hub.db", queue_max=100, max_records=2)
    writer.bind(slow_ingest, _open)
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(writer.run(), name="hub-writer")
        await writer.ready.wait()
        for n in range(20):
            await writer.put(_Numbered(n))
        await asyncio.to_thread(started.wait, 10)
        assert await writer.call(job) == "done"
        while len(handled) < 21:  # noqa: ASYNC110 - the writer's thread appends
            await asyncio.sleep(0.01)
        run.cancel()
    assert [h for h in handled if h != "job"] == [f"m{n}" for n in range(20)]
    # the first transaction (m0, m1) was running; the job went into the second with at most one message
    assert handled.index("job") <= 3, handled
