"""A torn and a garbage outbox beside a real agent (``jikimi edge run``, SIGKILLed as a power cut
would), a real simulator, a real mTLS broker and the real hub: the records the damaged file brings
back, which the hub had committed already, are committed exactly once; nothing is lost.

Both faults are done the way ``jikimi chaos`` does them (lab/chaos.py), made certain to bring
rows back: the outbox's main file is checkpointed while it holds records the hub has not acked
yet (the broker is down), those records are then delivered and acked (their deletes are only in
the write-ahead log), and the agent is killed. *Torn*: the log is cut after its header, so SQLite
falls back to the main file. *Garbage*: random bytes over the log's header and over the pages of
the outbox's telemetry index, so the file fails its integrity check and is salvaged.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from lab.chaos import Key, hub_key, sample_live, snapshot_dead
from shared.messages import Scalar
from tests.conftest import PkiFixture
from tests.edge.harness import edge_process, underpass_sim, until, write_config
from tests.edge.real_hub import RealHub, running_real_hub
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker


def hub_keys(hub: RealHub, site: str) -> Counter[Key]:
    rows = hub._rows("SELECT type, ts, device, point, body FROM records WHERE site = ?", (site,))
    return Counter(hub_key(str(t), float(ts), d, p, b) for t, ts, d, p, b in rows)  # type: ignore[arg-type]


def held_now(outbox: Path) -> int:
    """How many records the running agent's outbox holds (-1 if it cannot be read just now)."""
    snap = sample_live(outbox, {})
    return -1 if snap is None else len(snap.rows)


def hub_events(hub: RealHub, site: str, kind: str) -> list[dict[str, Scalar]]:
    return [e.values for e in hub.events(site) if e.kind == kind]


@asynccontextmanager
async def sampling(outbox: Path, seen: set[Key]) -> AsyncIterator[None]:
    """Note every record the outbox holds, every 0.2 s (read-only, as chaos's sampler does)."""
    async def loop() -> None:
        while True:
            snap = await asyncio.to_thread(sample_live, outbox, {})
            if snap is not None:
                seen.update(snap.rows.values())
            await asyncio.sleep(0.2)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()


def checkpoint(outbox: Path) -> None:
    conn = sqlite3.connect(outbox, timeout=5.0)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()


def tear(outbox: Path) -> None:
    """The log cut right after its header (a torn write): SQLite falls back to the main file."""
    with open(f"{outbox}-wal", "r+b") as f:
        f.truncate(32)
    Path(f"{outbox}-shm").unlink(missing_ok=True)


def pages_of(outbox: Path, name: str) -> tuple[int, list[int]]:
    """The page size and the pages of table or index ``name`` in the outbox's main file."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "main.db"
        shutil.copyfile(outbox, copy)  # the main file alone
        conn = sqlite3.connect(copy)
        try:
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            pages = [int(p) for (p,) in conn.execute("SELECT pageno FROM dbstat WHERE name = ?", (name,))]
        finally:
            conn.close()
    assert pages
    return page_size, pages


def scribble(outbox: Path, page_size: int, pages: list[int]) -> None:
    with outbox.open("r+b") as f:
        for page in pages:
            f.seek((page - 1) * page_size)
            f.write(os.urandom(page_size))


def garbage(outbox: Path) -> None:
    """Random bytes over the log's header and over every page of the telemetry index."""
    with open(f"{outbox}-wal", "r+b") as f:
        f.write(os.urandom(32))
    Path(f"{outbox}-shm").unlink(missing_ok=True)
    scribble(outbox, *pages_of(outbox, "records_telemetry"))


@pytest.mark.parametrize("fault", ["torn", "garbage", "garbage_meta"])
async def test_records_a_damaged_outbox_brings_back_are_committed_exactly_once(
    test_pki: PkiFixture, tmp_path: Path, fault: str
) -> None:
    site = test_pki.take_site()
    outbox = tmp_path / "state" / "outbox.db"
    seen: set[Key] = set()
    with RunningBroker.start(test_pki.dir, tmp_path / "broker") as broker:
        async with underpass_sim() as sim, running_real_hub(broker, test_pki, tmp_path) as hub:
            cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
            async with edge_process(cfg, tmp_path / "edge.log"), sampling(outbox, seen):
                await until(lambda: len(hub.seqs(site)) >= 20, 30, "the edge delivers")
                broker.stop()
                held = len(hub.seqs(site))
                await until(lambda: held_now(outbox) >= 40, 30, "records pile up while the broker is down")
                await asyncio.to_thread(checkpoint, outbox)  # the main file holds them, unacked
                broker.restart()
                await until(lambda: len(hub.seqs(site)) >= held + 60, 30, "they are delivered")
                await until(lambda: 0 <= held_now(outbox) < 10, 30, "and acked")
            # SIGKILLed: a power cut
            before = snapshot_dead(outbox)
            meta_pages = pages_of(outbox, "meta")
            (tear if fault == "torn" else garbage)(outbox)
            after = snapshot_dead(outbox)
            if fault == "garbage_meta":  # the file loses its epoch too: each row must name its own
                scribble(outbox, *meta_pages)
            committed_before = hub_keys(hub, site)
            assert before is not None
            assert after is not None
            back = set(after.rows.values()) - set(before.rows.values())
            assert len(back) >= 40, "the damage brought back records the hub had committed"
            assert back <= set(committed_before)
            async with edge_process(cfg, tmp_path / "edge.log") as proc, sampling(outbox, seen):
                kind = "outbox.new_epoch" if fault == "torn" else "outbox.replaced"
                await until(lambda: bool(hub_events(hub, site, kind)), 30, f"{kind} at the hub")
                await until(lambda: len(hub.epochs(site)) == 2 and min(hub.epochs(site).values()) >= 20, 30,
                            "the new epoch is delivered")
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), 15)
            final = snapshot_dead(outbox)
            await asyncio.sleep(1.0)
            committed = hub_keys(hub, site)
    assert {k: n for k, n in committed.items() if n > 1} == {}, "committed twice"
    pending = set(final.rows.values()) if final is not None else set()
    destroyed = set(before.rows.values()) - set(after.rows.values())  # only the damaged file held them
    lost = seen - set(committed) - pending - destroyed
    assert lost == set()
    assert back <= set(committed)
    (event,) = hub_events(hub, site, kind)
    if fault == "torn":
        assert event["carried"] + event["dropped"] >= len(back)  # type: ignore[operator]
    else:
        assert event["salvaged"] >= len(back)  # type: ignore[operator]
