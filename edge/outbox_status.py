"""What an edge's outbox holds, read from its SQLite file without disturbing the agent that owns it.

``jikimi edge status`` calls :func:`read_status` while the agent runs: the file is opened
read-only (``mode=ro``, ``query_only``), every figure comes from one read transaction (a
consistent snapshot; in WAL mode a reader never blocks the agent's writes), and nothing is
ever written. A file that is missing, is not an outbox, or cannot be read is an
:class:`OutboxError` saying which and why; a corrupt outbox is the agent's to move aside at
its next start (edge/outbox.py rule 7), never this reader's.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edge.errors import OutboxError
from edge.outbox import _PRIO_CODE, MIGRATIONS
from shared.messages import Priority

_PRIO_NAME: Final = {code: prio for prio, code in _PRIO_CODE.items()}
_BUSY_TIMEOUT_MS: Final = 2000


@dataclass(frozen=True)
class LastAck:
    seq: int
    at: float
    """Unix time at which the agent applied it."""


@dataclass(frozen=True)
class OutboxStatus:
    path: Path
    epoch: int
    next_seq: int
    held: Mapping[Priority, int]
    """Records held (sent or not, not yet acked), by priority; every priority is present."""
    lowest_seq: int | None
    oldest_ts: float | None
    """The acquisition time of the oldest record held."""
    last_ack: LastAck | None
    """The hub's last ack applied in this epoch (None: none yet, or an outbox from before it was kept)."""
    commands: int
    """Command results kept for idempotency."""

    @property
    def held_total(self) -> int:
        return sum(self.held.values())

    def oldest_age_s(self, now: float) -> float | None:
        return None if self.oldest_ts is None else max(0.0, now - self.oldest_ts)

    def as_json(self, now: float) -> dict[str, object]:
        """The ``edge status --json`` shape."""
        return {
            "outbox": str(self.path),
            "epoch": self.epoch,
            "next_seq": self.next_seq,
            "held": self.held_total,
            "held_by_priority": {p.value: n for p, n in self.held.items()},
            "lowest_seq": self.lowest_seq,
            "oldest_unacked_ts": self.oldest_ts,
            "oldest_unacked_age_s": self.oldest_age_s(now),
            "last_ack_seq": self.last_ack.seq if self.last_ack else None,
            "last_ack_ts": self.last_ack.at if self.last_ack else None,
            "last_ack_age_s": max(0.0, now - self.last_ack.at) if self.last_ack else None,
            "command_results": self.commands,
        }


def read_status(path: Path) -> OutboxStatus:
    """A snapshot of the outbox at ``path``; :class:`OutboxError` if it is not a readable outbox."""
    if not os.path.exists(path):
        raise OutboxError(f"{path}: no outbox here (has the agent of this site ever run?)")
    if not os.path.isfile(path):
        raise OutboxError(f"{path}: not a file")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise OutboxError(f"{path}: cannot open the outbox: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only = 1")
        conn.execute("BEGIN")  # one snapshot for every figure below
        return _read(conn, path)
    except sqlite3.Error as exc:
        raise OutboxError(f"{path}: cannot read the outbox: {exc}") from exc
    finally:
        conn.close()


def _read(conn: sqlite3.Connection, path: Path) -> OutboxStatus:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version == 0:
        raise OutboxError(f"{path}: not an outbox (no outbox schema in this SQLite file)")
    if version > len(MIGRATIONS):
        raise OutboxError(f"{path}: an outbox from a newer agent (schema {version}, this one knows "
                          f"{len(MIGRATIONS)}); use that version's 'jikimi edge status'")
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if "next_seq" not in meta:
        raise OutboxError(f"{path}: not an outbox (its meta table has no next_seq)")
    held = dict.fromkeys(_PRIO_CODE, 0)
    for code, n in conn.execute("SELECT prio, count(*) FROM records GROUP BY prio"):
        if code not in _PRIO_NAME:
            raise OutboxError(f"{path}: {n} record(s) of unknown priority {code!r}")
        held[_PRIO_NAME[code]] = int(n)
    lowest, oldest = conn.execute("SELECT min(seq), min(ts) FROM records").fetchone()
    commands = int(conn.execute("SELECT count(*) FROM commands").fetchone()[0]) if version >= 2 else 0
    last = None
    if "last_ack_seq" in meta and "last_ack_ms" in meta:
        last = LastAck(seq=int(meta["last_ack_seq"]), at=int(meta["last_ack_ms"]) / 1000)
    return OutboxStatus(
        path=path,
        epoch=int(meta.get("epoch", 0)),
        next_seq=int(meta["next_seq"]),
        held=held,
        lowest_seq=None if lowest is None else int(lowest),
        oldest_ts=None if oldest is None else float(oldest),
        last_ack=last,
        commands=commands,
    )
