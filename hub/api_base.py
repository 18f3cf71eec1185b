"""The operator API's plumbing: JSON in and out, errors to statuses, sessions, and the guard
every non-public route goes through (rules 1-4 of hub/api.py).

Handlers reach the hub only through :data:`OPS_KEY` (the use-case layer, hub/operations.py).
Sessions, logins and the guard reach the accounts only through :data:`AUTH_KEY`, an
:class:`AuthHost`: the hub's use-case layer is one, and so is the province's API
(province/api.py), so both serve the one auth (hub/auth.py) and the same routes.
"""

from __future__ import annotations

import hmac
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, TypeVar

import msgspec
from aiohttp import web

from hub import auth, logins
from hub.apitypes import Body
from hub.config import ApiConfig, AuthConfig
from hub.errors import AuthError, Conflict, Forbidden, HubError, IllegalTransition, NotFound, RateLimited, Refused
from hub.logins import LoginLimiter
from hub.operations import Operations
from hub.roles import Role
from hub.store import Clock, Tx
from shared.errors import WireError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Reads(Protocol):
    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


class AuthSettings(Protocol):
    @property
    def api(self) -> ApiConfig: ...

    @property
    def auth(self) -> AuthConfig: ...


class AuthHost(Protocol):
    """What sessions, logins and the guard need of a service: its ``[api]`` and ``[auth]``, its
    clock, reads of its file and short write transactions on it (the file holds hub/auth.py's
    ``operators`` and ``sessions`` and the hash-chained ``audit``)."""

    @property
    def cfg(self) -> AuthSettings: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def reader(self) -> Reads: ...

    async def write(self, fn: Callable[[Tx], T]) -> T: ...


OPS_KEY: Final = web.AppKey("ops", Operations)
AUTH_KEY: Final = web.AppKey[AuthHost]("auth")
LIMITER_KEY: Final = web.AppKey("limiter", LoginLimiter)
UNSAFE: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_BODY: Final = 64 * 1024
CONSOLE_CSP: Final = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                      "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                      "frame-ancestors 'none'")
_enc = msgspec.json.Encoder()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SessionHandler = Callable[[web.Request, auth.Session], Awaitable[web.StreamResponse]]


class BadInput(HubError):
    """The request body is not JSON, or a query is not what the route takes (400)."""


class BadField(Refused):
    """The request body is JSON but a field is missing, of the wrong type or out of bounds (422),
    e.g. a reason over the wire's limit (shared/messages.py ``MAX_TEXT``)."""


def ops_of(request: web.Request) -> Operations:
    return request.app[OPS_KEY]


def auth_of(request: web.Request) -> AuthHost:
    return request.app[AUTH_KEY]


def json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(body=_enc.encode(body), status=status, content_type="application/json")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_enc.encode({"error": message}), status=status, content_type="application/json",
                        headers=headers)


B = TypeVar("B", bound=Body)


async def read_body(request: web.Request, kind: type[B]) -> B:
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise BadInput("request body too large")
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise BadField(f"request body refused: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadInput(f"bad request body: {exc}") from exc


def client_of(request: web.Request) -> str:
    """The client's address: the peer's, or the trusted proxy's header's (hub/logins.py rule 6)."""
    cfg = auth_of(request).cfg.api
    header = cfg.trusted_proxy_header
    value = request.headers.get(header) if header is not None else None
    return logins.client_address(request.remote, header, value, cfg.trusted_proxies)


def status_for(exc: HubError | WireError) -> int:
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
        status = status_for(exc)
        headers = {"Retry-After": str(int(exc.retry_after_s) + 1)} if isinstance(exc, RateLimited) else None
        if status >= 500:
            log.error("api.error", extra={"path": request.path, "error": str(exc)})
        resp = error_response(status, str(exc), headers)
    resp.headers.setdefault("Cache-Control", "no-store")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Strict-Transport-Security"] = "max-age=31536000"
    resp.headers.setdefault("Content-Security-Policy", CONSOLE_CSP)
    return resp


def check_origin(request: web.Request) -> None:
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
    host = auth_of(request)
    now = host.clock()
    sess: auth.Session | None = await host.reader.run(lambda c: auth.lookup_session(c, token, now))
    if sess is None:
        raise AuthError("session expired or unknown; log in again")
    return sess


def need(role: Role, handler: SessionHandler) -> Handler:
    """Rule 1 and 2 for one route."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        sess = await _session(request)
        if request.method in UNSAFE:
            check_origin(request)
            sent = request.headers.get("X-CSRF-Token", "")
            if not hmac.compare_digest(sent.encode(), sess.csrf.encode()):
                raise Forbidden("missing or wrong CSRF token")
        if not sess.role.allows(role):
            raise Forbidden(f"{sess.username} ({sess.role.value}) may not do this; it needs {role.value}")
        return await handler(request, sess)

    guarded.__name__ = handler.__name__
    setattr(guarded, "min_role", role)  # noqa: B010 - read by the route table test
    return guarded


def int_param(request: web.Request, name: str, default: int, lo: int = 0, hi: int = 10_000) -> int:
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


def float_param(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise BadInput(f"{name} must be a number") from None


def id_param(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise NotFound(f"no such id {request.match_info['id']}") from None
