"""Pure: the edge's local safety policy (DESIGN §5). Readings in, actions and events out.

Rules:

1. Closing is fail-safe and local. An underpass barrier (or a river gate, watching the depth
   point its config names) is closed when a *fresh, good* depth reading is at or above the
   closing depth and has stayed there for the debounce period (measured on acquisition
   times), or when the forecaster says the depth will get there within the lead time.
   It never waits for the hub.
7. A hub's ``forecast.prealert`` (``prealerts``: device → until when it holds, its ``not_after``)
   is advice: with ``prealert_close`` (off by default) it closes a barrier or gate early; with
   ``prealert_warn`` (on by default) it sounds a semi-basement alarm's siren early. An expired
   one does nothing. Nothing of rules 1-3 depends on it.
2. The policy asks for a close only when the barrier is not already closed or closing, and
   asks again only after ``verify_timeout_s`` (a close in progress is not repeated). It never
   acts on an actuator state it has not read: after a (re)start, nothing is asked until a
   reading of the barrier's (gate's) state has arrived — in the underpass the state comes in
   the same poll as the depth, so the close still goes out within that poll. A state that was
   read but is not ``good`` (comm_fail, sensor_fault) does not hold a close back: closing is
   the fail-safe direction.
3. A semi-basement alarm sounds its siren when the depth reaches its siren depth.
4. A displacement meter's velocity (mm/day over at least an hour, sampled once a minute) is
   graded normal / warning / alarm; every change of grade is an event.
5. Opening is never decided here: only a hub command with two approvers can open
   (edge/commands.py checks the interlocks).
6. Stale, comm_fail, out_of_range and sensor_fault readings never trigger an action; a depth
   that cannot be trusted is reported as an event once per episode.

Everything here is a function of its arguments: the time is passed in, state is returned.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from edge.config import PolicySection
from shared import site_events, vocabulary
from shared.messages import Action, Quality, Reading
from shared.profiles import Kind

Key = tuple[str, str]  # (device, point)
Latest = Mapping[Key, Reading]

CLOSE_ACTION = {Kind.UNDERPASS: Action.BARRIER_CLOSE, Kind.RIVER_GATE: Action.GATE_CLOSE}
STATE_POINT = {Kind.UNDERPASS: "barrier_state", Kind.RIVER_GATE: "gate_state"}
CLOSED_STATES = frozenset({"closed", "closing"})
SAMPLE_EVERY_S = 60.0
VELOCITY_WINDOW_S = 3600.0
KEEP_SAMPLES = 180


class Grade(enum.IntEnum):
    NORMAL = 0
    WARNING = 1
    ALARM = 2


@dataclass(frozen=True)
class PolicyDevice:
    """What the policy needs to know of a device."""

    name: str
    kind: Kind
    depth: Key | None
    """Where this device's water depth comes from (its own ``water_depth_cm`` by default)."""


@dataclass(frozen=True)
class LocalAction:
    device: str
    action: Action
    reason: str
    values: Mapping[str, float | str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class PolicyEvent:
    kind: str
    device: str
    detail: str
    values: Mapping[str, float | str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class PolicyState:
    above_since: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    requested_at: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    untrusted: frozenset[str] = frozenset()
    samples: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=lambda: MappingProxyType({}))
    grades: Mapping[str, Grade] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Decision:
    state: PolicyState
    actions: tuple[LocalAction, ...]
    events: tuple[PolicyEvent, ...]


def default_depth(name: str, kind: Kind) -> Key | None:
    """The device's own depth point (shared/vocabulary.py), watched unless the config names another."""
    point = vocabulary.depth_point(kind)
    return (name, point) if point is not None else None


def _fresh(r: Reading | None, now: float, limit_s: float) -> bool:
    return r is not None and r.quality is Quality.GOOD and now - r.ts <= limit_s and isinstance(r.value, int | float)


def decide(
    state: PolicyState,
    devices: tuple[PolicyDevice, ...],
    latest: Latest,
    params: PolicySection,
    now: float,
    forecast_warns: frozenset[str] = frozenset(),
    prealerts: Mapping[str, float] = MappingProxyType({}),
) -> Decision:
    """One evaluation of the policy over the latest readings of every device."""
    above = dict(state.above_since)
    requested = dict(state.requested_at)
    untrusted = set(state.untrusted)
    samples = dict(state.samples)
    grades = dict(state.grades)
    actions: list[LocalAction] = []
    events: list[PolicyEvent] = []

    for dev in devices:
        if dev.kind in CLOSE_ACTION:
            depth = latest.get(dev.depth) if dev.depth else None
            state_r = latest.get((dev.name, STATE_POINT[dev.kind]))
            barrier_closed = state_r is not None and state_r.value in CLOSED_STATES
            want: str | None = None
            values: dict[str, float | str] = {}
            if depth is not None and not _fresh(depth, now, params.data_age_limit_s):
                if dev.name not in untrusted:
                    untrusted.add(dev.name)
                    events.append(PolicyEvent(site_events.POLICY_DEPTH_UNTRUSTED, dev.name,
                                              f"depth reading is {depth.quality.value}, no local action on it",
                                              {"quality": depth.quality.value}))
                above.pop(dev.name, None)
            elif depth is not None:
                untrusted.discard(dev.name)
                d = float(depth.value)  # type: ignore[arg-type]
                values["water_depth_cm"] = d
                if d >= params.closing_depth_cm:
                    since = above.setdefault(dev.name, depth.ts)
                    if depth.ts - since >= params.debounce_s:
                        want = f"water depth {d:.1f} cm >= closing depth {params.closing_depth_cm:g} cm"
                else:
                    above.pop(dev.name, None)
            if want is None and (dev.name in forecast_warns or (dev.depth and dev.depth[0] in forecast_warns)):
                want = f"forecast: depth reaches {params.closing_depth_cm:g} cm within {params.forecast_lead_s:g} s"
                values["forecast"] = "warn"
            if want is None and params.prealert_close and prealerts.get(dev.name, -1.0) >= now:
                want = "hub forecast prealert: closing early (prealert_close)"
                values["prealert"] = "close"
            if want is not None and state_r is None:
                pass  # rule 2: the actuator's state is not known yet (just started); its reading re-runs this
            elif want is not None and not barrier_closed:
                last = requested.get(dev.name)
                if last is None or now - last >= params.verify_timeout_s:
                    requested[dev.name] = now
                    actions.append(LocalAction(dev.name, CLOSE_ACTION[dev.kind], want, MappingProxyType(values)))
            elif barrier_closed:
                requested.pop(dev.name, None)

        elif dev.kind is Kind.FLOOD_ALARM:
            depth = latest.get((dev.name, "water_depth_cm"))
            siren = latest.get((dev.name, "siren_on")) or latest.get((dev.name, "siren"))
            early = params.prealert_warn and prealerts.get(dev.name, -1.0) >= now
            if early and not _fresh(depth, now, params.data_age_limit_s):
                depth = None  # rule 7: the prealert alone; no untrusted depth is quoted
            if _fresh(depth, now, params.data_age_limit_s) or early:
                d = float(depth.value) if depth is not None else float("nan")  # type: ignore[arg-type]
                if (d >= params.siren_depth_cm or early) and not (siren is not None and siren.value is True):
                    last = requested.get(dev.name)
                    if last is None or now - last >= params.verify_timeout_s:
                        requested[dev.name] = now
                        if d >= params.siren_depth_cm:
                            why = f"water depth {d:.1f} cm >= siren depth {params.siren_depth_cm:g} cm"
                            vals: dict[str, float | str] = {"water_depth_cm": d}
                        else:
                            why = "hub forecast prealert: siren early (prealert_warn)"
                            vals = {"prealert": "warn"}
                        actions.append(LocalAction(dev.name, Action.SIREN_ON, why, MappingProxyType(vals)))

        elif dev.kind is Kind.DISPLACEMENT:
            r = latest.get((dev.name, "displacement_mm"))
            if not _fresh(r, now, params.data_age_limit_s):
                continue
            assert r is not None
            series = samples.get(dev.name, ())
            if not series or r.ts - series[-1][0] >= SAMPLE_EVERY_S:
                series = (*series, (r.ts, float(r.value)))[-KEEP_SAMPLES:]  # type: ignore[arg-type]
                samples[dev.name] = series
            v = velocity_mm_per_day(series)
            if v is None:
                continue
            grade = Grade.NORMAL
            if v >= params.displacement_alarm_mm_per_day:
                grade = Grade.ALARM
            elif v >= params.displacement_warn_mm_per_day:
                grade = Grade.WARNING
            if grade != grades.get(dev.name, Grade.NORMAL):
                events.append(PolicyEvent(site_events.displacement(grade.name.lower()), dev.name,
                                          f"velocity {v:.2f} mm/day", {"velocity_mm_per_day": round(v, 3)}))
                grades[dev.name] = grade

    new = replace(
        state,
        above_since=MappingProxyType(above),
        requested_at=MappingProxyType(requested),
        untrusted=frozenset(untrusted),
        samples=MappingProxyType(samples),
        grades=MappingProxyType(grades),
    )
    return Decision(new, tuple(actions), tuple(events))


def velocity_mm_per_day(series: tuple[tuple[float, float], ...]) -> float | None:
    """Absolute velocity over the newest window of at least an hour, or None if too short."""
    if len(series) < 2:
        return None
    t1, d1 = series[-1]
    for t0, d0 in reversed(series[:-1]):
        if t1 - t0 >= VELOCITY_WINDOW_S:
            return abs(d1 - d0) / (t1 - t0) * 86400.0
    return None
