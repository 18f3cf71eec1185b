"""`jikimi bench ingest` sweeps the offered rate against the real hub and a real mTLS broker,
measures the broker's own capacity to a C subscriber, then runs the typhoon burst (a smoke run with
a few sites: the figures themselves are the benchmark's, never asserted here; that every burst
alarm arrived is)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.bench_burst import schedule, waits
from shared.cli import main


def test_bench_ingest_reports_the_sustained_rate_the_broker_capacity_and_every_sweep_step(tmp_path: Path) -> None:
    out = tmp_path / "ingest.json"
    assert main(["bench", "ingest", "--sites", "6", "--procs", "2", "--rates", "300,600", "--step", "2",
                 "--warmup", "1", "--drain", "15", "--capacity-msgs", "200", "--burst-sites", "0",
                 "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert {"sites", "sustained_records_per_s", "p99_ms", "broker_capacity_msgs_per_s",
            "broker_capacity_records_per_s", "ratio", "sweep"} <= doc.keys()
    assert doc["sites"] == 6
    assert doc["setup"]["procs"] == 2
    assert doc["capacity"]["msgs"] == 200
    assert 1 <= len(doc["sweep"]) <= 2
    for point in doc["sweep"]:
        assert {"offered_records_per_s", "generated_records_per_s", "committed_records_per_s", "p99_ms",
                "all_committed", "sustained", "load_average", "cores_used", "writer"} <= point.keys()
        assert point["writer"]["transactions"] >= 1  # where the step's time went in the writer
        assert {"hub", "hub_mqtt_process", "broker", "generators"} <= point["cores_used"].keys()
    assert doc["client_process"] is True  # the hub as it runs by default (broker.client_process)
    assert isinstance(doc["hub"]["heap_freezes"], int)
    assert doc["hub"]["records_committed"] == doc["hub"]["records_sent"], "the sweep drains before counting"
    assert "burst" not in doc


def test_bench_ingest_burst_brings_every_crossing_to_the_live_stream_and_the_city_centre(tmp_path: Path) -> None:
    """Four of six sites cross the closing depth within three seconds over background load: each one's
    alarm reaches a logged-in viewer's live stream, is raised in the hub, and its CAP alert is
    acknowledged by the receiver; the alarm list is polled meanwhile, and every figure is reported."""
    out = tmp_path / "ingest.json"
    assert main(["bench", "ingest", "--sites", "6", "--procs", "2", "--rates", "300", "--step", "2",
                 "--warmup", "1", "--drain", "15", "--capacity-msgs", "200", "--burst-sites", "4", "--burst-s", "3",
                 "--burst-rate", "300", "--burst-drain", "60", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    b = doc["burst"]
    assert {"reading_to_alarm_p50_ms", "reading_to_alarm_p99_ms", "reading_to_cap_ack_p50_ms",
            "reading_to_cap_ack_p99_ms", "api_alarms_p50_ms", "api_alarms_p99_ms", "background_records_per_s",
            "machine", "cores_used", "load_average", "measured_from", "targets"} <= b.keys()
    assert b["sites"] == 4
    assert b["background_records_per_s"] == 300
    assert b["crossings_sent"] == 4
    assert b["crossings_not_sent"] == []
    assert b["alarms_in_stream"] == 4
    assert b["alarms_missing_from_stream"] == []
    assert b["alarms_raised"] == 4
    assert b["alarms_not_raised"] == []
    assert b["cap_acked"] == 4
    assert b["cap_not_acked"] == []
    assert b["reading_to_alarm_ms"]["n"] == 4
    assert b["reading_to_cap_ack_ms"]["n"] == 4
    for stage in ("reading_to_hub_receive", "hub_receive_to_commit", "commit_to_stream", "commit_to_cap_ack"):
        assert b["stages_ms"][stage]["n"] == 4, stage
        assert b["stages_ms"][stage]["missing"] == 0, stage
    assert b["api_alarms_polls"] >= 1
    assert b["api_alarms_failed"] == 0
    assert b["problems"] == []
    assert doc["hub"]["records_committed"] == doc["hub"]["records_sent"], "the burst drains before counting"


def test_burst_waits_count_an_alarm_that_never_arrived_as_a_lower_bound_not_as_nothing() -> None:
    sent = {"a": 100.0, "b": 100.0, "c": 100.0}
    arrived = {"a": 100.5, "b": 101.0}
    got = waits(["a", "b", "c", "never-sent"], sent, arrived, until=160.0)
    assert got["n"] == 3
    assert got["missing"] == 1
    assert got["lower_bound"] is True
    assert got["max"] == 60000.0
    complete = waits(["a", "b"], sent, arrived, until=160.0)
    assert complete["lower_bound"] is False
    assert complete["max"] == 1000.0


def test_burst_schedule_spreads_each_site_once_evenly_in_a_seeded_order() -> None:
    sites = [f"s{i}" for i in range(10)]
    offsets = schedule(sites, 60.0, seed=3)
    assert sorted(offsets) == sorted(sites)
    assert sorted(offsets.values()) == [i * 6.0 for i in range(10)]
    assert schedule(sites, 60.0, seed=3) == offsets
    assert [s for s, _ in sorted(schedule(sites, 60.0, seed=4).items(), key=lambda kv: kv[1])] != \
        [s for s, _ in sorted(offsets.items(), key=lambda kv: kv[1])]


@pytest.mark.parametrize("argv", [["--sites", "0"], ["--rates", "100,-5"], ["--procs", "0"], ["--capacity-msgs", "1"]])
def test_bench_ingest_refuses_nonsense_arguments(tmp_path: Path, argv: list[str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.json"
    assert main(["bench", "ingest", *argv, "--json", str(out)]) == 2
    assert "must be positive" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("argv", "says"), [
    (["--sites", "3", "--burst-sites", "4"], "--burst-sites (4) is more than --sites (3)"),
    (["--burst-sites", "-1"], "must not be negative"),
    (["--burst-rate", "-10"], "must not be negative"),
    (["--burst-s", "0"], "must be positive"),
    (["--burst-drain", "-1"], "must be positive"),
])
def test_bench_ingest_refuses_a_nonsense_burst(tmp_path: Path, argv: list[str], says: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.json"
    assert main(["bench", "ingest", "--sites", "3", *argv, "--json", str(out)]) == 2
    assert says in capsys.readouterr().err
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
