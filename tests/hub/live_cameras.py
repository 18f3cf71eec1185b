"""Real cameras for live-view tests: the ONVIF simulator (edge/sim/camera_onvif.py) with its RTSP
server (edge/sim/camera_rtsp.py, GStreamer), and the ``[cctv]`` entry the hub needs for each.

The stream's preset band (edge/sim/camera.py) can carry a clock instead of a preset
(:func:`centiseconds`), so a test reads, from a decoded picture, when the camera drew it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
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
    preset: Callable[[], int | None]
    _stream: ExitStack = field(default_factory=ExitStack)

    def stop_stream(self) -> None:
        """The RTSP server goes away (its clients are cut off); the ONVIF service stays."""
        self._stream.close()

    def start_stream(self) -> None:
        """The RTSP server comes back on the same address (after :meth:`stop_stream`)."""
        self._stream = ExitStack()
        self.rtsp = self._stream.enter_context(camera_rtsp.serve(
            self.id, user=USER, password=PASSWORD, preset=self.preset, host=self.rtsp.host, port=self.rtsp.port))

    def entry(self, password_file: Path, lat: float, lon: float, heading_deg: float) -> dict[str, Any]:
        """Its ``[cctv.cameras.ID]`` table: a fixed ONVIF camera at (lat, lon) looking along heading_deg."""
        password_file.write_text(PASSWORD)
        return {"lat": lat, "lon": lon, "heading_deg": heading_deg, "fov_deg": 90,
                "onvif_url": self.onvif.device_url, "user": USER, "password_file": str(password_file)}


@asynccontextmanager
async def real_camera(camera_id: str, *, preset: Callable[[], int | None] | None = None) -> AsyncIterator[RealCamera]:
    """One simulated camera: ONVIF device service and RTSP H.264, both behind its credentials."""
    async with camera_onvif.serve(camera_id, user=USER, password=PASSWORD, travel_s=0.0) as device:
        stack = ExitStack()
        show = preset or device.sim.preset_now
        with stack:
            stream = stack.enter_context(camera_rtsp.serve(camera_id, user=USER, password=PASSWORD, preset=show))
            device.sim.stream_uri = stream.url
            cam = RealCamera(camera_id, device, stream, show, stack)
            try:
                yield cam
            finally:
                cam.stop_stream()
