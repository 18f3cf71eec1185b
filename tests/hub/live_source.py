"""A local H.264 source for live-view tests: frames drawn with numpy and encoded by PyAV's libx264
(Annex B, as an RTSP camera sends it), paced in real time. ``SynthOpener`` hands it to the hub in
place of a camera's RTSP stream and counts how often a camera's stream was opened."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import Counter

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from hub.cctv_geo import Camera

WIDTH, HEIGHT, FPS = 320, 240, 25


class SynthH264(MediaStreamTrack):
    """Encoded H.264 packets of a moving green bar on blue (never a blank picture)."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.codec = av.CodecContext.create("libx264", "w")
        self.codec.width, self.codec.height, self.codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        self.codec.time_base = fractions.Fraction(1, FPS)
        self.codec.options = {"tune": "zerolatency", "preset": "ultrafast", "g": str(FPS), "bf": "0",
                              "x264-params": "repeat-headers=1"}
        self.i = 0
        self.t0: float | None = None
        self.pending: list[av.Packet] = []

    async def recv(self) -> av.Packet:  # type: ignore[override]
        while not self.pending:
            if self.t0 is None:
                self.t0 = time.monotonic()
            wait = self.t0 + self.i / FPS - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
            img[:, :, 2] = 200
            x = (self.i * 4) % (WIDTH - 40)
            img[80:160, x:x + 40, 1] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = self.i, self.codec.time_base
            self.i += 1
            self.pending = list(self.codec.encode(frame))
        return self.pending.pop(0)


class _Source:
    def __init__(self) -> None:
        self._track = SynthH264()

    @property
    def track(self) -> MediaStreamTrack:
        return self._track

    def close(self) -> None:
        self._track.stop()


class SynthOpener:
    """The hub's :class:`hub.liveview.SourceOpener`, with a synthetic stream for every camera."""

    def __init__(self) -> None:
        self.opened: Counter[str] = Counter()

    async def open(self, camera: Camera) -> _Source:
        self.opened[camera.id] += 1
        return _Source()
