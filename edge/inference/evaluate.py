"""Pure: scoring early warnings over flood events — lead time and false alarms.

The task, exactly as the issue states it. The edge watches each event's depth series
causally and may warn ("close now") early; at the closing depth (15 cm) it always closes.

- An event is *positive* when some sample reaches the closing depth; its crossing time is the
  first such sample's time. Lead time = crossing time − time of the first warning, counting
  only warnings before the crossing; a positive never warned early has lead 0 (the fallback).
- An event that stays below is *negative*; any warning in it is a false alarm.
- Figures: median / p25 / p10 lead (minutes, over all positives, numpy's linear
  percentiles), the share of positives warned ≥ 5 and ≥ 10 minutes ahead, and the
  false-alarm rate (share of negatives with a warning).

A scorer maps the history so far to a number; a warning is the first sample whose score is
at least the threshold. Running every threshold over the same per-sample scores traces the
lead-time / false-alarm curve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge.inference.events import FloatArray
from edge.inference.features import CLOSING_DEPTH_CM

Scorer = Callable[[FloatArray, FloatArray], float]


@dataclass(frozen=True)
class EventScores:
    """Per-sample scores of one event, for the samples before its crossing (if any)."""

    crossing_secs: float | None
    t_secs: FloatArray
    scores: FloatArray


@dataclass(frozen=True)
class Outcome:
    """One event's result: its crossing time (None if negative) and first early warning."""

    crossing_secs: float | None
    warning_secs: float | None


@dataclass(frozen=True)
class Metrics:
    """Lead-time / false-alarm figures over a set of events."""

    positives: int
    negatives: int
    false_alarms: int
    warned_ge5: int
    warned_ge10: int
    median_lead_min: float
    p25_lead_min: float
    p10_lead_min: float

    @property
    def false_alarm_rate(self) -> float:
        return self.false_alarms / self.negatives if self.negatives else 0.0

    @property
    def share_ge5(self) -> float:
        return self.warned_ge5 / self.positives if self.positives else 0.0

    @property
    def share_ge10(self) -> float:
        return self.warned_ge10 / self.positives if self.positives else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "positives": self.positives,
            "negatives": self.negatives,
            "false_alarms": self.false_alarms,
            "false_alarm_rate": round(self.false_alarm_rate, 4),
            "warned_ge5": self.warned_ge5,
            "share_ge5": round(self.share_ge5, 4),
            "warned_ge10": self.warned_ge10,
            "share_ge10": round(self.share_ge10, 4),
            "median_lead_min": round(self.median_lead_min, 4),
            "p25_lead_min": round(self.p25_lead_min, 4),
            "p10_lead_min": round(self.p10_lead_min, 4),
        }


def crossing_index(d: FloatArray, closing_depth_cm: float = CLOSING_DEPTH_CM) -> int | None:
    """Index of the first sample at or above the closing depth, or None."""
    hits = np.nonzero(d >= closing_depth_cm)[0]
    return int(hits[0]) if hits.size else None


def samples_before_crossing(t: FloatArray, d: FloatArray) -> tuple[int, float | None]:
    """How many leading samples can warn early, and the crossing time (None if negative).

    A sample at the crossing instant itself cannot warn early, even if it comes first.
    """
    ci = crossing_index(d)
    if ci is None:
        return t.size, None
    crossing = float(t[ci])
    return int(np.searchsorted(t[:ci], crossing, side="left")), crossing


def score_event(t: FloatArray, d: FloatArray, scorer: Scorer) -> EventScores:
    """Score every sample that could warn early, each from the history up to it."""
    n, crossing = samples_before_crossing(t, d)
    scores = np.array([scorer(t[: i + 1], d[: i + 1]) for i in range(n)], dtype=np.float64)
    return EventScores(crossing_secs=crossing, t_secs=t[:n].copy(), scores=scores)


def first_warning(ev: EventScores, threshold: float) -> Outcome:
    """The event's outcome when warning at the first score ≥ ``threshold``."""
    hits = np.nonzero(ev.scores >= threshold)[0]
    warning = float(ev.t_secs[hits[0]]) if hits.size else None
    return Outcome(crossing_secs=ev.crossing_secs, warning_secs=warning)


def lead_secs(outcome: Outcome) -> float:
    """Lead time of a positive event (0 when not warned before the crossing)."""
    if outcome.crossing_secs is None:
        raise ValueError("lead time is defined for positive events only")
    if outcome.warning_secs is None or outcome.warning_secs >= outcome.crossing_secs:
        return 0.0
    return outcome.crossing_secs - outcome.warning_secs


def metrics(outcomes: Sequence[Outcome]) -> Metrics:
    """The figures for a set of event outcomes."""
    leads = np.array([lead_secs(o) for o in outcomes if o.crossing_secs is not None]) / 60.0
    negatives = [o for o in outcomes if o.crossing_secs is None]
    false_alarms = sum(1 for o in negatives if o.warning_secs is not None)
    if leads.size:
        p10, p25, p50 = (float(x) for x in np.percentile(leads, [10, 25, 50]))
    else:
        p10 = p25 = p50 = 0.0
    return Metrics(
        positives=int(leads.size),
        negatives=len(negatives),
        false_alarms=false_alarms,
        warned_ge5=int(np.sum(leads >= 5.0)),
        warned_ge10=int(np.sum(leads >= 10.0)),
        median_lead_min=p50,
        p25_lead_min=p25,
        p10_lead_min=p10,
    )


def metrics_at(scored: Sequence[EventScores], threshold: float) -> Metrics:
    return metrics([first_warning(ev, threshold) for ev in scored])


def curve(scored: Sequence[EventScores], thresholds: Sequence[float]) -> list[Metrics]:
    """Metrics at each threshold (the lead-time / false-alarm curve)."""
    return [metrics_at(scored, th) for th in thresholds]


def choose_threshold(
    scored: Sequence[EventScores], thresholds: Sequence[float], max_false_alarm_rate: float
) -> tuple[float, Metrics]:
    """The threshold with the most positives warned ≥ 10 min at ≤ the false-alarm cap.

    Ties go to more positives warned ≥ 5 min, then to the higher threshold (fewer alarms).
    Raises ValueError when no threshold meets the cap.
    """
    best: tuple[tuple[int, int, float], float, Metrics] | None = None
    for th, m in zip(thresholds, curve(scored, thresholds), strict=True):
        if m.false_alarm_rate > max_false_alarm_rate:
            continue
        key = (m.warned_ge10, m.warned_ge5, th)
        if best is None or key > best[0]:
            best = (key, th, m)
    if best is None:
        raise ValueError("no threshold meets the false-alarm cap")
    return best[1], best[2]
