"""``jikimi chaos`` in short: two edges, the broker and the hub as separate processes under one
fault of each kind; nothing lost or committed twice, no double actuation, every barrier that had
to close closed, every part recovered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.chaos import KINDS

REPO = Path(__file__).resolve().parents[2]


def chaos(tmp_path: Path, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "chaos", "--dir", str(tmp_path / "run"), "--quiet", *args],
        capture_output=True, text=True, timeout=timeout_s, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("chaos")
    out = tmp / "chaos.json"
    done = chaos(tmp, "--seconds", "70", "--seed", "7", "--edges", "2", "--json", str(out))
    assert out.exists(), done.stderr[-3000:]
    return done.returncode, json.loads(out.read_text())


def test_the_run_injected_every_fault_kind_and_flooded_the_sites(report: tuple[int, dict[str, Any]]) -> None:
    _, r = report
    assert {f["kind"] for f in r["faults"]} == set(KINDS)
    assert r["totals"]["produced"] > 1000
    assert r["totals"]["floods"] >= 2
    torn = [f for f in r["faults"] if f["kind"] == "outbox_torn"]
    assert all(f["cut_at"] is not None for f in torn)  # the log really was cut


def test_no_record_was_lost(report: tuple[int, dict[str, Any]]) -> None:
    _, r = report
    assert r["totals"]["lost"] == 0, {s: v["lost_detail"] for s, v in r["sites"].items()}
    assert r["totals"]["committed"] >= r["totals"]["produced"] - r["totals"]["destroyed_with_storage"] \
        - r["totals"]["pending_in_outbox"] - r["totals"]["moved_to_new_epoch"]


def test_no_record_was_committed_twice(report: tuple[int, dict[str, Any]]) -> None:
    _, r = report
    assert r["totals"]["committed_twice"] == 0


def test_no_barrier_was_written_twice_and_every_one_that_had_to_close_closed(
        report: tuple[int, dict[str, Any]]) -> None:
    _, r = report
    assert r["totals"]["double_actuations"] == 0, r["floods"]
    assert r["totals"]["unexpected_writes"] == 0
    assert r["totals"]["floods_not_closed"] == 0, r["floods"]


def test_every_part_recovered_after_every_fault(report: tuple[int, dict[str, Any]]) -> None:
    _, r = report
    assert [f for f in r["faults"] if f["recovery_s"] is None] == []
    assert r["invariants"]["no_crash_loop"]


def test_the_exit_code_says_whether_every_invariant_held(report: tuple[int, dict[str, Any]]) -> None:
    code, r = report
    assert r["ok"] == all(r["invariants"].values())
    assert code == (0 if r["ok"] else 1)


@pytest.mark.parametrize(("args", "message"), [
    (["--faults", "hub_kill,meteor"], "unknown kind(s) meteor"),
    (["--faults", ","], "unknown kind(s) (none)"),
    (["--seconds", "5"], "--seconds"),
    (["--edges", "0"], "--edges"),
])
def test_bad_options_are_refused_in_one_line_before_anything_starts(
        tmp_path: Path, args: list[str], message: str) -> None:
    done = chaos(tmp_path, *args, timeout_s=60.0)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()
