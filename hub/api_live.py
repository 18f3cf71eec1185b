"""The operator API's live stream: ``GET /api/events``, Server-Sent Events of committed changes
(hub/live.py).

Rules:

1. The stream lives no longer than its session: the session is looked up again at every
   keep-alive (``[api] events_keepalive_s``) and before every event, so a logout, an expiry or
   a disabled account (``jikimi hub user disable``, another process) ends the stream within one
   keep-alive, and no event is sent under a session that has ended. The console is told
   (``event: session_ended``) before the stream closes.
2. A console that goes away ends the stream; its subscription is dropped with it.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from hub import auth
from hub.api_base import ops_of
from hub.live import LiveEvent
from hub.operations import Operations

log = logging.getLogger(__name__)

ENDED = b"event: session_ended\ndata: {}\n\n"


async def _alive(ops: Operations, token: str) -> bool:
    now = ops.clock()
    return await ops.reader.run(lambda c: auth.lookup_session(c, token, now)) is not None


async def events(request: web.Request, sess: auth.Session) -> web.StreamResponse:
    ops = ops_of(request)
    token = request.cookies.get(auth.COOKIE, "")
    keepalive_s = ops.cfg.api.events_keepalive_s
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    await resp.prepare(request)
    try:
        await resp.write(b": connected\n\n")
        with ops.bus.subscription() as queue:
            while True:
                ev: LiveEvent | None = None
                try:
                    async with asyncio.timeout(keepalive_s):
                        ev = await queue.get()
                except TimeoutError:
                    pass
                if not await _alive(ops, token):
                    log.info("api.events_ended", extra={"username": sess.username})
                    await resp.write(ENDED)
                    break
                if ev is None:
                    await resp.write(b": keep-alive\n\n")
                else:
                    await resp.write(b"event: " + ev.kind.encode() + b"\ndata: " + ev.data + b"\n\n")
    except ConnectionResetError:
        pass  # the console went away
    return resp
