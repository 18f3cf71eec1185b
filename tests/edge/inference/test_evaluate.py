"""Scoring rules for lead time and false alarms, on small hand-made events."""

from __future__ import annotations

import numpy as np
import pytest

from edge.inference import evaluate as ev
from edge.inference.decision import should_close


def _scores(crossing: float | None, t: list[float], s: list[float]) -> ev.EventScores:
    return ev.EventScores(crossing, np.array(t), np.array(s))


def test_lead_is_crossing_minus_first_warning() -> None:
    """A positive warned at 60 s and crossing at 900 s has a 14-minute lead."""
    e = _scores(900.0, [0.0, 60.0, 120.0], [0.1, 0.8, 0.9])
    assert ev.lead_secs(ev.first_warning(e, 0.5)) == 840.0


def test_unwarned_positive_has_zero_lead_and_negative_warning_is_false_alarm() -> None:
    """The fallback gives lead 0; a warning in an event that stays below is a false alarm."""
    pos = _scores(600.0, [0.0, 60.0], [0.1, 0.2])
    neg = _scores(None, [0.0, 60.0], [0.1, 0.7])
    m = ev.metrics_at([pos, neg], 0.5)
    assert (m.positives, m.negatives, m.false_alarms, m.warned_ge5) == (1, 1, 1, 0)
    assert m.median_lead_min == 0.0


def test_samples_at_the_crossing_instant_cannot_warn_early() -> None:
    """Only samples strictly before the first 15 cm sample count as early."""
    t = np.array([0.0, 60.0, 120.0, 120.0])
    d = np.array([0.0, 5.0, 14.0, 16.0])
    n, crossing = ev.samples_before_crossing(t, d)
    assert (n, crossing) == (2, 120.0)


def test_choose_threshold_respects_the_false_alarm_cap() -> None:
    """The chosen threshold never exceeds the cap, even when a lower one warns earlier."""
    pos = _scores(1200.0, [0.0, 60.0], [0.4, 0.9])
    neg = _scores(None, [0.0], [0.5])
    th, m = ev.choose_threshold([pos, neg], [0.3, 0.6], max_false_alarm_rate=0.0)
    assert th == 0.6
    assert m.false_alarms == 0
    with pytest.raises(ValueError, match="cap"):
        ev.choose_threshold([neg], [0.3], max_false_alarm_rate=0.0)


@pytest.mark.parametrize(
    ("depth", "warns", "expected"),
    [(3.0, False, False), (3.0, True, True), (15.0, False, True), (14.99, False, False)],
)
def test_should_close_is_forecast_or_fallback(depth: float, warns: bool, expected: bool) -> None:
    """The barrier closes on the forecast, or at 15 cm whatever the forecast says."""
    assert should_close(depth, warns) is expected
