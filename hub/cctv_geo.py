"""CCTV geometry and values, pure: which cameras see a site, and what a stored snapshot is.

:func:`pick_cameras` ranks the cameras that *see* a site: the site lies within the camera's
range and inside one of its views (the bearing from the camera to the site is within the view's
heading ± half its angle). A fixed camera has one view; a PTZ camera has one view per preset,
and the chosen view says which preset to move to. Nearest first; ties go to the view that looks
most squarely at the site, then to the camera id.

No I/O, no clock: the shell that takes and keeps snapshots is hub/cctv.py; forwarding
(hub/forward/) reads positions and evidence from here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

EARTH_RADIUS_M: Final = 6_371_008.8
"""The mean Earth radius (IUGG), for great-circle distances."""
AT_SITE_M: Final = 5.0
"""A camera closer than this to the site sees it whatever its heading (the bearing is noise)."""


# --- selection ------------------------------------------------------------------------


@dataclass(frozen=True)
class GeoPoint:
    """WGS84 latitude and longitude in degrees."""

    lat: float
    lon: float

    def __post_init__(self) -> None:
        if not (-90.0 <= self.lat <= 90.0 and -180.0 <= self.lon <= 180.0):
            raise ValueError(f"not a WGS84 position: {self.lat}, {self.lon}")


def distance_m(a: GeoPoint, b: GeoPoint) -> float:
    """Great-circle (haversine) distance in metres."""
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp = p2 - p1
    dl = math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def bearing_deg(a: GeoPoint, b: GeoPoint) -> float:
    """Initial bearing from ``a`` to ``b``, degrees clockwise from true north in [0, 360)."""
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dl = math.radians(b.lon - a.lon)
    x = math.sin(dl) * math.cos(p2)
    y = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(x, y)) % 360.0


def off_axis_deg(heading: float, bearing: float) -> float:
    """How far ``bearing`` lies from ``heading``, in [0, 180]."""
    return abs((bearing - heading + 180.0) % 360.0 - 180.0)


@dataclass(frozen=True)
class View:
    """One direction a camera looks in: a fixed camera's only view, or a PTZ camera's preset."""

    heading_deg: float
    fov_deg: float
    preset: int | None = None


@dataclass(frozen=True)
class OnvifAccess:
    """How the hub reaches an ONVIF camera: its device service and WS-Security credentials."""

    device_url: str
    """``http://HOST:PORT/onvif/device_service``."""
    user: str
    password: str = field(repr=False)
    profile: str | None = None
    """The media profile's token; None: the camera's first profile."""


@dataclass(frozen=True)
class Camera:
    id: str
    position: GeoPoint
    views: tuple[View, ...]
    snapshot_url: str
    """A plain-HTTP camera's snapshot URL ("" for an ONVIF camera, which names its own)."""
    range_m: float = 200.0
    ptz_preset_url: str | None = None
    """A template with ``{preset}``; set for plain-HTTP PTZ cameras, whose views carry preset numbers."""
    jurisdiction: str = ""
    name: str = ""
    onvif: OnvifAccess | None = None
    """Set for ONVIF cameras; a view's preset is then the ONVIF preset token ``str(preset)``."""

    @property
    def is_ptz(self) -> bool:
        return self.ptz_preset_url is not None or any(v.preset is not None for v in self.views)


@dataclass(frozen=True)
class CameraChoice:
    """A camera that sees the site, the view it sees it with, and how far and where it is."""

    camera: Camera
    view: View
    distance_m: float
    bearing_deg: float
    off_axis_deg: float


def sees(camera: Camera, site: GeoPoint) -> CameraChoice | None:
    """The camera's best view of ``site``, or None if the site is out of range or out of view."""
    d = distance_m(camera.position, site)
    if d > camera.range_m:
        return None
    b = bearing_deg(camera.position, site)
    best: CameraChoice | None = None
    for view in camera.views:
        off = 0.0 if d < AT_SITE_M else off_axis_deg(view.heading_deg, b)
        if view.fov_deg < 360.0 and off > view.fov_deg / 2.0:
            continue
        if best is None or off < best.off_axis_deg:
            best = CameraChoice(camera, view, d, b, off)
    return best


def pick_cameras(cameras: Iterable[Camera], site: GeoPoint, *, limit: int = 2,
                 jurisdictions: frozenset[str] | None = None) -> list[CameraChoice]:
    """The ``limit`` nearest cameras that see ``site`` (optionally only those of some jurisdictions)."""
    # A cheap box first: a degree of latitude is ~111 km, a degree of longitude ~111 km * cos(lat).
    lat_deg_m = 111_195.0
    lon_deg_m = max(1.0, lat_deg_m * math.cos(math.radians(site.lat)))
    found: list[CameraChoice] = []
    for cam in cameras:
        if jurisdictions is not None and cam.jurisdiction not in jurisdictions:
            continue
        if abs(cam.position.lat - site.lat) * lat_deg_m > cam.range_m * 1.01:
            continue
        if abs(cam.position.lon - site.lon) * lon_deg_m > cam.range_m * 1.01 + 1.0:
            continue
        choice = sees(cam, site)
        if choice is not None:
            found.append(choice)
    found.sort(key=lambda c: (round(c.distance_m, 3), c.off_axis_deg, c.camera.id))
    return found[:limit]


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CctvConfig:
    cameras: tuple[Camera, ...] = ()
    evidence_dir: Path = Path("var/evidence")
    retention_days: float = 30.0
    max_cameras: int = 2
    """How many cameras are captured per alarm."""
    timeout_s: float = 5.0
    """Per HTTP request to a camera (PTZ move, snapshot)."""
    ptz_settle_s: float = 2.0
    """Wait after a plain-HTTP PTZ move before the snapshot, so the picture is not of the swing."""
    ptz_timeout_s: float = 10.0
    """The longest wait for an ONVIF camera to report its move done (MoveStatus IDLE)."""
    max_snapshot_bytes: int = 8 * 1024 * 1024
    rtsp_timeout_s: float = 10.0
    """The longest wait for one decoded frame of an RTSP stream (a camera without a snapshot URI)."""


@dataclass(frozen=True)
class Evidence:
    """One stored snapshot."""

    id: int
    sha256: str
    sha1: str
    camera_id: str
    preset: int | None
    ref: str
    """What it is evidence of, e.g. ``alarm:42``."""
    captured_at: float
    expires_at: float
    size: int
    mime: str
    path: str
    """Relative to the evidence folder."""
    distance_m: float
    bearing_deg: float
    jurisdiction: str
