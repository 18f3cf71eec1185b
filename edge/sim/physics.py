"""Device physics for the simulators (pure): state advanced by ``step(dt)``, values out.

No clock and no I/O: the server owning a model tells it how much time passed. Each model
offers ``values()`` (point name -> engineering value, in the profile's vocabulary) and
``command(point, value)`` for writes.

Barrier/gate rules (a small state machine):

* ``open``  --close--> ``closing`` --travel_s--> ``closed`` (lower limit switch on)
* ``closed`` --open--> ``opening`` --travel_s--> ``open`` (upper limit switch on)
* a command towards the state it is already in or moving to changes nothing;
  a reverse command while moving reverses from the current position;
* ``jammed``: the motor stalls; after ``jam_detect_s`` in motion the state becomes ``fault``
  with ``motor_fault`` set and no limit switch on, until :meth:`Barrier.clear_jam` and a command;
* ``mode = local``: remote commands are ignored (the key switch on the cabinet wins).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from edge.drivers.codec import Value
from shared.profiles import Kind, Profile


@dataclass
class Water:
    """A basin's water depth: rain fills it, a drain empties it, or a series replays it.

    ``inflow_cm_per_mm`` turns rain (mm/h) into depth; the drain removes ``drain_cm_per_h``.
    When ``series`` ((t_s, depth_cm) pairs) is set, depth follows it by linear interpolation.
    """

    depth_cm: float = 0.0
    rain_mm_per_h: float = 0.0
    inflow_cm_per_mm: float = 0.5
    drain_cm_per_h: float = 10.0
    series: Sequence[tuple[float, float]] = ()
    t_s: float = 0.0

    def step(self, dt: float) -> None:
        self.t_s += dt
        if self.series:
            self.depth_cm = interpolate(self.series, self.t_s)
            return
        change = (self.rain_mm_per_h * self.inflow_cm_per_mm - self.drain_cm_per_h) * dt / 3600
        self.depth_cm = max(0.0, self.depth_cm + change)


def interpolate(series: Sequence[tuple[float, float]], t: float) -> float:
    """Linear interpolation in a sorted (t, y) series, held flat outside it."""
    if t <= series[0][0]:
        return series[0][1]
    for (t0, y0), (t1, y1) in itertools.pairwise(series):
        if t0 <= t <= t1:
            return y0 if t1 == t0 else y0 + (y1 - y0) * (t - t0) / (t1 - t0)
    return series[-1][1]


def held(series: Sequence[tuple[float, float]], t: float) -> float:
    """The last sample at or before ``t`` (the first before the series starts)."""
    value = series[0][1]
    for ts, y in series:
        if ts > t:
            break
        value = y
    return value


@dataclass
class Barrier:
    """A motorised barrier or gate with travel time, limit switches and a jam (see module doc)."""

    travel_s: float = 8.0
    jam_detect_s: float = 3.0
    position: float = 0.0  # 0 open .. 1 closed
    moving: int = 0  # +1 closing, -1 opening
    jammed: bool = False
    fault: bool = False
    local: bool = False
    stalled_s: float = 0.0

    @property
    def state(self) -> str:
        if self.fault:
            return "fault"
        if self.moving > 0:
            return "closing"
        if self.moving < 0:
            return "opening"
        return "closed" if self.position >= 1.0 else "open"

    @property
    def limit_open(self) -> bool:
        return not self.fault and self.position <= 0.0

    @property
    def limit_closed(self) -> bool:
        return not self.fault and self.position >= 1.0

    def command(self, action: str) -> bool:
        """``close`` or ``open``; False when ignored (local mode, fault, unknown)."""
        if self.local or self.fault or action not in ("close", "open"):
            return False
        direction = 1 if action == "close" else -1
        target = 1.0 if direction > 0 else 0.0
        self.moving = 0 if self.position == target else direction
        self.stalled_s = 0.0
        return True

    def clear_jam(self) -> None:
        self.jammed = False
        self.fault = False

    def step(self, dt: float) -> None:
        if not self.moving:
            return
        if self.jammed:
            self.stalled_s += dt
            if self.stalled_s >= self.jam_detect_s:
                self.fault, self.moving = True, 0
            return
        self.position = min(1.0, max(0.0, self.position + self.moving * dt / self.travel_s))
        if self.position in (0.0, 1.0):
            self.moving = 0


@dataclass
class Slope:
    """Slope creep: displacement grows at ``rate_mm_per_h``, multiplied by ``accel`` per hour."""

    displacement_mm: float = 0.0
    rate_mm_per_h: float = 0.05
    accel_per_h: float = 1.0  # >1: accelerating creep (tertiary creep before failure)
    tilt_x_deg: float = 0.1
    tilt_y_deg: float = -0.05
    temperature_c: float = 14.0

    def step(self, dt: float) -> None:
        hours = dt / 3600
        self.displacement_mm += self.rate_mm_per_h * hours
        self.rate_mm_per_h *= self.accel_per_h**hours
        self.tilt_x_deg += self.rate_mm_per_h * hours * 0.01


@dataclass
class RainCounter:
    """A tipping-bucket counter: rain accumulates, the counter counts whole tips."""

    rain_mm_per_h: float = 0.0
    mm_per_tip: float = 0.5
    accumulated_mm: float = 0.0
    tips: int = 0

    def step(self, dt: float) -> None:
        self.accumulated_mm += self.rain_mm_per_h * dt / 3600
        whole = int(self.accumulated_mm / self.mm_per_tip)
        self.tips += whole
        self.accumulated_mm -= whole * self.mm_per_tip

    @property
    def total_mm(self) -> float:
        return self.tips * self.mm_per_tip


@dataclass
class DevicePhysics:
    """Everything one simulated device knows; ``overrides`` pins any point's value."""

    kind: Kind
    water: Water = field(default_factory=Water)
    barrier: Barrier = field(default_factory=Barrier)
    slope: Slope = field(default_factory=Slope)
    rain: RainCounter = field(default_factory=RainCounter)
    battery_v: float = 12.6
    siren: bool = False
    alarm_depth_cm: float = 10.0
    sign_message: str = ""
    broadcast: str = "off"
    lamp: bool = False
    overrides: dict[str, Value] = field(default_factory=dict)
    rain_series: Sequence[tuple[float, float]] = ()  # (t_s, mm/h), held until the next sample
    t_s: float = 0.0

    def step(self, dt: float) -> None:
        if dt <= 0:
            return
        self.t_s += dt
        if self.rain_series:
            self.set_rain(held(self.rain_series, self.t_s))
        self.water.step(dt)
        self.barrier.step(dt)
        self.slope.step(dt)
        self.rain.step(dt)

    def set_rain(self, mm_per_h: float) -> None:
        """Rain feeds both the basin and the rain gauge."""
        self.water.rain_mm_per_h = mm_per_h
        self.rain.rain_mm_per_h = mm_per_h

    def command(self, point: str, value: Value) -> None:
        """Apply a write from the bus."""
        if point in ("barrier_cmd", "gate_cmd") and isinstance(value, str):
            self.barrier.command(value)
        elif point == "siren":
            self.siren = bool(value)
        elif point == "sign_message" and isinstance(value, str):
            self.sign_message = value
        elif point == "broadcast" and isinstance(value, str):
            self.broadcast = value
        elif point == "warning_lamp":
            self.lamp = bool(value)
        elif point == "alarm_depth_cm" and isinstance(value, int | float):
            self.alarm_depth_cm = float(value)

    def values(self) -> Mapping[str, Value]:
        depth = round(self.water.depth_cm, 1)
        b = self.barrier
        gate_state = {"closing": "moving", "opening": "moving"}.get(b.state, b.state)
        out: dict[str, Value] = {
            "water_depth_cm": depth,
            "alarm_active": depth >= self.alarm_depth_cm,
            "siren_on": self.siren,
            "siren": self.siren,
            "battery_v": round(self.battery_v, 2),
            "status": ("low_battery",) if self.battery_v < 11.0 else (),
            "alarm_depth_cm": self.alarm_depth_cm,
            "barrier_state": b.state,
            "barrier_cmd": "none",
            "mode": "local" if b.local else "remote",
            "travel_pct": round(b.position * 100),
            "cycle_count": 0,
            "motor_fault": b.fault,
            "limit_open": b.limit_open,
            "limit_closed": b.limit_closed,
            "warning_lamp": self.lamp,
            "close_depth_cm": 15.0,
            "gate_state": gate_state,
            "gate_cmd": "none",
            "sign_message": self.sign_message,
            "broadcast": self.broadcast,
            "water_level_cm": round(self.water.depth_cm),
            "displacement_mm": self.slope.displacement_mm,
            "tilt_x_deg": self.slope.tilt_x_deg,
            "tilt_y_deg": self.slope.tilt_y_deg,
            "temperature_c": self.slope.temperature_c,
            "sample_count": 0,
            "displacement_total_mm": self.slope.displacement_mm,
            "rain_mm_total": self.rain.total_mm,
            "heater_on": False,
        }
        out.update(self.overrides)
        return out


def physics_for(profile: Profile) -> DevicePhysics:
    """Fresh physics for a device of ``profile``'s kind."""
    return DevicePhysics(kind=profile.kind)
