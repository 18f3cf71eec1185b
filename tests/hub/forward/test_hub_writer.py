"""The outbox runs through the hub's own single writer, in the hub's database, and every outbox
change lands in the hub's hash-chained audit log in the same transaction."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from hub import audit, receiver
from hub.forward import ledger
from hub.forward.deliver import Forwarder, HttpTransport
from hub.store import Tx, Writer
from tests.hub.forward.helpers import config, notice, recipient


class _Nothing:
    weight = 1


def _no_ingest(tx: Tx, items: Sequence[_Nothing]) -> None:
    return None


def _open(conn: sqlite3.Connection) -> None:
    return None  # the writer's connection is migrated when it opens (hub/migrations.py)


async def test_delivery_through_the_hub_writer_is_audited_in_the_hash_chain(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    writer: Writer[_Nothing] = Writer(path, queue_max=100, max_records=100)
    writer.bind(_no_ingest, _open)
    async with receiver.serve(fail_first=1) as rcv, HttpTransport.open() as transport, asyncio.TaskGroup() as tg:
        task = tg.create_task(writer.run(), name="hub-writer")
        await writer.ready.wait()
        fwd = Forwarder(config(recipient("centre", rcv.url)), writer, transport)
        sent = await fwd.enqueue(notice())
        assert sent is not None
        for _ in range(5):
            await fwd.step()
        assert [a.identifier for a in rcv.alerts()] == [sent.identifier]
        task.cancel()
    with sqlite3.connect(path) as conn:
        rows = audit.verify_conn(conn)
        actions = [r[0] for r in conn.execute("SELECT action FROM audit ORDER BY id")]
        (delivery,) = ledger.deliveries(conn)
    assert rows == len(actions)
    assert delivery.state == "acked"
    assert actions == ["forward.enqueue", "forward.attempt", "forward.outcome", "forward.attempt", "forward.outcome"]
