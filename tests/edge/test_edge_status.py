"""``jikimi edge status --config F``: what a site's outbox holds, read from the running agent's
SQLite file without writing to it or holding the agent up."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.outbox import OUTBOX_FILE, Outbox
from shared.cli import main
from shared.messages import Priority
from tests.conftest import PkiFixture
from tests.edge.harness import running_agent, underpass_sim, until, write_config
from tests.edge.real_hub import running_real_hub
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker
PRIORITIES = {p.value for p in Priority}


async def _status(config: Path, *extra: str) -> tuple[int, str, str]:
    """``jikimi edge status`` as its own process (as a technician runs it beside the agent)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "edge", "status", "--config", str(config), *extra,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _status_json(config: Path) -> dict[str, Any]:
    rc, out, err = await _status(config, "--json")
    assert rc == 0, err
    body: dict[str, Any] = json.loads(out)
    return body


async def test_status_of_a_running_agent_with_its_hub(test_pki: PkiFixture, broker: RunningBroker,
                                                      tmp_path: Path) -> None:
    """Beside a running ``jikimi edge run`` whose hub acks: the epoch the hub stores under, a
    last ack no higher than what the hub committed, records held by priority; and the agent
    keeps delivering while status reads."""
    site = test_pki.take_site()
    async with underpass_sim() as sim, running_real_hub(broker, test_pki, tmp_path) as hub:
        cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        argv = [sys.executable, "-m", "shared.cli", "edge", "run", "--config", str(cfg)]
        with (tmp_path / "agent.log").open("wb") as log:
            agent = await asyncio.create_subprocess_exec(*argv, stdout=log, stderr=subprocess.STDOUT,
                                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                await until(lambda: len(hub.seqs(site)) >= 30, 30, "the hub commits the agent's records")
                st = await _status_json(cfg)
                committed = hub.seqs(site)
                await until(lambda: len(hub.seqs(site)) >= len(committed) + 20, 30, "the agent goes on delivering")
            finally:
                agent.send_signal(signal.SIGTERM)
                await agent.wait()
    assert st["site"] == site
    assert list(hub.epochs(site)) == [st["epoch"]]
    assert st["last_ack_seq"] is not None
    assert 1 <= st["last_ack_seq"] <= max(committed)
    assert st["last_ack_seq"] < st["next_seq"]
    assert st["last_ack_age_s"] >= 0
    assert set(st["held_by_priority"]) == PRIORITIES
    assert st["held"] == sum(st["held_by_priority"].values())
    assert (st["oldest_unacked_age_s"] is None) == (st["held"] == 0)


async def test_status_while_no_hub_acks(test_pki: PkiFixture, broker: RunningBroker, tmp_path: Path) -> None:
    """With no hub acking, status shows the agent's epoch, the records piling up (telemetry),
    their age, and no ack in this epoch; the text form says so too."""
    site = test_pki.take_site()
    async with underpass_sim() as sim:
        cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        async with running_agent(cfg) as agent:
            await until(lambda: agent.outbox.held >= 20, 30, "records pile up")
            st = await _status_json(cfg)
            rc, text, _ = await _status(cfg)
            epoch, next_seq = agent.outbox.epoch, agent.outbox.next_seq
    assert st["epoch"] == epoch != 0
    assert 20 < st["next_seq"] <= next_seq
    assert st["held"] == st["next_seq"] - 1  # nothing acked, nothing thinned
    assert st["held_by_priority"]["telemetry"] > 0
    assert st["lowest_seq"] == 1
    assert st["oldest_unacked_age_s"] > 0
    assert st["last_ack_seq"] is None
    assert rc == 0
    assert f"epoch      {epoch}" in text
    assert "last ack   none in this epoch" in text


def test_status_reports_the_last_ack_and_forgets_it_with_a_new_epoch(test_pki: PkiFixture, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The last ack the outbox applied (seq and time) is what status shows; a new epoch has had none."""
    cfg = _config(tmp_path, test_pki)
    from shared.messages import Event

    box = Outbox(tmp_path / "state" / OUTBOX_FILE, max_records=100, clock=lambda: 1_700_000_000.0)
    box.append([Event(seq=0, ts=1_699_999_990.0 + i, prio=Priority.EVENT, kind="test", detail="") for i in range(5)])
    box.mark_sent(5)
    box.ack(3, epoch=box.epoch)
    assert main(["edge", "status", "--config", str(cfg), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert (st["last_ack_seq"], st["last_ack_ts"], st["held"], st["lowest_seq"]) == (3, 1_700_000_000.0, 2, 4)
    assert st["held_by_priority"]["event"] == 2
    assert st["oldest_unacked_ts"] == 1_699_999_993.0
    box.start_epoch("test")
    assert main(["edge", "status", "--config", str(cfg), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["epoch"] == box.epoch
    assert st["last_ack_seq"] is None
    box.close()


# --- missing, broken and foreign files -----------------------------------------------------------


def _config(tmp_path: Path, pki: PkiFixture) -> Path:
    site = pki.take_site()
    d = pki.dir
    path = tmp_path / "site.toml"
    path.write_text(f"""
[site]
id = "{site}"
state_dir = "state"
[hub]
host = "localhost"
ca = "{d / "ca.pem"}"
cert = "{d / site / "cert.pem"}"
key = "{d / site / "key.pem"}"
command_key = "{d / "command-signing" / "pub.pem"}"
[devices.barrier]
profile = "underpass-jk-up300.toml"
transport = "tcp://127.0.0.1:1502"
""")
    return path


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jikimi: ")
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config that is not there: one line naming it."""
    err = _refused(["edge", "status", "--config", str(tmp_path / "nope.toml")], capsys)
    assert "nope.toml" in err


def test_agent_never_ran(test_pki: PkiFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No outbox yet: said so, and status does not create one."""
    cfg = _config(tmp_path, test_pki)
    assert "no outbox here" in _refused(["edge", "status", "--config", str(cfg)], capsys)
    assert not (tmp_path / "state").exists()


def test_garbage_outbox_is_reported_and_left_alone(test_pki: PkiFixture, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A corrupt outbox is reported; status neither repairs nor moves it (the agent does, at start)."""
    cfg = _config(tmp_path, test_pki)
    box = tmp_path / "state" / OUTBOX_FILE
    box.parent.mkdir()
    garbage = os.urandom(8192)
    box.write_bytes(garbage)
    assert "cannot read the outbox" in _refused(["edge", "status", "--config", str(cfg)], capsys)
    assert box.read_bytes() == garbage
    assert sorted(p.name for p in box.parent.iterdir()) == [OUTBOX_FILE]


def test_truncated_outbox_is_reported(test_pki: PkiFixture, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """An outbox cut short (a torn copy) is an error, not a made-up status."""
    cfg = _config(tmp_path, test_pki)
    path = tmp_path / "state" / OUTBOX_FILE
    from shared.messages import Event

    box = Outbox(path, max_records=100, clock=lambda: 1.0)
    box.append([Event(seq=0, ts=1.0, prio=Priority.EVENT, kind="x", detail="y" * 900) for _ in range(50)])
    box.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    assert "cannot read the outbox" in _refused(["edge", "status", "--config", str(cfg)], capsys)


def test_outbox_path_is_a_folder(test_pki: PkiFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Something other than a file where the outbox should be: said so."""
    cfg = _config(tmp_path, test_pki)
    (tmp_path / "state" / OUTBOX_FILE).mkdir(parents=True)
    assert "not a file" in _refused(["edge", "status", "--config", str(cfg)], capsys)


def test_another_sqlite_file_is_not_an_outbox(test_pki: PkiFixture, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A valid SQLite file of something else (e.g. the hub's database copied by mistake)."""
    cfg = _config(tmp_path, test_pki)
    path = tmp_path / "state" / OUTBOX_FILE
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE readings (x)")
    assert "not an outbox" in _refused(["edge", "status", "--config", str(cfg)], capsys)


def test_outbox_of_a_newer_agent(test_pki: PkiFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An outbox whose schema this version does not know is not guessed at."""
    cfg = _config(tmp_path, test_pki)
    path = tmp_path / "state" / OUTBOX_FILE
    Outbox(path, max_records=100, clock=lambda: 1.0).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    assert "newer agent" in _refused(["edge", "status", "--config", str(cfg)], capsys)


def test_unknown_priority_rows(test_pki: PkiFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rows of a priority the outbox never writes mean a damaged or foreign file: an error, not a count."""
    cfg = _config(tmp_path, test_pki)
    path = tmp_path / "state" / OUTBOX_FILE
    Outbox(path, max_records=100, clock=lambda: 1.0).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO records (seq, prio, ts, payload) VALUES (1, 7, 1.0, x'00')")
    assert "unknown priority 7" in _refused(["edge", "status", "--config", str(cfg)], capsys)
