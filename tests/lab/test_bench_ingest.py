"""`jikimi bench ingest` sweeps the offered rate against the real hub and a real mTLS broker and
measures the broker's own capacity to a C subscriber (a smoke run with a few sites: the figures
themselves are the benchmark's, never asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.cli import main


def test_bench_ingest_reports_the_sustained_rate_the_broker_capacity_and_every_sweep_step(tmp_path: Path) -> None:
    out = tmp_path / "ingest.json"
    assert main(["bench", "ingest", "--sites", "6", "--procs", "2", "--rates", "300,600", "--step", "2",
                 "--warmup", "1", "--drain", "15", "--capacity-msgs", "200", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert {"sites", "sustained_records_per_s", "p99_ms", "broker_capacity_msgs_per_s",
            "broker_capacity_records_per_s", "ratio", "sweep"} <= doc.keys()
    assert doc["sites"] == 6
    assert doc["setup"]["procs"] == 2
    assert doc["capacity"]["msgs"] == 200
    assert 1 <= len(doc["sweep"]) <= 2
    for point in doc["sweep"]:
        assert {"offered_records_per_s", "generated_records_per_s", "committed_records_per_s", "p99_ms",
                "all_committed", "sustained", "load_average", "cores_used"} <= point.keys()
    assert doc["hub"]["records_committed"] == doc["hub"]["records_sent"], "the sweep drains before counting"


@pytest.mark.parametrize("argv", [["--sites", "0"], ["--rates", "100,-5"], ["--procs", "0"], ["--capacity-msgs", "1"]])
def test_bench_ingest_refuses_nonsense_arguments(tmp_path: Path, argv: list[str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.json"
    assert main(["bench", "ingest", *argv, "--json", str(out)]) == 2
    assert "must be positive" in capsys.readouterr().err
    assert not out.exists()


def test_bench_ingest_refuses_a_reused_pki_without_the_sites_identities(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    (pki / "ca.pem").write_text("not used: the identities are checked first\n")
    out = tmp_path / "x.json"
    assert main(["bench", "ingest", "--sites", "2", "--pki", str(pki), "--json", str(out)]) == 2
    assert f"{pki}: the PKI has no identity" in capsys.readouterr().err
    assert not out.exists()
