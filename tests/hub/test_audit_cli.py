"""The hash-chained audit log and the hub's commands: ``jikimi audit verify`` and ``jikimi hub user``."""

from __future__ import annotations

import io
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from hub import audit, auth
from hub.errors import AuditBroken
from hub.migrations import connect
from hub.roles import Role
from shared.cli import main

ROWS = 6


@pytest.fixture(scope="module")
def audited_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub database whose audit log holds six rows written by the real account commands."""
    db = tmp_path_factory.mktemp("audit") / "hub.db"
    auth.add_user(db, "olive", Role.OPERATOR, "a long password", actor="test")
    auth.add_user(db, "sam", Role.SUPERVISOR, "another long one", actor="test")
    auth.set_password(db, "olive", "a new long password", actor="test")
    auth.disable_user(db, "sam", actor="test")
    conn = connect(db)
    conn.execute("BEGIN IMMEDIATE")
    audit.append(conn, time.time(), "olive", "alarm.ack", "alarm/7", {"reason": "crew on site"})
    audit.append(conn, time.time(), "system", "command.timed_out", "command/abc", {})
    conn.execute("COMMIT")
    conn.close()
    return db


@pytest.fixture
def audited_db(audited_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the template for each test (tests edit it)."""
    db = tmp_path / "hub.db"
    shutil.copy(audited_template, db)
    return db


def test_an_intact_chain_verifies(audited_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--db", str(audited_db)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {ROWS} rows")


def test_the_log_refuses_updates_and_deletes(audited_db: Path) -> None:
    with sqlite3.connect(audited_db) as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit SET actor = 'mallory' WHERE id = 2")
    with sqlite3.connect(audited_db) as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE id = 2")


@pytest.mark.parametrize("row", range(1, ROWS + 1))
@pytest.mark.parametrize("column", ["actor", "action", "target", "detail", "ts"])
def test_editing_any_row_makes_verify_fail_at_that_row(
    audited_db: Path, tmp_path: Path, row: int, column: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone with the file drops the trigger and edits one field of one row: verify names it."""
    forged = tmp_path / "forged.db"
    shutil.copy(audited_db, forged)
    value: object = 12345.0 if column == "ts" else ('{"reason":"nothing to see"}' if column == "detail" else "mallory")
    with sqlite3.connect(forged) as conn:
        conn.execute("DROP TRIGGER audit_no_update")
        conn.execute(f"UPDATE audit SET {column} = ? WHERE id = ?", (value, row))  # noqa: S608 - test column names
    assert main(["audit", "verify", "--db", str(forged)]) == 1
    assert f"audit row {row}:" in capsys.readouterr().out
    with pytest.raises(AuditBroken) as err:
        audit.verify(forged)
    assert err.value.row_id == row


def test_deleting_a_row_breaks_the_chain_at_the_next(audited_db: Path) -> None:
    with sqlite3.connect(audited_db) as conn:
        conn.execute("DROP TRIGGER audit_no_delete")
        conn.execute("DELETE FROM audit WHERE id = 3")
    with pytest.raises(AuditBroken) as err:
        audit.verify(audited_db)
    assert err.value.row_id == 4


def test_user_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``jikimi hub user add|passwd|disable`` manage accounts; mistakes are one-line errors (exit 2)."""
    db = str(tmp_path / "hub.db")
    monkeypatch.setattr("sys.stdin", io.StringIO("a good long password\n"))
    assert main(["hub", "user", "add", "--db", db, "--username", "kim", "--role", "supervisor",
                 "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["hub", "user", "passwd", "--db", db, "--username", "kim", "--password-stdin"]) == 2
    assert "at least" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("a good long password\n"))
    assert main(["hub", "user", "add", "--db", db, "--username", "kim", "--role", "viewer",
                 "--password-stdin"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["hub", "user", "disable", "--db", db, "--username", "nobody"]) == 2
    assert main(["hub", "user", "disable", "--db", db, "--username", "kim"]) == 0
    conn = sqlite3.connect(db)
    op = auth.find_operator(conn, "kim")
    conn.close()
    assert op is not None
    assert op.role is Role.SUPERVISOR
    assert op.disabled
    assert auth.check_password("a good long password", op.pw_hash)
    assert op.pw_hash.startswith("scrypt$")
    assert main(["audit", "verify", "--db", db]) == 0
