"""The quarantine: what the edges sent that the hub would not store, kept for operators —
bounded, so that a hostile device cannot fill the disk through it.

Runs inside the writer's transaction (hub/store.py), like the intake that calls it.

Rules:

1. Each entry keeps the topic, the site (when the topic names one), the :class:`Reason`, the
   error, the time, the payload's original size, and at most ``payload_max`` bytes of it.
2. The table holds at most ``max_rows`` entries and ``max_bytes`` stored payload bytes: an
   insert that would pass either evicts the oldest entries first.
3. Entries older than ``keep_days`` are deleted on the upkeep tick (:meth:`Quarantine.expire`).
4. Every entry is counted per reason (``counts``, shown in the health view) and logged.

The running totals (rows, bytes) are loaded once (:meth:`Quarantine.load`) and kept with the
table, so the caps cost no scan.
"""

from __future__ import annotations

import logging
import sqlite3

from hub.config import IngestConfig
from hub.store import Tx
from hub.validate import Reason

log = logging.getLogger(__name__)


class Quarantine:
    def __init__(self, cfg: IngestConfig) -> None:
        self.cfg = cfg
        self.counts: dict[str, int] = {r.value: 0 for r in Reason}
        self.rows = 0
        self.bytes = 0

    def load(self, conn: sqlite3.Connection) -> None:
        self.rows, self.bytes = conn.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM quarantine"
                                             ).fetchone()

    def add(self, tx: Tx, topic: str, site: str | None, reason: Reason, error: str, payload: bytes) -> None:
        """Rules 1, 2 and 4 for one message (or a batch's refused records)."""
        cfg = self.cfg
        kept = payload[:cfg.quarantine_payload_max]
        self.counts[reason.value] += 1
        self._evict(tx.conn, cfg.quarantine_max_rows - 1, cfg.quarantine_max_bytes - len(kept))
        tx.conn.execute("INSERT INTO quarantine (received_at, topic, payload, error, site, reason, size)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)", (tx.now, topic, kept, error[:1024], site, reason.value,
                                                          len(payload)))
        self.rows += 1
        self.bytes += len(kept)
        log.warning("ingest.quarantined", extra={"topic": topic, "site": site, "reason": reason.value,
                                                 "error": error[:200], "bytes": len(payload)})

    def _evict(self, conn: sqlite3.Connection, rows: int, nbytes: int) -> None:
        """Delete the oldest entries until at most ``rows`` rows and ``nbytes`` bytes remain."""
        while self.rows > max(rows, 0) or (self.bytes > max(nbytes, 0) and self.rows):
            oldest = conn.execute("SELECT id, length(payload) FROM quarantine ORDER BY id LIMIT 64").fetchall()
            if not oldest:
                self.rows = self.bytes = 0
                return
            upto = oldest[-1][0]
            for qid, size in oldest:
                self.rows -= 1
                self.bytes -= size
                if self.rows <= max(rows, 0) and self.bytes <= max(nbytes, 0):
                    upto = qid
                    break
            conn.execute("DELETE FROM quarantine WHERE id <= ?", (upto,))

    def expire(self, tx: Tx) -> None:
        """Rule 3."""
        cutoff = tx.now - self.cfg.quarantine_days * 86400
        gone = tx.conn.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM quarantine"
                               " WHERE received_at < ?", (cutoff,)).fetchone()
        if gone[0]:
            tx.conn.execute("DELETE FROM quarantine WHERE received_at < ?", (cutoff,))
            self.rows -= gone[0]
            self.bytes -= gone[1]
