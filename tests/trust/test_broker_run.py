"""``jikimi broker run``: the CLI becomes Mosquitto, keeps its state under ``--out``, persists
sessions by default (``--no-persistence`` switches it off) and leaves no process behind when killed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shared import topics
from shared.cli import main
from shared.tls import client_context
from tests.conftest import PkiFixture
from trust.broker import free_port

pytestmark = pytest.mark.broker


def _argv(pki: Path, out: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "shared.cli", "broker", "run", "--pki", str(pki), "--out", str(out),
            "--port", str(port), *extra]


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"broker run exited with {proc.returncode}: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"broker run did not listen on {port}: {log.read_text(errors='replace')}")


@contextmanager
def broker_cli(argv: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``jikimi broker run`` as a subprocess, listening; stopped with SIGTERM at the end."""
    with log.open("ab") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_listening(proc, port, log)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)


def _client(test_pki: PkiFixture, cn: str, port: int, *, persistent: bool) -> aiomqtt.Client:
    props = None
    if persistent:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
    return aiomqtt.Client(hostname="localhost", port=port, identifier=cn, protocol=aiomqtt.ProtocolVersion.V5,
                          tls_context=client_context(test_pki.files(cn)), timeout=5,
                          clean_start=not persistent, properties=props)


async def _queued_survives_restart(test_pki: PkiFixture, tmp_path: Path, *extra: str) -> list[bytes]:
    """A hub's persistent session subscribes, goes away, an edge publishes QoS 1 to it, the
    broker restarts (SIGTERM, then the same command again): what does the hub get back?"""
    port, out, log = free_port(), tmp_path / "broker", tmp_path / "cli.log"
    argv = _argv(test_pki.dir, out, port, *extra)
    hub, site = test_pki.take_hub(), test_pki.take_site()
    data = topics.site_topic(site, topics.SiteChannel.DATA)
    with broker_cli(argv, port, log) as proc:
        async with _client(test_pki, hub, port, persistent=True) as c:
            await c.subscribe(data, qos=1)
        async with _client(test_pki, site, port, persistent=False) as e:
            await e.publish(data, b"kept across a restart", qos=1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    got: list[bytes] = []
    with broker_cli(argv, port, log):
        async with _client(test_pki, hub, port, persistent=True) as c:
            try:
                async with asyncio.timeout(3):
                    async for msg in c.messages:
                        assert isinstance(msg.payload, bytes)
                        got.append(msg.payload)
                        break
            except TimeoutError:
                pass
    return got


async def test_queued_message_survives_restart_with_persistence(test_pki: PkiFixture, tmp_path: Path) -> None:
    """By default the broker persists under --out: a QoS 1 message queued for a persistent
    session is delivered after the broker restarts."""
    assert await _queued_survives_restart(test_pki, tmp_path) == [b"kept across a restart"]
    out = tmp_path / "broker"
    assert (out / "data" / "mosquitto.db").is_file()
    assert {"mosquitto.conf", "acl", "mosquitto.log", "mosquitto.pid"} <= {p.name for p in out.iterdir()}
    assert (out / "mosquitto.log").read_text().count("mosquitto version") >= 2  # both runs logged there


async def test_no_persistence_forgets_queued_message(test_pki: PkiFixture, tmp_path: Path) -> None:
    """With --no-persistence the same restart forgets the session and its queued message."""
    assert await _queued_survives_restart(test_pki, tmp_path, "--no-persistence") == []
    assert not (tmp_path / "broker" / "data" / "mosquitto.db").exists()
    assert "persistence false" in (tmp_path / "broker" / "mosquitto.conf").read_text()


def _mosquittos_for(conf: Path) -> list[int]:
    """Pids of live processes whose command line names ``conf``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = next((ln for ln in (entry / "status").read_text().splitlines() if ln.startswith("State:")), "")
        except OSError:
            continue
        if str(conf).encode() in cmdline and "zombie" not in state:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killing_the_cli_leaves_no_mosquitto(test_pki: PkiFixture, tmp_path: Path, sig: signal.Signals) -> None:
    """The CLI becomes Mosquitto (same pid, written to mosquitto.pid): whatever kills it, no
    broker process is left running."""
    port, out, log = free_port(), tmp_path / "broker", tmp_path / "cli.log"
    with broker_cli(_argv(test_pki.dir, out, port), port, log) as proc:
        conf = (out / "mosquitto.conf").resolve()
        assert _mosquittos_for(conf) == [proc.pid]
        assert int((out / "mosquitto.pid").read_text()) == proc.pid
        os.kill(proc.pid, sig)
        proc.wait(timeout=20)
        assert _mosquittos_for(conf) == []
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_missing_pki_is_one_line_and_no_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A PKI folder without a PKI: a one-line error naming the folder, exit 2, nothing started."""
    assert main(["broker", "run", "--pki", str(tmp_path / "nope"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "no PKI here" in err
    assert len(err.strip().splitlines()) == 1


def test_out_that_is_a_file_is_refused(test_pki: PkiFixture, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """--out naming a file (not a folder): a clear error, the file untouched."""
    f = tmp_path / "file"
    f.write_text("keep me")
    assert main(["broker", "run", "--pki", str(test_pki.dir), "--out", str(f), "--port", "18883"]) == 2
    assert "cannot write the broker's config" in capsys.readouterr().err
    assert f.read_text() == "keep me"


@pytest.mark.parametrize("port", ["0", "65536"])
def test_bad_port_is_refused(test_pki: PkiFixture, tmp_path: Path, port: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    """A port outside 1..65535 is refused before anything is written."""
    assert main(["broker", "run", "--pki", str(test_pki.dir), "--out", str(tmp_path / "b"), "--port", port]) == 2
    assert "not a TCP port" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_broker_config_no_persistence(test_pki: PkiFixture, tmp_path: Path) -> None:
    """``broker config --no-persistence`` writes a config that keeps nothing across restarts."""
    assert main(["broker", "config", "--pki", str(test_pki.dir), "--out", str(tmp_path / "b"),
                 "--no-persistence"]) == 0
    conf = (tmp_path / "b" / "mosquitto.conf").read_text()
    assert "persistence false" in conf
    assert "persistence_location" not in conf


def test_broker_config_persistence_elsewhere(test_pki: PkiFixture, tmp_path: Path) -> None:
    """``broker config --persistence-dir``: the database goes where the broker may write (a systemd
    unit mounts the config folder read-only), not beside the config."""
    assert main(["broker", "config", "--pki", str(test_pki.dir), "--out", str(tmp_path / "b"),
                 "--persistence-dir", str(tmp_path / "state")]) == 0
    conf = (tmp_path / "b" / "mosquitto.conf").read_text()
    assert f"persistence_location {(tmp_path / 'state').resolve()}/" in conf
    assert not (tmp_path / "b" / "data").exists()


def test_corrupt_pki_index_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A PKI whose index is garbage (the ACL is made from it): a one-line error naming the file, no broker."""
    from trust.pki import Pki, Role

    pki = Pki(tmp_path / "pki")
    pki.init()
    pki.issue("broker", Role.BROKER)
    pki.index_file.write_bytes(b"\x00{not json")
    assert main(["broker", "run", "--pki", str(pki.dir), "--out", str(tmp_path / "b"), "--port", "18884"]) == 2
    err = capsys.readouterr().err
    assert "index.json: not valid JSON" in err
    assert not (tmp_path / "b" / "mosquitto.conf").exists()


@pytest.mark.parametrize(("argv", "says"), [
    (["--bind", "127.0.0.1\nallow_anonymous true"], "--bind"),
    (["--bind", ""], "--bind"),
    (["--user", "root\nallow_anonymous true"], "--user"),
    (["--out", "{tmp}/b\nallow_anonymous true"], "line break"),
])
def test_values_cannot_add_directives(test_pki: PkiFixture, tmp_path: Path, argv: list[str], says: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A value carrying a line break (or none at all) could add a directive such as
    'allow_anonymous true' to mosquitto.conf: refused, nothing written."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "b")]
    assert main(["broker", "config", "--pki", str(test_pki.dir), *argv]) == 2
    assert says in capsys.readouterr().err
    assert not list(tmp_path.rglob("mosquitto.conf"))
