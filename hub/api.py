"""The operator API: HTTPS (aiohttp, TLS 1.3 from the PKI), JSON, described by ``/api/openapi.json``.

Rules:

1. Every route says who may call it: ``public`` (health, the OpenAPI file, act.login) or a minimum
   :class:`hub.roles.Role`. No session (or an expired one, or a disabled account): 401. A role
   too low: 403.
2. Every state-changing request (POST, PUT, PATCH, DELETE) must carry the session's CSRF token
   in ``X-CSRF-Token``, and must not come from another site (``Origin`` must be this hub;
   ``Sec-Fetch-Site``, when sent, must be ``same-origin`` or ``none``): else 403. Login, which
   has no session yet, is held to the origin checks.
3. Sessions ride in an HttpOnly, Secure, SameSite=Strict cookie (hub/auth.py).
4. Errors are JSON ``{"error": "..."}`` with a status per error class: 400 a body that is not
   JSON or a bad query, 401 not logged in, 403 forbidden, 404 not found, 409 conflict or
   illegal transition, 422 refused (a body field missing, mistyped or over the wire's limits —
   hub/apitypes.py —, two-person rule, stale data, unknown device), 429 rate limited (logins
   back off per user and address, hub/logins.py).
5. Live updates: ``GET /api/events`` is a Server-Sent-Events stream of committed changes
   (hub/live.py); it ends when its session does (logout, expiry, a disabled account:
   hub/api_live.py).

The routes live by group: plumbing and the guard in hub/api_base.py, reads in hub/api_read.py,
actions in hub/api_act.py, the live stream in hub/api_live.py; this file holds the route table
and serves it. Handlers see the hub only through its use-case layer (hub/operations.py) and
readers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from hub import api_act as act
from hub import api_live as live
from hub import api_province as province
from hub import api_read as read
from hub import api_video as video
from hub.api_base import (
    AUTH_KEY,
    LIMITER_KEY,
    MAX_BODY,
    OPS_KEY,
    Handler,
    errors_and_headers,
    json_response,
    need,
    ops_of,
)
from hub.logins import LoginLimiter
from hub.openapi import document
from hub.operations import Operations
from hub.roles import Role
from shared.tls import server_context

log = logging.getLogger(__name__)

WEB_DIR: Final = Path(__file__).parent / "web"


# --- public ----------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    return json_response(ops_of(request).health())


async def openapi(request: web.Request) -> web.Response:
    return json_response(document([(m, p, r) for m, p, r, _h in _routes()]))


# --- the console (static files, public: they hold no data; the API behind them checks) ----------


async def console(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html")


# --- the app ---------------------------------------------------------------------------------

def _routes() -> list[tuple[str, str, Role | None, Handler]]:
    v, o, s = Role.VIEWER, Role.OPERATOR, Role.SUPERVISOR
    table: list[tuple[str, str, Role | None, Any]] = [
        ("GET", "/api/health", None, health),
        ("GET", "/api/openapi.json", None, openapi),
        ("POST", "/api/session", None, act.login),
        ("GET", "/api/session", v, act.whoami),
        ("DELETE", "/api/session", v, act.logout),
        ("GET", "/api/sites", v, read.list_sites),
        ("GET", "/api/places", v, read.list_places),
        ("GET", "/api/vocabulary", v, read.get_vocabulary),
        ("GET", "/api/sites/{site}", v, read.get_site),
        ("GET", "/api/sites/{site}/latest", v, read.get_latest),
        ("GET", "/api/sites/{site}/history", v, read.get_history),
        ("GET", "/api/sites/{site}/events", v, read.get_events),
        ("GET", "/api/alarms", v, read.list_alarms),
        ("GET", "/api/alarms/{id}", v, read.get_alarm),
        *[("POST", f"/api/alarms/{{id}}/{verb}", role, act.alarm_action(verb))
          for verb, (_e, role) in act.ALARM_ACTIONS.items()],
        ("GET", "/api/evidence/{id}", v, act.get_evidence),
        ("GET", "/api/cameras", v, read.list_cameras),
        ("GET", "/api/sites/{site}/cameras", v, video.site_cameras),
        ("POST", "/api/cameras/{camera}/live", v, video.watch),
        ("DELETE", "/api/live/{view}", v, video.unwatch),
        ("GET", "/api/camera-links", o, video.list_links),
        ("POST", "/api/camera-links", o, video.post_link),
        ("DELETE", "/api/camera-links/{id}", o, video.delete_link),
        # a view link's holder: no session; the token opens one camera's live view (hub/api_video.py)
        ("GET", "/live/{token}", None, video.link_page),
        ("POST", "/live/{token}/offer", None, video.link_offer),
        ("DELETE", "/live/{token}/views/{view}", None, video.link_unwatch),
        ("GET", "/api/forwarding", v, read.list_forwarding),
        ("GET", "/api/escalations", v, read.list_escalations),
        ("GET", "/api/incidents", v, read.list_incidents),
        ("POST", "/api/incidents/{id}/close", s, act.close_incident),
        ("GET", "/api/commands", v, read.list_commands),
        ("POST", "/api/commands", o, act.post_command),
        ("GET", "/api/commands/{cmd_id}", v, read.get_command),
        ("POST", "/api/commands/{cmd_id}/approve", s, act.approve_command),
        ("POST", "/api/commands/{cmd_id}/reject", o, act.reject_command),
        ("GET", "/api/operations", v, read.list_operations),
        ("POST", "/api/operations", o, act.post_operation),
        ("GET", "/api/operations/{op_id}", v, read.get_operation),
        ("GET", "/api/province-requests", v, province.list_requests),
        ("POST", "/api/province-requests/{id}/accept", o, province.accept_request),
        ("POST", "/api/province-requests/{id}/refuse", o, province.refuse_request),
        ("GET", "/api/exercises", v, read.list_exercises),
        ("POST", "/api/exercises", s, act.post_exercise),
        ("POST", "/api/exercises/{ex_id}/end", s, act.end_exercise),
        ("GET", "/api/audit", s, read.get_audit),
        ("GET", "/api/quarantine", s, read.get_quarantine),
        ("GET", "/api/events", v, live.events),
    ]
    return [(m, p, r, h if r is None else need(r, h)) for m, p, r, h in table]


def make_app(ops: Operations) -> web.Application:
    app = web.Application(middlewares=[errors_and_headers], client_max_size=MAX_BODY)
    app[OPS_KEY] = ops
    app[AUTH_KEY] = ops
    au = ops.cfg.auth
    app[LIMITER_KEY] = LoginLimiter(au.login_max_failures, au.login_window_s, backoff_s=au.login_backoff_s,
                                    backoff_max_s=au.login_backoff_max_s)
    for method, path, _role, handler in _routes():
        app.router.add_route(method, path, handler)
    app.router.add_get("/", console)
    app.router.add_static("/web/", WEB_DIR, follow_symlinks=False)
    return app


async def serve(ops: Operations, ready: asyncio.Event, on_port: Callable[[int], None]) -> None:
    """The API task: serve until cancelled; ``on_port`` is told the port it listens on."""
    cfg = ops.cfg.api
    ctx = server_context(cfg.tls, require_client_cert=False)
    runner = web.AppRunner(make_app(ops), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, cfg.host, cfg.port, ssl_context=ctx)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else cfg.port
        on_port(port)
        log.info("api.listening", extra={"host": cfg.host, "port": port})
        ready.set()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
