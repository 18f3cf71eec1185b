"""A durable outbox: every record, in SQLite, until the receiver has committed it.

The one implementation of the delivery protocol of DESIGN §3 on the sending side: the edge's
outbox (edge/outbox.py: readings, events, command replies, to its city hub) and a city hub's
province outbox (hub/upstream.py: province records, to the provincial hub) are both this class,
told apart by an :class:`OutboxKind` (which records it holds, its migrations, its error type).
Below, "the hub" is whoever acks: the city hub for an edge, the provincial hub for a city hub.

Rules and invariants (DESIGN §3, §5, §8):

1. Every record gets a ``seq`` from a counter stored in the same database and bumped in the
   same transaction as the insert, so a seq is never reused, across crashes and reboots too
   (rows are deleted on ack, the counter never goes back).
2. A record is deleted only when the hub acks a ``through_seq`` at or above it.
3. Alarms, events and command replies (the *critical* priorities) are committed with
   ``synchronous=FULL`` (on disk before ``append`` returns) and are never evicted.
   Telemetry is committed with ``synchronous=NORMAL`` (WAL: durable across a process crash,
   at most the last moments lost on power loss).
4. When the outbox holds more than ``max_records``, telemetry is *thinned*: every other
   telemetry row of the oldest half is deleted (so each series keeps its shape at half the
   rate), and an ``outbox.thinned`` event records how many and which seq range. Nothing
   disappears silently. If only critical records are left, they are kept regardless of the
   limit (the limit is for telemetry).
5. :meth:`floor_seq` is the lowest seq still held (the next seq when empty); the uplink puts
   it on every batch so the hub never waits for a thinned seq.
6. Seqs belong to an *epoch*, a random id drawn when the outbox is created and stored in it
   (DESIGN §3). An outbox made before epochs keeps the legacy epoch 0. An ack for another
   epoch deletes nothing. An ack deletes only what this process has *sent* (handed to the
   uplink; :meth:`mark_sent`), never above it. An ack above the highest seq this outbox ever
   assigned means the hub holds a tail this file lost (a torn write, a restored backup): the
   outbox starts a new epoch rather than reuse those seqs. What that ack covers, this process
   sent, and this file held when it was opened is committed at the hub: it is dropped. (A seq
   assigned since the file was opened may be one the lost tail had used already: the hub's
   record there is another one, so it is carried.) The other records it holds are
   renumbered into the new epoch from 1 (and so sent again: at least once, never lost), each
   keeping its identity as its ``origin`` (the (epoch, seq) it was first assigned, kept through
   repeated carries), so the hub stores a record it already committed only once.
7. An outbox that fails to open or to pass ``quick_check`` at start is moved aside (renamed
   with a timestamp, never deleted) by :func:`open_outbox`; a new outbox (a new epoch) takes
   what can still be read of it (less what the last ack the file recorded covers; each carried
   record with its ``origin``, as in rule 6: each row stores the epoch it was written under, so
   a file whose meta page is lost, or that fell back to an older state, still names it), and an
   ``outbox.replaced`` event says what happened (a kind's side tables, such as the edge's command
   results, are carried by the caller's ``carry_side``). Every storage error at run time is the
   kind's :class:`OutboxError`; the agent keeps sensing and acting locally through it (edge/agent.py).

One object owns the connection; the uplink and the acquisition loop call it from the one
event loop (each call is a short transaction, well under a millisecond for telemetry).
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Generic, TypeVar

import msgspec

from shared import site_events
from shared.errors import OutboxError
from shared.messages import MAX_EPOCH, MAX_SEQ, MAX_THINNED, AnyRecord, Event, Priority, encode_record

log = logging.getLogger(__name__)

CRITICAL: Final = frozenset({Priority.ALARM, Priority.EVENT, Priority.REPLY})
_PRIO_CODE: Final = {Priority.ALARM: 0, Priority.REPLY: 1, Priority.EVENT: 2, Priority.TELEMETRY: 3}

# Named, ordered migrations; the database's user_version counts those applied. (The hub uses
# sqlite-utils' Migrations; the edge keeps this small runner because importing sqlite-utils
# pulls in numpy and costs the agent ~28 MB of RSS.) A kind lists its own, in its own order
# (the edge's interleaves its command tables, edge/outbox.py); these are the records' own.
M001_RECORDS: Final = (
        "m001_records",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO meta (key, value) VALUES ('next_seq', 1);
        CREATE TABLE records (
            seq INTEGER PRIMARY KEY,
            prio INTEGER NOT NULL,  -- 0 alarm, 1 reply, 2 event, 3 telemetry
            ts REAL NOT NULL,
            payload BLOB NOT NULL);
        CREATE INDEX records_telemetry ON records (prio, seq);
        """,
)
M002_COMMANDS: Final = (
        "m002_commands",
        """
        -- results of commands, so a repeated cmd_id never acts twice (edge/commands.py)
        CREATE TABLE commands (
            cmd_id TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            reason TEXT NOT NULL,
            ts REAL NOT NULL);
        """,
)
M003_EPOCH: Final = (
        "m003_epoch",
        """
        -- the outbox's epoch (rule 6): an outbox made before epochs keeps the legacy epoch 0,
        -- a new one draws its own at once (Outbox.__init__)
        INSERT INTO meta (key, value) VALUES ('epoch', 0);
        """,
)
M004_COMMAND_REPORTS: Final = (
        "m004_command_reports",
        """
        -- a self-test's per-point report, kept with its result so a repeated cmd_id gets it too
        ALTER TABLE commands ADD COLUMN report BLOB NOT NULL DEFAULT '[]';
        """,
)
M005_RECORD_EPOCH: Final = (
        "m005_record_epoch",
        """
        -- each row's own epoch, beside the meta page's: a damaged file that has lost its meta page
        -- (or fallen back to an older state than it) still says which epoch each record it
        -- brings back was committed under, so salvage carries it with its origin (rule 7)
        ALTER TABLE records ADD COLUMN epoch INTEGER;
        """,
)
MIGRATIONS: Final[tuple[tuple[str, str], ...]] = (M001_RECORDS, M003_EPOCH, M005_RECORD_EPOCH)
"""The migrations of an outbox with no side tables (a city hub's province outbox)."""


def migrate(conn: sqlite3.Connection, migrations: Sequence[tuple[str, str]] = MIGRATIONS) -> list[str]:
    """Apply the migrations not applied yet, each in its own transaction; return their names."""
    done = int(conn.execute("PRAGMA user_version").fetchone()[0])
    applied = []
    for number, (name, sql) in enumerate(migrations[done:], start=done + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        except sqlite3.Error:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        applied.append(name)
    return applied


R = TypeVar("R", bound=AnyRecord)


def _statements(sql: str) -> list[str]:
    """The complete statements of a script (a trigger's body holds ``;`` of its own)."""
    out, buf = [], ""
    for piece in sql.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                out.append(buf)
            buf = ""
    if buf.strip(" \n;"):
        out.append(buf)
    return out


@dataclass(frozen=True)
class OutboxKind(Generic[R]):
    """What an outbox holds: its records' decoder (their union, which must include
    :class:`~shared.messages.Event`: the outbox writes its own events), its migrations, and the
    error type it raises (a subclass of :class:`OutboxError` in the owner's error tree)."""

    decoder: msgspec.json.Decoder[R]
    migrations: tuple[tuple[str, str], ...] = MIGRATIONS
    error: type[OutboxError] = OutboxError


@dataclass(frozen=True)
class Row:
    seq: int
    prio: int
    ts: float
    payload: bytes

    @property
    def critical(self) -> bool:
        return self.prio < _PRIO_CODE[Priority.TELEMETRY]


@dataclass(frozen=True)
class OutboxStats:
    held: int
    critical_held: int
    next_seq: int
    thinned_total: int
    appended_total: int
    epoch: int


_INSERT: Final = "INSERT INTO records (seq, prio, ts, payload, epoch) VALUES (?, ?, ?, ?, ?)"


class Outbox(Generic[R]):
    """The durable, ordered, seq-numbered store of records waiting for the hub's ack."""

    def __init__(self, path: Path, *, kind: OutboxKind[R], max_records: int = 200_000,
                 clock: Callable[[], float]) -> None:
        if max_records < 100:
            raise ValueError("max_records must be at least 100")
        self.kind = kind
        self.path = path
        self.max_records = max_records
        self._clock = clock
        self.thinned_total = 0
        self.appended_total = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            created = "m001_records" in migrate(conn, kind.migrations)
            if created:
                with _transaction(conn):
                    conn.execute("UPDATE meta SET value=? WHERE key='epoch'", (new_epoch(),))
            epoch, next_seq = _meta(conn, "epoch"), _meta(conn, "next_seq")
            if epoch is None or next_seq is None:
                conn.close()
                raise kind.error(f"{path}: the outbox has lost its epoch or its seq counter")
            self._epoch, self._next_seq = epoch, next_seq
            self._held = int(conn.execute("SELECT count(*) FROM records").fetchone()[0])
        except (sqlite3.Error, OSError) as exc:
            raise kind.error(f"{path}: cannot open the outbox: {exc}") from exc
        self._db = conn
        self._sync_full = False
        self._sent_max = 0
        """The highest seq of this epoch handed to the uplink by this process (rule 6)."""
        self._opened_next_seq = self._next_seq
        """Seqs below it were assigned before this process opened the file, or in an epoch it
        started; the ones above may repeat seqs a lost tail had used (rule 6)."""
        if created:
            log.info("outbox.created", extra={"path": str(path), "epoch": self._epoch})

    def close(self) -> None:
        self._db.close()

    def release_memory(self) -> None:
        """Hand SQLite's page cache back to the allocator (``PRAGMA shrink_memory``): after an
        outage's backlog drains, the cache the backlog filled is no longer needed."""
        try:
            self._db.execute("PRAGMA shrink_memory")
        except sqlite3.Error as exc:
            raise self.kind.error(f"{self.path}: cannot release memory: {exc}") from exc

    def check(self) -> None:
        """SQLite's ``quick_check``; raises the kind's :class:`OutboxError` unless the file is sound."""
        try:
            rows = self._db.execute("PRAGMA quick_check").fetchall()
        except sqlite3.Error as exc:
            raise self.kind.error(f"{self.path}: integrity check failed: {exc}") from exc
        if [tuple(r) for r in rows] != [("ok",)]:
            raise self.kind.error(f"{self.path}: integrity check failed: {'; '.join(str(r[0]) for r in rows[:5])}")

    # --- writing ---------------------------------------------------------------------------

    def append(self, drafts: Sequence[R | Event]) -> list[R | Event]:
        """Give each draft the next seq, store them all in one transaction, return them.

        The drafts' own ``seq`` is ignored. Returns only after the transaction commits (for
        critical records, after it is on disk).
        """
        if not drafts:
            return []
        first = self._next_seq
        stamped: list[R | Event] = [
            msgspec.structs.replace(d, seq=first + i, historical=False) for i, d in enumerate(drafts)
        ]
        rows = [(r.seq, _PRIO_CODE[r.prio], r.ts, encode_record(r)) for r in stamped]
        critical = any(r.prio in CRITICAL for r in stamped)
        self._write(rows, first + len(rows), critical)
        self._next_seq = first + len(rows)
        self._held += len(rows)
        self.appended_total += len(rows)
        if self._held > self.max_records:
            try:
                self._thin()
            except sqlite3.Error as exc:
                raise self.kind.error(f"{self.path}: cannot thin the outbox: {exc}") from exc
        return stamped

    def _write(self, rows: list[tuple[int, int, float, bytes]], next_seq: int, critical: bool) -> None:
        try:
            self._set_sync(critical)
            with _transaction(self._db):
                self._db.executemany(_INSERT, [(*r, self._epoch) for r in rows])
                self._db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (next_seq,))
        except sqlite3.Error as exc:
            if _is_full(exc) and self._thin(force=True):
                log.warning("outbox.disk_full_thinned", extra={"path": str(self.path)})
                try:
                    with _transaction(self._db):
                        self._db.executemany(_INSERT, [(*r, self._epoch) for r in rows])
                        self._db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (next_seq,))
                    return
                except sqlite3.Error as again:
                    exc = again
            raise self.kind.error(f"{self.path}: cannot store {len(rows)} record(s): {exc}") from exc

    def _set_sync(self, full: bool) -> None:
        if full != self._sync_full:
            self._db.execute("PRAGMA synchronous=FULL" if full else "PRAGMA synchronous=NORMAL")
            self._sync_full = full

    def _thin(self, *, force: bool = False) -> bool:
        """Delete every other telemetry row of the oldest half of telemetry; log it as an event.

        Returns True if anything was removed.
        """
        telemetry = self._db.execute(
            "SELECT count(*) FROM records WHERE prio=?", (_PRIO_CODE[Priority.TELEMETRY],)
        ).fetchone()[0]
        if telemetry < 2:
            if not force:
                log.warning("outbox.full_of_critical", extra={"held": self._held, "limit": self.max_records})
            return False
        oldest = self._db.execute(
            "SELECT seq FROM records WHERE prio=? ORDER BY seq LIMIT ?",
            (_PRIO_CODE[Priority.TELEMETRY], max(2, telemetry // 2)),
        ).fetchall()
        victims = [s for (s,) in oldest[1::2]]
        self._set_sync(True)
        with _transaction(self._db):
            self._db.executemany("DELETE FROM records WHERE seq=?", [(s,) for s in victims])
        self._held -= len(victims)
        self.thinned_total += len(victims)
        log.warning(
            "outbox.thinned",
            extra={"removed": len(victims), "from_seq": victims[0], "to_seq": victims[-1], "held": self._held},
        )
        event = Event(
            seq=0,
            ts=self._clock(),
            prio=Priority.EVENT,
            kind=site_events.OUTBOX_THINNED,
            detail=f"outbox over {self.max_records} records: every other telemetry record removed",
            values={"removed": len(victims), "from_seq": victims[0], "to_seq": victims[-1]},
        )
        first = self._next_seq
        stamped = msgspec.structs.replace(event, seq=first)
        with _transaction(self._db):
            self._db.execute(_INSERT, (first, _PRIO_CODE[Priority.EVENT], stamped.ts, encode_record(stamped),
                                       self._epoch))
            self._db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (first + 1,))
        self._next_seq = first + 1
        self._held += 1
        return True

    # --- reading ---------------------------------------------------------------------------

    def read(self, from_seq: int, *, limit: int, below_seq: int | None = None) -> list[Row]:
        """Up to ``limit`` held records with ``from_seq <= seq (< below_seq)``, in seq order."""
        try:
            if below_seq is None:
                cur = self._db.execute(
                    "SELECT seq, prio, ts, payload FROM records WHERE seq >= ? ORDER BY seq LIMIT ?",
                    (from_seq, limit),
                )
            else:
                cur = self._db.execute(
                    "SELECT seq, prio, ts, payload FROM records WHERE seq >= ? AND seq < ? ORDER BY seq LIMIT ?",
                    (from_seq, below_seq, limit),
                )
            return [Row(*r) for r in cur.fetchall()]
        except sqlite3.Error as exc:
            raise self.kind.error(f"{self.path}: cannot read records: {exc}") from exc

    def floor_seq(self) -> int:
        """The lowest seq held, or the next seq when nothing is held."""
        try:
            row = self._db.execute("SELECT min(seq) FROM records").fetchone()
        except sqlite3.Error as exc:
            raise self.kind.error(f"{self.path}: cannot read records: {exc}") from exc
        return int(row[0]) if row[0] is not None else self._next_seq

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def epoch(self) -> int:
        return self._epoch

    def mark_sent(self, seq: int) -> None:
        """The uplink is handing records up to ``seq`` to the broker (call before publishing:
        the hub's ack may overtake the PUBACK)."""
        if seq > self._sent_max:
            self._sent_max = seq

    @property
    def held(self) -> int:
        return self._held

    def ack(self, through_seq: int, *, epoch: int) -> int:
        """The hub committed everything of ``epoch`` up to ``through_seq``: delete what of it
        was sent (rule 6). Returns rows deleted.

        An ack for another epoch deletes nothing; one above the highest seq ever assigned
        deletes nothing and starts a new epoch (check :attr:`epoch` after the call).
        """
        if epoch != self._epoch:
            log.warning("outbox.ack_other_epoch", extra={"ack_epoch": epoch, "epoch": self._epoch})
            return 0
        if through_seq >= self._next_seq:
            log.error("outbox.ack_beyond_assigned", extra={"through_seq": through_seq, "next_seq": self._next_seq,
                                                           "epoch": self._epoch})
            # what the ack covers and this process sent is committed at the hub: not carried
            self.start_epoch(f"the hub acked seq {through_seq}, this outbox only assigned up to "
                             f"{self._next_seq - 1}: its tail was lost",
                             committed_through=min(self._sent_max, self._opened_next_seq - 1))
            return 0
        acked = through_seq
        if through_seq > self._sent_max:
            log.info("outbox.ack_beyond_sent", extra={"through_seq": through_seq, "sent": self._sent_max})
            through_seq = self._sent_max
        try:
            with _transaction(self._db):
                cur = self._db.execute("DELETE FROM records WHERE seq <= ?", (through_seq,))
                # the last ack, for 'jikimi edge status' (meta holds integers: the time in ms)
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_ack_seq', ?), "
                                 "('last_ack_ms', ?)", (acked, round(self._clock() * 1000)))
        except sqlite3.Error as exc:
            raise self.kind.error(f"{self.path}: cannot delete acked records: {exc}") from exc
        self._held -= cur.rowcount
        return cur.rowcount

    def start_epoch(self, reason: str, *, committed_through: int = 0) -> int:
        """Draw a new epoch; drop the held records at or below ``committed_through`` (the hub
        committed them under the old epoch), renumber the others into it from seq 1, each with
        its origin (rule 6; they are sent again), and record an ``outbox.new_epoch`` event.
        Returns the new epoch."""
        old, epoch = self._epoch, new_epoch()
        try:
            floor = min(max(0, committed_through), self._next_seq)
            dropped = int(self._db.execute("SELECT count(*) FROM records WHERE seq <= ?", (floor,)).fetchone()[0])
            rows = self._db.execute("SELECT seq, prio, ts, payload FROM records WHERE seq > ? ORDER BY seq",
                                    (floor,)).fetchall()
            renumbered = []
            for i, (seq, prio, ts, payload) in enumerate(rows, start=1):
                rec = carried(self.decode_row(Row(seq, prio, ts, payload)), old, seq)
                renumbered.append((i, prio, ts, encode_record(msgspec.structs.replace(rec, seq=i)), epoch))
            event = Event(seq=len(rows) + 1, ts=self._clock(), prio=Priority.EVENT, kind=site_events.OUTBOX_NEW_EPOCH,
                          detail=reason[:1024], values={"old_epoch": old, "carried": len(rows), "dropped": dropped})
            renumbered.append((event.seq, _PRIO_CODE[Priority.EVENT], event.ts, encode_record(event), epoch))
            self._set_sync(True)
            with _transaction(self._db):
                self._db.execute("DELETE FROM records")
                self._db.executemany(_INSERT, renumbered)
                self._db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (len(renumbered) + 1,))
                self._db.execute("UPDATE meta SET value=? WHERE key='epoch'", (epoch,))
                self._db.execute("DELETE FROM meta WHERE key IN ('last_ack_seq', 'last_ack_ms')")  # the old epoch's
        except (sqlite3.Error, msgspec.DecodeError) as exc:
            raise self.kind.error(f"{self.path}: cannot start a new epoch: {exc}") from exc
        self._epoch = epoch
        self._next_seq = len(renumbered) + 1
        self._held = len(renumbered)
        self._sent_max = 0
        self._opened_next_seq = self._next_seq
        log.warning("outbox.new_epoch", extra={"old_epoch": old, "epoch": epoch, "carried": len(rows),
                                                "dropped": dropped, "reason": reason})
        return epoch

    def stats(self) -> OutboxStats:
        try:
            critical = self._db.execute(
                "SELECT count(*) FROM records WHERE prio < ?", (_PRIO_CODE[Priority.TELEMETRY],)
            ).fetchone()[0]
        except sqlite3.Error as exc:
            raise self.kind.error(f"{self.path}: cannot count records: {exc}") from exc
        return OutboxStats(self._held, int(critical), self._next_seq, self.thinned_total, self.appended_total,
                           self._epoch)

    def decode_row(self, row: Row) -> R:
        """The stored record of a row (used when a replayed record must be re-flagged)."""
        return self.kind.decoder.decode(row.payload)

    def side_execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        """Run one statement on a kind's side table (the edge's command results) in autocommit
        and return its rows; raises the kind's error."""
        try:
            return [tuple(r) for r in self._db.execute(sql, params).fetchall()]
        except sqlite3.Error as exc:
            raise self.kind.error(f"{self.path}: {exc}") from exc

    def side_write(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """``executemany`` on a kind's side table in one transaction, on disk before this returns."""
        try:
            self._set_sync(True)
            with _transaction(self._db):
                self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise self.kind.error(f"{self.path}: {exc}") from exc

# --- a corrupt outbox ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Replaced:
    """What :func:`open_outbox` did with an outbox it could not use."""

    error: str
    moved_to: Path | None
    """Where the old file now is (None if it could not be moved: then it is where it was)."""
    salvaged: int
    unreadable: int
    """About how many seqs could not be read or decoded (an upper bound: some may have been
    thinned or acked before); -1 when the file could not be read at all."""
    commands: int
    """Side rows (the edge's command results) the kind's ``carry_side`` brought over."""
    acked: int = 0
    """Records read that the last ack the file recorded covers: committed at the hub, not carried."""


def open_outbox(path: Path, *, kind: OutboxKind[R], max_records: int, clock: Callable[[], float],
                carry_side: Callable[[Path, Outbox[R]], int] | None = None,
                make: Callable[[Path], Outbox[R]] | None = None) -> tuple[Outbox[R], Replaced | None]:
    """Open the outbox at ``path``; if it fails to open or to pass its integrity check, move it
    aside (renamed with a timestamp, never deleted), start a new one (a new epoch) holding what
    could be read of the old one, and record an ``outbox.replaced`` event. ``carry_side``, given
    the moved file and the new outbox, carries the kind's side tables and says how many rows;
    ``make`` builds the outbox at a path (a subclass's constructor; by default :class:`Outbox`). If
    no outbox can be made on disk at all, the caller gets one in memory, so that sensing and local
    safety go on.
    """
    def build(at: Path) -> Outbox[R]:
        if make is not None:
            return make(at)
        return Outbox(at, kind=kind, max_records=max_records, clock=clock)

    try:
        outbox = build(path)
        try:
            outbox.check()
        except OutboxError:
            outbox.close()
            raise
        return outbox, None
    except OutboxError as exc:
        error = str(exc)
    log.error("outbox.corrupt", extra={"path": str(path), "error": error})
    moved = _move_aside(path, clock())
    found = _salvage(moved, kind) if moved is not None else _Salvage[R]([], -1, 0)
    records, unreadable = found.records, found.unreadable
    try:
        outbox = build(path)
    except OutboxError as exc:
        log.critical("outbox.in_memory", extra={"path": str(path), "error": str(exc)})
        outbox = build(Path(":memory:"))
    for i in range(0, len(records), 1000):
        outbox.append(records[i : i + 1000])
    side = carry_side(moved, outbox) if carry_side is not None and moved is not None else 0
    report = Replaced(error, moved, len(records), unreadable, side, found.acked)
    outbox.append([Event(
        seq=0, ts=clock(), prio=Priority.EVENT, kind=site_events.OUTBOX_REPLACED,
        detail=(f"{error}; moved to {moved.name if moved else '(could not be moved)'}; "
                f"{report.salvaged} record(s) salvaged")[:1024],
        values={"salvaged": report.salvaged, "unreadable": unreadable, "commands": report.commands,
                "acked": report.acked, "moved_to": moved.name if moved else "", "epoch": outbox.epoch},
    )])
    log.warning("outbox.replaced", extra={"moved_to": str(moved), "salvaged": report.salvaged,
                                          "acked": report.acked, "unreadable": unreadable, "epoch": outbox.epoch})
    return outbox, report


def _move_aside(path: Path, now: float) -> Path | None:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        for suffix in ("-wal", "-shm", ""):  # the main file last: a WAL never outlives its database
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(aside.with_name(aside.name + suffix))
    except OSError as exc:
        log.error("outbox.move_aside_failed", extra={"path": str(path), "error": str(exc)})
        return None
    return aside


@dataclass(frozen=True)
class _Salvage(Generic[R]):
    records: list[R]
    """Each with its origin (rule 6) when the file's epoch could be read."""
    unreadable: int
    acked: int
    """Records read at or below the file's last ack: left behind."""


def _meta(conn: sqlite3.Connection, key: str) -> int | None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    except sqlite3.Error:
        return None
    return int(row[0]) if row is not None and isinstance(row[0], int) else None


def _salvage(path: Path, kind: OutboxKind[R]) -> _Salvage[R]:
    """The records that can still be read from a corrupt outbox, less those its last recorded
    ack covers (rule 7)."""
    records: list[R] = []
    unreadable = acked = 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return _Salvage(records, -1, 0)
    try:
        epoch = _meta(conn, "epoch")
        if epoch is None and (_meta(conn, "next_seq") is not None):
            epoch = 0  # an outbox made before epochs (rule 6)
        last_ack = _meta(conn, "last_ack_seq") if epoch is not None else None
        try:
            top = int(conn.execute("SELECT max(seq) FROM records").fetchone()[0] or 0)
        except sqlite3.Error:
            top = -1  # unknown: read until the first damaged page
        try:  # each row's own epoch (m005); a file from before it has only the meta page's
            conn.execute("SELECT epoch FROM records LIMIT 0")
            select = "SELECT seq, payload, epoch FROM records WHERE seq >= ? ORDER BY seq LIMIT 256"
        except sqlite3.Error:
            select = "SELECT seq, payload, NULL FROM records WHERE seq >= ? ORDER BY seq LIMIT 256"
        lo, failed_at = 0, None
        while top < 0 or lo <= top:
            try:
                rows = conn.execute(select, (lo,)).fetchall()
            except sqlite3.Error:
                if top < 0:
                    break
                failed_at = lo if failed_at is None else failed_at
                lo += 64  # step over the damaged part (its rows are lost)
                continue
            if failed_at is not None:
                unreadable += (rows[0][0] if rows else top + 1) - failed_at
                failed_at = None
            if not rows:
                break
            for seq, payload, row_epoch in rows:
                held_in = row_epoch if isinstance(row_epoch, int) else epoch
                if last_ack is not None and held_in == epoch and isinstance(seq, int) and seq <= last_ack:
                    acked += 1  # the hub committed it under the old epoch
                    continue
                try:
                    rec = kind.decoder.decode(payload)
                except (msgspec.DecodeError, TypeError):
                    unreadable += 1
                    continue
                records.append(carried(rec, held_in, seq))
            lo = rows[-1][0] + 1
        if failed_at is not None:
            unreadable += top + 1 - failed_at
        if not records and unreadable == 0 and acked == 0 and top != 0:
            unreadable = -1
    finally:
        conn.close()
    return _Salvage(records, unreadable, acked)


def thinned_holes(rows: list[Row], from_seq: int) -> list[tuple[int, int]]:
    """Pure: the seqs from ``from_seq`` up to the last of ``rows`` that are not among them.

    ``rows`` were read in one go, in seq order, from ``from_seq`` (not below the outbox's
    floor): a seq between them that the outbox did not return is not held, and above the
    floor only thinning removes records (acks delete from the bottom), so it will never come.
    """
    holes: list[tuple[int, int]] = []
    expect = from_seq
    for row in rows:
        if row.seq > expect:
            holes.append((expect, row.seq - 1))
        expect = row.seq + 1
    return holes[:MAX_THINNED]


def carried(rec: R, epoch: int | None, seq: int) -> R:
    """``rec``, held at ``seq`` of ``epoch``, as it is carried into a new epoch (rule 6): with that
    (epoch, seq) as its origin, unless it has one already from an earlier carry, or the place it
    was held is unknown or out of bounds (a damaged file)."""
    if rec.origin is not None or epoch is None or not (0 <= epoch <= MAX_EPOCH and 1 <= seq <= MAX_SEQ):
        return rec
    return msgspec.structs.replace(rec, origin=(epoch, seq))


def new_epoch() -> int:
    """A random epoch, 1 .. MAX_EPOCH (0 is the legacy epoch)."""
    return secrets.randbelow(MAX_EPOCH) + 1


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:
            self._db.execute("ROLLBACK")


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc).lower()
