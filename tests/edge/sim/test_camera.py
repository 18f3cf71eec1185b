"""The camera simulator serves real JPEGs showing the time and its id, and records PTZ presets."""

from __future__ import annotations

import io

import aiohttp
from PIL import Image

from edge.sim import camera


def test_a_snapshot_is_a_real_jpeg_that_changes_with_time_and_camera() -> None:
    a = camera.render_snapshot("SW-CCTV-0012", 1_723_098_600.0)
    img = Image.open(io.BytesIO(a))
    assert img.format == "JPEG"
    assert img.size == (camera.WIDTH, camera.HEIGHT)
    assert camera.render_snapshot("SW-CCTV-0012", 1_723_098_601.0) != a
    assert camera.render_snapshot("SW-CCTV-0013", 1_723_098_600.0) != a
    assert camera.render_snapshot("SW-CCTV-0012", 1_723_098_600.0) == a  # pure: same inputs, same bytes


async def test_the_camera_serves_snapshots_and_moves_to_presets() -> None:
    t = [1_723_098_600.0]
    async with camera.serve("SW-PTZ-0003", clock=lambda: t[0]) as cam, aiohttp.ClientSession() as http:
        async with http.get(cam.snapshot_url) as resp:
            assert resp.status == 200
            assert resp.content_type == "image/jpeg"
            first = await resp.read()
        async with http.post(cam.ptz_preset_url.format(preset=4)) as resp:
            assert resp.status == 200
        async with http.post(f"{cam.base_url}/ptz/preset/x") as resp:
            assert resp.status == 404
        async with http.get(cam.snapshot_url) as resp:
            second = await resp.read()
        async with http.get(f"{cam.base_url}/ptz") as resp:
            state = await resp.json()
    assert Image.open(io.BytesIO(second)).format == "JPEG"
    assert first != second  # the overlay shows the preset and the frame number
    assert state == {"camera": "SW-PTZ-0003", "preset": 4, "history": [4]}
