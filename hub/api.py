"""The operator API: HTTPS (aiohttp, TLS 1.3 from the PKI), JSON, described by ``/api/openapi.json``.

Rules:

1. Every route says who may call it: ``public`` (health, the OpenAPI file, login) or a minimum
   :class:`hub.roles.Role`. No session (or an expired one, or a disabled account): 401. A role
   too low: 403.
2. Every state-changing request (POST, PUT, PATCH, DELETE) must carry the session's CSRF token
   in ``X-CSRF-Token``, and must not come from another site (``Origin`` must be this hub;
   ``Sec-Fetch-Site``, when sent, must be ``same-origin`` or ``none``): else 403. Login, which
   has no session yet, is held to the origin checks.
3. Sessions ride in an HttpOnly, Secure, SameSite=Strict cookie (hub/auth.py).
4. Errors are JSON ``{"error": "..."}`` with a status per error class: 400 bad input,
   401 not logged in, 403 forbidden, 404 not found, 409 conflict or illegal transition,
   422 refused (two-person rule, stale data, unknown device), 429 rate limited.
5. Live updates: ``GET /api/events`` is a Server-Sent-Events stream of committed changes
   (hub/live.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
from aiohttp import web

from hub import auth, queries
from hub.alarms import AlarmEvent
from hub.apitypes import (
    AlarmActionBody,
    Body,
    CommandAccepted,
    CommandBody,
    DecisionBody,
    HealthView,
    LoginBody,
    OperationAccepted,
    OperationBody,
    SessionView,
    SitePlace,
)
from hub.commands import Draft
from hub.errors import (
    AuthError,
    BadCredentials,
    Conflict,
    Forbidden,
    HubError,
    IllegalTransition,
    NotFound,
    RateLimited,
    Refused,
)
from hub.openapi import document
from hub.roles import Role
from hub.service import Hub
from shared import vocabulary
from shared.errors import WireError
from shared.tls import server_context

log = logging.getLogger(__name__)

HUB_KEY: Final = web.AppKey("hub", Hub)
LIMITER_KEY: Final = web.AppKey("limiter", auth.LoginLimiter)
UNSAFE: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_BODY: Final = 64 * 1024
WEB_DIR: Final = Path(__file__).parent / "web"
CONSOLE_CSP: Final = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                      "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                      "frame-ancestors 'none'")
_enc = msgspec.json.Encoder()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadInput(HubError):
    """The request body or query is not what the route takes (400)."""


# --- plumbing --------------------------------------------------------------------------------


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=_enc.encode(body), status=status, content_type="application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_enc.encode({"error": message}), status=status, content_type="application/json",
                        headers=headers)


B = TypeVar("B", bound=Body)


async def _body(request: web.Request, kind: type[B]) -> B:
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise BadInput("request body too large")
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadInput(f"bad request body: {exc}") from exc


def _status_for(exc: HubError | WireError) -> int:
    if isinstance(exc, BadInput | WireError):
        return 400
    if isinstance(exc, RateLimited):
        return 429
    if isinstance(exc, AuthError):
        return 401
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict | IllegalTransition):
        return 409
    if isinstance(exc, Refused):
        return 422
    return 500


@web.middleware
async def errors_and_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except (HubError, WireError) as exc:
        status = _status_for(exc)
        headers = {"Retry-After": str(int(exc.retry_after_s) + 1)} if isinstance(exc, RateLimited) else None
        if status >= 500:
            log.error("api.error", extra={"path": request.path, "error": str(exc)})
        resp = _error(status, str(exc), headers)
    resp.headers.setdefault("Cache-Control", "no-store")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Strict-Transport-Security"] = "max-age=31536000"
    resp.headers.setdefault("Content-Security-Policy", CONSOLE_CSP)
    return resp


def _check_origin(request: web.Request) -> None:
    """Rule 2's cross-site part."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"https://{request.host}":
        raise Forbidden(f"cross-site request refused (Origin {origin})")
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise Forbidden(f"cross-site request refused (Sec-Fetch-Site {site})")


async def _session(request: web.Request) -> auth.Session:
    token = request.cookies.get(auth.COOKIE)
    if not token:
        raise AuthError("log in first")
    hub = request.app[HUB_KEY]
    sess: auth.Session | None = await hub.reader.run(lambda c: auth.lookup_session(c, token, time.time()))
    if sess is None:
        raise AuthError("session expired or unknown; log in again")
    return sess


def need(role: Role, handler: Callable[[web.Request, auth.Session], Awaitable[web.StreamResponse]]) -> Handler:
    """Rule 1 and 2 for one route."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        sess = await _session(request)
        if request.method in UNSAFE:
            _check_origin(request)
            sent = request.headers.get("X-CSRF-Token", "")
            if not hmac.compare_digest(sent.encode(), sess.csrf.encode()):
                raise Forbidden("missing or wrong CSRF token")
        if not sess.role.allows(role):
            raise Forbidden(f"{sess.username} ({sess.role.value}) may not do this; it needs {role.value}")
        return await handler(request, sess)

    guarded.__name__ = handler.__name__
    setattr(guarded, "min_role", role)  # noqa: B010 - read by the route table test
    return guarded


def _int(request: web.Request, name: str, default: int, lo: int = 0, hi: int = 10_000) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise BadInput(f"{name} must be between {lo} and {hi}")
    return value


def _float(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise BadInput(f"{name} must be a number") from None


def _id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise NotFound(f"no such id {request.match_info['id']}") from None


# --- public ----------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    c = hub.engine.counters
    st = hub.writer.stats
    return _json(HealthView(
        status="ok" if hub.mqtt.connected.is_set() else "degraded",
        hub=hub.cfg.hub_id,
        mqtt_connected=hub.mqtt.connected.is_set(),
        uptime_s=round(time.time() - hub.started_at, 3),
        ingest=dataclasses.asdict(c),
        writer={"transactions": st.transactions, "last_tx_ms": round(st.last_tx_ms, 3),
                "max_tx_ms": round(st.max_tx_ms, 3), "queue": hub.writer.qsize(),
                "queue_high_water": st.queue_high_water},
    ))


async def openapi(request: web.Request) -> web.Response:
    return _json(document([(m, p, r) for m, p, r, _h in _routes()]))


async def login(request: web.Request) -> web.Response:
    _check_origin(request)
    hub = request.app[HUB_KEY]
    limiter = request.app[LIMITER_KEY]
    body = await _body(request, LoginBody)
    keys = (f"user:{body.username}", f"addr:{request.remote}")
    now = time.time()
    limiter.check(keys, now)
    op = await hub.reader.run(lambda c: auth.find_operator(c, body.username))
    try:
        op = await asyncio.to_thread(auth.verify_login, op, body.password)
    except BadCredentials:
        limiter.failed(keys, now)
        username = body.username[:64]
        await hub.write(lambda tx: tx.audit(username, "session.login_failed", f"operator/{username}",
                                            {"remote": str(request.remote)}))
        raise
    limiter.succeeded(keys)
    ttl = hub.cfg.auth.session_ttl_s
    remote = str(request.remote)
    token, csrf = await hub.write(lambda tx: auth.create_session(tx, op.username, remote, ttl))
    resp = _json(SessionView(username=op.username, role=op.role.value, csrf=csrf, expires_at=now + ttl))
    resp.set_cookie(auth.COOKIE, token, max_age=int(ttl), path="/", secure=True, httponly=True, samesite="Strict")
    return resp


# --- session ---------------------------------------------------------------------------------


async def whoami(request: web.Request, sess: auth.Session) -> web.Response:
    return _json(SessionView(username=sess.username, role=sess.role.value, csrf=sess.csrf,
                             expires_at=sess.expires_at))


async def logout(request: web.Request, sess: auth.Session) -> web.Response:
    token = request.cookies.get(auth.COOKIE, "")
    await request.app[HUB_KEY].write(lambda tx: auth.end_session(tx, token, sess.username))
    resp = web.Response(status=204)
    resp.del_cookie(auth.COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
    return resp


# --- sites, values ---------------------------------------------------------------------------


async def list_sites(request: web.Request, sess: auth.Session) -> web.Response:
    area = request.query.get("area")
    return _json(await request.app[HUB_KEY].reader.run(lambda c: queries.sites(c, area)))


async def list_places(request: web.Request, sess: auth.Session) -> web.Response:
    registry = request.app[HUB_KEY].cfg.sites.registry
    return _json([SitePlace(site=site, area=e.area, name=e.name, lat=e.lat, lon=e.lon)
                  for site, e in sorted(registry.items())])


async def get_vocabulary(request: web.Request, sess: auth.Session) -> web.Response:
    """The action vocabulary (shared/vocabulary.py): what the console offers per device kind."""
    return _json(vocabulary.VOCABULARY)


async def get_site(request: web.Request, sess: auth.Session) -> web.Response:
    site = request.match_info["site"]
    return _json(await request.app[HUB_KEY].reader.run(lambda c: queries.site(c, site)))


async def get_latest(request: web.Request, sess: auth.Session) -> web.Response:
    hub = request.app[HUB_KEY]
    site = request.match_info["site"]
    limit = hub.cfg.rules.params(site, "").data_age_limit_s
    return _json(await hub.reader.run(lambda c: queries.latest(c, site, time.time(), limit)))


async def get_history(request: web.Request, sess: auth.Session) -> web.Response:
    site = request.match_info["site"]
    device = request.query.get("device")
    point = request.query.get("point")
    if not device or not point:
        raise BadInput("device and point are required")
    now = time.time()
    since = _float(request, "since", now - 3600)
    until = _float(request, "until", now + 1)
    limit = _int(request, "limit", 5000, 1, 100_000)
    return _json(await request.app[HUB_KEY].reader.run(
        lambda c: queries.history(c, site, device, point, since, until, limit)))


# --- alarms, incidents -----------------------------------------------------------------------


async def list_alarms(request: web.Request, sess: auth.Session) -> web.Response:
    state = request.query.get("state")
    site = request.query.get("site")
    limit = _int(request, "limit", 500, 1, 10_000)
    return _json(await request.app[HUB_KEY].reader.run(
        lambda c: queries.alarms(c, state=state, site_id=site, limit=limit)))


async def get_alarm(request: web.Request, sess: auth.Session) -> web.Response:
    alarm_id = _id(request)
    return _json(await request.app[HUB_KEY].reader.run(lambda c: queries.alarm(c, alarm_id)))


async def get_evidence(request: web.Request, sess: auth.Session) -> web.Response:
    """One camera snapshot; every view is audited (who looked at which picture, when)."""
    hub = request.app[HUB_KEY]
    if hub.linker is None:
        raise NotFound("this hub has no cameras configured")
    _ev, data = await hub.linker.view(_id(request), sess.username)
    return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def list_forwarding(request: web.Request, sess: auth.Session) -> web.Response:
    rows = await request.app[HUB_KEY].reader.run(queries.deliveries)
    return _json(queries.ForwardingView(deliveries=rows))


ALARM_ACTIONS: Final = {
    "ack": (AlarmEvent.ACK, Role.OPERATOR),
    "shelve": (AlarmEvent.SHELVE, Role.OPERATOR),
    "unshelve": (AlarmEvent.UNSHELVE, Role.OPERATOR),
    "remove": (AlarmEvent.REMOVE, Role.SUPERVISOR),
    "restore": (AlarmEvent.RESTORE, Role.SUPERVISOR),
}


def alarm_action(verb: str) -> Callable[[web.Request, auth.Session], Awaitable[web.Response]]:
    event, _role = ALARM_ACTIONS[verb]

    async def handler(request: web.Request, sess: auth.Session) -> web.Response:
        hub = request.app[HUB_KEY]
        alarm_id = _id(request)
        body = await _body(request, AlarmActionBody)
        reason = body.reason or ("acknowledged" if event is AlarmEvent.ACK else "")
        if event is AlarmEvent.SHELVE and body.duration_s is None:
            raise BadInput("shelve needs duration_s")
        await hub.write(lambda tx: hub.engine.alarm_action(tx, alarm_id, event, sess.username, reason,
                                                           body.duration_s if event is AlarmEvent.SHELVE else None))
        return _json(await hub.reader.run(lambda c: queries.alarm(c, alarm_id)))

    handler.__name__ = f"alarm_{verb}"
    return handler


async def list_incidents(request: web.Request, sess: auth.Session) -> web.Response:
    state = request.query.get("state")
    return _json(await request.app[HUB_KEY].reader.run(lambda c: queries.incidents(c, state)))


async def close_incident(request: web.Request, sess: auth.Session) -> web.Response:
    hub = request.app[HUB_KEY]
    inc = _id(request)
    body = await _body(request, DecisionBody)
    await hub.write(lambda tx: hub.engine.close_incident(tx, inc, sess.username, body.reason))
    return web.Response(status=204)


# --- commands, operations --------------------------------------------------------------------


async def list_commands(request: web.Request, sess: auth.Session) -> web.Response:
    state = request.query.get("state")
    site = request.query.get("site")
    limit = _int(request, "limit", 500, 1, 10_000)
    return _json(await request.app[HUB_KEY].reader.run(
        lambda c: queries.commands(c, state=state, site_id=site, limit=limit)))


async def get_command(request: web.Request, sess: auth.Session) -> web.Response:
    cmd_id = request.match_info["cmd_id"]
    return _json(await request.app[HUB_KEY].reader.run(lambda c: queries.command(c, cmd_id)))


async def post_command(request: web.Request, sess: auth.Session) -> web.Response:
    hub = request.app[HUB_KEY]
    body = await _body(request, CommandBody)
    out = await hub.issue_command(Draft(body.site, body.device, body.action, dict(body.params)), sess.username,
                                  sess.role, body.reason)
    return _json(CommandAccepted(cmd_id=out.cmd_id, state=out.state.value), status=202)


async def approve_command(request: web.Request, sess: auth.Session) -> web.Response:
    hub = request.app[HUB_KEY]
    body = await _body(request, DecisionBody)
    out = await hub.approve_command(request.match_info["cmd_id"], sess.username, sess.role,
                                    body.reason or "approved")
    return _json(CommandAccepted(cmd_id=out.cmd_id, state=out.state.value), status=202)


async def reject_command(request: web.Request, sess: auth.Session) -> web.Response:
    hub = request.app[HUB_KEY]
    body = await _body(request, DecisionBody)
    cmd_id = request.match_info["cmd_id"]
    await hub.write(lambda tx: hub.engine.reject_command(tx, cmd_id, sess.username, sess.role, body.reason))
    return _json(await hub.reader.run(lambda c: queries.command(c, cmd_id)))


async def list_operations(request: web.Request, sess: auth.Session) -> web.Response:
    limit = _int(request, "limit", 100, 1, 1000)
    return _json(await request.app[HUB_KEY].reader.run(lambda c: queries.operations(c, limit)))


async def get_operation(request: web.Request, sess: auth.Session) -> web.Response:
    op_id = request.match_info["op_id"]
    return _json(await request.app[HUB_KEY].reader.run(lambda c: queries.operation(c, op_id)))


async def post_operation(request: web.Request, sess: auth.Session) -> web.Response:
    hub = request.app[HUB_KEY]
    body = await _body(request, OperationBody)
    out = await hub.start_operation(body.kind, body.area, sess.username, sess.role, body.reason)
    return _json(OperationAccepted(operation_id=out.operation_id, commands=[
        CommandAccepted(cmd_id=c.cmd_id, state=c.state.value) for c in out.commands]), status=202)


# --- audit, quarantine, live -----------------------------------------------------------------


async def get_audit(request: web.Request, sess: auth.Session) -> web.Response:
    after = _int(request, "after", 0, 0, 2**62)
    limit = _int(request, "limit", 500, 1, 10_000)
    return _json(await request.app[HUB_KEY].reader.run(lambda c: queries.audit_rows(c, after, limit)))


async def get_quarantine(request: web.Request, sess: auth.Session) -> web.Response:
    limit = _int(request, "limit", 100, 1, 1000)
    return _json(await request.app[HUB_KEY].reader.run(lambda c: queries.quarantine(c, limit)))


async def events(request: web.Request, sess: auth.Session) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    await resp.prepare(request)
    await resp.write(b": connected\n\n")
    stream = hub.bus.subscribe()
    try:
        while True:
            try:
                async with asyncio.timeout(15):
                    ev = await anext(stream)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            await resp.write(b"event: " + ev.kind.encode() + b"\ndata: " + ev.data + b"\n\n")
    except ConnectionResetError:
        pass  # the console went away
    finally:
        await stream.aclose()
    return resp


# --- the console (static files, public: they hold no data; the API behind them checks) ----------


async def console(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html")


# --- the app ---------------------------------------------------------------------------------

def _routes() -> list[tuple[str, str, Role | None, Handler]]:
    v, o, s = Role.VIEWER, Role.OPERATOR, Role.SUPERVISOR
    table: list[tuple[str, str, Role | None, Any]] = [
        ("GET", "/api/health", None, health),
        ("GET", "/api/openapi.json", None, openapi),
        ("POST", "/api/session", None, login),
        ("GET", "/api/session", v, whoami),
        ("DELETE", "/api/session", v, logout),
        ("GET", "/api/sites", v, list_sites),
        ("GET", "/api/places", v, list_places),
        ("GET", "/api/vocabulary", v, get_vocabulary),
        ("GET", "/api/sites/{site}", v, get_site),
        ("GET", "/api/sites/{site}/latest", v, get_latest),
        ("GET", "/api/sites/{site}/history", v, get_history),
        ("GET", "/api/alarms", v, list_alarms),
        ("GET", "/api/alarms/{id}", v, get_alarm),
        *[("POST", f"/api/alarms/{{id}}/{verb}", role, alarm_action(verb))
          for verb, (_e, role) in ALARM_ACTIONS.items()],
        ("GET", "/api/evidence/{id}", v, get_evidence),
        ("GET", "/api/forwarding", v, list_forwarding),
        ("GET", "/api/incidents", v, list_incidents),
        ("POST", "/api/incidents/{id}/close", s, close_incident),
        ("GET", "/api/commands", v, list_commands),
        ("POST", "/api/commands", o, post_command),
        ("GET", "/api/commands/{cmd_id}", v, get_command),
        ("POST", "/api/commands/{cmd_id}/approve", s, approve_command),
        ("POST", "/api/commands/{cmd_id}/reject", o, reject_command),
        ("GET", "/api/operations", v, list_operations),
        ("POST", "/api/operations", o, post_operation),
        ("GET", "/api/operations/{op_id}", v, get_operation),
        ("GET", "/api/audit", s, get_audit),
        ("GET", "/api/quarantine", s, get_quarantine),
        ("GET", "/api/events", v, events),
    ]
    return [(m, p, r, h if r is None else need(r, h)) for m, p, r, h in table]


def make_app(hub: Hub) -> web.Application:
    app = web.Application(middlewares=[errors_and_headers], client_max_size=MAX_BODY)
    app[HUB_KEY] = hub
    app[LIMITER_KEY] = auth.LoginLimiter(hub.cfg.auth.login_max_failures, hub.cfg.auth.login_window_s)
    for method, path, _role, handler in _routes():
        app.router.add_route(method, path, handler)
    app.router.add_get("/", console)
    app.router.add_static("/web/", WEB_DIR, follow_symlinks=False)
    return app


async def serve(hub: Hub, ready: asyncio.Event) -> None:
    """The API task: serve until cancelled."""
    ctx = server_context(hub.cfg.api.tls, require_client_cert=False)
    runner = web.AppRunner(make_app(hub), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, hub.cfg.api.host, hub.cfg.api.port, ssl_context=ctx)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        hub.api_port = sockets[0].getsockname()[1] if sockets else hub.cfg.api.port
        log.info("api.listening", extra={"host": hub.cfg.api.host, "port": hub.api_port})
        ready.set()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
