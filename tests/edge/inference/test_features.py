"""The flood features in plain Python equal the numpy version's float32 values on real events."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge.inference import features as f
from edge.inference.events import FloodEvent


def _numpy_ols_slope(t: npt.NDArray[np.float64], d: npt.NDArray[np.float64], window_secs: float) -> float:
    """The numpy definition the model was trained with (edge/inference/features.py before issue 17)."""
    start = int(np.searchsorted(t, t[-1] - window_secs, side="left"))
    tt, dd = t[start:], d[start:]
    if tt.size < 2:
        return 0.0
    tc = tt - tt.mean()
    denom = float(np.dot(tc, tc))
    if denom <= 0.0:
        return 0.0
    return float(np.dot(tc, dd - dd.mean()) / denom)


def _numpy_features(t: npt.NDArray[np.float64], d: npt.NDArray[np.float64]) -> list[float]:
    now = t[-1]
    grid = now - f.STEP_SECS * np.arange(f.WINDOW_STEPS, -1, -1, dtype=np.float64)
    window = np.interp(grid, t, d, left=d[0]) / f.CLOSING_DEPTH_CM
    short = _numpy_ols_slope(t, d, f.SLOPE_SHORT_SECS)
    long = _numpy_ols_slope(t, d, f.SLOPE_LONG_SECS)
    gap = max(f.CLOSING_DEPTH_CM - float(d[-1]), 0.1)
    extra = np.array([short * 60.0, long * 60.0, min(max(short, 0.0) * 600.0 / gap, f.TTC_CAP),
                      min(max(long, 0.0) * 600.0 / gap, f.TTC_CAP),
                      min(now - t[0], f.ELAPSED_CAP_SECS) / f.ELAPSED_CAP_SECS])
    out: list[float] = np.concatenate([window, extra]).astype(np.float32).tolist()
    return out


def test_features_equal_the_numpy_version_on_every_test_year_sample(test_events: list[FloodEvent]) -> None:
    """Every prefix of every 2025–26 event gives the same 21 float32 values both ways."""
    compared = 0
    for e in test_events:
        for n in range(1, e.t_secs.size + 1):
            t, d = e.t_secs[:n], e.depth_cm[:n]
            assert f.flood_features(t, d) == _numpy_features(t, d), f"event {e.sensor_id} sample {n}"
            compared += 1
    assert compared > 50_000


def test_pairwise_sum_is_numpys() -> None:
    """The means use numpy's summation order, which differs from left to right past 8 values."""
    rng = np.random.default_rng(3)
    for n in (1, 7, 8, 9, 16, 17, 127, 128, 129, 300, 1000):
        x = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 9, size=n)
        assert f._sum(x.tolist()) == float(np.add.reduce(x))


def test_interpolation_is_numpys_at_edges_and_repeated_times() -> None:
    """Before the first sample, on a sample, between samples, at repeated times and at the end."""
    t = [0.0, 60.0, 60.0, 150.0, 200.0]
    d = [1.0, 2.0, 5.0, 3.0, 7.5]
    for x in (-100.0, 0.0, 30.0, 60.0, 61.0, 149.999, 150.0, 199.0, 200.0):
        assert f._interp(x, t, d, d[0]) == float(np.interp(x, t, d, left=d[0]))


def test_features_accept_plain_lists_and_arrays_alike() -> None:
    t = [0.0, 55.0, 130.0, 170.0]
    d = [0.5, 2.0, 4.5, 6.0]
    assert f.flood_features(t, d) == f.flood_features(np.asarray(t), np.asarray(d)) == _numpy_features(
        np.asarray(t), np.asarray(d))
    assert len(f.flood_features(t, d)) == f.N_FEATURES
