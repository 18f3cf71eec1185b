"""Operators: scrypt password hashes, sessions, login rate limiting, and account management.

Rules:

1. Passwords are stored only as scrypt hashes (``scrypt$N$r$p$salt$hash``, salt 16 random
   bytes) and compared in constant time. A wrong password, an unknown user and a disabled
   account get the same answer.
2. A session is a random 256-bit token in an HttpOnly, Secure, SameSite=Strict cookie; the
   database keeps only its SHA-256, with the session's CSRF token and expiry. Disabling an
   account ends its sessions.
3. Login attempts are limited per (user name, address) and per address, counted before the
   password is checked, with a growing back-off rather than a lockout (hub/logins.py).
4. Account changes (``jikimi hub user ...``) are audited like every other action.
5. Account management opens the file with ``opener`` (default: the hub's own, with its
   migrations); the province passes its own (``jikimi province user ...``): one code path, the
   ``operators``, ``sessions`` and ``audit`` tables alike in both files.
"""

from __future__ import annotations

import base64
import functools
import getpass
import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hub import audit
from hub.errors import BadCredentials, Conflict, NotFound, Refused, StoreError
from hub.migrations import connect
from hub.roles import Role
from hub.store import Clock, Tx

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
MIN_PASSWORD: Final = 10
COOKIE: Final = "jk_session"
_USER_RE: Final = re.compile(r"^[a-z][a-z0-9._-]{1,31}$")

Opener = Callable[[Path], sqlite3.Connection]
"""Opens (and migrates) the file that holds the accounts (rule 5)."""


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want))
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise Refused(f"a password needs at least {MIN_PASSWORD} characters")


def check_username(username: str) -> None:
    if not _USER_RE.match(username):
        raise Refused(f"user name {username!r}: 2-32 of a-z, 0-9, '.', '_' and '-', starting with a letter")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Operator:
    username: str
    role: Role
    pw_hash: str
    disabled: bool


@dataclass(frozen=True)
class Session:
    username: str
    role: Role
    csrf: str
    expires_at: float


def find_operator(conn: sqlite3.Connection, username: str) -> Operator | None:
    row = conn.execute("SELECT username, role, pw_hash, disabled FROM operators WHERE username = ?",
                       (username,)).fetchone()
    if row is None:
        return None
    return Operator(row[0], Role(row[1]), row[2], bool(row[3]))


def lookup_session(conn: sqlite3.Connection, token: str, now: float) -> Session | None:
    row = conn.execute(
        "SELECT s.username, o.role, s.csrf, s.expires_at FROM sessions s JOIN operators o USING (username)"
        " WHERE s.token_hash = ? AND s.expires_at > ? AND o.disabled = 0",
        (token_hash(token), now),
    ).fetchone()
    if row is None:
        return None
    return Session(row[0], Role(row[1]), row[2], row[3])


def create_session(tx: Tx, username: str, remote: str, ttl_s: float) -> tuple[str, str]:
    """A new session for ``username``; returns (token, csrf). The caller checked the password."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    tx.conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (tx.now,))
    tx.conn.execute(
        "INSERT INTO sessions (token_hash, username, csrf, created_at, expires_at, remote) VALUES (?, ?, ?, ?, ?, ?)",
        (token_hash(token), username, csrf, tx.now, tx.now + ttl_s, remote),
    )
    tx.audit(username, "session.login", f"operator/{username}", {"remote": remote})
    return token, csrf


def end_session(tx: Tx, token: str, username: str) -> None:
    tx.conn.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash(token),))
    tx.audit(username, "session.logout", f"operator/{username}", {})


# --- account management (the CLI and tests; short transactions of their own) ---------------


def _run(db: Path, actor: str, work: list[tuple[str, tuple[object, ...]]], action: str, target: str,
         detail: dict[str, str | float | int | bool | list[str] | None], now: float,
         opener: Opener = connect) -> None:
    conn = opener(db)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for sql, args in work:
            conn.execute(sql, args)
        audit.append(conn, now, actor, action, target, detail)
        conn.execute("COMMIT")
    except sqlite3.IntegrityError as exc:
        conn.execute("ROLLBACK")
        raise Conflict(f"{target}: {exc}") from exc
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise StoreError(f"{db}: {exc}") from exc
    finally:
        conn.close()


def cli_actor() -> str:
    return f"cli:{getpass.getuser()}"


def add_user(db: Path, username: str, role: Role, password: str, *, actor: str | None = None,
             scrypt_n: int = SCRYPT_N, clock: Clock = time.time, opener: Opener = connect) -> None:
    check_username(username)
    check_new_password(password)
    conn = opener(db)
    try:
        exists = find_operator(conn, username) is not None
    finally:
        conn.close()
    if exists:
        raise Conflict(f"user {username!r} exists already")
    now = clock()
    _run(db, actor or cli_actor(), [(
        "INSERT INTO operators (username, role, pw_hash, disabled, created_at, updated_at) VALUES (?, ?, ?, 0, ?, ?)",
        (username, role.value, hash_password(password, n=scrypt_n), now, now))],
        "user.add", f"operator/{username}", {"role": role.value}, now, opener)


def _existing(db: Path, username: str, opener: Opener) -> Operator:
    conn = opener(db)
    try:
        op = find_operator(conn, username)
    finally:
        conn.close()
    if op is None:
        raise NotFound(f"no user {username!r}")
    return op


def set_password(db: Path, username: str, password: str, *, actor: str | None = None,
                 clock: Clock = time.time, opener: Opener = connect) -> None:
    _existing(db, username, opener)
    check_new_password(password)
    now = clock()
    _run(db, actor or cli_actor(), [
        ("UPDATE operators SET pw_hash = ?, updated_at = ? WHERE username = ?",
         (hash_password(password), now, username)),
        ("DELETE FROM sessions WHERE username = ?", (username,)),
    ], "user.passwd", f"operator/{username}", {}, now, opener)


def disable_user(db: Path, username: str, *, actor: str | None = None, clock: Clock = time.time,
                 opener: Opener = connect) -> None:
    _existing(db, username, opener)
    now = clock()
    _run(db, actor or cli_actor(), [
        ("UPDATE operators SET disabled = 1, updated_at = ? WHERE username = ?", (now, username)),
        ("DELETE FROM sessions WHERE username = ?", (username,)),
    ], "user.disable", f"operator/{username}", {}, now, opener)


def verify_login(op: Operator | None, password: str) -> Operator:
    """Rule 1: one answer for every way a login can fail (the hash is checked even for unknown users)."""
    ok = check_password(password, op.pw_hash if op else _dummy_hash())
    if op is None or op.disabled or not ok:
        raise BadCredentials("wrong user name or password")
    return op


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(8))
