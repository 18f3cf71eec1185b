"""`jikimi bench latency` runs the real deployment and reports every stage of every trial (a smoke
run: the figures themselves are the benchmark's, never asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

from shared.cli import main


def test_bench_latency_times_each_trial_from_the_crossing_to_write_alarm_cap_ack_and_snapshot(tmp_path: Path) -> None:
    out = tmp_path / "latency.json"
    assert main(["bench", "latency", "--trials", "2", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["machine"]["cores"] >= 1
    assert doc["trials"] == 2
    for stage in ("crossing_to_write_ms", "crossing_to_alarm_ms", "crossing_to_cap_ack_ms", "alarm_to_snapshot_ms"):
        row = doc[stage]
        assert row["n"] == 2, f"{stage}: a trial was not measured"
        assert 0 < row["p50"] <= row["p99"] <= row["max"]
    assert doc["live_view_startup_ms"]["n"] == doc["live_views"], "a live view showed no picture"
