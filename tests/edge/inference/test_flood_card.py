"""The shipped flood card: its figures come out again from the committed files, runtime only."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from edge.inference import evaluate as ev
from edge.inference import report, rule
from edge.inference.cli import first_close_secs
from edge.inference.events import FloodEvent, Split, floodnet_csv, select
from edge.inference.flood import FloodForecaster, Policy, default_card_path
from edge.inference.runtime import sha256_file
from shared.cli import main


def _card() -> dict[str, object]:
    card: dict[str, object] = json.loads(default_card_path().read_text(encoding="utf-8"))
    return card


def test_rule_baseline_reproduces_the_issue_figures(test_events: list[FloodEvent]) -> None:
    """The 7-minute, 4-inch-armed rule gives 62% ≥5 min, 17% ≥10 min, 6.0 min, 5.8% FA."""
    m = ev.metrics_at(report.rule_scored(test_events), 1.0 / rule.HORIZON_SECS)
    assert (m.positives, m.negatives) == (201, 829)
    assert round(m.share_ge5, 2) == 0.62
    assert round(m.share_ge10, 2) == 0.17
    assert m.median_lead_min == 6.0
    assert round(m.false_alarm_rate, 3) == 0.058
    oracle = ev.metrics([ev.Outcome(e.crossing_secs, 0.0) for e in report.rule_scored(test_events)])
    assert round(oracle.share_ge10, 2) == 0.78


def test_rule_horizon_is_the_one_chosen_on_training_years(all_events: list[FloodEvent]) -> None:
    """Choosing the horizon on 2020–2024 at ≤ 10% false alarms gives 7 minutes."""
    scored = report.rule_scored(select(all_events, Split.TRAIN))
    th, m = ev.choose_threshold(scored, report.rule_thresholds(), report.MAX_FALSE_ALARM_RATE)
    assert round(1.0 / th) == rule.HORIZON_SECS
    assert m.false_alarm_rate <= 0.10


def test_card_test_figures_are_reproduced_exactly(test_events: list[FloodEvent]) -> None:
    """Rule, float and int8: operating points and curves on 2025–2026 equal the card's."""
    card = _card()
    figures = report.test_figures(default_card_path(), test_events)
    rule_card = card["rule"]
    assert isinstance(rule_card, dict)
    assert figures["rule"]["test"] == rule_card["test"]
    assert figures["rule"]["curve_test"] == rule_card["curve_test"]
    models = card["models"]
    assert isinstance(models, dict)
    for variant in ("float", "int8"):
        assert figures[variant]["test"] == models[variant]["test"], variant
        assert figures[variant]["curve_test"] == models[variant]["curve_test"], variant
    assert "tensorflow" not in sys.modules


def test_card_hashes_and_markdown_match_the_files() -> None:
    """The JSON card names each file's SHA-256, and the Markdown card is rendered from it."""
    card = _card()
    models = card["models"]
    assert isinstance(models, dict)
    for entry in models.values():
        assert sha256_file(default_card_path().parent / entry["file"]) == entry["sha256"]
    md = default_card_path().with_suffix(".md").read_text(encoding="utf-8")
    assert md == report.render_markdown(card)


def test_shipped_policy_follows_the_verdict() -> None:
    """The model is in charge only if it beat the rule on the validation year."""
    card = _card()
    models = card["models"]
    assert isinstance(models, dict)
    beats = models[str(card["shipped_variant"])]["beats_rule_on_validation"]
    assert card["in_charge"] == ("model" if beats else "rule")


def test_warnings_command_agrees_with_the_card(tmp_path: Path, test_events: list[FloodEvent]) -> None:
    """Scoring `jikimi model warnings` output on the test years gives the card's figures."""
    src = floodnet_csv()
    subset = tmp_path / "test-events.csv"
    wanted = {e.row_index for e in test_events}
    with src.open(newline="", encoding="utf-8") as fin, subset.open("w", newline="") as fout:
        reader = csv.reader(fin)
        writer = csv.writer(fout, quoting=csv.QUOTE_ALL)
        writer.writerow(next(reader))
        for i, row in enumerate(reader):
            if i in wanted:
                writer.writerow(row)
    out = tmp_path / "warnings.csv"
    assert main(["model", "warnings", "flood", "--events", str(subset), "--out", str(out)]) == 0
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(test_events)
    outcomes = []
    for e, rec in zip(test_events, rows, strict=True):
        _, crossing = ev.samples_before_crossing(e.t_secs, e.depth_cm)
        w = rec["warning_time_secs"]
        outcomes.append(ev.Outcome(crossing, float(w) if w else None))
    card = _card()
    in_charge = card["in_charge"]
    models = card["models"]
    rule_card = card["rule"]
    assert isinstance(models, dict)
    assert isinstance(rule_card, dict)
    expected = rule_card["test"] if in_charge == "rule" else models[str(card["shipped_variant"])]["test"]
    assert ev.metrics(outcomes).as_dict() == expected


def test_first_close_is_the_first_forecast_or_fallback(test_events: list[FloodEvent]) -> None:
    """With the rule deciding, an event it never warns early closes exactly at the 15 cm sample."""
    fc = FloodForecaster(policy=Policy.RULE)
    try:
        for e in test_events:
            n, crossing = ev.samples_before_crossing(e.t_secs, e.depth_cm)
            if crossing is not None and not any(
                rule.rule_warns(e.t_secs[: i + 1], e.depth_cm[: i + 1]) for i in range(n)
            ):
                assert first_close_secs(fc, e) == crossing
                return
    finally:
        fc.close()
    raise AssertionError("no unwarned positive in the test years")
