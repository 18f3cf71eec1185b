"""Real cameras for live-view tests: the ONVIF simulator (edge/sim/camera_onvif.py) with its RTSP
server (edge/sim/camera_rtsp.py, GStreamer), and the ``[cctv]`` entry the hub needs for each.

The stream's preset band (edge/sim/camera.py) can carry a clock instead of a preset
(:func:`centiseconds`), so a test reads, from a decoded picture, when the camera drew it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.sim import camera_onvif, camera_rtsp

USER = "jikimi"
PASSWORD = "camera-secret-1"
CLOCK_MOD = 100_000
"""The band's clock: centiseconds modulo this (1000 s), within what the band shows."""


def centiseconds() -> int:
    """The time as the band carries it when a camera runs with ``preset=centiseconds``."""
    return int(time.time() * 100) % CLOCK_MOD


@dataclass
class RealCamera:
    id: str
    onvif: camera_onvif.RunningOnvifCamera
    rtsp: camera_rtsp.RtspCameraServer

    def entry(self, password_file: Path, lat: float, lon: float, heading_deg: float) -> dict[str, Any]:
        """Its ``[cctv.cameras.ID]`` table: a fixed ONVIF camera at (lat, lon) looking along heading_deg."""
        password_file.write_text(PASSWORD)
        return {"lat": lat, "lon": lon, "heading_deg": heading_deg, "fov_deg": 90,
                "onvif_url": self.onvif.device_url, "user": USER, "password_file": str(password_file)}


@asynccontextmanager
async def real_camera(camera_id: str, *, preset: Callable[[], int | None] | None = None) -> AsyncIterator[RealCamera]:
    """One simulated camera: ONVIF device service and RTSP H.264, both behind its credentials."""
    async with camera_onvif.serve(camera_id, user=USER, password=PASSWORD, travel_s=0.0) as device:
        with camera_rtsp.serve(camera_id, user=USER, password=PASSWORD,
                               preset=preset or device.sim.preset_now) as stream:
            device.sim.stream_uri = stream.url
            yield RealCamera(camera_id, device, stream)
