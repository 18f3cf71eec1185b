"""The hash-chained audit log, its signed checkpoints and the hub's commands: ``jikimi audit verify``
and ``jikimi hub user``."""

from __future__ import annotations

import io
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub import anchor, audit, auth
from hub.errors import AuditBroken
from hub.migrations import connect
from hub.roles import Role
from hub.service import running
from shared.cli import main
from shared.signing import load_public_key
from tests.conftest import PkiFixture
from tests.hub.conftest import ConfigFactory, add_users, eventually

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


# --- checkpoints: the chain's anchor outside the database -----------------------------------------

CHECKPOINTED = 20


@pytest.fixture
def audit_key(tmp_path: Path) -> tuple[Path, Path]:
    """An Ed25519 checkpoint key: (private PEM, public PEM)."""
    key = Ed25519PrivateKey.generate()
    priv, pub = tmp_path / "audit-key.pem", tmp_path / "audit-pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def _more_rows(db: Path, n: int, actor: str = "olive") -> None:
    conn = connect(db)
    conn.execute("BEGIN IMMEDIATE")
    for i in range(n):
        audit.append(conn, time.time(), actor, "alarm.ack", f"alarm/{100 + i}", {"reason": "crew on site"})
    conn.execute("COMMIT")
    conn.close()


@pytest.fixture
def checkpointed_db(audited_db: Path, audit_key: tuple[Path, Path]) -> Path:
    """Twenty rows, checkpointed twice by the hub's own writer (after row 12 and after row 20)."""
    writer = anchor.Anchor(anchor.AuditConfig(checkpoint_key=audit_key[0],
                                              checkpoints=anchor.default_checkpoints(audited_db)), time.time)
    _more_rows(audited_db, 6)
    with sqlite3.connect(audited_db) as conn:
        assert writer.checkpoint(conn) is not None
        assert writer.checkpoint(conn) is None  # the head did not move: nothing new to say
    _more_rows(audited_db, CHECKPOINTED - 12)
    with sqlite3.connect(audited_db) as conn:
        cp = writer.checkpoint(conn)
    assert cp is not None
    assert cp.row_id == CHECKPOINTED
    return audited_db


def _cut(db: Path, newest: int) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER audit_no_delete")
        conn.execute("DELETE FROM audit WHERE id > ?", (CHECKPOINTED - newest,))


def test_a_checkpointed_chain_verifies(checkpointed_db: Path, audit_key: tuple[Path, Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """With the key, verify also holds the chain against its checkpoints (file found beside the db)."""
    assert main(["audit", "verify", "--db", str(checkpointed_db), "--key", str(audit_key[1])]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {CHECKPOINTED} rows, chain intact; 2 checkpoints hold")
    assert main(["audit", "verify", "--db", str(checkpointed_db)]) == 0  # without the key: says what it skipped
    assert "not checked" in capsys.readouterr().out


def test_cutting_the_newest_rows_is_caught_by_the_checkpoint(checkpointed_db: Path, audit_key: tuple[Path, Path],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The newest 10 rows deleted: the chain alone still verifies, the checkpoint does not."""
    _cut(checkpointed_db, 10)
    assert main(["audit", "verify", "--db", str(checkpointed_db)]) == 0  # why the anchor is needed
    capsys.readouterr()
    cps = anchor.default_checkpoints(checkpointed_db)
    assert main(["audit", "verify", "--db", str(checkpointed_db), "--checkpoints", str(cps),
                 "--key", str(audit_key[1])]) == 1
    out = capsys.readouterr().out
    assert out.startswith("BROKEN:")
    assert f"the chain ends at row {CHECKPOINTED - 10} but checkpoint " in out
    assert f"saw row {CHECKPOINTED}" in out


def test_a_rewritten_tail_is_caught_by_the_checkpoints_hash(checkpointed_db: Path, audit_key: tuple[Path, Path],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The newest rows replaced by a well-chained forgery of the same length: the hash differs."""
    _cut(checkpointed_db, 3)
    _more_rows(checkpointed_db, 3, actor="mallory")
    assert main(["audit", "verify", "--db", str(checkpointed_db), "--key", str(audit_key[1])]) == 1
    out = capsys.readouterr().out
    assert f"audit row {CHECKPOINTED}: checkpoint " in out
    assert "rewritten" in out


def test_a_forged_or_foreign_checkpoint_is_refused(checkpointed_db: Path, audit_key: tuple[Path, Path],
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint edited to match a cut chain fails its signature; another key is named."""
    _cut(checkpointed_db, 10)
    cps = anchor.default_checkpoints(checkpointed_db)
    lines = cps.read_text().splitlines()
    lines[-1] = lines[-1].replace(f'"row_id":{CHECKPOINTED}', f'"row_id":{CHECKPOINTED - 10}')
    cps.write_text("\n".join(lines) + "\n")
    assert main(["audit", "verify", "--db", str(checkpointed_db), "--key", str(audit_key[1])]) == 1
    assert "line 2: the signature does not verify" in capsys.readouterr().out
    other = Ed25519PrivateKey.generate().public_key()
    (tmp_path / "other.pem").write_bytes(other.public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    assert main(["audit", "verify", "--db", str(checkpointed_db), "--key", str(tmp_path / "other.pem")]) == 1
    assert "line 1: signed with key" in capsys.readouterr().out


def test_checkpoints_need_the_key(checkpointed_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cps = anchor.default_checkpoints(checkpointed_db)
    assert main(["audit", "verify", "--db", str(checkpointed_db), "--checkpoints", str(cps)]) == 2
    assert "--key" in capsys.readouterr().err


@pytest.mark.broker
async def test_the_hub_checkpoints_on_its_schedule_and_at_shutdown(hub_config: ConfigFactory,
                                                                   test_pki: PkiFixture) -> None:
    """A running hub signs its audit head with the PKI's audit key every ``checkpoint_every_s`` and
    once more at shutdown, so the last row before the stop is anchored too."""
    cfg = hub_config(audit={"checkpoint_key": str(test_pki.dir / "audit-signing" / "key.pem"),
                            "checkpoint_every_s": 0.1})
    assert cfg.audit is not None
    add_users(cfg)
    async with running(cfg) as hub:
        assert hub.anchor is not None
        await eventually(lambda: hub.anchor is not None and hub.anchor.written >= 1)
        await hub.ops.write(lambda tx: tx.audit("olive", "alarm.ack", "alarm/1", {"reason": "last words"}))
    pub = test_pki.dir / "audit-signing" / "pub.pem"
    cps = anchor.read(cfg.audit.checkpoints, load_public_key(pub))
    with sqlite3.connect(cfg.db_path) as conn:
        last = conn.execute("SELECT max(id) FROM audit").fetchone()[0]
    assert cps[-1].row_id == last
    assert main(["audit", "verify", "--db", str(cfg.db_path), "--key", str(pub)]) == 0
