"""The slope detector on the real Lamosano record (test years) and on Voight-law failures."""

from __future__ import annotations

import numpy as np

from edge.inference import slope_eval
from edge.inference.slope import SECS_PER_DAY, SlopeConfig, SlopeDetector, SlopeLevel


def test_both_test_year_episodes_are_flagged_with_few_calm_alerts() -> None:
    """October 2018 and November 2019 reach warning; calm-period alerts stay ≤ 5 of 59 epochs."""
    r = slope_eval.lamosano_report()
    for name in ("2018-10", "2019-11"):
        assert any(s.endswith("warning") for s in r["episodes_flagged"][name]), name
    assert r["calm_test_epochs"] == 59
    assert len(r["calm_alerts"]) <= 5
    assert r["max_level_test"] != "ALARM"  # no failure in the record, no alarm


def test_site_settings_come_from_training_epochs_only() -> None:
    """Changing a test-year epoch does not change the fitted noise or creep."""
    ep = slope_eval.load_lamosano(slope_eval.lamosano_csv())
    cfg = slope_eval.fit_config(ep)
    changed = ep.displacement_mm.copy()
    changed[-1] -= 500.0
    cfg2 = slope_eval.fit_config(slope_eval.Epochs(ep.dates, ep.t_secs, changed))
    assert cfg == cfg2


def test_synthetic_failures_alarm_ahead_with_shrinking_error() -> None:
    """Every Voight-law series alarms before failure; the 1/v estimate is within a day at 1 day."""
    r = slope_eval.synthetic_report()
    assert r["series_without_alarm"] == 0
    assert r["alert_lead_days_min"]["alarm"] > 0.0
    assert r["alert_lead_days_median"]["warning"] > r["alert_lead_days_median"]["alarm"]
    assert r["tof_abs_error_days_median"]["1d_before"] < 1.0


def test_steady_creep_with_noise_rarely_alerts() -> None:
    """Over 40 calm 120-day series (creep + 0.5 mm noise), at most 3 ever leave normal."""
    cfg = SlopeConfig(noise_mm=0.5, baseline_mm_per_day=0.06, watch_mm_per_day=0.18, velocity_window_days=2.0)
    t = np.arange(0.0, 120 * SECS_PER_DAY, 6 * 3600.0)
    alerted = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        det = SlopeDetector(cfg)
        disp = -(0.06 * t / SECS_PER_DAY + rng.normal(0.0, 0.5, t.size))
        levels = [det.update(float(a), float(b)).level for a, b in zip(t, disp, strict=True)]
        alerted += any(lvl > SlopeLevel.NORMAL for lvl in levels)
    assert alerted <= 3
