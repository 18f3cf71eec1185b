"""Scoring the slope detector: the Lamosano record (real) and Voight-law synthetic failures.

Lamosano (``../shared/data/lamosano-landslide/H_lamo.csv``, read at run time, never copied:
the source has no licence): one point's cumulative displacement every 11 days, 2015–2020.
Binding split: epochs up to 2017-12-31 set the site's noise and background creep; 2018 on is
the test set. There is no failure in it: it scores whether the two rain-driven episodes
(October–November 2018, November 2019) are flagged and how many alerts fall in calm periods.

The synthetic series exercise the failure phase the record lacks: how early the alert comes
and how the inverse-velocity time-of-failure estimate's error shrinks as failure approaches.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import InferenceError
from edge.inference.slope import (
    SECS_PER_DAY,
    FloatArray,
    SlopeAssessment,
    SlopeConfig,
    SlopeDetector,
    SlopeLevel,
    voight_series,
)
from shared.paths import shared_data_dir

TRAIN_END = dt.date(2017, 12, 31)
# The two rain-driven episodes of the test years (README), as windows of epochs.
EPISODES = {
    "2018-10": (dt.date(2018, 10, 1), dt.date(2018, 11, 30)),
    "2019-11": (dt.date(2019, 10, 15), dt.date(2019, 12, 15)),
}
LAMOSANO_WINDOW_DAYS = 22.0  # two 11-day epochs
WATCH_FACTOR = 3.0  # a gated velocity must also be ≥ 3× the background creep


def lamosano_csv() -> Path:
    return shared_data_dir() / "lamosano-landslide" / "H_lamo.csv"


@dataclass(frozen=True)
class Epochs:
    dates: list[dt.date]
    t_secs: FloatArray
    displacement_mm: FloatArray


def load_lamosano(path: Path) -> Epochs:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        dates = [dt.date.fromisoformat(r["date"]) for r in rows]
        disp = np.array([float(r["p5"]) for r in rows])
    except OSError as exc:
        raise InferenceError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (KeyError, ValueError) as exc:
        raise InferenceError(f"{path}: unreadable row: {exc}") from exc
    t = np.array([(d - dates[0]).days * SECS_PER_DAY for d in dates])
    return Epochs(dates, t, disp)


def fit_config(ep: Epochs) -> SlopeConfig:
    """The site's settings from the training epochs (≤ 2017-12-31) only.

    Reading noise: increments between epochs are movement + two readings' noise; with robust
    spread (MAD) of the detrended increments, σ_reading = MAD·1.4826/√2. Background creep:
    the least-squares velocity over the training epochs.
    """
    train = np.array([d <= TRAIN_END for d in ep.dates])
    t_days = ep.t_secs[train] / SECS_PER_DAY
    move = -ep.displacement_mm[train]
    tc = t_days - t_days.mean()
    creep = float(np.dot(tc, move - move.mean()) / np.dot(tc, tc))
    inc = np.diff(move) - creep * np.diff(t_days)
    mad = float(np.median(np.abs(inc - np.median(inc))))
    noise = mad * 1.4826 / np.sqrt(2.0)
    return SlopeConfig(
        noise_mm=round(noise, 3),
        baseline_mm_per_day=round(creep, 4),
        watch_mm_per_day=round(WATCH_FACTOR * creep, 4),
        velocity_window_days=LAMOSANO_WINDOW_DAYS,
    )


def run_detector(cfg: SlopeConfig, t_secs: FloatArray, disp: FloatArray) -> list[SlopeAssessment]:
    det = SlopeDetector(cfg)
    return [det.update(float(t), float(d)) for t, d in zip(t_secs, disp, strict=True)]


def lamosano_report() -> dict[str, Any]:
    ep = load_lamosano(lamosano_csv())
    cfg = fit_config(ep)
    out = run_detector(cfg, ep.t_secs, ep.displacement_mm)
    alerts = [(d, a) for d, a in zip(ep.dates, out, strict=True) if a.level >= SlopeLevel.WATCH]

    def in_episode(d: dt.date) -> str | None:
        return next((k for k, (a, b) in EPISODES.items() if a <= d <= b), None)

    test_alerts = [(d, a) for d, a in alerts if d > TRAIN_END]
    calm = [(d, a) for d, a in test_alerts if in_episode(d) is None]
    test_epochs = sum(1 for d in ep.dates if d > TRAIN_END)
    calm_epochs = sum(1 for d in ep.dates if d > TRAIN_END and in_episode(d) is None)
    return {
        "config": cfg.__dict__,
        "episodes_flagged": {
            k: sorted({f"{d.isoformat()} {a.level.name.lower()}" for d, a in test_alerts if in_episode(d) == k})
            for k in EPISODES
        },
        "test_epochs": test_epochs,
        "calm_test_epochs": calm_epochs,
        "calm_alerts": [f"{d.isoformat()} {a.level.name.lower()} v={a.velocity_mm_per_day:.3f}" for d, a in calm],
        "train_alerts": [f"{d.isoformat()} {a.level.name.lower()}" for d, a in alerts if d <= TRAIN_END],
        "max_level_test": max((a.level for _, a in test_alerts), default=SlopeLevel.NORMAL).name,
    }


# Synthetic: an automatic meter read every 6 hours, 60 days to failure.
SYN_STEP_SECS = 6 * 3600.0
SYN_DAYS = 60.0
SYN_CONFIG = SlopeConfig(
    noise_mm=0.5,
    baseline_mm_per_day=0.06,
    watch_mm_per_day=0.18,
    velocity_window_days=2.0,
    tof_points=8,
)


def synthetic_report(n_series: int = 20, seed: int = 7) -> dict[str, Any]:
    """Alert lead and time-of-failure error over ``n_series`` Voight-law series."""
    rng = np.random.default_rng(seed)
    leads: dict[str, list[float]] = {"watch": [], "warning": [], "alarm": []}
    tof_err: dict[int, list[float]] = {10: [], 5: [], 2: [], 1: []}
    missed_alarm = 0
    for _ in range(n_series):
        a = float(rng.uniform(0.02, 0.2))  # 1/mm: 1/v 10 days out is 0.2–2 day/mm
        tf = SYN_DAYS * SECS_PER_DAY
        t = np.arange(0.0, tf - SYN_STEP_SECS / 2, SYN_STEP_SECS)
        disp = voight_series(t, tf, a, SYN_CONFIG.baseline_mm_per_day, SYN_CONFIG.noise_mm, rng)
        out = run_detector(SYN_CONFIG, t, disp)
        for name, lvl in (("watch", SlopeLevel.WATCH), ("warning", SlopeLevel.WARNING), ("alarm", SlopeLevel.ALARM)):
            first = next((x.t_secs for x in out if x.level >= lvl), None)
            if first is not None:
                leads[name].append((tf - first) / SECS_PER_DAY)
            elif lvl is SlopeLevel.ALARM:
                missed_alarm += 1
        for days_before in tof_err:
            at = tf - days_before * SECS_PER_DAY
            x = min(out, key=lambda s: abs(s.t_secs - at))
            if x.time_of_failure_secs is not None:
                tof_err[days_before].append(abs(x.time_of_failure_secs - tf) / SECS_PER_DAY)
    return {
        "series": n_series,
        "alert_lead_days_median": {k: (round(float(np.median(v)), 2) if v else None) for k, v in leads.items()},
        "alert_lead_days_min": {k: (round(float(np.min(v)), 2) if v else None) for k, v in leads.items()},
        "series_without_alarm": missed_alarm,
        "tof_abs_error_days_median": {
            f"{k}d_before": (round(float(np.median(v)), 2) if v else None) for k, v in tof_err.items()
        },
        "tof_estimates_available": {f"{k}d_before": len(v) for k, v in tof_err.items()},
    }
