"""``jikimi receiver`` and ``jikimi sim camera`` run as commands and say where they listen."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hub.forward import cap
from shared.cli import build_cli, parse_listen
from shared.errors import ConfigError
from tests.hub.forward.helpers import ALERT_CN, signer, signing_pki
from tests.hub.forward.test_cap import facts

REPO = Path(__file__).resolve().parents[3]
# The command line as `jikimi` builds it, with this package's module registered.


def test_both_commands_register_beside_the_devices_sim_group() -> None:
    cli = build_cli(("edge.cli", "hub.forward.cli"))
    args = cli.parser.parse_args(["receiver", "--listen", "tcp://127.0.0.1:0", "--fail-first", "2"])
    assert (args.listen, args.fail_first) == ("tcp://127.0.0.1:0", 2)
    args = cli.parser.parse_args(["sim", "camera", "--listen", "tcp://127.0.0.1:0", "--id", "CAM-1"])
    assert args.camera_id == "CAM-1"
    assert cli.parser.parse_args(["sim", "run", "--profile", "x.toml", "--pty"]).sim_command == "run"


@pytest.mark.parametrize("bad", ["127.0.0.1", "tcp://:80", "tcp://host:port", "tcp://h:70000"])
def test_listen_addresses_are_checked(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(bad)


@asynccontextmanager
async def command(*argv: str) -> AsyncIterator[dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "shared.cli", *argv, cwd=REPO,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        yield json.loads(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await proc.wait()
    assert code == 0


async def test_the_receiver_command_fails_first_then_acknowledges(schema: object) -> None:
    async with command("receiver", "--listen", "tcp://127.0.0.1:0", "--fail-first", "1") as started, \
            aiohttp.ClientSession() as http:
        assert started["event"] == "receiver.listening"
        codes = []
        for _ in range(2):
            async with http.post(started["url"], data=cap.render(facts()),
                                 headers={"Content-Type": cap.MIME}) as resp:
                codes.append((resp.status, await resp.text()))
    assert codes[0][0] == 503
    assert codes[1][0] == 200
    assert "hub-test.0001" in codes[1][1]


async def test_the_receiver_command_verifies_signatures_with_a_ca_bundle_and_refuses_when_strict() -> None:
    ca = str(signing_pki().ca_chain)
    async with command("receiver", "--listen", "tcp://127.0.0.1:0", "--ca-bundle", ca, "--strict") as started, \
            aiohttp.ClientSession() as http:
        answers = []
        for body in (signer().sign(cap.render(facts())), cap.render(facts(identifier="hub-test.0002"))):
            async with http.post(started["url"], data=body, headers={"Content-Type": cap.MIME}) as resp:
                answers.append((resp.status, await resp.json()))
    assert answers[0][0] == 200
    assert answers[0][1]["signature"] == {"verified": True, "signer": ALERT_CN, "problem": ""}
    assert (answers[1][0], answers[1][1]["error"]) == (422, "signature not verified")


def test_the_receiver_command_refuses_a_missing_ca_bundle(tmp_path: Path) -> None:
    cli = build_cli(("hub.forward.cli",))
    args = cli.parser.parse_args(["receiver", "--listen", "tcp://127.0.0.1:0", "--ca-bundle", str(tmp_path / "no.pem")])
    with pytest.raises(ConfigError, match="--ca-bundle"):
        args.handler(args)


async def test_the_camera_command_serves_jpeg_snapshots() -> None:
    async with command("sim", "camera", "--listen", "tcp://127.0.0.1:0", "--id", "SW-CCTV-0012") as started, \
            aiohttp.ClientSession() as http, http.get(started["snapshot_url"]) as resp:
        assert resp.content_type == "image/jpeg"
        assert (await resp.read())[:3] == b"\xff\xd8\xff"
