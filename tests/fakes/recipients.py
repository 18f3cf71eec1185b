"""Fakes of real city centres, 112 and 119, built on the reference receiver (hub/receiver.py).

A real centre's front door misbehaves in ways the reference receiver does not on its own; a
:class:`CentreFaults` middleware adds them, switchable while a test runs:

- ``down``: every request gets 503 before it reaches the centre's application (an outage);
- ``strip_ack``: the centre stores the alert but its gateway answers 200 without the identifier
  (a load balancer's canned reply), which is not an acknowledgement;
- ``hold_next_ack()``: the next acknowledgement is held after the alert is stored, until
  ``release`` is set — the window in which the sender can die and lose the acknowledgement.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler


@dataclass
class CentreFaults:
    down: bool = False
    strip_ack: bool = False
    seen: int = 0
    held: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when an acknowledgement is being held (the alert is stored by then)."""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _hold: bool = False

    def hold_next_ack(self) -> None:
        self._hold = True
        self.held.clear()
        self.release.clear()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.seen += 1
        if self.down:
            await request.read()
            return web.json_response({"error": "centre down"}, status=503)
        resp = await handler(request)
        if resp.status == 200 and self._hold:
            self._hold = False
            self.held.set()
            await self.release.wait()
        if resp.status == 200 and self.strip_ack:
            return web.json_response({"result": "OK"})
        return resp
