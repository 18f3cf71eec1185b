"""Pure: the rule baseline for early closing — the depth trend projected ahead.

At each sample: the least-squares depth slope over the last 10 minutes, projected
``horizon`` ahead; warn when the projection reaches the closing depth, but only once the
depth itself is at least 4 in (10.16 cm), so ripples on a dry road do not warn.

As a score: ``slope / (closing - depth)`` is the inverse of the projected time to the
closing depth, and the rule warns when it is at least ``1 / horizon``. Sweeping the horizon
traces the rule's lead-time / false-alarm curve. The horizon (7 minutes) was chosen on the
training years (2020–2024) as the one with the most positives warned 10 minutes ahead at no
more than 10% false alarms (``jikimi model train flood`` recomputes the choice).
"""

from __future__ import annotations

from edge.inference.features import CLOSING_DEPTH_CM, SLOPE_LONG_SECS, Series, ols_slope

CM_PER_INCH = 2.54
ARM_DEPTH_CM = 4.0 * CM_PER_INCH
HORIZON_SECS = 420.0


def rule_score(t: Series, d: Series, closing_depth_cm: float = CLOSING_DEPTH_CM) -> float:
    """Inverse projected time to the closing depth (1/s); 0 when not armed or not rising.

    ``t``, ``d`` (cm) are the history up to now. At or above the closing depth the score is
    infinite (the fallback closes anyway).
    """
    depth = float(d[len(d) - 1])
    if depth < ARM_DEPTH_CM:
        return 0.0
    gap = closing_depth_cm - depth
    if gap <= 0.0:
        return float("inf")
    slope = ols_slope(t, d, SLOPE_LONG_SECS)
    return max(slope, 0.0) / gap


def rule_warns(t: Series, d: Series, horizon_secs: float = HORIZON_SECS) -> bool:
    """True when the 10-minute trend reaches the closing depth within ``horizon_secs``."""
    return rule_score(t, d) >= 1.0 / horizon_secs
