"""Pure: slope-acceleration detection — velocity, acceleration, inverse-velocity time of failure.

Fed displacement samples ``(t_secs, displacement_mm)`` of one meter in order; each sample
gives a :class:`SlopeAssessment` with a graded :class:`SlopeLevel`.

Rules (all per site, from :class:`SlopeConfig`):

- Movement is measured downslope: ``movement = downslope_sign * displacement``.
- Velocity (mm/day) is the least-squares slope over the last ``velocity_window_days``;
  its standard error comes from the meter's reading noise ``noise_mm`` (σ of one reading).
- Noise gate: a velocity counts only when it exceeds the site's background creep
  ``baseline_mm_per_day`` by ``z`` standard errors *and* is at least ``watch_mm_per_day``.
- Acceleration: the current window's velocity against the previous, non-overlapping
  window's; it counts when the difference exceeds ``z`` combined standard errors.
- Levels: ``normal``; ``watch`` — gated velocity; ``warning`` — gated velocity and gated
  acceleration; ``alarm`` — acceleration has persisted for ``persist_samples`` consecutive
  samples and the inverse-velocity (Fukuzono) time of failure is within
  ``alarm_horizon_days``.
- Time of failure (Fukuzono 1985): while acceleration persists, fit a line to 1/velocity
  over the gated velocities of the last ``tof_points`` samples, each placed at its window's
  mean time (where an OLS slope estimates the velocity); where the line reaches zero is the
  estimate (None unless the line falls).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

SECS_PER_DAY = 86400.0

FloatArray = npt.NDArray[np.float64]


class SlopeLevel(IntEnum):
    NORMAL = 0
    WATCH = 1
    WARNING = 2
    ALARM = 3


@dataclass(frozen=True)
class SlopeConfig:
    """A site's detector settings (see the module docstring for what each one does)."""

    noise_mm: float
    baseline_mm_per_day: float
    watch_mm_per_day: float
    velocity_window_days: float
    downslope_sign: float = -1.0
    z: float = 4.0
    persist_samples: int = 3
    tof_points: int = 6
    alarm_horizon_days: float = 7.0


@dataclass(frozen=True)
class SlopeAssessment:
    t_secs: float
    level: SlopeLevel
    velocity_mm_per_day: float | None
    acceleration_mm_per_day2: float | None
    velocity_gated: bool
    accelerating: bool
    time_of_failure_secs: float | None


def _ols(t_days: FloatArray, m: FloatArray, noise_mm: float) -> tuple[float, float] | None:
    """Slope and its standard error, or None with fewer than two distinct times."""
    if t_days.size < 2:
        return None
    tc = t_days - t_days.mean()
    sxx = float(np.dot(tc, tc))
    if sxx <= 0.0:
        return None
    return float(np.dot(tc, m - m.mean()) / sxx), noise_mm / math.sqrt(sxx)


class SlopeDetector:
    """Feed samples with :meth:`update`; state is the recent history only."""

    def __init__(self, config: SlopeConfig) -> None:
        self.config = config
        self._t: deque[float] = deque()
        self._m: deque[float] = deque()
        self._streak = 0
        self._inv_v: deque[tuple[float, float]] = deque(maxlen=config.tof_points)

    def update(self, t_secs: float, displacement_mm: float) -> SlopeAssessment:
        cfg = self.config
        day = t_secs / SECS_PER_DAY
        self._t.append(day)
        self._m.append(cfg.downslope_sign * displacement_mm)
        w = cfg.velocity_window_days
        # Keep two windows (current and previous), plus one sample of slack.
        while len(self._t) > 2 and self._t[1] < day - 2.0 * w - 1e-9:
            self._t.popleft()
            self._m.popleft()
        t = np.fromiter(self._t, dtype=np.float64)
        m = np.fromiter(self._m, dtype=np.float64)
        cur = t >= day - w - 1e-9
        prev = (t >= day - 2.0 * w - 1e-9) & (t <= day - w + 1e-9)
        now = _ols(t[cur], m[cur], cfg.noise_mm)
        before = _ols(t[prev], m[prev], cfg.noise_mm)
        velocity = now[0] if now else None
        gated = bool(now and now[0] - cfg.baseline_mm_per_day > cfg.z * now[1] and now[0] >= cfg.watch_mm_per_day)
        accel: float | None = None
        accelerating = False
        if now and before:
            accel = (now[0] - before[0]) / w
            accelerating = gated and (now[0] - before[0]) > cfg.z * math.hypot(now[1], before[1])
        self._streak = self._streak + 1 if accelerating else 0
        if gated and velocity is not None:
            # An OLS slope is the velocity at the window's mean time, not at its end.
            self._inv_v.append((float(t[cur].mean()), 1.0 / velocity))
        else:
            self._inv_v.clear()
        tof = self._time_of_failure() if self._streak >= 2 else None
        if self._streak >= cfg.persist_samples and tof is not None and tof - day <= cfg.alarm_horizon_days:
            level = SlopeLevel.ALARM
        elif accelerating:
            level = SlopeLevel.WARNING
        elif gated:
            level = SlopeLevel.WATCH
        else:
            level = SlopeLevel.NORMAL
        return SlopeAssessment(
            t_secs=t_secs,
            level=level,
            velocity_mm_per_day=velocity,
            acceleration_mm_per_day2=accel,
            velocity_gated=gated,
            accelerating=accelerating,
            time_of_failure_secs=None if tof is None else tof * SECS_PER_DAY,
        )

    def _time_of_failure(self) -> float | None:
        """Day where the 1/v line reaches zero, if it is falling (Fukuzono)."""
        if len(self._inv_v) < 3:
            return None
        td = np.array([p[0] for p in self._inv_v])
        iv = np.array([p[1] for p in self._inv_v])
        tc = td - td.mean()
        sxx = float(np.dot(tc, tc))
        if sxx <= 0.0:
            return None
        slope = float(np.dot(tc, iv - iv.mean()) / sxx)
        if slope >= 0.0:
            return None
        intercept = float(iv.mean() - slope * td.mean())
        return -intercept / slope


def voight_series(
    t_secs: FloatArray,
    failure_secs: float,
    a_days_per_mm: float,
    creep_mm_per_day: float,
    noise_mm: float,
    rng: np.random.Generator,
) -> FloatArray:
    """Synthetic displacement (mm, downslope negative) approaching failure by Voight's law.

    Voight (1988) with α = 2: dv/dt = A v², so 1/v = A (t_f − t) falls linearly to zero at
    failure (A in 1/mm, times in days) and the accelerating part is ``−ln(1 − t/t_f) / A`` mm
    from t = 0; on top: steady creep and Gaussian reading noise (σ = ``noise_mm``).
    """
    td = t_secs / SECS_PER_DAY
    tf = failure_secs / SECS_PER_DAY
    accel = -np.log1p(-td / tf) / a_days_per_mm
    movement = creep_mm_per_day * td + accel
    out: FloatArray = -(movement + rng.normal(0.0, noise_mm, size=td.shape))
    return out
