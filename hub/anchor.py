"""Signed checkpoints of the audit chain's head: the chain's anchor outside the database.

The hash chain (hub/audit.py) shows that no row was changed or taken out of its middle, but
not that the newest rows are all still there: whoever cuts the tail leaves a chain that
verifies. So the hub signs a *checkpoint* of the head — row id, that row's hash, the time —
with an Ed25519 key, on a schedule (``[audit] checkpoint_every_s``) and at shutdown, and
appends it to a file beside the database (``<db>.checkpoints``, one JSON object per line,
never rewritten; each checkpoint is also logged as ``audit.checkpoint`` for the journal).

Rules:

1. A checkpoint's signature covers :data:`CONTEXT` and the canonical JSON of every field but
   ``sig`` (the context keeps a checkpoint signature from ever passing for a command's, should
   the command key be the one configured).
2. :func:`check` holds a chain against its checkpoints: every line must be well formed and
   signed by the given key; a chain that ends before the latest checkpoint's row was cut
   ("the chain ends at row N but checkpoint T saw row M"); a checkpointed row whose hash is not
   the checkpoint's was rewritten.
3. A checkpoint is written only when the head moved since the last one this process wrote.

The key: ``[audit] checkpoint_key`` (``jikimi pki init`` makes ``audit-signing/key.pem``);
when it is not set the hub's command-signing key is used, with rule 1's context.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import logging
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hub import audit
from hub.errors import AuditBroken, StoreError
from hub.store import Clock, Reader
from shared.signing import key_id, load_private_key
from shared.tomlread import Table

log = logging.getLogger(__name__)

CONTEXT: Final = b"jikimi audit checkpoint v1\n"
SUFFIX: Final = ".checkpoints"
_canonical = msgspec.json.Encoder(order="sorted")


@dataclass(frozen=True)
class AuditConfig:
    """``[audit]``: where and how often the chain's head is checkpointed."""

    checkpoint_key: Path
    checkpoints: Path
    every_s: float = 300.0


def default_checkpoints(db: Path) -> Path:
    return db.with_name(db.name + SUFFIX)


def parse_audit(t: Table, db: Path, command_key: Path) -> AuditConfig | None:
    """``[audit]`` (all optional): ``enabled``, ``checkpoint_key``, ``checkpoints``, ``checkpoint_every_s``."""
    enabled = t.flag("enabled", True)
    key = t.path("checkpoint_key", command_key)
    if enabled and not key.is_file():
        raise t.error("checkpoint_key", f"{key}: no such file")
    cfg = AuditConfig(checkpoint_key=key, checkpoints=t.path("checkpoints", default_checkpoints(db)),
                      every_s=t.number("checkpoint_every_s", 300.0, positive=True))
    t.done()
    return cfg if enabled else None


class Checkpoint(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One signed checkpoint: at ``ts`` the chain's last row was ``row_id`` with ``hash``."""

    v: int = 1
    row_id: Annotated[int, msgspec.Meta(ge=1)]
    hash: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    ts: float
    key_id: str
    sig: str = ""


def _signed_bytes(cp: Checkpoint) -> bytes:
    body = msgspec.to_builtins(cp)
    assert isinstance(body, dict)
    body.pop("sig", None)
    return CONTEXT + _canonical.encode(body)


def sign(row_id: int, row_hash: str, ts: float, key: Ed25519PrivateKey) -> Checkpoint:
    cp = Checkpoint(row_id=row_id, hash=row_hash, ts=ts, key_id=key_id(key.public_key()))
    return msgspec.structs.replace(cp, sig=base64.b64encode(key.sign(_signed_bytes(cp))).decode("ascii"))


def _verify_sig(cp: Checkpoint, key: Ed25519PublicKey) -> str | None:
    """Why ``cp``'s signature does not hold (None when it does)."""
    if cp.key_id != key_id(key):
        return f"signed with key {cp.key_id}, not the given key {key_id(key)}"
    try:
        key.verify(base64.b64decode(cp.sig, validate=True), _signed_bytes(cp))
    except (binascii.Error, ValueError, InvalidSignature):
        return "the signature does not verify"
    return None


def when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the file ------------------------------------------------------------------------------


def append(path: Path, cp: Checkpoint) -> None:
    """Append one line and make it durable (one write with O_APPEND; then fsync)."""
    line = msgspec.json.encode(cp) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path, key: Ed25519PublicKey) -> list[Checkpoint]:
    """Every checkpoint in ``path``, each checked against ``key``; raise on the first bad line."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the checkpoints: {exc}") from exc
    out = []
    for n, line in enumerate(lines, 1):
        try:
            cp = msgspec.json.decode(line, type=Checkpoint)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StoreError(f"{path} line {n}: not a checkpoint: {exc}") from exc
        problem = _verify_sig(cp, key)
        if problem is not None:
            raise StoreError(f"{path} line {n}: {problem}")
        out.append(cp)
    return out


# --- rule 2 ---------------------------------------------------------------------------------


def head(conn: sqlite3.Connection) -> tuple[int, str] | None:
    row = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    return (int(row[0]), str(row[1])) if row else None


def check(conn: sqlite3.Connection, checkpoints: Sequence[Checkpoint]) -> None:
    """Rule 2 for a chain that verified by itself; raise :class:`AuditBroken` naming the problem."""
    if not checkpoints:
        return
    top = head(conn)
    last_row = top[0] if top else 0
    latest = checkpoints[-1]
    for cp in (latest, *checkpoints):
        if cp.row_id > last_row:
            raise AuditBroken(cp.row_id, f"the chain ends at row {last_row} but checkpoint {when(cp.ts)} "
                                         f"saw row {cp.row_id}: the newest rows were cut")
        row = conn.execute("SELECT hash FROM audit WHERE id = ?", (cp.row_id,)).fetchone()
        if row is None or row[0] != cp.hash:
            raise AuditBroken(cp.row_id, f"checkpoint {when(cp.ts)} saw hash {cp.hash[:16]}… for this row, "
                                         f"the chain has {str(row[0] if row else None)[:16]}…: it was rewritten")


def verify(db: Path, checkpoints: Path, key: Ed25519PublicKey) -> tuple[int, int]:
    """The chain of ``db`` alone, then against its checkpoints: (rows, checkpoints)."""
    n = audit.verify(db)
    cps = read(checkpoints, key)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        check(conn, cps)
    except sqlite3.Error as exc:
        raise StoreError(f"{db}: cannot read the audit log: {exc}") from exc
    finally:
        conn.close()
    return n, len(cps)


# --- the hub's side ---------------------------------------------------------------------------


class Anchor:
    """Writes the hub's checkpoints (rule 3); the service runs :meth:`run` and, at shutdown, :meth:`final`."""

    def __init__(self, cfg: AuditConfig, clock: Clock) -> None:
        self.cfg = cfg
        self.clock = clock
        self.key = load_private_key(cfg.checkpoint_key)
        self._last: tuple[int, str] | None = None
        self.written = 0

    def checkpoint(self, conn: sqlite3.Connection) -> Checkpoint | None:
        """Checkpoint the head read from ``conn`` if it moved (blocking: file I/O and fsync)."""
        top = head(conn)
        if top is None or top == self._last:
            return None
        cp = sign(top[0], top[1], self.clock(), self.key)
        append(self.cfg.checkpoints, cp)
        self._last = top
        self.written += 1
        log.info("audit.checkpoint", extra={"row_id": cp.row_id, "hash": cp.hash, "ts": cp.ts,
                                            "file": str(self.cfg.checkpoints)})
        return cp

    async def run(self, reader: Reader) -> None:
        """Checkpoint every ``every_s`` until cancelled. A file that cannot be written is logged,
        not fatal: the hub's safety work goes on, and the next round tries again."""
        while True:
            await asyncio.sleep(self.cfg.every_s)
            try:
                await reader.run(self.checkpoint)
            except OSError as exc:
                log.error("audit.checkpoint_failed", extra={"file": str(self.cfg.checkpoints), "error": str(exc)})

    def final(self, db: Path) -> None:
        """The shutdown checkpoint, from a connection of its own once the writer has closed."""
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            log.error("audit.checkpoint_failed", extra={"error": str(exc)})
            return
        try:
            self.checkpoint(conn)
        except (sqlite3.Error, OSError) as exc:
            log.error("audit.checkpoint_failed", extra={"error": str(exc)})
        finally:
            conn.close()
