"""``jikimi hub init``: a commented hub config for a city, from the PKI and the enrolment registry,
that ``jikimi hub run`` accepts as it is; no default password; nothing overwritten unasked."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

import aiohttp
import pytest

from hub.config import load
from hub.rules import RuleParams
from shared.cli import main
from tests.conftest import PkiFixture, build_test_pki
from trust.broker import RunningBroker, free_port
from trust.enrolment import EnrolmentStore
from trust.pki import Pki


def registry(path: Path, sites: list[str], *, enrolled: Collection[str] = ()) -> Path:
    """An enrolment registry as 'jikimi provision register' leaves it."""
    store = EnrolmentStore(path)
    now = time.time()
    for site in sites:
        store.register(site, "0" * 64, now + 3600, False, "admin", now)
        if site in enrolled:
            store.mark_used(site, now)
    store.close()
    return path


def _init(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["hub", "init", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_init_then_the_real_hub_runs_with_it(test_pki: PkiFixture, broker: RunningBroker, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """init writes a config the real ``jikimi hub run`` starts with: it connects to the real
    broker, serves the console, lets in the admin with the password init printed once (and
    nobody with another), and admits the registry's sites only."""
    hub_id = test_pki.take_hub()
    sites = [test_pki.take_site(), test_pki.take_site()]
    reg = registry(tmp_path / "enrol.db", sites, enrolled={sites[0]})
    out, port = tmp_path / "etc" / "hub.toml", free_port()
    rc, said, err = _init(capsys, "--city", hub_id.removeprefix("hub-"), "--pki", str(test_pki.dir),
                          "--sites", str(reg), "--out", str(out), "--broker", f"localhost:{broker.port}",
                          "--api-listen", f"127.0.0.1:{port}", "--admin", "ada")
    assert rc == 0, err
    password = said.split("password (shown once): ")[1].split()[0]
    assert len(password) >= 16
    assert password not in out.read_text()
    cfg = load(out)
    assert cfg.hub_id == hub_id
    assert not cfg.sites.accept_any
    assert sorted(cfg.sites.registry) == sorted(sites)
    assert cfg.db_path == out.parent / "var" / "hub.db"

    proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "hub", "run", "--config", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
    ctx = ssl.create_default_context(cafile=str(test_pki.dir / "ca.pem"))

    async def use() -> None:
        async with aiohttp.ClientSession(base_url=f"https://localhost:{port}",
                                         connector=aiohttp.TCPConnector(ssl=ctx)) as s:
            async with asyncio.timeout(30):
                while True:
                    try:
                        async with s.get("/api/health") as r:
                            health = await r.json()
                            if health["mqtt_connected"]:
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    await asyncio.sleep(0.1)
            assert health["hub"] == hub_id
            async with s.post("/api/session", json={"username": "ada", "password": password + "x"}) as r:
                assert r.status == 401
            async with s.post("/api/session", json={"username": "ada", "password": password}) as r:
                assert r.status == 200

    try:
        asyncio.run(use())
    finally:
        proc.send_signal(signal.SIGTERM)
        log, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, log.decode()


def test_config_is_commented_and_lists_what_it_left_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Sites whose certificates are all revoked are left out, certificates without a registry
    entry are named, each registered site has its area and a place for its name and position;
    without --admin no account exists."""
    fx = build_test_pki(tmp_path / "pki", n_edges=4, n_hubs=1)
    city = fx.hubs[0].removeprefix("hub-")
    fx.pki.revoke(fx.edges[1])
    reg = registry(tmp_path / "enrol.db", [fx.edges[0], fx.edges[1], fx.edges[2]])
    out = tmp_path / "hub.toml"
    rc, said, err = _init(capsys, "--city", city, "--pki", str(fx.dir), "--sites", str(reg), "--out", str(out))
    assert rc == 0, err
    text = out.read_text()
    cfg = load(out)
    assert sorted(cfg.sites.registry) == sorted([fx.edges[0], fx.edges[2]])
    assert cfg.sites.registry[fx.edges[0]].area == "-".join(fx.edges[0].split("-")[:2])
    assert f"every certificate revoked, left out: {fx.edges[1]}" in text
    assert fx.edges[3] in text.split("not in the registry, not listed: ")[1].splitlines()[0]
    for commented in ("# lat = ", "# [enrolment]", f"# closing_depth_cm = {RuleParams().closing_depth_cm!r}"):
        assert commented in text
    assert "no operator accounts" in said
    assert not (tmp_path / "var").exists()


def test_empty_registry_lets_any_certified_site_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A city with no site registered yet still gets a config the hub accepts (accept_any, said why)."""
    fx = build_test_pki(tmp_path / "pki", n_edges=0, n_hubs=1)
    reg = registry(tmp_path / "enrol.db", [])
    out = tmp_path / "hub.toml"
    assert _init(capsys, "--city", fx.hubs[0][4:], "--pki", str(fx.dir), "--sites", str(reg), "--out", str(out))[0] == 0
    assert load(out).sites.accept_any


def test_dry_run_writes_nothing(test_pki: PkiFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--dry-run prints the config and writes no file and no account."""
    reg = registry(tmp_path / "enrol.db", [test_pki.take_site()])
    out = tmp_path / "hub.toml"
    rc, said, _ = _init(capsys, "--city", test_pki.take_hub()[4:], "--pki", str(test_pki.dir), "--sites", str(reg),
                        "--out", str(out), "--admin", "ada", "--dry-run")
    assert rc == 0
    assert said.startswith("# Hub config for")
    assert not out.exists()
    assert not (tmp_path / "var").exists()


def test_existing_config_needs_force(test_pki: PkiFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An existing file is never overwritten without --force, and then no account is made either."""
    reg = registry(tmp_path / "enrol.db", [test_pki.take_site()])
    out = tmp_path / "hub.toml"
    out.write_text("mine")
    argv = ["--city", test_pki.take_hub()[4:], "--pki", str(test_pki.dir), "--sites", str(reg), "--out", str(out)]
    rc, _, err = _init(capsys, *argv, "--admin", "ada")
    assert rc == 2
    assert "--force" in err
    assert out.read_text() == "mine"
    assert not (tmp_path / "var").exists()
    assert _init(capsys, *argv, "--force")[0] == 0
    assert load(out).hub_id.startswith("hub-")


def test_existing_admin_is_not_replaced(test_pki: PkiFixture, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Re-running init --force --admin on a hub whose database has that user: refused, the
    account and its password untouched, the config not rewritten."""
    reg = registry(tmp_path / "enrol.db", [test_pki.take_site()])
    out = tmp_path / "hub.toml"
    argv = ["--city", test_pki.take_hub()[4:], "--pki", str(test_pki.dir), "--sites", str(reg), "--out", str(out)]
    assert _init(capsys, *argv, "--admin", "ada")[0] == 0
    before = out.read_text()
    with sqlite3.connect(tmp_path / "var" / "hub.db") as conn:
        (pw_hash,) = conn.execute("SELECT pw_hash FROM operators WHERE username='ada'").fetchone()
    rc, _, err = _init(capsys, *argv, "--admin", "ada", "--force", "--api-listen", "127.0.0.1:9999")
    assert rc == 2
    assert "exists already" in err
    assert out.read_text() == before
    with sqlite3.connect(tmp_path / "var" / "hub.db") as conn:
        assert conn.execute("SELECT pw_hash FROM operators WHERE username='ada'").fetchone() == (pw_hash,)


# --- missing, broken and hostile input -----------------------------------------------------------


@pytest.fixture
def good(test_pki: PkiFixture, tmp_path: Path) -> dict[str, str]:
    reg = registry(tmp_path / "enrol.db", [test_pki.take_site()])
    return {"--city": test_pki.take_hub()[4:], "--pki": str(test_pki.dir), "--sites": str(reg),
            "--out": str(tmp_path / "out" / "hub.toml")}


def _garbage(tmp_path: Path) -> str:
    p = tmp_path / "garbage.db"
    p.write_bytes(os.urandom(4096))
    return str(p)


def _foreign(tmp_path: Path) -> str:
    p = tmp_path / "foreign.db"
    with sqlite3.connect(p) as conn:
        conn.execute("CREATE TABLE other (x)")
    return str(p)


def _hostile_site(tmp_path: Path) -> str:
    p = registry(tmp_path / "hostile.db", [])
    with sqlite3.connect(p) as conn:
        conn.execute("INSERT INTO enrolments VALUES ('x\"]\\n[hub]', '', 0, 0, NULL, NULL, 'a', 0)")
    return str(p)


@pytest.mark.parametrize(("key", "value", "says"), [
    ("--city", "Suwon", "invalid hub id"),
    ("--city", 'suwon"\n[api]', "invalid hub id"),
    ("--city", "nowhere", "no valid hub certificate for hub-nowhere; run 'jikimi pki issue"),
    ("--pki", "{tmp}/no-pki", "no PKI here"),
    ("--sites", "{tmp}/missing.db", "no such file"),
    ("--sites", "{garbage}", "not an enrolment registry (file is not a database)"),
    ("--sites", "{foreign}", "not an enrolment registry"),
    ("--sites", "{hostile}", "which is not a site id"),
    ("--broker", "localhost", "expected HOST:PORT"),
    ("--broker", "localhost:0", "expected HOST:PORT"),
    ("--api-listen", "everywhere", "expected HOST:PORT"),
    ("--admin", "Robert'); DROP", "user name"),
])
def test_bad_input_is_refused_and_nothing_written(good: dict[str, str], tmp_path: Path, key: str, value: str,
                                                  says: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each broken or hostile option: one line saying what is wrong, exit 2, no config, no database."""
    value = value.format(tmp=tmp_path, garbage=_garbage(tmp_path) if "garbage" in value else "",
                         foreign=_foreign(tmp_path) if "foreign" in value else "",
                         hostile=_hostile_site(tmp_path) if "hostile" in value else "")
    args = {**good, key: value}
    rc, _, err = _init(capsys, *[x for kv in args.items() for x in kv])
    assert rc == 2
    assert says in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_pki_without_command_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A PKI that lost its command-signing key: refused, naming the missing file."""
    fx = build_test_pki(tmp_path / "pki", n_edges=0, n_hubs=1)
    Pki(fx.dir).command_key.unlink()
    reg = registry(tmp_path / "enrol.db", [])
    rc, _, err = _init(capsys, "--city", fx.hubs[0][4:], "--pki", str(fx.dir), "--sites", str(reg),
                       "--out", str(tmp_path / "hub.toml"))
    assert rc == 2
    assert "command-signing/key.pem is missing" in err


def test_paths_cannot_inject_keys(test_pki: PkiFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A database path with quotes and a line break stays one string in the config (no key
    added): the hub reads back exactly that path."""
    reg = registry(tmp_path / "enrol.db", [test_pki.take_site()])
    db = tmp_path / 'we"ird\n[api]\nlisten = "0.0.0.0:1".db'
    out = tmp_path / "hub.toml"
    rc, _, err = _init(capsys, "--city", test_pki.take_hub()[4:], "--pki", str(test_pki.dir), "--sites", str(reg),
                       "--out", str(out), "--db", str(db))
    assert rc == 0, err
    cfg = load(out)
    assert cfg.db_path == db
    assert cfg.api.host == "127.0.0.1"
