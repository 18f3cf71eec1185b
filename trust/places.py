"""Pure: where a site is — its WGS84 position and its area — and the one check of both.

Enrolment stores a site's place with its registration (trust/enrolment.py), and the hub's
``[sites.registry]`` gives places too (hub/sites.py); both check them here, so a latitude of
91, a longitude of "x" or a NaN is refused the same way wherever it comes from.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

AREA_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
"""An area id (``gg-suwon``, ``suwon-gwonseon``): what alerts carry as their geocode."""


@dataclass(frozen=True)
class Place:
    """A site's WGS84 position and, when the registry has areas, its area."""

    lat: float
    lon: float
    area: str | None = None


def position_problem(lat: object, lon: object) -> str | None:
    """Why (lat, lon) is not a WGS84 position in degrees, or None when it is."""
    for name, value, limit in (("lat", lat, 90.0), ("lon", lon, 180.0)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name} {value!r} is not a number of degrees"
        if not math.isfinite(value):
            return f"{name} {value!r} is not a finite number of degrees"
        if not -limit <= value <= limit:
            return f"{name} {value!r} is out of range: -{limit:g} to {limit:g} degrees"
    return None


def area_problem(area: str) -> str | None:
    """Why ``area`` is not an area id, or None when it is."""
    if not AREA_RE.match(area):
        return f"area {area!r} is not an area id: 1-63 of a-z, 0-9 and '-'"
    return None


def degrees(text: str, name: str) -> float:
    """Read a command line's ``--lat``/``--lon``; ValueError says what is wrong."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--{name} {text!r} is not a number of degrees") from None
    problem = position_problem(value if name == "lat" else 0.0, value if name == "lon" else 0.0)
    if problem is not None:
        raise ValueError(f"--{problem}")
    return value
