"""The hub database's schema: named, ordered migrations (sqlite-utils ``Migrations``).

A migration, once released, is never edited: a change is a new migration at the end. Each runs
in its own transaction together with the record that it ran.

Tables (DESIGN §6): sites, devices, latest, records (the history, deduplicated by
(site, seq)), history_agg (downsampled history), quarantine, seq_gaps, alarms,
alarm_transitions, incidents, commands, command_replies, operations, operators, sessions and
the hash-chained audit log (append-only: triggers refuse UPDATE and DELETE).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils
from sqlite_utils.db import Database

from hub.errors import StoreError

migrations = sqlite_utils.Migrations("jikimi.hub")


@migrations()
def m001_ingest(db: Database) -> None:
    db.execute(
        "CREATE TABLE sites ("
        " site TEXT PRIMARY KEY, area TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',"
        " state TEXT NOT NULL DEFAULT 'unknown', boot TEXT NOT NULL DEFAULT '', state_ts REAL,"
        " agent_version TEXT NOT NULL DEFAULT '', birth_ts REAL, models TEXT NOT NULL DEFAULT '[]',"
        " first_seen REAL NOT NULL, last_seen REAL NOT NULL,"
        " through_seq INTEGER NOT NULL DEFAULT 0, records INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute(
        "CREATE TABLE devices ("
        " site TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL, profile TEXT NOT NULL,"
        " profile_sha256 TEXT NOT NULL, points TEXT NOT NULL, updated_at REAL NOT NULL,"
        " PRIMARY KEY (site, device)) WITHOUT ROWID"
    )
    db.execute(
        "CREATE TABLE latest ("
        " site TEXT NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL,"
        " value TEXT NOT NULL, num REAL, quality TEXT NOT NULL, unit TEXT NOT NULL,"
        " ts REAL NOT NULL, seq INTEGER NOT NULL, received_at REAL NOT NULL,"
        " stale INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY (site, device, point)) WITHOUT ROWID"
    )
    # One row per record ever committed: the dedupe key is the primary key.
    db.execute(
        "CREATE TABLE records ("
        " site TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, ts REAL NOT NULL,"
        " received_at REAL NOT NULL, prio TEXT NOT NULL, historical INTEGER NOT NULL,"
        " device TEXT, point TEXT, value TEXT, num REAL, quality TEXT, body TEXT,"
        " PRIMARY KEY (site, seq)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX records_point ON records (site, device, point, ts) WHERE type = 'reading'")
    db.execute("CREATE INDEX records_other ON records (ts) WHERE type <> 'reading'")
    db.execute(
        "CREATE TABLE history_agg ("
        " site TEXT NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL, bucket REAL NOT NULL,"
        " n INTEGER NOT NULL, min REAL, max REAL, avg REAL,"
        " PRIMARY KEY (site, device, point, bucket)) WITHOUT ROWID"
    )
    db.execute(
        "CREATE TABLE quarantine ("
        " id INTEGER PRIMARY KEY, received_at REAL NOT NULL, topic TEXT NOT NULL,"
        " payload BLOB NOT NULL, error TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TABLE seq_gaps ("
        " id INTEGER PRIMARY KEY, site TEXT NOT NULL, closed_at REAL NOT NULL,"
        " through_seq INTEGER NOT NULL, missing INTEGER NOT NULL, how TEXT NOT NULL)"
    )


@migrations()
def m002_alarms(db: Database) -> None:
    db.execute(
        "CREATE TABLE incidents ("
        " id INTEGER PRIMARY KEY, area TEXT NOT NULL, opened_at REAL NOT NULL, closed_at REAL,"
        " state TEXT NOT NULL, title TEXT NOT NULL, closed_by TEXT, close_reason TEXT)"
    )
    db.execute(
        "CREATE TABLE alarms ("
        " id INTEGER PRIMARY KEY, site TEXT NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL,"
        " rule TEXT NOT NULL, area TEXT NOT NULL, priority TEXT NOT NULL, state TEXT NOT NULL,"
        " active INTEGER NOT NULL, message TEXT NOT NULL, raised_at REAL, changed_at REAL NOT NULL,"
        " shelved_until REAL, shelve_reason TEXT NOT NULL DEFAULT '',"
        " incident_id INTEGER REFERENCES incidents (id),"
        " UNIQUE (site, device, point, rule))"
    )
    db.execute("CREATE INDEX alarms_state ON alarms (state)")
    db.execute(
        "CREATE TABLE alarm_transitions ("
        " id INTEGER PRIMARY KEY, alarm_id INTEGER NOT NULL REFERENCES alarms (id), ts REAL NOT NULL,"
        " event TEXT NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL,"
        " actor TEXT NOT NULL CHECK (actor <> ''), reason TEXT NOT NULL CHECK (reason <> ''))"
    )
    db.execute("CREATE INDEX alarm_transitions_alarm ON alarm_transitions (alarm_id, id)")


@migrations()
def m003_commands(db: Database) -> None:
    db.execute(
        "CREATE TABLE operations ("
        " id TEXT PRIMARY KEY, kind TEXT NOT NULL, area TEXT NOT NULL, issued_by TEXT NOT NULL,"
        " reason TEXT NOT NULL, created_at REAL NOT NULL, note TEXT NOT NULL DEFAULT '')"
    )
    db.execute(
        "CREATE TABLE commands ("
        " cmd_id TEXT PRIMARY KEY, site TEXT NOT NULL, device TEXT NOT NULL, action TEXT NOT NULL,"
        " params TEXT NOT NULL, issued_by TEXT NOT NULL, approved_by TEXT NOT NULL DEFAULT '[]',"
        " reason TEXT NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '',"
        " created_at REAL NOT NULL, issued_at REAL, not_after REAL, updated_at REAL NOT NULL,"
        " operation_id TEXT REFERENCES operations (id), wire TEXT)"
    )
    db.execute("CREATE INDEX commands_state ON commands (state)")
    db.execute("CREATE INDEX commands_operation ON commands (operation_id)")
    db.execute(
        "CREATE TABLE command_replies ("
        " id INTEGER PRIMARY KEY, cmd_id TEXT NOT NULL, site TEXT NOT NULL, seq INTEGER NOT NULL,"
        " status TEXT NOT NULL, reason TEXT NOT NULL, ts REAL NOT NULL, received_at REAL NOT NULL)"
    )
    db.execute("CREATE INDEX command_replies_cmd ON command_replies (cmd_id)")


@migrations()
def m004_people(db: Database) -> None:
    db.execute(
        "CREATE TABLE operators ("
        " username TEXT PRIMARY KEY, role TEXT NOT NULL, pw_hash TEXT NOT NULL,"
        " disabled INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at REAL NOT NULL)"
    )
    db.execute(
        "CREATE TABLE sessions ("
        " token_hash TEXT PRIMARY KEY, username TEXT NOT NULL REFERENCES operators (username),"
        " csrf TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL, remote TEXT NOT NULL)"
    )


@migrations()
def m005_audit(db: Database) -> None:
    db.execute(
        "CREATE TABLE audit ("
        " id INTEGER PRIMARY KEY, ts REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,"
        " target TEXT NOT NULL, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit"
        " BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END"
    )
    db.execute(
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
        " BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END"
    )


def connect(path: Path, *, readonly: bool = False, migrate: bool = True) -> sqlite3.Connection:
    """A connection with the hub's settings; the writer's also runs pending migrations.

    Autocommit mode (``isolation_level=None``): transactions are explicit ``BEGIN IMMEDIATE``.
    WAL with ``synchronous=FULL``: a commit the hub acknowledges to an edge survives power loss.
    """
    try:
        if readonly:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            return conn
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        if migrate:
            migrations.apply(Database(conn))
        return conn
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"{path}: cannot open the hub database: {exc}") from exc
