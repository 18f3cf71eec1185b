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
what runs. It is plain Python (the edge's runtime path imports no numpy; training wraps the
result in an array) and gives the float32 values the numpy version gave: sums are taken in
numpy's order (pairwise for means, left to right for dot products), interpolation as
``np.interp`` does it (tests/edge/inference/test_features.py compares them on every sample).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Protocol

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

class Series(Protocol):
    """Sample times (s, non-decreasing) or depths (cm): a list, or a numpy array in training."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int, /) -> float: ...


def _sum(x: Sequence[float]) -> float:
    """numpy's pairwise sum (its ``mean`` uses it): eight accumulators in blocks of up to 128."""
    n = len(x)
    if n < 8:
        total = 0.0
        for v in x:
            total += v
        return total
    if n <= 128:
        r = list(x[:8])
        i = 8
        while i < n - n % 8:
            for k in range(8):
                r[k] += x[i + k]
            i += 8
        total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for v in x[i:]:
            total += v
        return total
    half = n // 2
    half -= half % 8
    return _sum(x[:half]) + _sum(x[half:])


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    total = 0.0
    for u, v in zip(a, b, strict=True):
        total += u * v
    return total


def ols_slope(t: Series, d: Series, window_secs: float) -> float:
    """Least-squares slope (per second) of the samples within ``window_secs`` of the last.

    ``t`` and ``d`` hold the history up to now (last element = now). Fewer than two
    samples, or all at one instant, give 0.
    """
    now = float(t[len(t) - 1])
    start = bisect_left(t, now - window_secs)
    tt = [float(t[i]) for i in range(start, len(t))]
    dd = [float(d[i]) for i in range(start, len(d))]
    n = len(tt)
    if n < 2:
        return 0.0
    t_mean = _sum(tt) / n
    tc = [v - t_mean for v in tt]
    denom = _dot(tc, tc)
    if denom <= 0.0:
        return 0.0
    d_mean = _sum(dd) / n
    return _dot(tc, [v - d_mean for v in dd]) / denom


def _interp(x: float, t: Sequence[float], d: Sequence[float], left: float) -> float:
    """``np.interp(x, t, d, left=left)`` for one point (``x`` never beyond the last sample)."""
    j = bisect_right(t, x) - 1
    if j < 0:
        return left
    if j >= len(t) - 1 or t[j] == x:
        return d[j]
    slope = (d[j + 1] - d[j]) / (t[j + 1] - t[j])
    out = slope * (x - t[j]) + d[j]
    if out != out:  # NaN one way: numpy tries the other
        out = slope * (x - t[j + 1]) + d[j + 1]
        if out != out and d[j] == d[j + 1]:
            out = d[j]
    return out


def flood_features(t: Series, d: Series, start_secs: float | None = None) -> list[float]:
    """The model input (``N_FEATURES`` float32 values) for the history ``t``, ``d`` (cm).

    ``start_secs`` is the event's first sample time when ``t`` has been trimmed (the edge
    keeps only :data:`KEEP_SECS` of history); it defaults to ``t[0]``.
    """
    tl = [float(t[i]) for i in range(len(t))]
    dl = [float(d[i]) for i in range(len(d))]
    now = tl[-1]
    start = tl[0] if start_secs is None else start_secs
    window = [_interp(now - STEP_SECS * k, tl, dl, dl[0]) / CLOSING_DEPTH_CM for k in range(WINDOW_STEPS, -1, -1)]
    short = ols_slope(tl, dl, SLOPE_SHORT_SECS)
    long = ols_slope(tl, dl, SLOPE_LONG_SECS)
    gap = max(CLOSING_DEPTH_CM - dl[-1], 0.1)
    extra = [
        short * 60.0,
        long * 60.0,
        min(max(short, 0.0) * 600.0 / gap, TTC_CAP),
        min(max(long, 0.0) * 600.0 / gap, TTC_CAP),
        min(now - start, ELAPSED_CAP_SECS) / ELAPSED_CAP_SECS,
    ]
    return array("f", window + extra).tolist()
