"""The network early warning offline: FloodNet replayed in time order through the hub's forecaster.

Real data (read from the reference folder; test CSVs are copies of its rows in a temporary
folder), the real CLI, the committed parameters.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.inference import evaluate as ev
from edge.inference.events import FloodEvent, Split, floodnet_csv, load_events
from hub import forecast as fc
from lab import netwarn
from shared.cli import main

MODELS = Path(__file__).resolve().parents[3] / "firmware-configs" / "models"
PARAMS = MODELS / netwarn.PARAMS_FILE
ROW = re.compile(r"^(0|[1-9][0-9]*),(|[0-9]+|[0-9]+\.[0-9]+(e[-+]?[0-9]+)?)$")


def _card() -> dict[str, Any]:
    card: dict[str, Any] = json.loads((MODELS / netwarn.CARD_FILE).read_text(encoding="utf-8"))
    return card


@pytest.fixture(scope="module")
def positions() -> dict[str, tuple[float, float]]:
    return netwarn.load_positions(netwarn.sensor_metadata_csv())


def _busiest_day(events: list[FloodEvent], year: int) -> list[FloodEvent]:
    """The training-year day with the most events (many sensors wet at once)."""
    days = Counter(e.start_time[:10] for e in events if e.year == year)
    day = days.most_common(1)[0][0]
    return [e for e in events if e.start_time[:10] == day]


def _write_rows(path: Path, row_indices: list[int], edit: dict[int, dict[str, str]] | None = None) -> None:
    """A FloodNet-format CSV with the given data rows of the reference file (optionally edited)."""
    with floodnet_csv().open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.DictWriter(fh, fieldnames=fields, quoting=csv.QUOTE_ALL)
        out.writeheader()
        for k, i in enumerate(row_indices):
            out.writerow({**rows[i], **(edit or {}).get(k, {})})


def test_replay_is_in_real_time_order_across_overlapping_events(all_events: list[FloodEvent]) -> None:
    """Every sample once, in absolute time order, though events of different sensors overlap."""
    day = _busiest_day(all_events, 2023)
    order = netwarn.replay_order(floodnet_csv(), day)
    assert len(order) == sum(e.t_secs.size for e in day)
    times = [s.t_abs for s in order]
    assert times == sorted(times)
    # the day's events really overlap: the order interleaves sensors
    switches = sum(1 for a, b in itertools.pairwise(order) if a.event != b.event)
    assert switches > len(day)
    # within one event the samples keep their own order
    for k in range(len(day)):
        assert [s.index for s in order if s.event == k] == list(range(day[k].t_secs.size))


def test_replayed_features_never_see_the_future(
    all_events: list[FloodEvent], positions: dict[str, tuple[float, float]]
) -> None:
    """Flooding every sample after t (all sensors) leaves every feature at or before t unchanged."""
    day = _busiest_day(all_events, 2023)
    order = netwarn.replay_order(floodnet_csv(), day)
    cut = order[len(order) // 2].t_abs
    base = netwarn.replay_features(floodnet_csv(), day, positions)
    altered = []
    for e in day:
        t_abs = netwarn.start_epoch(floodnet_csv(), e) + e.t_secs
        depth = np.where(t_abs > cut, 60.0, e.depth_cm)
        altered.append(FloodEvent(e.row_index, e.sensor_id, e.start_time, e.year, e.t_secs, depth))
    changed = netwarn.replay_features(floodnet_csv(), altered, positions)
    compared = 0
    for e, a, b in zip(day, base, changed, strict=True):
        t_abs = netwarn.start_epoch(floodnet_csv(), e) + a.t_secs
        early = t_abs <= cut
        n = min(a.x.shape[0], b.x.shape[0])
        early = early[:n]
        np.testing.assert_array_equal(a.x[:n][early], b.x[:n][early])
        compared += int(early.sum())
    assert compared > 100
    # and the alteration was seen after the cut: the future is not ignored altogether
    assert any(not np.array_equal(a.x, b.x) for a, b in zip(base, changed, strict=True))


def test_cli_writes_the_flood_clis_csv_format(tmp_path: Path, all_events: list[FloodEvent]) -> None:
    """`model warnings network` writes the same header, rows and number format as `... flood`."""
    rows = [e.row_index for e in _busiest_day(all_events, 2023)]
    events = tmp_path / "events.csv"
    _write_rows(events, rows)
    flood_out, net_out = tmp_path / "flood.csv", tmp_path / "network.csv"
    assert main(["model", "warnings", "flood", "--events", str(events), "--out", str(flood_out)]) == 0
    assert main(["model", "warnings", "network", "--events", str(events), "--out", str(net_out),
                 "--params", str(PARAMS)]) == 0
    flood_lines = flood_out.read_text(encoding="utf-8").splitlines()
    net_lines = net_out.read_text(encoding="utf-8").splitlines()
    assert net_lines[0] == flood_lines[0] == "event_row_index,warning_time_secs"
    assert [ln.split(",")[0] for ln in net_lines[1:]] == [ln.split(",")[0] for ln in flood_lines[1:]]
    assert [ln.split(",")[0] for ln in net_lines[1:]] == [str(i) for i in range(len(rows))]
    assert all(ROW.match(ln) for ln in net_lines[1:])
    # every event that reaches 15 cm gets a close decision at the latest at its crossing
    loaded = load_events(events)
    for e, ln in zip(loaded, net_lines[1:], strict=True):
        _, crossing = ev.samples_before_crossing(e.t_secs, e.depth_cm)
        secs = ln.split(",")[1]
        if crossing is not None:
            assert secs
            assert float(secs) <= crossing


def test_the_cards_test_figures_come_from_the_cli(tmp_path: Path, all_events: list[FloodEvent]) -> None:
    """The CLI's warning times over the whole file give, on the test years, the card's figures."""
    out = tmp_path / "network.csv"
    assert main(["model", "warnings", "network", "--events", str(floodnet_csv()), "--out", str(out),
                 "--params", str(PARAMS)]) == 0
    with out.open(newline="", encoding="utf-8") as fh:
        times = {int(r["event_row_index"]): r["warning_time_secs"] for r in csv.DictReader(fh)}
    outcomes = []
    for e in all_events:
        if e.split is not Split.TEST:
            continue
        _, crossing = ev.samples_before_crossing(e.t_secs, e.depth_cm)
        secs = times[e.row_index]
        outcomes.append(ev.Outcome(crossing, float(secs) if secs else None))
    assert ev.metrics(outcomes).as_dict() == _card()["test"]


def test_card_records_the_parameters_hash() -> None:
    """The card names the parameter file by its SHA-256, and the hub's loader accepts it."""
    card = _card()
    params = fc.load_params(PARAMS, sha256=card["params_sha256"])
    assert params.threshold == card["threshold"]
    assert params.warn_depth_cm == card["warn_depth_cm"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"flood_profile_depth_inches": "[0.1, oops]"}, "data row 1: unreadable profile"),
        ({"flood_profile_depth_inches": "[0.1]"}, "data row 1: depth and time lists differ"),
        ({"flood_start_time": "2023-13-45T99:00:00"}, "data row 1: flood_start_time"),
        ({"flood_start_time": "yesterday"}, "data row 1"),
    ],
)
def test_a_malformed_events_csv_names_the_row(
    tmp_path: Path, all_events: list[FloodEvent], capsys: pytest.CaptureFixture[str], edit: dict[str, str],
    message: str
) -> None:
    """A broken row gives exit 2 and one line naming the file and the row; no CSV is written."""
    rows = [e.row_index for e in _busiest_day(all_events, 2023)][:3]
    events = tmp_path / "events.csv"
    _write_rows(events, rows, {1: edit})
    out = tmp_path / "network.csv"
    code = main(["model", "warnings", "network", "--events", str(events), "--out", str(out),
                 "--params", str(PARAMS)])
    err = capsys.readouterr().err
    assert code == 2
    assert str(events) in err
    assert message in err
    assert "Traceback" not in err
    assert not out.exists()


def test_a_sensor_file_with_a_bad_position_names_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sensor row with an unreadable or impossible position is refused, naming the row."""
    for bad in ("north", "91.5"):
        sensors = tmp_path / "sensors.csv"
        sensors.write_text(f"sensor_id,latitude,longitude\nok,40.7,-73.9\nbroken,{bad},-73.9\n", encoding="utf-8")
        code = main(["model", "warnings", "network", "--events", str(floodnet_csv()), "--out",
                     str(tmp_path / "o.csv"), "--sensors", str(sensors), "--params", str(PARAMS)])
        err = capsys.readouterr().err
        assert code == 2
        assert f"{sensors}: data row 1" in err


def test_flood_only_options_are_refused_for_network(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--variant belongs to the edge model; with `network` it is an error, not silently ignored."""
    code = main(["model", "warnings", "network", "--events", str(floodnet_csv()), "--out",
                 str(tmp_path / "o.csv"), "--variant", "int8"])
    assert code == 2
    assert "--variant" in capsys.readouterr().err


def test_the_markdown_card_is_the_json_card_rendered() -> None:
    """The human card says what the JSON card holds (regenerated from it, never edited by hand)."""
    edge_card = json.loads((MODELS / "flood_rise.json").read_text(encoding="utf-8"))
    params = json.loads(PARAMS.read_text(encoding="utf-8"))
    rendered = netwarn.render_markdown(_card(), params, edge_card)
    assert (MODELS / netwarn.MD_FILE).read_text(encoding="utf-8") == rendered


def test_bench_scores_every_site_each_minute(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bench network` runs the forecaster over N synthetic sites and reports seconds per minute."""
    out = tmp_path / "bench.json"
    assert main(["bench", "network", "--sites", "200", "--minutes", "3", "--params", str(PARAMS),
                 "--json", str(out)]) == 0
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert figures["sites"] == 200
    assert figures["minutes"] == 3
    assert figures["max_secs_per_minute"] >= figures["median_secs_per_minute"] > 0.0
    assert main(["bench", "network", "--sites", "0"]) == 2
    assert "--sites" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([0.2, 0.5, 0.4, 0.9], {0.1: 0.0, 0.2: 0.0, 0.3: 60.0, 0.5: 60.0, 0.6: 180.0, 0.9: 180.0, 0.95: np.inf}),
        ([-np.inf, -np.inf, 0.3], {0.1: 120.0, 0.3: 120.0, 0.31: np.inf}),
        ([], {0.5: np.inf}),
    ],
)
def test_first_times_is_the_first_sample_reaching_each_threshold(scores: list[float],
                                                                 expected: dict[float, float]) -> None:
    """The vectorised first warning per threshold equals the first sample whose score reaches it."""
    t = 60.0 * np.arange(len(scores))
    got = netwarn.first_times(t, np.asarray(scores, dtype=np.float64), np.asarray(list(expected)))
    assert got.tolist() == list(expected.values())


def _events(rng: np.random.Generator, n: int) -> list[netwarn.EventFeatures]:
    """Synthetic events: random features, half of them crossing; depths both sides of the gate."""
    out = []
    for k in range(n):
        m = int(rng.integers(3, 30))
        t = 60.0 * np.arange(m)
        depth = np.sort(rng.uniform(0.0, 14.9, m))
        crossing = float(t[-1] + 60.0 * rng.integers(1, 20)) if k % 2 else None
        x = rng.normal(0.0 if crossing is None else 0.5, 0.3, (m, fc.N_FEATURES))
        x[:, 0] = depth / 15.0
        out.append(netwarn.EventFeatures(crossing, t, depth, x))
    return out


def test_the_two_path_grid_finds_the_pair_the_hubs_own_scoring_ranks_best() -> None:
    """Every pair of thresholds scored through hub.forecast: none beats the grid's pick at the cap."""
    rng = np.random.default_rng(7)
    val = _events(rng, 60)
    w = np.abs(rng.normal(0.0, 1.0, fc.N_FEATURES))
    bg = {"weights": np.abs(rng.normal(0.0, 1.0, fc.N_FEATURES)).tolist(), "bias": 0.0, "threshold_logit": 0.0}
    base = netwarn.params_dict(np.zeros(fc.N_FEATURES), np.ones(fc.N_FEATURES), w, 0.0, 0.5, 1800.0, 10.16, bg)
    i, j = netwarn.grid_two_paths(fc.params_from_dict(base), val)

    def hub_metrics(a: int, b: int) -> ev.Metrics:
        p = fc.params_from_dict({**base, "threshold": netwarn.THRESHOLDS[a],
                                 "below_gate": {**bg, "threshold_logit": netwarn.BELOW_GATE_LOGITS[b]}})
        return ev.metrics_at(netwarn.scored(p, val), p.threshold)

    picked = hub_metrics(i, j)
    assert picked.false_alarm_rate <= netwarn.MAX_FALSE_ALARM_RATE
    assert picked.warned_ge10 > 0
    for a in range(0, len(netwarn.THRESHOLDS), 7):
        for b in range(0, len(netwarn.BELOW_GATE_LOGITS), 6):
            m = hub_metrics(a, b)
            if m.false_alarm_rate <= netwarn.MAX_FALSE_ALARM_RATE:
                assert (m.warned_ge10, m.warned_ge5) <= (picked.warned_ge10, picked.warned_ge5)


def _choice(warned_ge10: int, below_gate: bool) -> netwarn.Choice:
    m = ev.Metrics(positives=250, negatives=400, false_alarms=30, warned_ge5=150, warned_ge10=warned_ge10,
                   median_lead_min=8.0, p25_lead_min=4.0, p10_lead_min=2.0)
    return netwarn.Choice({"label_horizon_secs": 1800.0, "warn_depth_cm": 10.16,
                           "below_gate": {"threshold_logit": 5.0} if below_gate else None}, m)


@pytest.mark.parametrize(("gain", "below_gate_chosen"), [(0, False), (1, False), (4, False), (5, True), (9, True)])
def test_the_below_gate_path_ships_only_past_its_margin(gain: int, below_gate_chosen: bool) -> None:
    """A second path is kept only when it warns BELOW_GATE_MARGIN of the floods (5 of 250) more."""
    picked = netwarn.pick(_choice(100, False), [_choice(100 + gain, True)])
    assert (picked.params["below_gate"] is not None) is below_gate_chosen


def test_the_card_discloses_the_below_gate_path_and_the_third_scoring() -> None:
    """The card lists every below-gate candidate tried on 2024, says which policy shipped and how often
    the test years were scored."""
    card = _card()
    assert card["validation_below_gate"]
    assert card["below_gate_chosen"] is (json.loads(PARAMS.read_text(encoding="utf-8"))["below_gate"] is not None)
    md = (MODELS / netwarn.MD_FILE).read_text(encoding="utf-8")
    assert "scored three times" in md
    assert md.count("+ below-gate path") == len(card["validation_below_gate"])
