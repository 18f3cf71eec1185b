"""`jikimi bench fuzz`: every target runs clean for a moment, and a crash is never missed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab.fuzz import TARGETS, Harness, Target, parse_libfuzzer, run_target


def _crashy() -> Harness:
    def call(data: bytes) -> None:
        if b"\xff" in data:
            raise RuntimeError("boom")
        raise ValueError("the parser's declared error: not a crash")

    return Harness(call, (ValueError,), (b"hello",))


CRASHY = Target("crashy", "raises RuntimeError on any input holding 0xff", _crashy)
"""Registered only here; the runner's child finds it as ``tests.lab.test_fuzz:CRASHY``."""


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    list(TARGETS),
)
def test_every_target_runs_for_a_moment_without_a_crash(name: str, tmp_path: Path) -> None:
    result = run_target(name, 2.0, tmp_path, runs=3000)
    assert result.crashes == 0, f"{result.crash} (input {result.crash_input}, log {result.log})"
    assert result.executions >= len(TARGETS[name].build().seeds)


CORPUS = Path(__file__).parents[1] / "fuzz_corpus"
@pytest.mark.parametrize(
    "saved",
    [pytest.param(p, id=f"{p.parent.name}/{p.name}") for p in sorted(CORPUS.glob("*/*"))],
)
def test_saved_inputs_replay_without_a_crash(saved: Path) -> None:
    """Inputs that once crashed a target (tests/fuzz_corpus/TARGET/...) are answered as declared."""
    TARGETS[saved.parent.name].build().one_input(saved.read_bytes())


def test_a_crash_is_detected_and_its_input_kept(tmp_path: Path) -> None:
    result = run_target("tests.lab.test_fuzz:CRASHY", 20.0, tmp_path, runs=200_000)
    assert result.engine == "atheris"
    assert result.crashes == 1
    assert result.crash is not None
    assert "RuntimeError: boom" in result.crash
    assert result.crash_input is not None
    assert b"\xff" in Path(result.crash_input).read_bytes()
    assert result.executions >= 1


def test_the_hypothesis_fallback_finds_the_same_crash_and_says_it_ran(tmp_path: Path) -> None:
    result = run_target("tests.lab.test_fuzz:CRASHY", 20.0, tmp_path, engine="hypothesis")
    assert result.engine == "hypothesis"
    assert result.crashes == 1
    assert result.crash is not None
    assert "RuntimeError: boom" in result.crash
    assert result.crash_input is not None
    assert b"\xff" in Path(result.crash_input).read_bytes()


def test_the_hypothesis_fallback_runs_a_real_target_clean(tmp_path: Path) -> None:
    result = run_target("wire_decode", 1.0, tmp_path, engine="hypothesis")
    assert (result.engine, result.crashes) == ("hypothesis", 0)
    assert result.executions > 0


def test_executions_are_read_from_libfuzzer_output() -> None:
    assert parse_libfuzzer("#1024\tpulse  cov: 3\n#2048\tpulse  cov: 4\n") == 2048
    assert parse_libfuzzer("Done 368318 runs in 6 second(s)\nstat::number_of_executed_units: 368318\n") == 368318
    assert parse_libfuzzer("nothing") == 0


def test_the_command_writes_the_figures_with_the_machine(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli", "bench", "fuzz", "--seconds", "1", "--runs", "500",
         "--target", "modbus_codec", "--workdir", str(tmp_path / "work"), "--json", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "modbus_codec" in proc.stdout
    figures = json.loads(out.read_text())
    assert figures["machine"]["cores"] >= 1
    [row] = figures["targets"]
    assert (row["target"], row["engine"], row["crashes"]) == ("modbus_codec", "atheris", 0)
    assert row["executions"] > 0
    assert row["execs_per_s"] > 0
