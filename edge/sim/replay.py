"""Replays of real events for the simulators, read from the reference data at run time.

* FloodNet (NYC street-flood sensors): each event in ``floodnet-nyc/flood-events.csv`` is a
  measured depth series (inches at second offsets); :func:`floodnet_events` turns them into
  centimetres, ready for :class:`~edge.sim.physics.Water`'s ``series``.
* USGS Walnut Creek (Raleigh, NC): 5-minute rain (inches) and creek stage (ft);
  :func:`walnut_creek_storm` cuts out one day (Tropical Storm Debby, 2024-08-08, by default)
  as rain intensity (mm/h) and stage rise above the day's first value (cm).

:func:`apply` loads a replay into a device's physics at any speed (``speed=60``: an hour in a
minute). The data stays in ``shared_data_dir()``; nothing is copied into the repository.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.sim.physics import DevicePhysics
from shared.errors import ConfigError
from shared.paths import shared_data_dir

INCH_CM = 2.54
FOOT_CM = 30.48

Series = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class FloodEvent:
    """One measured street flood."""

    sensor_id: str
    sensor_name: str
    start: str
    max_depth_cm: float
    depth_cm: Series  # (seconds from start, depth cm)


@dataclass(frozen=True)
class Storm:
    """One day of rain and creek stage."""

    day: str
    rain_mm_per_h: Series  # (seconds from midnight UTC, intensity over the next 5 min)
    stage_rise_cm: Series  # (seconds from midnight UTC, stage above the day's first value)


def floodnet_events(path: Path | None = None) -> list[FloodEvent]:
    """Every FloodNet event, in file order."""
    path = path or shared_data_dir() / "floodnet-nyc" / "flood-events.csv"
    events = []
    try:
        with path.open(newline="") as f:
            for i, row in enumerate(csv.DictReader(f)):
                try:
                    depths = json.loads(row["flood_profile_depth_inches"])
                    times = json.loads(row["flood_profile_time_secs"])
                    events.append(
                        FloodEvent(
                            sensor_id=row["sensor_id"],
                            sensor_name=row["sensor_name"],
                            start=row["flood_start_time"],
                            max_depth_cm=float(row["max_depth_inches"]) * INCH_CM,
                            depth_cm=tuple((float(t), float(d) * INCH_CM) for t, d in zip(times, depths, strict=True)),
                        )
                    )
                except (KeyError, ValueError, TypeError) as exc:
                    raise ConfigError(path.name, f"row {i + 2}", f"unreadable: {exc}") from exc
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from exc
    return events


def floodnet_event(selector: str = "deepest", path: Path | None = None) -> FloodEvent:
    """One event: ``deepest``, a row index, or a sensor id (its deepest event)."""
    events = floodnet_events(path)
    if selector.isdigit():
        return events[int(selector)]
    pool = events if selector == "deepest" else [e for e in events if e.sensor_id == selector]
    if not pool:
        raise ConfigError("flood-events.csv", selector, "no such sensor id")
    return max(pool, key=lambda e: e.max_depth_cm)


def _day_series(path: Path, day: str) -> list[tuple[float, float]]:
    midnight = dt.datetime.fromisoformat(day)
    out = []
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if not row["datetime"].startswith(day) or not row["value"]:
                    continue
                t = (dt.datetime.fromisoformat(row["datetime"]) - midnight).total_seconds()
                out.append((t, float(row["value"])))
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from exc
    if not out:
        raise ConfigError(path.name, day, "no data for that day")
    return out


def walnut_creek_storm(day: str = "2024-08-08", folder: Path | None = None) -> Storm:
    """Rain at Lake Johnson and stage at South State Street for one day."""
    folder = folder or shared_data_dir() / "usgs-walnut-creek"
    rain = _day_series(folder / "Rain_Gage_at_Lake_Johnson_354546078422045.csv", day)
    stage = _day_series(folder / "Walnut_Creek_at_South_State_Street_0208735460.csv", day)
    base = stage[0][1]
    return Storm(
        day=day,
        rain_mm_per_h=tuple((t, v * 25.4 * 12) for t, v in rain),  # in/5 min -> mm/h
        stage_rise_cm=tuple((t, max(0.0, v - base) * FOOT_CM) for t, v in stage),
    )


def scaled(series: Sequence[tuple[float, float]], speed: float) -> Series:
    """The series played ``speed`` times faster, starting at t = 0."""
    t0 = series[0][0]
    return tuple(((t - t0) / speed, y) for t, y in series)


def apply(physics: DevicePhysics, replay: FloodEvent | Storm, speed: float = 1.0) -> None:
    """Drive ``physics`` from a replay, from now on, ``speed`` times faster than real time."""
    if isinstance(replay, FloodEvent):
        physics.water.series = scaled(replay.depth_cm, speed)
    else:
        physics.water.series = scaled(replay.stage_rise_cm, speed)
        # intensities speed up too, so the rain that falls in the shorter time is the same
        physics.rain_series = tuple((t, v * speed) for t, v in scaled(replay.rain_mm_per_h, speed))
    physics.water.t_s = 0.0
    physics.t_s = 0.0
