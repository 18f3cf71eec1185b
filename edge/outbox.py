"""The edge's durable outbox: the shared outbox (shared/outbox.py, its rules 1-7) holding the
edge's records (readings, events, command replies), plus the edge's own side table, the results
of commands, so a repeated ``cmd_id`` never acts twice (edge/commands.py). A corrupt file's
command results are carried into its replacement with its records (rule 7).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import msgspec

from edge.errors import OutboxError
from shared import outbox as shared_outbox
from shared.messages import PointCheck, Record
from shared.outbox import _PRIO_CODE, CRITICAL, OutboxStats, Replaced, Row, carried, migrate, new_epoch

__all__ = ["CRITICAL", "LOCK_FILE", "MIGRATIONS", "OUTBOX_FILE", "_PRIO_CODE", "CommandRow", "Outbox", "OutboxStats",
           "Replaced", "Row", "carried", "decode_row", "migrate", "new_epoch", "open_outbox"]

OUTBOX_FILE: Final = "outbox.db"
"""The outbox's file name in the site's ``state_dir``."""
LOCK_FILE: Final = "agent.lock"
"""Held by the one agent running on the state directory (shared/instance.py)."""

MIGRATIONS: Final[tuple[tuple[str, str], ...]] = (
    shared_outbox.M001_RECORDS,
    shared_outbox.M002_COMMANDS,
    shared_outbox.M003_EPOCH,
    shared_outbox.M004_COMMAND_REPORTS,
    shared_outbox.M005_RECORD_EPOCH,
)
"""The edge outbox's migrations, in the order edge files have applied them."""

KIND: Final = shared_outbox.OutboxKind[Record](
    decoder=msgspec.json.Decoder(Record), migrations=MIGRATIONS, error=OutboxError)

_report_decoder = msgspec.json.Decoder(list[PointCheck])
_report_encoder = msgspec.json.Encoder()

CommandRow = tuple[str, str, str, float, bytes]
"""A stored command result: (cmd_id, status, reason, ts, report as JSON)."""


class Outbox(shared_outbox.Outbox[Record]):
    """The edge's outbox: its records until the hub has committed them, and its command results."""

    def __init__(self, path: Path, *, max_records: int = 200_000, clock: Callable[[], float]) -> None:
        super().__init__(path, kind=KIND, max_records=max_records, clock=clock)

    def command_result(self, cmd_id: str) -> tuple[str, str] | None:
        rows = self.side_execute("SELECT status, reason FROM commands WHERE cmd_id=?", (cmd_id,))
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def command_report(self, cmd_id: str) -> list[PointCheck]:
        """The self-test report stored with a command's result (empty for any other action)."""
        rows = self.side_execute("SELECT report FROM commands WHERE cmd_id=?", (cmd_id,))
        if not rows:
            return []
        blob = rows[0][0]
        try:
            return _report_decoder.decode(blob if isinstance(blob, bytes | str) else b"[]")
        except msgspec.DecodeError:
            shared_outbox.log.error("outbox.report_unreadable", extra={"cmd_id": cmd_id})
            return []

    def store_command_result(self, cmd_id: str, status: str, reason: str,
                             report: Sequence[PointCheck] = ()) -> None:
        self.store_command_results([(cmd_id, status, reason, self._clock(), _report_encoder.encode(list(report)))])

    def store_command_results(self, rows: Sequence[CommandRow]) -> None:
        """(cmd_id, status, reason, ts, report) rows, on disk before this returns."""
        self.side_write(
            "INSERT OR REPLACE INTO commands (cmd_id, status, reason, ts, report) VALUES (?, ?, ?, ?, ?)", rows)


def open_outbox(path: Path, *, max_records: int, clock: Callable[[], float]) -> tuple[Outbox, Replaced | None]:
    """The edge's outbox at ``path``, replaced when corrupt (shared/outbox.py rule 7), with the
    old file's command results carried over."""
    outbox, replaced = shared_outbox.open_outbox(
        path, kind=KIND, max_records=max_records, clock=clock, carry_side=_carry_commands,
        make=lambda at: Outbox(at, max_records=max_records, clock=clock))
    assert isinstance(outbox, Outbox)
    return outbox, replaced


def _carry_commands(moved: Path, outbox: shared_outbox.Outbox[Record]) -> int:
    """Copy the command results that can still be read from the corrupt file at ``moved``."""
    commands: list[CommandRow] = []
    try:
        conn = sqlite3.connect(f"file:{moved}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0
    try:
        with contextlib.suppress(sqlite3.Error):
            try:
                got = conn.execute("SELECT cmd_id, status, reason, ts, report FROM commands").fetchall()
            except sqlite3.OperationalError:  # a file from before m004_command_reports
                got = [(*r, b"[]") for r in conn.execute("SELECT cmd_id, status, reason, ts FROM commands")]
            for cmd_id, status, reason, ts, report in got:
                blob = report.encode() if isinstance(report, str) else bytes(report or b"[]")
                commands.append((str(cmd_id), str(status), str(reason), float(ts), blob))
    finally:
        conn.close()
    if commands:
        outbox.side_write(
            "INSERT OR REPLACE INTO commands (cmd_id, status, reason, ts, report) VALUES (?, ?, ?, ?, ?)", commands)
    return len(commands)


def decode_row(row: Row) -> Record:
    """The stored record of a row (used when a replayed record must be re-flagged)."""
    return KIND.decoder.decode(row.payload)
