"""The simulator's HTTP control interface sets water, barrier, jam and travel time, and counts the
writes the device received over the bus; it refuses bad bodies and any non-loopback address."""

from __future__ import annotations

import asyncio
import os
import re
import struct
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.sim.control import RunningControl, loopback, serve_control
from edge.sim.servers import Simulator, run_simulator
from shared.errors import ConfigError
from shared.paths import profiles_dir
from shared.profiles import Profile

REPO = Path(__file__).resolve().parents[3]


@asynccontextmanager
async def controlled(profile: Profile) -> AsyncIterator[tuple[Simulator, RunningControl, aiohttp.ClientSession]]:
    async with run_simulator(profile, transport="tcp") as sim, serve_control(sim.devices) as ctl, \
            aiohttp.ClientSession() as http:
        yield sim, ctl, http


async def write_register(host: str, port: int, address: int, value: int) -> bytes:
    """One Modbus TCP 'write single register' (FC 6) over a real socket; the response PDU."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(struct.pack(">HHHBBHH", 1, 0, 6, 1, 6, address, value))
        await writer.drain()
        header = await reader.readexactly(7)
        length = struct.unpack(">HHHB", header)[2]
        return await reader.readexactly(length - 1)
    finally:
        writer.close()


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    """POST ``body`` as JSON (bytes are sent as they are)."""
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with http.post(url, **kwargs) as resp:
        return resp.status, await resp.json()


async def test_writes_over_the_bus_are_counted_at_the_device_per_point_and_value(underpass: Profile) -> None:
    async with controlled(underpass) as (sim, ctl, http):
        assert await write_register(sim.host, sim.port, 0, 1) == bytes([6, 0, 0, 0, 1])  # close
        assert await write_register(sim.host, sim.port, 0, 1) == bytes([6, 0, 0, 0, 1])  # close again
        async with http.get(f"{ctl.url}/state") as resp:
            (dev,) = (await resp.json())["devices"]
    assert dev["writes"] == {"barrier_cmd": 2}
    assert dev["writes_by_value"] == {"barrier_cmd": {"close": 2}}
    assert dev["barrier"]["state"] == "closing"


async def test_the_panel_moves_the_barrier_without_counting_a_bus_write(underpass: Profile) -> None:
    async with controlled(underpass) as (_, ctl, http):
        status, dev = await post(http, f"{ctl.url}/travel", {"seconds": 0.2})
        assert status == 200
        assert dev["barrier"]["travel_s"] == 0.2
        status, dev = await post(http, f"{ctl.url}/barrier", {"action": "close"})
        assert status == 200
        assert dev["barrier"]["state"] == "closing"
        await asyncio.sleep(0.4)
        async with http.get(f"{ctl.url}/state") as resp:
            (dev,) = (await resp.json())["devices"]
    assert dev["barrier"]["state"] == "closed"
    assert dev["barrier"]["limit_closed"] is True
    assert dev["values"]["barrier_state"] == "closed"
    assert dev["writes"] == {}


async def test_water_set_over_http_is_what_the_device_reports(underpass: Profile) -> None:
    async with controlled(underpass) as (sim, ctl, http):
        sim.physics.water.series = ((0.0, 1.0), (10.0, 2.0))  # a replay is dropped by a set level
        status, dev = await post(http, f"{ctl.url}/water", {"depth_cm": 23.4})
        await asyncio.sleep(0.05)
        async with http.get(f"{ctl.url}/state") as resp:
            (later,) = (await resp.json())["devices"]
    assert status == 200
    assert dev["water_depth_cm"] == pytest.approx(23.4, abs=0.01)
    assert later["values"]["water_depth_cm"] == 23.4


async def test_a_jammed_barrier_faults_and_unjamming_clears_it(underpass: Profile) -> None:
    async with controlled(underpass) as (sim, ctl, http):
        sim.physics.barrier.jam_detect_s = 0.1
        assert (await post(http, f"{ctl.url}/jam", {"on": True}))[0] == 200
        await post(http, f"{ctl.url}/barrier", {"action": "close"})
        await asyncio.sleep(0.3)
        async with http.get(f"{ctl.url}/state") as resp:
            (jammed,) = (await resp.json())["devices"]
        _, cleared = await post(http, f"{ctl.url}/jam", {"on": False})
    assert jammed["barrier"]["state"] == "fault"
    assert jammed["values"]["motor_fault"] is True
    assert cleared["barrier"]["fault"] is False
    assert cleared["barrier"]["jammed"] is False


@pytest.mark.parametrize(
    ("path", "body", "why"),
    [
        ("/water", {"depth_cm": -1.0}, "depth_cm"),
        ("/water", b'{"depth_cm": 1e999}', "depth_cm"),
        ("/water", {"depth_cm": "20"}, "Expected `float`"),
        ("/water", {"depth_cm": 20.0, "extra": 1}, "unknown field"),
        ("/water", {}, "missing required field"),
        ("/water", [20.0], "Expected `object`"),
        ("/barrier", {"action": "explode"}, "action"),
        ("/jam", {"on": "yes"}, "Expected `bool`"),
        ("/travel", {"seconds": 0.0}, "seconds"),
        ("/travel", {"seconds": 1e9}, "seconds"),
    ],
)
async def test_a_bad_body_is_a_400_with_the_reason_and_changes_nothing(
    underpass: Profile, path: str, body: Any, why: str
) -> None:
    async with controlled(underpass) as (sim, ctl, http):
        before = (sim.physics.water.depth_cm, sim.physics.barrier.state, sim.physics.barrier.travel_s,
                  sim.physics.barrier.jammed)
        status, answer = await post(http, f"{ctl.url}{path}", body)
        after = (sim.physics.water.depth_cm, sim.physics.barrier.state, sim.physics.barrier.travel_s,
                 sim.physics.barrier.jammed)
    assert status == 400
    assert why in answer["error"]
    assert before == after


async def test_garbage_an_oversized_body_and_an_unknown_unit_are_refused(underpass: Profile) -> None:
    async with controlled(underpass) as (sim, ctl, http):
        async with http.post(f"{ctl.url}/water", data=b"\xff\x00{{not json") as resp:
            assert resp.status == 400
        async with http.post(f"{ctl.url}/water", data=b'{"depth_cm": ' + b"1" * 4096 + b"}") as resp:
            assert resp.status == 413
        async with http.post(f"{ctl.url}/water?unit=9", json={"depth_cm": 30.0}) as resp:
            assert resp.status == 404
        async with http.get(f"{ctl.url}/state?unit=%D9%A1") as resp:  # an Arabic-Indic digit one
            assert resp.status == 404
        assert sim.physics.water.depth_cm == 0.0


@pytest.mark.parametrize("addr", ["0.0.0.0:8080", "192.168.1.10:8080", "example.org:8080", "[::]:8080"])
def test_the_control_interface_refuses_any_address_but_loopback(addr: str) -> None:
    with pytest.raises(ConfigError, match="loopback only"):
        loopback(addr)


@pytest.mark.parametrize("addr", ["127.0.0.1", "127.0.0.1:x", "127.0.0.1:70000", ":80"])
def test_a_malformed_control_address_is_a_config_error(addr: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        loopback(addr)


def test_loopback_addresses_are_accepted() -> None:
    assert loopback("127.0.0.1:0") == ("127.0.0.1", 0)
    assert loopback("localhost:9000") == ("localhost", 9000)
    assert loopback("[::1]:9000") == ("::1", 9000)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


async def test_sim_run_serves_the_control_api_beside_modbus() -> None:
    """The real command: ``jikimi sim run --listen ... --control ...``, driven over HTTP and Modbus."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "sim", "run", "--profile", str(profiles_dir() / "underpass-jk-up300.toml"),
        "--listen", "tcp://127.0.0.1:0", "--control", "127.0.0.1:0",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env())
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert proc.stdin is not None
    try:
        modbus = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        control = ""
        while not control:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, "sim run exited before serving"
            found = re.match(r"control (http://\S+)", line)
            control = found.group(1) if found else ""
        host, _, port = modbus.removeprefix("tcp://").rpartition(":")
        async with aiohttp.ClientSession() as http:
            status, _ = await post(http, f"{control}/water", {"depth_cm": 18.0})
            assert status == 200
            assert await write_register(host, int(port), 0, 1) == bytes([6, 0, 0, 0, 1])
            async with http.get(f"{control}/state") as resp:
                (dev,) = (await resp.json())["devices"]
        assert dev["values"]["water_depth_cm"] == 18.0
        assert dev["writes_by_value"] == {"barrier_cmd": {"close": 1}}
    finally:
        proc.stdin.write(b"quit\n")
        await proc.stdin.drain()
        await asyncio.wait_for(proc.wait(), 30)


async def test_sim_run_refuses_a_control_address_off_loopback() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "sim", "run", "--profile", str(profiles_dir() / "underpass-jk-up300.toml"),
        "--listen", "tcp://127.0.0.1:0", "--control", "0.0.0.0:0",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env())
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0
    assert b"--control" in err
    assert b"loopback only" in err
    assert out == b""  # nothing was served
