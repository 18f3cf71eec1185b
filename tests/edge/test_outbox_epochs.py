"""The outbox's epochs on a real SQLite file: which acks delete what (DESIGN §3, edge/outbox.py rule 6)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import msgspec
import pytest

from edge.outbox import MIGRATIONS, Outbox, decode_row, open_outbox
from shared import messages
from shared.messages import MAX_UINT64


def _reading(value: float) -> messages.Reading:
    return messages.Reading(seq=0, ts=time.time(), prio=messages.Priority.TELEMETRY, device="gauge",
                            point="water_depth_cm", value=value, quality=messages.Quality.GOOD)


def _alarm() -> messages.Event:
    return messages.Event(seq=0, ts=time.time(), prio=messages.Priority.ALARM, kind="local.barrier.close")


def _filled(path: Path, n: int = 10) -> Outbox:
    """``n`` records: ``n - 1`` readings, then an alarm."""
    o = Outbox(path, clock=time.time)
    o.append([_reading(float(i)) for i in range(n - 1)] + [_alarm()])
    return o


def test_a_new_outbox_draws_a_random_epoch_and_keeps_it_across_reopening(tmp_path: Path) -> None:
    """Two new outboxes get different non-zero epochs; reopening a file keeps its epoch."""
    a, b = Outbox(tmp_path / "a.db", clock=time.time), Outbox(tmp_path / "b.db", clock=time.time)
    assert a.epoch != b.epoch
    assert 0 < a.epoch <= messages.MAX_EPOCH
    epoch = a.epoch
    a.close()
    assert Outbox(tmp_path / "a.db", clock=time.time).epoch == epoch


def test_an_outbox_made_before_epochs_keeps_the_legacy_epoch_and_its_seqs(tmp_path: Path) -> None:
    """Upgrading an outbox written before epochs keeps epoch 0 (the hub's legacy epoch) and its counter."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, (_, sql) in enumerate(MIGRATIONS[:2], start=1):
        conn.executescript(sql)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute("UPDATE meta SET value = 42 WHERE key = 'next_seq'")
    conn.close()
    o = Outbox(path, clock=time.time)
    assert o.epoch == 0
    assert [r.seq for r in o.append([_reading(1.0)])] == [42]


def test_an_ack_for_another_epoch_deletes_nothing(tmp_path: Path) -> None:
    o = _filled(tmp_path / "o.db")
    o.mark_sent(10)
    assert o.ack(10, epoch=(o.epoch + 1) % messages.MAX_EPOCH) == 0
    assert o.ack(10, epoch=0) == 0
    assert o.held == 10
    assert o.ack(10, epoch=o.epoch) == 10  # the right epoch does


def test_an_ack_above_what_was_sent_deletes_only_what_was_sent(tmp_path: Path) -> None:
    """Records 1..10 are held, 1..4 sent: an ack through 8 deletes 1..4 and keeps the unsent alarm."""
    o = _filled(tmp_path / "o.db")
    o.mark_sent(4)
    assert o.ack(8, epoch=o.epoch) == 4
    assert [r.seq for r in o.read(0, limit=100)] == list(range(5, 11))
    o.close()
    again = Outbox(tmp_path / "o.db", clock=time.time)  # a restarted process has sent nothing yet
    assert again.ack(10, epoch=again.epoch) == 0
    assert again.held == 6


def test_an_ack_of_2_64_minus_1_deletes_nothing_unsent_and_starts_a_new_epoch(tmp_path: Path) -> None:
    """An ack above every seq ever assigned means the file lost its tail: nothing unsent is deleted,
    the ten unsent records (the alarm too) are renumbered into a new epoch, each naming where it was
    first assigned, and the change is an event."""
    o = _filled(tmp_path / "o.db")
    before = [decode_row(r) for r in o.read(0, limit=100)]
    old = o.epoch
    assert o.ack(MAX_UINT64, epoch=old) == 0
    assert o.epoch != old
    after = [decode_row(r) for r in o.read(0, limit=100)]
    assert [r.seq for r in after] == list(range(1, 12))
    assert [r.origin for r in after[:10]] == [(old, s) for s in range(1, 11)]
    assert [_identity(r) for r in after[:10]] == [_identity(r) for r in before]
    assert isinstance(after[-1], messages.Event)
    assert after[-1].kind == "outbox.new_epoch"
    assert after[-1].origin is None
    assert after[-1].values == {"old_epoch": old, "carried": 10, "dropped": 0}
    assert o.ack(10, epoch=o.epoch) == 0  # nothing of the new epoch was sent yet
    o.close()
    reopened = Outbox(tmp_path / "o.db", clock=time.time)
    assert (reopened.epoch, reopened.next_seq, reopened.held) == (o.epoch, 12, 11)


@pytest.mark.parametrize(("sent", "carried"), [(6, [7, 8, 9, 10, 11, 12]), (12, [11, 12])])
def test_a_new_epoch_drops_what_the_triggering_ack_covers_and_the_file_held_and_sent(
        tmp_path: Path, sent: int, carried: list[int]) -> None:
    """The file held 1..10 when the agent started (a torn log took its tail) and the agent added
    11 and 12; the hub acks seq 99: every seq up to 99 is committed, so what was sent of the
    records held at start is left behind. The rest is carried with its origin: unsent records,
    and 11 and 12, whose seqs the lost tail may have used for other records the hub holds."""
    path = tmp_path / "o.db"
    _filled(path).close()
    o = Outbox(path, clock=time.time)
    o.append([_reading(11.0), _reading(12.0)])
    old = o.epoch
    o.mark_sent(sent)
    assert o.ack(99, epoch=old) == 0
    after = [decode_row(r) for r in o.read(0, limit=100)]
    assert [r.origin for r in after] == [(old, s) for s in carried] + [None]
    assert isinstance(after[-1], messages.Event)
    assert after[-1].values == {"old_epoch": old, "carried": len(carried), "dropped": 12 - len(carried)}
    if 10 in carried:
        assert isinstance(after[carried.index(10)], messages.Event)  # the alarm, unsent, is carried


def test_a_record_carried_twice_keeps_its_first_origin(tmp_path: Path) -> None:
    """Carried again into a third epoch, a record still names the epoch and seq it was first given."""
    o = _filled(tmp_path / "o.db", n=3)
    first = o.epoch
    o.start_epoch("test")
    second = o.epoch
    o.append([_reading(99.0)])  # a record first assigned in the second epoch
    o.start_epoch("test again")
    origins = [decode_row(r).origin for r in o.read(0, limit=100)]
    assert origins == [(first, 1), (first, 2), (first, 3), (second, 4), (second, 5), None]


def _identity(r: messages.Record) -> messages.Record:
    return msgspec.structs.replace(r, seq=0, origin=None)


def test_a_torn_outbox_is_moved_aside_and_what_can_be_read_is_carried_over(tmp_path: Path) -> None:
    """An outbox cut short (a torn write) fails its check: it is renamed, never deleted, the rows
    still readable and the stored command results go into a new outbox with a new epoch."""
    path = tmp_path / "outbox.db"
    o = Outbox(path, clock=time.time)
    o.append([_reading(float(i)) for i in range(3000)])
    o.store_command_result("cmd-1", "verified", "barrier_state = 'closed'")
    old_epoch = o.epoch
    o._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    o.close()
    size = path.stat().st_size
    with path.open("r+b") as f:  # four pages in the middle are lost
        f.seek((size // 2) & ~4095)
        f.write(b"\0" * 4 * 4096)
    damaged = path.read_bytes()
    outbox, replaced = open_outbox(path, max_records=10_000, clock=time.time)
    assert replaced is not None
    assert replaced.moved_to is not None
    assert replaced.moved_to.read_bytes() == damaged
    assert outbox.epoch != old_epoch
    assert 2000 < replaced.salvaged < 3000
    assert replaced.salvaged + replaced.unreadable >= 3000
    assert outbox.command_result("cmd-1") == ("verified", "barrier_state = 'closed'")
    rows = [decode_row(r) for r in outbox.read(0, limit=10_000)]
    assert [r.seq for r in rows] == list(range(1, replaced.salvaged + 2))
    assert isinstance(rows[-1], messages.Event)
    assert rows[-1].kind == "outbox.replaced"


def _damage_middle(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as f:  # four pages in the middle are lost
        f.seek((size // 2) & ~4095)
        f.write(b"\0" * 4 * 4096)


def test_salvage_leaves_behind_what_the_last_ack_covers_and_carries_the_rest_with_origins(tmp_path: Path) -> None:
    """A corrupt file whose meta records an ack through seq 40 while rows up to it are still there
    (an ack's deletes lost with the damage): those 40 are committed at the hub and are not carried;
    every salvaged record names the old epoch and its seq there, and the command's report survives."""
    path = tmp_path / "outbox.db"
    o = Outbox(path, clock=time.time)
    o.append([_reading(float(i)) for i in range(3000)])
    check = messages.PointCheck(point="water_depth_cm", value=3.5, quality=messages.Quality.GOOD, ok=True)
    o.store_command_result("cmd-1", "verified", "self-test passed", [check])
    o._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_ack_seq', 40)")
    old_epoch = o.epoch
    o._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    o.close()
    _damage_middle(path)
    outbox, replaced = open_outbox(path, max_records=10_000, clock=time.time)
    assert replaced is not None
    assert replaced.acked == 40
    rows = [decode_row(r) for r in outbox.read(0, limit=10_000)]
    origins = [r.origin for r in rows[:-1]]
    assert len(origins) == replaced.salvaged
    assert all(o is not None and o[0] == old_epoch for o in origins)
    seqs = [o[1] for o in origins if o is not None]
    assert seqs == sorted(seqs)
    assert seqs[0] == 41
    assert [r.value for r in rows[:3] if isinstance(r, messages.Reading)] == [40.0, 41.0, 42.0]  # seq 41 holds 40.0
    assert isinstance(rows[-1], messages.Event)
    assert rows[-1].values["acked"] == 40
    assert outbox.command_result("cmd-1") == ("verified", "self-test passed")
    assert outbox.command_report("cmd-1") == [check]


def test_salvage_of_a_file_that_lost_its_meta_page_carries_each_record_with_its_rows_epoch(
    tmp_path: Path,
) -> None:
    """Each row names the epoch it was written under, so a file whose meta page is lost (or
    that fell back to an older state) still says where its records were first assigned."""
    path = tmp_path / "outbox.db"
    o = Outbox(path, clock=time.time)
    o.append([_reading(float(i)) for i in range(3000)])
    first_epoch = o.epoch
    o._db.execute("DELETE FROM meta WHERE key IN ('epoch', 'next_seq')")
    o._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    o.close()
    _damage_middle(path)
    outbox, replaced = open_outbox(path, max_records=10_000, clock=time.time)
    assert replaced is not None
    assert replaced.salvaged > 0
    carried = [decode_row(r) for r in outbox.read(0, limit=10_000) if isinstance(decode_row(r), messages.Reading)]
    assert len(carried) == replaced.salvaged
    assert all(rec.origin is not None and rec.origin[0] == first_epoch for rec in carried)
    assert len({rec.origin for rec in carried}) == len(carried)


def test_salvage_of_rows_from_before_row_epochs_without_the_files_epoch_carries_them_without_an_origin(
    tmp_path: Path,
) -> None:
    """Rows written before rows named their epoch, in a file whose epoch cannot be read: nobody
    knows where they were first assigned, so they are carried as before (the hub stores them by
    their new seq) rather than given a made-up origin."""
    path = tmp_path / "outbox.db"
    o = Outbox(path, clock=time.time)
    o.append([_reading(float(i)) for i in range(3000)])
    o._db.execute("UPDATE records SET epoch = NULL")
    o._db.execute("DELETE FROM meta WHERE key IN ('epoch', 'next_seq')")
    o._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    o.close()
    _damage_middle(path)
    outbox, replaced = open_outbox(path, max_records=10_000, clock=time.time)
    assert replaced is not None
    assert replaced.salvaged > 0
    assert all(decode_row(r).origin is None for r in outbox.read(0, limit=10_000))


def test_a_command_result_stored_before_reports_existed_reads_with_an_empty_report(tmp_path: Path) -> None:
    """An outbox file from before reports were kept upgrades in place; its results keep their status."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, (_, sql) in enumerate(MIGRATIONS[:3], start=1):
        conn.executescript(sql)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute("INSERT INTO commands (cmd_id, status, reason, ts) VALUES ('c-1', 'verified', 'ok', 1.0)")
    conn.close()
    o = Outbox(path, clock=time.time)
    assert o.command_result("c-1") == ("verified", "ok")
    assert o.command_report("c-1") == []
