"""The hub database's one migration list: a fresh file gets every table, and a file made when
the schema was three migration sets (core, forwarding, CCTV) upgrades without re-running any."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils
from sqlite_utils.db import Database

from hub.migrations import CCTV, CORE, FORWARD, MIGRATIONS, connect


def _applied(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return [(s, n) for s, n in conn.execute("SELECT migration_set, name FROM _sqlite_migrations ORDER BY rowid")]


def test_a_fresh_database_gets_every_migration_in_order(tmp_path: Path) -> None:
    """Opening a new file runs the list once, in its order, and records each by set and name."""
    conn = connect(tmp_path / "hub.db")
    try:
        assert _applied(conn) == [(m.set, m.name) for m in MIGRATIONS]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"sites", "records", "alarms", "audit", "fwd_deliveries", "cctv_evidence"} <= tables
    finally:
        conn.close()
    again = connect(tmp_path / "hub.db")  # opening again applies nothing
    try:
        assert len(_applied(again)) == len(MIGRATIONS)
    finally:
        again.close()


def test_a_database_of_the_three_old_sets_upgrades_cleanly(tmp_path: Path) -> None:
    """A file whose core set was applied under the old names (forwarding and CCTV not yet) gets
    only the missing migrations; nothing it holds is created twice."""
    path = tmp_path / "hub.db"
    raw = sqlite3.connect(path, isolation_level=None)
    old_core = sqlite_utils.Migrations(CORE)
    for m in MIGRATIONS:
        if m.set == CORE:
            old_core(name=m.name)(m.fn)
    old_core.apply(Database(raw))
    raw.execute("INSERT INTO sites (site, area, first_seen, last_seen) VALUES ('s1', 'a', 1, 1)")
    raw.close()
    conn = connect(path)
    try:
        sets = [s for s, _n in _applied(conn)]
        assert sets.count(CORE) == sum(1 for m in MIGRATIONS if m.set == CORE)
        assert sets[-2:] == [FORWARD, CCTV]
        assert conn.execute("SELECT site FROM sites").fetchall() == [("s1",)]
    finally:
        conn.close()
