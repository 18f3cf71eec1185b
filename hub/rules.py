"""Pure: the hub's alarm rules per device kind — threshold, rate-of-rise, stale data, device fault.

Values in, conditions out: no clock, no I/O. The alarm desk (hub/alarmdesk.py) keeps each
point's recent samples and asks :func:`evaluate` what every rule of the point says now; a
condition that changes raises or clears an alarm (hub/alarms.py).

Rules of evaluation:

- A rule is about one standard point (DESIGN §4) of one device kind; its parameters come from
  :class:`RuleParams` (per kind, overridable per site in the config).
- Threshold and rate-of-rise rules judge only ``good`` values: a value of any other quality
  leaves them as they were (a failing sensor neither raises nor clears a flood alarm); the
  fault and stale rules speak for such values instead.
- Thresholds have hysteresis: active at ``value >= limit``, cleared only below
  ``limit - deadband`` (or the mirror image for low limits).
- Rate of rise is the change per minute between the oldest good sample within ``window_s``
  and this one, once the samples span at least a quarter of the window.
- Stale: the newest value is older than ``data_age_limit_s``, its quality says ``stale``, or
  the site is offline (its Will fired).
- Fault: the quality is ``comm_fail``, ``sensor_fault`` or ``out_of_range``, or the point
  reports a fault state (``barrier_state = fault``, ``motor_fault = true``).
- Edge: an alarm the edge's own events raise and clear (shared/site_events.py,
  :func:`edge_rule`); :func:`evaluate` never judges it from a reading.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Final

from shared.messages import Quality, Scalar
from shared.site_events import EventAlarm


class AlarmPriority(enum.StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class RuleKind(enum.StrEnum):
    THRESHOLD = "threshold"
    RATE_OF_RISE = "rate_of_rise"
    STALE = "stale"
    FAULT = "fault"
    STATE = "state"
    """Active while the point holds one of ``values`` (e.g. a flood alarm sounding)."""
    EDGE = "edge"
    """Raised and cleared by the edge's events (shared/site_events.py), not by a reading."""


@dataclass(frozen=True)
class RuleParams:
    """The tunable numbers of the rules (per kind, per site)."""

    closing_depth_cm: float = 15.0
    """Underpass: the barrier closes at this depth (2024 national guideline)."""
    reopening_depth_cm: float = 5.0
    """Underpass/gate: an open is allowed only with fresh data below this depth."""
    data_age_limit_s: float = 120.0
    flood_depth_cm: float = 10.0
    """Semi-basement flood alarm: water at the door."""
    rise_cm_per_min: float = 2.0
    rise_window_s: float = 300.0
    displacement_mm: float = 20.0
    displacement_mm_per_h: float = 5.0
    tilt_deg: float = 2.0
    battery_low_v: float = 11.0
    rain_10min_mm: float = 20.0
    deadband_frac: float = 0.05


PARAM_NAMES: Final = frozenset(f.name for f in fields(RuleParams))


def default_params(kind: str) -> RuleParams:
    del kind  # one set of defaults today; kinds differ in which rules use them
    return RuleParams()


FAULT_QUALITIES: Final = frozenset({Quality.COMM_FAIL, Quality.SENSOR_FAULT, Quality.OUT_OF_RANGE})


@dataclass(frozen=True)
class Rule:
    name: str
    """Stable id, unique per point, e.g. ``high``, ``rise``, ``stale``, ``fault``."""
    point: str
    kind: RuleKind
    priority: AlarmPriority
    limit: float = 0.0
    below: bool = False
    """Threshold: active when the value is at or below ``limit`` (e.g. a low battery)."""
    absolute: bool = False
    """Threshold: compare ``abs(value)`` (tilt either way)."""
    deadband: float = 0.0
    window_s: float = 0.0
    per_s: float = 60.0
    """Rate of rise: the unit of ``limit`` is per this many seconds (60: per minute)."""
    values: frozenset[str] = frozenset()
    """State and fault rules: the values (as text, ``true`` for booleans) that count."""
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Sample:
    ts: float
    value: Scalar
    quality: Quality
    num: float | None = None
    """The value as a number, if the caller has it already (else it is worked out)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one rule says about a point now."""

    rule: Rule
    active: bool
    reason: str


def as_number(value: Scalar) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def as_text(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _threshold(name: str, point: str, prio: AlarmPriority, limit: float, p: RuleParams, *,
               below: bool = False, absolute: bool = False, unit: str = "") -> Rule:
    return Rule(name, point, RuleKind.THRESHOLD, prio, limit=limit, below=below, absolute=absolute,
                deadband=abs(limit) * p.deadband_frac, unit=unit)


def rules_for(kind: str, p: RuleParams) -> dict[str, tuple[Rule, ...]]:
    """Every rule of a device kind, by point name. Unknown kinds have none."""
    stale = AlarmPriority.MEDIUM
    fault = AlarmPriority.HIGH
    table: dict[str, list[Rule]] = {}

    def add(rule: Rule) -> None:
        table.setdefault(rule.point, []).append(rule)

    def health(point: str) -> None:
        add(Rule("stale", point, RuleKind.STALE, stale, limit=p.data_age_limit_s, unit="s"))
        add(Rule("fault", point, RuleKind.FAULT, fault))

    if kind == "underpass":
        add(_threshold("closing_depth", "water_depth_cm", AlarmPriority.CRITICAL, p.closing_depth_cm, p, unit="cm"))
        add(Rule("rise", "water_depth_cm", RuleKind.RATE_OF_RISE, AlarmPriority.HIGH, limit=p.rise_cm_per_min,
                 window_s=p.rise_window_s, unit="cm/min"))
        health("water_depth_cm")
        add(Rule("fault", "barrier_state", RuleKind.FAULT, fault, values=frozenset({"fault"})))
        add(Rule("fault", "motor_fault", RuleKind.FAULT, fault, values=frozenset({"true", "1"})))
    elif kind == "flood_alarm":
        add(_threshold("flood_depth", "water_depth_cm", AlarmPriority.CRITICAL, p.flood_depth_cm, p, unit="cm"))
        add(Rule("rise", "water_depth_cm", RuleKind.RATE_OF_RISE, AlarmPriority.HIGH, limit=p.rise_cm_per_min,
                 window_s=p.rise_window_s, unit="cm/min"))
        add(Rule("sounding", "alarm_active", RuleKind.STATE, AlarmPriority.CRITICAL, values=frozenset({"true", "1"})))
        add(_threshold("battery_low", "battery_v", AlarmPriority.LOW, p.battery_low_v, p, below=True, unit="V"))
        health("water_depth_cm")
    elif kind == "displacement":
        add(_threshold("displacement", "displacement_mm", AlarmPriority.HIGH, p.displacement_mm, p,
                       absolute=True, unit="mm"))
        add(Rule("rise", "displacement_mm", RuleKind.RATE_OF_RISE, AlarmPriority.HIGH, limit=p.displacement_mm_per_h,
                 window_s=3600.0, per_s=3600.0, unit="mm/h"))
        for axis in ("tilt_x_deg", "tilt_y_deg"):
            add(_threshold("tilt", axis, AlarmPriority.MEDIUM, p.tilt_deg, p, absolute=True, unit="deg"))
        health("displacement_mm")
    elif kind == "river_gate":
        add(Rule("fault", "gate_state", RuleKind.FAULT, fault, values=frozenset({"fault"})))
        add(Rule("stale", "gate_state", RuleKind.STALE, stale, limit=p.data_age_limit_s, unit="s"))
    elif kind == "rain_gauge":
        add(_threshold("heavy_rain", "rain_mm_10min", AlarmPriority.MEDIUM, p.rain_10min_mm, p, unit="mm"))
        health("rain_mm_total")
    return {point: tuple(rules) for point, rules in table.items()}


def edge_rule(alarm: EventAlarm) -> Rule:
    """The rule of an alarm the edge's events raise (its name is the raising event's kind)."""
    return Rule(alarm.name, alarm.point, RuleKind.EDGE, AlarmPriority(alarm.priority))


def evaluate(
    rules: Sequence[Rule], sample: Sample, window: Sequence[tuple[float, float]], active: frozenset[str] | set[str],
    *, changes_only: bool = False,
) -> list[Verdict]:
    """What each rule of a point says about ``sample``.

    ``window`` is the point's earlier good samples as (ts, number), oldest first; ``active``
    names the rules of this point whose conditions are active now (for hysteresis). A rule that
    cannot judge this sample (a threshold seeing a bad value) gives no verdict. With
    ``changes_only`` only verdicts that differ from ``active`` are returned (the engine's hot
    path: most readings change nothing).
    """
    out: list[Verdict] = []
    num = sample.num if sample.num is not None else as_number(sample.value)
    quality = sample.quality
    good = quality is Quality.GOOD
    text: str | None = None
    for rule in rules:
        was = rule.name in active
        kind = rule.kind
        if kind is RuleKind.THRESHOLD:
            if not good or num is None:
                continue
            v = abs(num) if rule.absolute else num
            if rule.below:
                now = v <= rule.limit or (was and v < rule.limit + rule.deadband)
            else:
                now = v >= rule.limit or (was and v > rule.limit - rule.deadband)
            if changes_only and now == was:
                continue
            rel = ("<=" if now else ">") if rule.below else (">=" if now else "<")
            out.append(Verdict(rule, now, f"{rule.point} {v:g}{rule.unit} {rel} {rule.limit:g}{rule.unit}"))
        elif kind is RuleKind.RATE_OF_RISE:
            if not good or num is None:
                continue
            rate = rise_rate(window, sample.ts, num, rule.window_s, rule.per_s)
            if rate is None:
                continue
            now = rate >= rule.limit or (was and rate > rule.limit * 0.5)
            if changes_only and now == was:
                continue
            out.append(Verdict(rule, now, f"{rule.point} rising {rate:.2f}{rule.unit} (limit {rule.limit:g})"))
        elif kind is RuleKind.STALE:
            now = quality is Quality.STALE
            if changes_only and now == was:
                continue
            out.append(Verdict(rule, now, f"{rule.point} quality {quality.value}"))
        elif kind is RuleKind.FAULT:
            if rule.values:
                text = as_text(sample.value) if text is None else text
                now = text in rule.values
                reason = f"{rule.point} = {text}"
            else:
                now = quality in FAULT_QUALITIES
                reason = f"{rule.point} quality {quality.value}"
            if changes_only and now == was:
                continue
            out.append(Verdict(rule, now, reason))
        elif kind is RuleKind.STATE:
            if quality in FAULT_QUALITIES:
                continue
            text = as_text(sample.value) if text is None else text
            now = text in rule.values
            if changes_only and now == was:
                continue
            out.append(Verdict(rule, now, f"{rule.point} = {text}"))
    return out


def rise_rate(window: Sequence[tuple[float, float]], ts: float, num: float, window_s: float,
              per_s: float) -> float | None:
    """Change per ``per_s`` seconds from the oldest sample within ``window_s`` to (ts, num);
    None until the samples span a quarter of the window."""
    start = ts - window_s
    for t0, v0 in window:
        if t0 >= start:
            span = ts - t0
            if span < window_s / 4 or span <= 0:
                return None
            return (num - v0) / span * per_s
    return None


def stale_verdict(rule: Rule, last_ts: float, last_quality: Quality, now: float, site_online: bool) -> Verdict:
    """The stale rule at time ``now`` (the engine's periodic check)."""
    age = now - last_ts
    if last_quality is Quality.STALE:
        return Verdict(rule, True, f"{rule.point} quality stale")
    if not site_online:
        return Verdict(rule, True, f"{rule.point}: site offline")
    if age > rule.limit:
        return Verdict(rule, True, f"{rule.point} is {age:.0f}s old (limit {rule.limit:g}s)")
    return Verdict(rule, False, f"{rule.point} is {age:.0f}s old")
