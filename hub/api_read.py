"""The operator API's read routes: sites and values, alarms and incidents, commands and
operations, forwarding, audit and quarantine. Each is one query (hub/queries.py) on a reader."""

from __future__ import annotations

import sqlite3

from aiohttp import web

from hub import auth, queries, views
from hub.api_base import BadInput, float_param, id_param, int_param, json_response, ops_of
from hub.apitypes import CameraView, SitePlace
from hub.forward.outbox import not_forwarded
from shared import vocabulary

# --- sites, values ---------------------------------------------------------------------------


async def list_sites(request: web.Request, sess: auth.Session) -> web.Response:
    area = request.query.get("area")
    return json_response(await ops_of(request).reader.run(lambda c: queries.sites(c, area)))


async def list_places(request: web.Request, sess: auth.Session) -> web.Response:
    registry = ops_of(request).cfg.sites.registry
    return json_response([SitePlace(site=site, area=e.area, name=e.name, lat=e.lat, lon=e.lon)
                          for site, e in sorted(registry.items())])


async def get_vocabulary(request: web.Request, sess: auth.Session) -> web.Response:
    """The action vocabulary (shared/vocabulary.py): what the console offers per device kind."""
    return json_response(vocabulary.VOCABULARY)


async def get_site(request: web.Request, sess: auth.Session) -> web.Response:
    site = request.match_info["site"]
    return json_response(await ops_of(request).reader.run(lambda c: queries.site(c, site)))


async def get_latest(request: web.Request, sess: auth.Session) -> web.Response:
    ops = ops_of(request)
    site = request.match_info["site"]
    limit = ops.cfg.rules.params(site, "").data_age_limit_s
    now = ops.clock()
    return json_response(await ops.reader.run(lambda c: queries.latest(c, site, now, limit)))


async def get_history(request: web.Request, sess: auth.Session) -> web.Response:
    ops = ops_of(request)
    site = request.match_info["site"]
    device = request.query.get("device")
    point = request.query.get("point")
    if not device or not point:
        raise BadInput("device and point are required")
    now = ops.clock()
    since = float_param(request, "since", now - 3600)
    until = float_param(request, "until", now + 1)
    limit = int_param(request, "limit", 5000, 1, 100_000)
    return json_response(await ops.reader.run(
        lambda c: queries.history(c, site, device, point, since, until, limit)))


async def get_events(request: web.Request, sess: auth.Session) -> web.Response:
    site = request.match_info["site"]
    limit = int_param(request, "limit", 100, 1, 1000)
    return json_response(await ops_of(request).reader.run(lambda c: queries.events(c, site, limit)))


# --- alarms, incidents, forwarding -----------------------------------------------------------


async def list_alarms(request: web.Request, sess: auth.Session) -> web.Response:
    state = request.query.get("state")
    site = request.query.get("site")
    limit = int_param(request, "limit", 500, 1, 10_000)
    return json_response(await ops_of(request).reader.run(
        lambda c: queries.alarms(c, state=state, site_id=site, limit=limit)))


async def get_alarm(request: web.Request, sess: auth.Session) -> web.Response:
    alarm_id = id_param(request)
    return json_response(await ops_of(request).reader.run(lambda c: queries.alarm(c, alarm_id)))


async def list_incidents(request: web.Request, sess: auth.Session) -> web.Response:
    state = request.query.get("state")
    return json_response(await ops_of(request).reader.run(lambda c: queries.incidents(c, state)))


async def list_forwarding(request: web.Request, sess: auth.Session) -> web.Response:
    def read(conn: sqlite3.Connection) -> views.ForwardingView:
        return views.ForwardingView(deliveries=queries.deliveries(conn), not_forwarded=not_forwarded(conn))
    return json_response(await ops_of(request).reader.run(read))


async def list_escalations(request: web.Request, sess: auth.Session) -> web.Response:
    return json_response(await ops_of(request).reader.run(queries.escalations))


async def list_cameras(request: web.Request, sess: auth.Session) -> web.Response:
    """The configured cameras with their fault counters (empty without ``[cctv]``)."""
    linker = ops_of(request).linker
    if linker is None:
        return json_response([])
    out = []
    for cam in linker.config.cameras:
        h = linker.health[cam.id]
        out.append(CameraView(id=cam.id, name=cam.name, access="onvif" if cam.onvif is not None else "http",
                              ptz=cam.is_ptz, captures=h.captures,
                              failures={k.value: n for k, n in sorted(h.failures.items())},
                              last_fault=None if h.last_fault is None else h.last_fault.value,
                              last_error=h.last_error, last_fault_at=h.last_fault_at, last_ok_at=h.last_ok_at))
    return json_response(out)


# --- commands, operations --------------------------------------------------------------------


async def list_commands(request: web.Request, sess: auth.Session) -> web.Response:
    state = request.query.get("state")
    site = request.query.get("site")
    limit = int_param(request, "limit", 500, 1, 10_000)
    return json_response(await ops_of(request).reader.run(
        lambda c: queries.commands(c, state=state, site_id=site, limit=limit)))


async def get_command(request: web.Request, sess: auth.Session) -> web.Response:
    cmd_id = request.match_info["cmd_id"]
    return json_response(await ops_of(request).reader.run(lambda c: queries.command(c, cmd_id)))


async def list_operations(request: web.Request, sess: auth.Session) -> web.Response:
    limit = int_param(request, "limit", 100, 1, 1000)
    return json_response(await ops_of(request).reader.run(lambda c: queries.operations(c, limit)))


async def get_operation(request: web.Request, sess: auth.Session) -> web.Response:
    op_id = request.match_info["op_id"]
    return json_response(await ops_of(request).reader.run(lambda c: queries.operation(c, op_id)))


# --- audit, quarantine -----------------------------------------------------------------------


async def get_audit(request: web.Request, sess: auth.Session) -> web.Response:
    after = int_param(request, "after", 0, 0, 2**62)
    limit = int_param(request, "limit", 500, 1, 10_000)
    return json_response(await ops_of(request).reader.run(lambda c: queries.audit_rows(c, after, limit)))


async def get_quarantine(request: web.Request, sess: auth.Session) -> web.Response:
    limit = int_param(request, "limit", 100, 1, 1000)
    reason = request.query.get("reason")
    return json_response(await ops_of(request).reader.run(lambda c: queries.quarantine(c, limit, reason)))


async def list_exercises(request: web.Request, sess: auth.Session) -> web.Response:
    return json_response(await ops_of(request).reader.run(queries.exercises))
