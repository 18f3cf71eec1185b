"""Pure: the flood forecaster's input vector, built causally from the depth history so far.

The edge sees samples ``(t_secs, depth_cm)`` one at a time, roughly one a minute and
irregular. At each sample the forecaster's input is built only from samples up to now:

- the last ``WINDOW_STEPS`` + 1 depths on a fixed ``STEP_SECS`` grid ending now, linearly
  interpolated between samples; before the first sample the first depth is held;
- the least-squares depth slopes over the last 3 and 10 minutes (cm/min), and each divided
  by the gap to the closing depth (the inverse projected time to 15 cm, in 1/10 min, capped
  at ``TTC_CAP``: the rule baseline's own quantity, so the network starts where the rule is);
- the minutes since the first sample (capped at an hour).

Depths are scaled by the closing depth (15 cm) so values stay near [0, 1]; slopes by
1 cm/min. The same function feeds training, evaluation and the edge, so what was measured is
what runs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

CLOSING_DEPTH_CM = 15.0
STEP_SECS = 60.0
WINDOW_STEPS = 15
SLOPE_SHORT_SECS = 180.0
SLOPE_LONG_SECS = 600.0
ELAPSED_CAP_SECS = 3600.0
TTC_CAP = 10.0
# History the features look at: the window (the slopes look at less).
KEEP_SECS = STEP_SECS * WINDOW_STEPS
N_FEATURES = WINDOW_STEPS + 1 + 5

FloatArray = npt.NDArray[np.float64]


def ols_slope(t: FloatArray, d: FloatArray, window_secs: float) -> float:
    """Least-squares slope (per second) of the samples within ``window_secs`` of the last.

    ``t`` and ``d`` hold the history up to now (last element = now). Fewer than two
    samples, or all at one instant, give 0.
    """
    now = t[-1]
    start = int(np.searchsorted(t, now - window_secs, side="left"))
    tt = t[start:]
    dd = d[start:]
    if tt.size < 2:
        return 0.0
    tc = tt - tt.mean()
    denom = float(np.dot(tc, tc))
    if denom <= 0.0:
        return 0.0
    return float(np.dot(tc, dd - dd.mean()) / denom)


def flood_features(t: FloatArray, d: FloatArray, start_secs: float | None = None) -> npt.NDArray[np.float32]:
    """The model input (float32, shape ``(N_FEATURES,)``) for the history ``t``, ``d`` (cm).

    ``start_secs`` is the event's first sample time when ``t`` has been trimmed (the edge
    keeps only :data:`KEEP_SECS` of history); it defaults to ``t[0]``.
    """
    now = t[-1]
    start = float(t[0]) if start_secs is None else start_secs
    grid = now - STEP_SECS * np.arange(WINDOW_STEPS, -1, -1, dtype=np.float64)
    window = np.interp(grid, t, d, left=d[0]) / CLOSING_DEPTH_CM
    short = ols_slope(t, d, SLOPE_SHORT_SECS)
    long = ols_slope(t, d, SLOPE_LONG_SECS)
    gap = max(CLOSING_DEPTH_CM - float(d[-1]), 0.1)
    extra = np.array(
        [
            short * 60.0,
            long * 60.0,
            min(max(short, 0.0) * 600.0 / gap, TTC_CAP),
            min(max(long, 0.0) * 600.0 / gap, TTC_CAP),
            min(now - start, ELAPSED_CAP_SECS) / ELAPSED_CAP_SECS,
        ]
    )
    out: npt.NDArray[np.float32] = np.concatenate([window, extra]).astype(np.float32)
    return out
