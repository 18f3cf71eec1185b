"""The province's operator API: HTTPS (TLS 1.3 from the province's PKI), JSON, over the hub's
API plumbing and auth (DESIGN §8, issue 18).

Rules:

1. One auth: sessions, logins, roles, CSRF and the route guard are the hub's (hub/api_base.py,
   hub/api_act.py, hub/auth.py), served by :class:`ProvinceHost`, the province's
   :class:`~hub.api_base.AuthHost`. Accounts live in the province's file (``jikimi province
   user``); every login, failed login and logout is appended to the province's hash chain.
2. Every route says who may call it, as the hub's do: ``/api/health`` and logging in are public
   (health carries counts only, no ids); the views of cities, sites, alarms and incidents need a
   viewer; a request to a city an operator; the audit log and the quarantine a supervisor. No
   session: 401; a role too low: 403.
   The console's static files (the city console's, hub/web/, in its province view) hold no data.
3. Query parameters are checked before any query runs: a city id must be a city id (400) and a
   city the province has heard of (404); an alarm state must be one of the hub's states (400);
   a ``limit`` is bounded (400 outside its range).
4. Reads run on the hub's read-only :class:`~hub.store.Reader` threads (WAL: they never block the
   ingest); the only writes here are the sessions' and the requests', one short transaction each
   on the store's one connection, on the event loop like every other write to the file.
5. A request (``POST /api/requests``: block or evacuate an area of a city the province has heard
   from) is stored in the requesting operator's name and audited; the ingest's tick sends it until
   the city answers. ``GET /api/requests`` shows each with its city's answer and its operation.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Annotated, Any, Final, TypeVar

import msgspec
from aiohttp import web

from hub import api_act, queries
from hub.alarms import AlarmState
from hub.api import WEB_DIR, console
from hub.api_base import (
    AUTH_KEY,
    LIMITER_KEY,
    MAX_BODY,
    BadInput,
    Handler,
    errors_and_headers,
    int_param,
    json_response,
    need,
    read_body,
)
from hub.apitypes import Body
from hub.auth import Session
from hub.errors import NotFound, Refused
from hub.logins import LoginLimiter
from hub.roles import Role
from hub.store import Clock, Reader, Tx
from province.api_types import AlarmView, CityView, HealthView, IncidentView, SiteView
from province.config import ProvinceConfig
from province.errors import ProvinceRequestError
from province.grouping import PlacedAlarm, group
from province.store import ACTIVE, ProvinceStore, request_views
from shared.messages import CityId, Name, Operation, Text
from shared.tls import server_context
from shared.topics import check_city_id

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_LIMIT: Final = 10_000
_STATES: Final = frozenset(s.value for s in AlarmState)


class ProvinceHost:
    """The province as the hub's auth sees it (rule 1), and what the routes read."""

    def __init__(self, cfg: ProvinceConfig, store: ProvinceStore, *, connected: Callable[[], bool],
                 clock: Clock = time.time) -> None:
        self.cfg = cfg
        self.store = store
        self.reader = Reader(cfg.db_path)
        self.clock = clock
        self.connected = connected
        self.started_at = clock()

    async def write(self, fn: Callable[[Tx], T]) -> T:
        return self.store.write(fn, self.clock())

    def close(self) -> None:
        self.reader.close()


HOST_KEY: Final = web.AppKey("province", ProvinceHost)


def _host(request: web.Request) -> ProvinceHost:
    return request.app[HOST_KEY]


# --- queries (pure SQL over a read-only connection) --------------------------------------------


def _age(now: float, ts: float | None) -> float | None:
    return None if ts is None else max(0.0, now - ts)


def cities(conn: sqlite3.Connection, now: float) -> list[CityView]:
    held = dict(conn.execute("SELECT site, count(*) FROM quarantine WHERE site IS NOT NULL GROUP BY site"))
    out = []
    for (city, hub, version, online, status_ts, sites, records, batch_at, newest, lag,
         epoch) in conn.execute("SELECT city, hub, hub_version, online, status_ts, sites, records, last_batch_at,"
                                " newest_record_ts, lag_s, epoch FROM cities ORDER BY city"):
        link = "unknown" if status_ts is None else "online" if online else "offline"
        out.append(CityView(city=city, hub=hub, hub_version=version, link=link, status_age_s=_age(now, status_ts),
                            last_record_ts=newest, data_age_s=_age(now, newest),
                            last_batch_age_s=_age(now, batch_at), lag_s=lag, epoch=epoch,
                            records_committed=int(records), quarantined=int(held.get(city, 0)), sites=int(sites)))
    return out


def known_city(conn: sqlite3.Connection, city: str) -> bool:
    return conn.execute("SELECT 1 FROM cities WHERE city = ?", (city,)).fetchone() is not None


def sites(conn: sqlite3.Connection, now: float, city: str, limit: int) -> list[SiteView]:
    return [SiteView(city=city, site=site, state="online" if online else "offline", data_age_s=_age(now, last),
                     state_age_s=max(0.0, now - ts), lat=lat, lon=lon, catchment=catchment)
            for site, online, last, ts, lat, lon, catchment in conn.execute(
                "SELECT site, online, last_data_ts, ts, lat, lon, catchment FROM sites WHERE city = ?"
                " ORDER BY site LIMIT ?", (city, limit))]


_ALARMS: Final = ("SELECT a.city, a.alarm_id, a.site, a.rule, a.severity, a.state, a.raised_at, s.last_data_ts,"
                  " coalesce(a.lat, s.lat), coalesce(a.lon, s.lon)"
                  " FROM alarms a LEFT JOIN sites s ON s.city = a.city AND s.site = a.site")


def _alarm(now: float, row: tuple[Any, ...]) -> AlarmView:
    city, alarm_id, site, rule, severity, state, raised_at, last, lat, lon = row
    return AlarmView(city=city, alarm_id=alarm_id, site=site, rule=rule, severity=severity, state=state,
                     raised_at=raised_at, data_age_s=_age(now, last), lat=lat, lon=lon)


def alarms(conn: sqlite3.Connection, now: float, *, city: str | None, state: str | None,
           limit: int) -> list[AlarmView]:
    """Newest raised first."""
    return [_alarm(now, row) for row in conn.execute(
        _ALARMS + " WHERE (? IS NULL OR a.city = ?) AND (? IS NULL OR a.state = ?)"
        " ORDER BY a.raised_at DESC, a.city, a.alarm_id LIMIT ?", (city, city, state, state, limit))]


def incidents(conn: sqlite3.Connection, now: float, distance_m: float) -> list[IncidentView]:
    """The provincial incidents of the active alarms (province/grouping.py); an alarm without a
    place of its own takes its site's."""
    rows = conn.execute(
        "SELECT a.city, a.alarm_id, a.site, a.rule, a.severity, a.state, a.raised_at, s.last_data_ts,"
        " coalesce(a.lat, s.lat), coalesce(a.lon, s.lon), coalesce(a.catchment, s.catchment)"
        " FROM alarms a LEFT JOIN sites s ON s.city = a.city AND s.site = a.site WHERE a.state IN (?, ?)",
        ACTIVE).fetchall()
    views = {(r[0], r[1]): _alarm(now, r[:10]) for r in rows}
    placed = [PlacedAlarm(r[0], r[1], r[6], r[8], r[9], r[10]) for r in rows if r[8] is not None and r[9] is not None]
    return [IncidentView(incident_id=inc.incident_id, cities=list(inc.cities),
                         alarms=[views[key] for key in inc.alarms])
            for inc in group(placed, distance_m)]


def health(conn: sqlite3.Connection) -> tuple[int, int, int]:
    n, online, records = conn.execute(
        "SELECT count(*), coalesce(sum(online), 0), coalesce(sum(records), 0) FROM cities").fetchone()
    return int(n), int(online), int(records)


# --- routes ---------------------------------------------------------------------------------


def _city_param(request: web.Request, value: str | None) -> str | None:
    """Rule 3: a well-formed city id (else 400, shared.topics' message)."""
    return None if value is None else check_city_id(value)


async def _known(request: web.Request, city: str) -> None:
    if not await _host(request).reader.run(lambda c: known_city(c, city)):
        raise NotFound(f"no city {city!r} has reported to the province")


async def get_health(request: web.Request) -> web.Response:
    host = _host(request)
    n, online, records = await host.reader.run(health)
    return json_response(HealthView(status="ok", mqtt_connected=host.connected(),
                                    uptime_s=host.clock() - host.started_at, cities=n, cities_online=online,
                                    records_committed=records))


async def list_cities(request: web.Request, sess: Session) -> web.Response:
    host = _host(request)
    now = host.clock()
    return json_response(await host.reader.run(lambda c: cities(c, now)))


async def list_sites(request: web.Request, sess: Session) -> web.Response:
    host = _host(request)
    city = check_city_id(request.match_info["city"])
    limit = int_param(request, "limit", MAX_LIMIT, 1, MAX_LIMIT)
    await _known(request, city)
    now = host.clock()
    return json_response(await host.reader.run(lambda c: sites(c, now, city, limit)))


async def list_alarms(request: web.Request, sess: Session) -> web.Response:
    host = _host(request)
    city = _city_param(request, request.query.get("city"))
    state = request.query.get("state")
    if state is not None and state not in _STATES:
        raise BadInput(f"state must be one of {', '.join(sorted(_STATES))}")
    limit = int_param(request, "limit", 500, 1, MAX_LIMIT)
    if city is not None:
        await _known(request, city)
    now = host.clock()
    return json_response(await host.reader.run(lambda c: alarms(c, now, city=city, state=state, limit=limit)))


async def list_incidents(request: web.Request, sess: Session) -> web.Response:
    host = _host(request)
    now = host.clock()
    distance = host.cfg.distance_m
    return json_response(await host.reader.run(lambda c: incidents(c, now, distance)))


async def list_requests(request: web.Request, sess: Session) -> web.Response:
    limit = int_param(request, "limit", 1000, 1, MAX_LIMIT)
    return json_response(await _host(request).reader.run(lambda c: request_views(c, limit)))


class RequestBody(Body, frozen=True, kw_only=True):
    city: CityId
    action: Operation
    area: Name
    reason: Text
    ttl_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 1800.0


async def post_request(request: web.Request, sess: Session) -> web.Response:
    """Rule 5: a provincial operator's request to a city, sent by the ingest's tick until the city
    answers (province/store.py rule 6)."""
    host = _host(request)
    body = await read_body(request, RequestBody)
    await _known(request, body.city)
    try:
        req = host.store.add_request(body.city, body.action, body.area, body.reason, sess.username, host.clock(),
                                     body.ttl_s)
    except ProvinceRequestError as exc:
        raise Refused(str(exc)) from None
    return json_response({"request_id": req.request_id, "not_after": req.not_after}, status=201)


async def get_audit(request: web.Request, sess: Session) -> web.Response:
    after = int_param(request, "after", 0, 0, 2**62)
    limit = int_param(request, "limit", 500, 1, MAX_LIMIT)
    return json_response(await _host(request).reader.run(lambda c: queries.audit_rows(c, after, limit)))


async def get_quarantine(request: web.Request, sess: Session) -> web.Response:
    limit = int_param(request, "limit", 100, 1, 1000)
    reason = request.query.get("reason")
    return json_response(await _host(request).reader.run(lambda c: queries.quarantine(c, limit, reason)))


def routes() -> list[tuple[str, str, Role | None, Handler]]:
    """Rule 2's table."""
    v, o, s = Role.VIEWER, Role.OPERATOR, Role.SUPERVISOR
    table: list[tuple[str, str, Role | None, Any]] = [
        ("GET", "/api/health", None, get_health),
        ("POST", "/api/session", None, api_act.login),
        ("GET", "/api/session", v, api_act.whoami),
        ("DELETE", "/api/session", v, api_act.logout),
        ("GET", "/api/cities", v, list_cities),
        ("GET", "/api/cities/{city}/sites", v, list_sites),
        ("GET", "/api/alarms", v, list_alarms),
        ("GET", "/api/incidents", v, list_incidents),
        ("GET", "/api/requests", v, list_requests),
        ("POST", "/api/requests", o, post_request),
        ("GET", "/api/audit", s, get_audit),
        ("GET", "/api/quarantine", s, get_quarantine),
    ]
    return [(m, p, r, h if r is None else need(r, h)) for m, p, r, h in table]


def make_app(host: ProvinceHost) -> web.Application:
    app = web.Application(middlewares=[errors_and_headers], client_max_size=MAX_BODY)
    app[HOST_KEY] = host
    app[AUTH_KEY] = host
    au = host.cfg.auth
    app[LIMITER_KEY] = LoginLimiter(au.login_max_failures, au.login_window_s, backoff_s=au.login_backoff_s,
                                    backoff_max_s=au.login_backoff_max_s)
    for method, path, _role, handler in routes():
        app.router.add_route(method, path, handler)
    # the city console's own files: it shows its province view against this API (hub/web/app.js)
    app.router.add_get("/", console)
    app.router.add_static("/web/", WEB_DIR, follow_symlinks=False)
    return app


async def serve(host: ProvinceHost, ready: asyncio.Event, on_port: Callable[[int], None]) -> None:
    """The API task: serve until cancelled; ``on_port`` is told the port it listens on."""
    cfg = host.cfg.api
    runner = web.AppRunner(make_app(host), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, cfg.host, cfg.port, ssl_context=server_context(cfg.tls, require_client_cert=False))
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else cfg.port
        on_port(port)
        log.info("province.api_listening", extra={"host": cfg.host, "port": port})
        ready.set()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
