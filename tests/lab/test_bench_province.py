"""`jikimi bench province` with tiny numbers: simulated city outboxes and senders against a real
provincial Mosquitto and a real `jikimi province run`; the report's shape, and every record
committed exactly once (checked in the province's own file). The figures are never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.bench_province import Settings, bracket, next_rate
from province.store import ProvinceStore
from shared.cli import main


def test_bench_province_reports_its_sweep_limit_broker_reference_and_catch_up_and_loses_nothing(
        tmp_path: Path) -> None:
    out, run = tmp_path / "province.json", tmp_path / "run"
    assert main(["bench", "province", "--cities", "3", "--rate", "60", "--max-steps", "2", "--warmup-s", "0.5",
                 "--step-s", "2", "--drain-s", "15", "--outage-s", "20", "--sites-per-city", "20",
                 "--capacity-msgs", "200", "--dir", str(run), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert {"machine", "cities", "sweep", "limit", "broker_reference", "ratio", "catch_up",
            "exactly_once"} <= doc.keys()
    assert doc["cities"] == 3
    assert 1 <= len(doc["sweep"]) <= 2
    assert doc["sweep"][0]["offered_records_per_s"] == 60.0
    for row in doc["sweep"]:
        assert {"offered_records_per_s", "generated_records_per_s", "committed_records_per_s", "p50_ms", "p99_ms",
                "kept_up", "why_not", "cores_used"} <= row.keys()
        assert row["kept_up"] == (row["why_not"] is None)
    assert {"sustained_records_per_s", "broke_at_records_per_s", "why"} <= doc["limit"].keys()
    assert doc["broker_reference"]["msgs"] == 200
    assert doc["broker_reference"]["records_per_s"] > 0
    catch = doc["catch_up"]
    assert catch["backlog_records"] == 3 * 400  # 60 records/s for 20 s, over 3 cities
    assert catch["not_committed"] == 0
    assert catch["seconds"] is not None
    assert catch["records_replayed"] >= catch["backlog_records"], "the backlog came through the outboxes' replay"
    assert doc["exactly_once"]["ok"], doc["exactly_once"]
    # and in the province's own file: every city's seqs 1..N, once each, N what the city appended
    store = ProvinceStore(run / "province" / "province.db")
    try:
        for city, appended in doc["records_per_city"].items():
            committed = store.committed(city)
            assert len({e for e, _, _ in committed}) == 1
            assert [s for _, s, _ in committed] == list(range(1, appended + 1)), city
        assert sum(v.records for v in store.cities(0.0)) == doc["exactly_once"]["records_appended"]
        assert store.quarantined() == []
    finally:
        store.close()


@pytest.mark.parametrize(("argv", "says"), [
    (["--cities", "0"], "--cities"),
    (["--rate", "-5"], "--rate"),
    (["--rate", "nan"], "--rate"),
    (["--factor", "1"], "--factor"),
    (["--outage-s", "-1"], "--outage-s"),
    (["--capacity-msgs", "1"], "--capacity-msgs"),
    (["--sites-per-city", "0"], "--sites-per-city"),
    (["--cities", "1", "--rate", "1000", "--outage-s", "600"], "would be thinned"),
])
def test_bench_province_refuses_nonsense_arguments_before_starting_anything(
        tmp_path: Path, argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    out, run = tmp_path / "x.json", tmp_path / "run"
    assert main(["bench", "province", *argv, "--dir", str(run), "--json", str(out)]) == 2
    assert says in capsys.readouterr().err
    assert not out.exists()
    assert not run.exists()


def _row(rate: float, kept: bool) -> dict[str, object]:
    return {"offered_records_per_s": rate, "kept_up": kept}


@pytest.mark.parametrize(("rows", "nxt"), [
    ([(1200, True)], 1800.0),  # up by the factor while kept up
    ([(1200, True), (1800, True)], 2700.0),
    ([(1200, False)], 533.3),  # the typhoon rate itself too much: down by the factor squared
    ([(1200, False), (533.3, False)], 237.0),
    ([(1200, False), (533.3, True)], 800.0),  # then the middle of the bracket
    ([(1200, True), (2700, False)], 1800.0),
    ([(1200, True), (1800, False)], None),  # within the factor: done
])
def test_the_sweep_brackets_the_limit(rows: list[tuple[float, bool]], nxt: float | None) -> None:
    assert next_rate([_row(r, k) for r, k in rows], 1.5) == nxt


def test_the_limit_is_the_highest_step_kept_up_and_it_broke_at_the_lowest_step_above_it() -> None:
    best, broke = bracket([_row(1200, True), _row(2700, False), _row(1800, False), _row(600, True)])
    assert best is not None
    assert best["offered_records_per_s"] == 1200
    assert broke is not None
    assert broke["offered_records_per_s"] == 1800
    assert bracket([_row(1200, False)]) == (None, _row(1200, False))


def test_the_default_settings_are_consistent() -> None:
    Settings().check()
