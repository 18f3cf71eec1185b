"""A simulated CCTV camera: real JPEG snapshots showing the time and the camera id, and PTZ presets.

``jikimi sim camera --listen tcp://HOST:PORT --id CAM`` serves

- ``GET /snapshot.jpg``: a 640×360 JPEG (Pillow) with the camera id, the current time (KST and
  UTC), the current PTZ preset and a frame number burnt in, like a real camera's overlay, and the
  preset once more as a machine-readable band of blocks along the bottom edge (:func:`read_preset`);
- ``POST /ptz/preset/{n}``: moves to preset ``n`` (recorded; ``GET /ptz`` shows the history).

:func:`render_frame` and :func:`render_snapshot` are the pure part (values in, a picture out; the
RTSP stream of edge/sim/camera_rtsp.py draws its frames with the same function); :func:`serve`
runs the camera in-process for tests and the demo.

The preset band, so a test can tell from a decoded picture (a JPEG, or a frame of the H.264
stream) where the camera pointed: ``BAND_CELLS`` blocks of ``WIDTH / BAND_CELLS`` pixels across
the bottom ``BAND_H`` rows, each black or white: a white and a black guard, ``BAND_BITS`` bits
of the value (0 for "no preset", else preset + 1), most significant first, an even-parity bit,
and a closing white guard. Blocks this large survive JPEG and a low-bitrate H.264 encode; the
reader samples each block's middle and refuses a band whose guards or parity do not hold.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from aiohttp import web
from PIL import Image, ImageDraw, ImageFont, ImageStat

WIDTH: Final = 640
HEIGHT: Final = 360
KST: Final = timezone(timedelta(hours=9), "KST")


BAND_BITS: Final = 17
BAND_CELLS: Final = BAND_BITS + 4
BAND_H: Final = 32
MAX_PRESET: Final = (1 << BAND_BITS) - 2
"""The largest preset the band can show."""


def _band_bits(preset: int | None) -> list[int]:
    value = 0 if preset is None else preset + 1
    if not 0 <= value < 1 << BAND_BITS:
        raise ValueError(f"preset {preset}: the band shows 0 to {MAX_PRESET}")
    bits = [(value >> (BAND_BITS - 1 - i)) & 1 for i in range(BAND_BITS)]
    return [1, 0, *bits, sum(bits) % 2, 1]


def read_preset(img: Image.Image) -> int | None:
    """The preset the picture's band shows (None: the camera was at no preset).

    Raises ValueError if the picture has no readable band (guards or parity wrong, or a block
    neither clearly dark nor clearly light).
    """
    gray = img.convert("L")
    w, h = gray.size
    cell_w = w / BAND_CELLS
    band_h = BAND_H * h / HEIGHT
    y0, y1 = int(h - band_h * 0.75), int(h - band_h * 0.25)
    got: list[int] = []
    for i in range(BAND_CELLS):
        x0, x1 = int(cell_w * (i + 0.3)), int(cell_w * (i + 0.7))
        mean = ImageStat.Stat(gray.crop((x0, y0, x1, y1))).mean[0]
        if 64 <= mean <= 192:
            raise ValueError(f"block {i} of the preset band is neither dark nor light (mean {mean:.0f})")
        got.append(1 if mean > 192 else 0)
    bits = got[2:2 + BAND_BITS]
    if got[:2] != [1, 0] or got[-1] != 1 or sum(bits) % 2 != got[-2]:
        raise ValueError(f"no preset band (blocks {got})")
    value = int("".join(map(str, bits)), 2)
    return None if value == 0 else value - 1


def render_frame(camera_id: str, at: float, *, preset: int | None = None, frame: int = 0) -> Image.Image:
    """A 640×360 RGB picture of a (synthetic) street scene with the camera's overlay and preset band."""
    img = Image.new("RGB", (WIDTH, HEIGHT), (40, 48, 56))
    draw = ImageDraw.Draw(img)
    # A horizon, a road in perspective and a few lane marks: enough to look like a scene.
    draw.rectangle((0, 0, WIDTH, HEIGHT // 2), fill=(92, 110, 130))
    draw.polygon([(WIDTH // 2 - 30, HEIGHT // 2), (WIDTH // 2 + 30, HEIGHT // 2), (WIDTH, HEIGHT), (0, HEIGHT)],
                 fill=(60, 60, 64))
    for i in range(6):
        y = HEIGHT // 2 + 12 + i * i * 6
        draw.rectangle((WIDTH // 2 - 2 - i, y, WIDTH // 2 + 2 + i, y + 4 + i), fill=(220, 210, 120))
    # Something that moves with time, so consecutive snapshots differ in the picture too.
    x = int(at * 40) % (WIDTH + 80) - 40
    draw.rectangle((x, HEIGHT - 90, x + 70, HEIGHT - 60), fill=(180, 40, 40))
    big = ImageFont.load_default(size=26)
    small = ImageFont.load_default(size=18)
    when = datetime.fromtimestamp(at, tz=UTC)
    lines = [
        (camera_id, big),
        (when.astimezone(KST).strftime("%Y-%m-%d %H:%M:%S KST"), small),
        (when.strftime("%Y-%m-%d %H:%M:%S UTC"), small),
        (f"preset {preset if preset is not None else '-'}   frame {frame}", small),
    ]
    draw.rectangle((0, 0, 380, 118), fill=(0, 0, 0))
    y = 6
    for text, font in lines:
        draw.text((10, y), text, fill=(255, 255, 255), font=font)
        y += 34 if font is big else 24
    cell = WIDTH / BAND_CELLS
    for i, bit in enumerate(_band_bits(preset)):
        draw.rectangle((round(i * cell), HEIGHT - BAND_H, round((i + 1) * cell) - 1, HEIGHT - 1),
                       fill=(255, 255, 255) if bit else (0, 0, 0))
    return img


def render_snapshot(camera_id: str, at: float, *, preset: int | None = None, frame: int = 0,
                    quality: int = 80) -> bytes:
    """A JPEG of :func:`render_frame`'s picture."""
    img = render_frame(camera_id, at, preset=preset, frame=frame)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


@dataclass
class CameraSim:
    """The camera's state: its id, where its PTZ head points, how many pictures it took."""

    camera_id: str
    clock: Callable[[], float] = time.time
    preset: int | None = None
    presets: list[int] = field(default_factory=list)
    frames: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/snapshot.jpg", self.snapshot)
        app.router.add_post("/ptz/preset/{n}", self.move)
        app.router.add_get("/ptz", self.ptz)
        return app

    async def snapshot(self, request: web.Request) -> web.Response:
        self.frames += 1
        data = await asyncio.to_thread(render_snapshot, self.camera_id, self.clock(), preset=self.preset,
                                       frame=self.frames)
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def move(self, request: web.Request) -> web.Response:
        text = request.match_info["n"]
        if not text.isdigit() or int(text) > MAX_PRESET:
            return web.json_response({"error": f"no preset {text!r}"}, status=404)
        self.preset = int(text)
        self.presets.append(self.preset)
        return web.json_response({"camera": self.camera_id, "preset": self.preset})

    async def ptz(self, request: web.Request) -> web.Response:
        return web.json_response({"camera": self.camera_id, "preset": self.preset, "history": self.presets})


@dataclass
class RunningCamera:
    sim: CameraSim
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def snapshot_url(self) -> str:
        return f"{self.base_url}/snapshot.jpg"

    @property
    def ptz_preset_url(self) -> str:
        return f"{self.base_url}/ptz/preset/{{preset}}"


@asynccontextmanager
async def serve(camera_id: str, *, host: str = "127.0.0.1", port: int = 0,
                clock: Callable[[], float] = time.time) -> AsyncIterator[RunningCamera]:
    """Run one simulated camera until the block ends."""
    sim = CameraSim(camera_id, clock=clock)
    runner = web.AppRunner(sim.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield RunningCamera(sim, host, int(runner.addresses[0][1]))
    finally:
        await runner.cleanup()
