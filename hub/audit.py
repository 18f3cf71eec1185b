"""The append-only, hash-chained audit log (DESIGN §6), and its verifier.

Rules:

1. A row's ``hash`` is SHA-256 over the previous row's hash and the row's canonical content
   (id, ts, actor, action, target, detail as sorted-key JSON). The first row's previous hash
   is 64 zeros.
2. Rows are appended inside the writer's ``BEGIN IMMEDIATE`` transaction, reading the last
   hash in the same transaction, so two writers (the hub and ``jikimi hub user``) interleave
   without breaking the chain.
3. Triggers refuse UPDATE and DELETE; whoever goes round them (editing the file) is caught by
   :func:`verify`, which names the first row whose hash or link does not hold.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import msgspec

from hub.errors import AuditBroken, StoreError
from shared.messages import Scalar

GENESIS: Final = "0" * 64
_canonical = msgspec.json.Encoder(order="sorted")


def row_hash(prev_hash: str, row_id: int, ts: float, actor: str, action: str, target: str, detail: str) -> str:
    body = _canonical.encode([row_id, ts, actor, action, target, detail])
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + body).hexdigest()


def append(conn: sqlite3.Connection, ts: float, actor: str, action: str, target: str,
           detail: Mapping[str, Scalar | list[str]] | None = None) -> int:
    """Append one row; the caller holds an open write transaction. Returns the row id."""
    last = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    prev_id, prev_hash = (int(last[0]), str(last[1])) if last else (0, GENESIS)
    row_id = prev_id + 1
    text = _canonical.encode(dict(detail or {})).decode()
    h = row_hash(prev_hash, row_id, ts, actor, action, target, text)
    conn.execute(
        "INSERT INTO audit (id, ts, actor, action, target, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (row_id, ts, actor, action, target, text, prev_hash, h),
    )
    return row_id


def verify_conn(conn: sqlite3.Connection) -> int:
    """Check the whole chain; return the number of rows or raise :class:`AuditBroken`."""
    prev_hash = GENESIS
    expected_id = 1
    n = 0
    cur = conn.execute("SELECT id, ts, actor, action, target, detail, prev_hash, hash FROM audit ORDER BY id")
    for row_id, ts, actor, action, target, detail, stored_prev, stored_hash in cur:
        if row_id != expected_id:
            raise AuditBroken(row_id, f"expected row {expected_id} here: rows are missing")
        if stored_prev != prev_hash:
            raise AuditBroken(row_id, "prev_hash does not match the previous row's hash")
        if not isinstance(ts, float | int) or not all(isinstance(v, str) for v in (actor, action, target, detail)):
            raise AuditBroken(row_id, "a field has the wrong type")
        if row_hash(prev_hash, row_id, float(ts), actor, action, target, detail) != stored_hash:
            raise AuditBroken(row_id, "hash does not match the row's contents")
        prev_hash = stored_hash
        expected_id += 1
        n += 1
    return n


def verify(path: Path) -> int:
    """Verify the audit chain of the hub database at ``path`` (opened read-only)."""
    if not path.is_file():
        raise StoreError(f"{path}: no such database")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open: {exc}") from exc
    try:
        return verify_conn(conn)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read the audit log: {exc}") from exc
    finally:
        conn.close()
