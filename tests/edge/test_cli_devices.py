"""The device commands: ``jikimi profile show|check``, ``sim run`` and ``bench edge``."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from shared.cli import main
from shared.paths import profiles_dir

UNDERPASS = profiles_dir() / "underpass-jk-up300.toml"
FLOOD = profiles_dir() / "flood-alarm-jk-fa100.toml"


def test_profile_show_json_lists_every_point_in_the_contract_shape(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["profile", "show", str(UNDERPASS), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == ["points"]
    rows = {p["name"]: p for p in doc["points"]}
    assert rows["barrier_state"] == {
        "name": "barrier_state",
        "table": "input",
        "address": 1,
        "type": "enum",
        "byte_order": "big",
        "word_order": "big",
        "scale": 1.0,
        "offset": 0.0,
        "unit": "",
        "values": {"open": 0, "closing": 1, "closed": 2, "opening": 3, "fault": 4},
        "writable": False,
    }
    assert rows["barrier_cmd"]["writable"] is True
    assert rows["water_depth_cm"]["scale"] == 0.1


def test_profile_show_prints_a_table_for_the_technician(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "show", str(FLOOD)]) == 0
    out = capsys.readouterr().out
    assert "JK-FA100" in out
    assert "9600 8N1" in out
    assert any(line.split()[:3] == ["water_depth_cm", "input", "0"] for line in out.splitlines())


def test_profile_check_names_file_and_key_in_one_line_per_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "flood.toml"
    bad.write_text(
        FLOOD.read_text().replace(
            'type = "u16"\nscale = 0.1\nunit = "cm"\nrange = [0, 300]',
            'type = "float"\nscale = 0.1\nunit = "cm"\nrange = [0, 300]',
        )
    )
    assert main(["profile", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jikimi: flood.toml: points.water_depth_cm.type: unknown type 'float'")
    assert "Traceback" not in err
    assert main(["profile", "check", str(FLOOD)]) == 0
    assert "ok: JK-FA100" in capsys.readouterr().out


async def start_sim(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.cli",
        "sim",
        "run",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    return proc, line.decode().strip()


async def stop_sim(proc: asyncio.subprocess.Process) -> int:
    assert proc.stdin is not None
    proc.stdin.write(b"quit\n")
    await proc.stdin.drain()
    return await asyncio.wait_for(proc.wait(), 15)


async def test_sim_run_on_a_pty_serves_and_takes_faults_at_run_time() -> None:
    proc, path = await start_sim("--profile", str(FLOOD), "--pty", "--water-cm", "12.5")
    try:
        assert path.startswith("/dev/")
        client = AsyncModbusSerialClient(path, baudrate=9600, parity="N", timeout=0.3, retries=0)
        await client.connect()
        try:
            rr = await client.read_input_registers(0, count=1, device_id=1)
            assert rr.registers == [125]
            assert proc.stdin is not None
            proc.stdin.write(b"exception 4\n")
            await proc.stdin.drain()
            for _ in range(50):
                rr = await client.read_input_registers(0, count=1, device_id=1)
                if rr.isError():
                    break
                await asyncio.sleep(0.05)
            assert rr.isError()
            assert rr.exception_code == 4
        finally:
            client.close()
        assert await stop_sim(proc) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sim_run_listens_on_tcp_with_command_line_faults() -> None:
    proc, address = await start_sim(
        "--profile",
        str(UNDERPASS),
        "--listen",
        "tcp://127.0.0.1:0",
        "--sensor-fault",
        "water_depth_cm",
    )
    try:
        host, port = address.removeprefix("tcp://").rsplit(":", 1)
        client = AsyncModbusTcpClient(host, port=int(port), timeout=2)
        await client.connect()
        try:
            rr = await client.read_input_registers(0, count=2, device_id=1)
            assert rr.registers == [65535, 0]
        finally:
            client.close()
        assert await stop_sim(proc) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_bench_edge_writes_rtu_numbers_next_to_the_reference_client_and_the_wire_limit(tmp_path: Path) -> None:
    out = tmp_path / "edge.json"
    out.write_text(json.dumps({"inference": {"kept": True}}))
    assert main(["bench", "edge", "--json", str(out), "--seconds", "0.3", "--outage-s", "2"]) == 0
    doc = json.loads(out.read_text())
    assert doc["inference"] == {"kept": True}  # other sections survive
    assert doc["machine"]["cores"] >= 1
    assert [r["baud"] for r in doc["rtu"]] == [19200, 115200]
    for row in doc["rtu"]:
        assert row["reads_per_s"] > 0
        assert row["reference_reads_per_s"] > 0
        assert row["ratio"] == pytest.approx(row["reads_per_s"] / row["reference_reads_per_s"], rel=0.01)
        assert row["ratio_of_wire_limit"] == pytest.approx(row["reads_per_s"] / row["wire_limit_per_s"], rel=0.01)
    # the agent's keys (issue 17), with the model loaded as in the field; no figure is asserted
    assert doc["model_loaded"] is True
    for key in ("rss_mb", "cpu_pct", "bytes_per_sample", "rss_steady_mb", "rss_peak_outage_mb",
                "rss_after_outage_mb"):
        assert isinstance(doc[key], float), key
    assert doc["outage"]["outage_s"] == 2.0
    assert doc["outage"]["drained"] is True
    assert doc["outage"]["missing_seqs"] == 0
    assert isinstance(doc["agent_stop_timeouts"], list)  # a stuck agent is reported, not waited for
