"""Commissioning reads every point of a real (simulated) device and catches a swapped word order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.sim.servers import run_simulator
from provisioning import commission as c
from shared.cli import main
from shared.paths import profiles_dir
from shared.profiles import load_profile

DISPLACEMENT = profiles_dir() / "displacement-jk-dx200.toml"
UNDERPASS = profiles_dir() / "underpass-jk-up300.toml"


async def test_commissioning_reports_every_point_and_signs(tmp_path: Path) -> None:
    profile = load_profile(DISPLACEMENT)
    seen: list[str] = []
    async with run_simulator(profile, transport="pty") as sim:
        sim.physics.slope.displacement_mm = 12.5
        rec = await c.commission(profile, DISPLACEMENT, sim.path, technician="kim",
                                 progress=lambda i, n, r: seen.append(r.name))
    assert [p.name for p in rec.points] == [p.name for p in profile.polled] == seen
    assert rec.passed, c.summary(rec)
    by_name = {p.name: p for p in rec.points}
    assert float(by_name["displacement_mm"].value) == pytest.approx(12.5)
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = tmp_path / "key.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    c.sign(rec, key_path)
    assert c.verify(rec)
    rec.points[0] = c.PointResult(rec.points[0].name, "999", "good", "ok")
    assert not c.verify(rec), "a changed record no longer verifies"


async def test_swapped_word_order_is_flagged(tmp_path: Path) -> None:
    """The device sends its floats big-word-first while the profile says little: commissioning
    says so instead of passing absurd numbers."""
    device_profile = tmp_path / "wired-differently.toml"
    device_profile.write_text(DISPLACEMENT.read_text().replace('word_order = "little"', 'word_order = "big"'))
    async with run_simulator(load_profile(device_profile), transport="pty") as sim:
        sim.physics.slope.displacement_mm = 12.5
        rec = await c.commission(load_profile(DISPLACEMENT), DISPLACEMENT, sim.path, technician="kim")
    by_name = {p.name: p for p in rec.points}
    assert by_name["displacement_mm"].verdict == "fail"
    assert "word order looks swapped" in by_name["displacement_mm"].note
    assert "12.5" in by_name["displacement_mm"].note
    assert not rec.passed


async def test_actuation_needs_confirmation_and_verifies(tmp_path: Path) -> None:
    profile = load_profile(UNDERPASS)
    async with run_simulator(profile, transport="tcp") as sim:
        refused = await c.commission(profile, UNDERPASS, sim.address, technician="kim",
                                     actuate=("warning_lamp", "true"), confirm=lambda _q: False)
        assert refused.actuation.startswith("skipped")
        assert sim.physics.lamp is False
        done = await c.commission(profile, UNDERPASS, sim.address, technician="kim",
                                  actuate=("warning_lamp", "true"), confirm=lambda _q: True)
        assert done.actuation.startswith("ok"), done.actuation
        assert sim.physics.lamp is True


def test_cli_writes_record_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    async def run() -> int:
        async with run_simulator(load_profile(UNDERPASS), transport="tcp") as sim:
            return await asyncio.to_thread(main, ["provision", "commission", "--profile", str(UNDERPASS),
                                                  "--port", sim.address, "--out", str(tmp_path / "rec.json")])

    assert asyncio.run(run()) == 0
    rec = json.loads((tmp_path / "rec.json").read_text())
    assert rec["passed"] is True
    assert "PASSED" in (tmp_path / "rec.txt").read_text()
    assert "water_depth_cm" in capsys.readouterr().err  # progress while reading


def test_unreachable_device_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["provision", "commission", "--profile", str(UNDERPASS), "--port", "modbus://x"]) == 2
    assert capsys.readouterr().err.startswith("jikimi: --port 'modbus://x'")
