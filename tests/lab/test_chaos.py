"""``jikimi chaos`` in short: two edges, the broker and the hub as separate processes under one
fault of each kind; nothing lost or committed twice, no double actuation, every barrier that had
to close closed, every part recovered."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lab.chaos import KINDS, Part, Proxy, SiteBook, Snapshot, hub_key, record_key
from shared.messages import Event, Priority, Quality, Reading, Reply, ReplyStatus

REPO = Path(__file__).resolve().parents[2]


def chaos(tmp_path: Path, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "chaos", "--dir", str(tmp_path / "run"), "--quiet", *args],
        capture_output=True, text=True, timeout=timeout_s, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("chaos")
    out = tmp / "chaos.json"
    done = chaos(tmp, "--seconds", "70", "--seed", "7", "--edges", "2", "--json", str(out))
    assert out.exists(), done.stderr[-3000:]
    return done.returncode, json.loads(out.read_text())


def test_the_run_injected_every_fault_kind_and_flooded_the_sites(report: tuple[int, dict[str, Any]]) -> None:
    _, r = report
    assert {f["kind"] for f in r["faults"]} == set(KINDS)
    assert r["totals"]["produced"] > 1000
    assert r["totals"]["floods"] >= 2
    torn = [f for f in r["faults"] if f["kind"] == "outbox_torn"]
    assert all(f["cut_at"] is not None for f in torn)  # the log really was cut


def story(r: dict[str, Any]) -> str:
    """What a failing run's reader needs: the faults, each part's unexpected exits with the end
    of its log, and per site the epochs and what went where."""
    sites = {s: {k: v[k] for k in ("epochs", "lost_detail", "outbox_events", "committed_twice",
                                   "committed_twice_across_epochs", "edge_exits")}
             for s, v in r["sites"].items()}
    return json.dumps({"faults": r["faults"], "timeline": r["timeline"], "hub_exits": r["hub_exits"],
                       "sites": sites}, indent=1)


def test_no_record_was_lost(report: tuple[int, dict[str, Any]]) -> None:
    _, r = report
    assert r["totals"]["lost"] == 0, story(r)
    assert r["totals"]["committed"] >= r["totals"]["produced"] - r["totals"]["destroyed_with_storage"] \
        - r["totals"]["pending_in_outbox"] - r["totals"]["moved_to_new_epoch"]


def test_no_record_was_committed_twice(report: tuple[int, dict[str, Any]]) -> None:
    _, r = report
    assert r["totals"]["committed_twice"] == 0, story(r)


def test_no_barrier_was_written_twice_and_every_one_that_had_to_close_closed(
        report: tuple[int, dict[str, Any]]) -> None:
    _, r = report
    assert r["totals"]["double_actuations"] == 0, r["floods"]
    assert r["totals"]["unexpected_writes"] == 0
    assert r["totals"]["floods_not_closed"] == 0, r["floods"]


def test_every_part_recovered_after_every_fault(report: tuple[int, dict[str, Any]]) -> None:
    _, r = report
    assert [f for f in r["faults"] if f["recovery_s"] is None] == [], story(r)
    assert r["invariants"]["no_crash_loop"], story(r)


def test_the_exit_code_says_whether_every_invariant_held(report: tuple[int, dict[str, Any]]) -> None:
    code, r = report
    assert r["ok"] == all(r["invariants"].values())
    assert code == (0 if r["ok"] else 1)


@pytest.mark.parametrize(("args", "message"), [
    (["--faults", "hub_kill,meteor"], "unknown kind(s) meteor"),
    (["--faults", ","], "unknown kind(s) (none)"),
    (["--seconds", "5"], "--seconds"),
    (["--edges", "0"], "--edges"),
])
def test_bad_options_are_refused_in_one_line_before_anything_starts(
        tmp_path: Path, args: list[str], message: str) -> None:
    done = chaos(tmp_path, *args, timeout_s=60.0)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("type_", "rec"), [
    ("reading", Reading(seq=7, ts=1_795_000_000.123456, prio=Priority.TELEMETRY, device="barrier",
                        point="water_depth_cm", value=21.5, quality=Quality.GOOD)),
    ("event", Event(seq=8, ts=1_795_000_000.5, prio=Priority.ALARM, kind="local.barrier.close", device="barrier")),
    ("reply", Reply(seq=9, ts=1_795_000_001.0, prio=Priority.REPLY, cmd_id="c-1", status=ReplyStatus.VERIFIED)),
])
def test_a_record_is_the_same_record_in_the_outbox_and_at_the_hub_in_any_epoch(type_: str, rec: Any) -> None:
    """The count matches records by content, so a record carried into a new epoch is found."""
    renumbered = msgspec.structs.replace(rec, seq=1, historical=True)
    body = None if isinstance(rec, Reading) else msgspec.json.encode(renumbered).decode()
    device = getattr(rec, "device", None)
    point = rec.point if isinstance(rec, Reading) else None
    assert record_key(rec) == hub_key(type_, rec.ts, device, point, body)
    assert record_key(rec) != record_key(msgspec.structs.replace(rec, ts=rec.ts + 0.5))


def test_what_a_fault_destroyed_is_what_the_file_no_longer_holds() -> None:
    book = SiteBook()
    k = [("reading", float(i), "barrier", "p") for i in range(6)]
    before = Snapshot(epoch=5, next_seq=7, rows={4: k[4], 5: k[5], 6: k[0]})
    book.note(before)
    torn = Snapshot(epoch=5, next_seq=5, rows={4: k[4]})  # the log's tail is gone
    assert book.destroy(before, torn) == 2
    assert book.destroyed == {(5, 5), (5, 6)}
    assert book.produced == {5: 6}  # what was produced stays produced
    assert book.cursor[5] == 4  # reused seqs are read again
    assert SiteBook().destroy(before, None) == 3  # a wiped box: everything it held


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(4), 5) == b""
    except ConnectionResetError:
        return True


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_the_proxy_relays_resets_on_drop_and_holds_bytes_until_healed() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    proxy = Proxy(server.sockets[0].getsockname()[1])
    await proxy.start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
        w.write(b"ping")
        assert await asyncio.wait_for(r.readexactly(4), 5) == b"ping"
        proxy.cut("hold")
        w.write(b"held")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(r.readexactly(4), 0.5)
        proxy.heal()
        assert await asyncio.wait_for(r.readexactly(4), 5) == b"held"  # nothing lost, only late
        proxy.cut("drop")
        assert await _closed(r)  # the connection was reset
        r2, _ = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await _closed(r2)  # and a new one is refused
        proxy.heal()
        r3, w3 = await asyncio.open_connection("127.0.0.1", proxy.port)
        w3.write(b"back")
        assert await asyncio.wait_for(r3.readexactly(4), 5) == b"back"
    finally:
        proxy.close()
        server.close()


async def test_a_part_started_again_while_the_supervisor_looks_runs_once_and_counts_no_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart takes a while (fork and exec on a busy machine); a supervisor looking during it
    must not take the killed process for a crash and start a second copy beside the new one (two
    agents on one outbox and one MQTT identity: what once failed a run with records lost)."""
    spawn = asyncio.create_subprocess_exec
    started: list[asyncio.subprocess.Process] = []

    async def slow_spawn(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        await asyncio.sleep(0.8)  # longer than the supervisor's look, every 0.5 s
        proc = await spawn(*args, **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", slow_spawn)
    part = Part("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "sleeper.log")
    await part.start()
    watch = asyncio.create_task(part.supervise())
    try:
        for _ in range(3):
            await part.kill()
            await part.start()
        await asyncio.sleep(2.5)  # a second copy would have started by now
        assert part.unexpected_exits == 0
        assert [p for p in started if p.returncode is None] == [part.proc]
        await part.kill()  # an exit somebody asked for is no crash either
        await asyncio.sleep(1.0)
        assert part.unexpected_exits == 0
        assert not part.running
    finally:
        watch.cancel()
        for p in started:
            if p.returncode is None:
                p.kill()
                await p.wait()
