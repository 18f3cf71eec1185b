"""The operator API's acting routes: log in and out, alarm actions, incidents, commands,
operations and exercises, and the evidence viewer. Each calls one use case of
hub/operations.py (or auth for sessions); every one is audited there."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from hub import auth, queries
from hub.alarms import AlarmEvent
from hub.api_base import (
    LIMITER_KEY,
    BadInput,
    auth_of,
    check_origin,
    client_of,
    id_param,
    json_response,
    ops_of,
    read_body,
)
from hub.apitypes import (
    AlarmActionBody,
    CommandAccepted,
    CommandBody,
    DecisionBody,
    ExerciseBody,
    LoginBody,
    OperationAccepted,
    OperationBody,
    SessionView,
)
from hub.commands import Draft
from hub.errors import BadCredentials
from hub.roles import Role

# --- sessions --------------------------------------------------------------------------------


async def login(request: web.Request) -> web.Response:
    check_origin(request)
    host = auth_of(request)
    limiter = request.app[LIMITER_KEY]
    body = await read_body(request, LoginBody)
    remote = client_of(request)
    now = host.clock()
    attempt = limiter.begin(body.username, remote, now)  # counted before the password is checked
    op = await host.reader.run(lambda c: auth.find_operator(c, body.username))
    try:
        op = await asyncio.to_thread(auth.verify_login, op, body.password)
    except BadCredentials:
        username = body.username
        await host.write(lambda tx: tx.audit(username, "session.login_failed", f"operator/{username}",
                                            {"remote": remote}))
        raise
    limiter.succeeded(attempt)
    ttl = host.cfg.auth.session_ttl_s
    token, csrf = await host.write(lambda tx: auth.create_session(tx, op.username, remote, ttl))
    resp = json_response(SessionView(username=op.username, role=op.role.value, csrf=csrf, expires_at=now + ttl))
    resp.set_cookie(auth.COOKIE, token, max_age=int(ttl), path="/", secure=True, httponly=True, samesite="Strict")
    return resp


async def whoami(request: web.Request, sess: auth.Session) -> web.Response:
    return json_response(SessionView(username=sess.username, role=sess.role.value, csrf=sess.csrf,
                                     expires_at=sess.expires_at))


async def logout(request: web.Request, sess: auth.Session) -> web.Response:
    token = request.cookies.get(auth.COOKIE, "")
    await auth_of(request).write(lambda tx: auth.end_session(tx, token, sess.username))
    resp = web.Response(status=204)
    resp.del_cookie(auth.COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
    return resp


# --- alarms, incidents, evidence -------------------------------------------------------------

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
        ops = ops_of(request)
        alarm_id = id_param(request)
        body = await read_body(request, AlarmActionBody)
        reason = body.reason or ("acknowledged" if event is AlarmEvent.ACK else "")
        if event is AlarmEvent.SHELVE and body.duration_s is None:
            raise BadInput("shelve needs duration_s")
        await ops.alarm_action(alarm_id, event, sess.username, reason,
                               body.duration_s if event is AlarmEvent.SHELVE else None)
        return json_response(await ops.reader.run(lambda c: queries.alarm(c, alarm_id)))

    handler.__name__ = f"alarm_{verb}"
    return handler


async def close_incident(request: web.Request, sess: auth.Session) -> web.Response:
    inc = id_param(request)
    body = await read_body(request, DecisionBody)
    await ops_of(request).close_incident(inc, sess.username, body.reason)
    return web.Response(status=204)


async def get_evidence(request: web.Request, sess: auth.Session) -> web.Response:
    """One camera snapshot; every view is audited (who looked at which picture, when)."""
    _ev, data = await ops_of(request).view_evidence(id_param(request), sess.username)
    return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


# --- commands, operations --------------------------------------------------------------------


async def post_command(request: web.Request, sess: auth.Session) -> web.Response:
    body = await read_body(request, CommandBody)
    out = await ops_of(request).issue_command(Draft(body.site, body.device, body.action, dict(body.params)),
                                              sess.username, sess.role, body.reason, exercise=body.exercise)
    return json_response(CommandAccepted(cmd_id=out.cmd_id, state=out.state.value), status=202)


async def approve_command(request: web.Request, sess: auth.Session) -> web.Response:
    body = await read_body(request, DecisionBody)
    out = await ops_of(request).approve_command(request.match_info["cmd_id"], sess.username, sess.role,
                                                body.reason or "approved")
    return json_response(CommandAccepted(cmd_id=out.cmd_id, state=out.state.value), status=202)


async def reject_command(request: web.Request, sess: auth.Session) -> web.Response:
    ops = ops_of(request)
    body = await read_body(request, DecisionBody)
    cmd_id = request.match_info["cmd_id"]
    await ops.reject_command(cmd_id, sess.username, sess.role, body.reason)
    return json_response(await ops.reader.run(lambda c: queries.command(c, cmd_id)))


async def post_operation(request: web.Request, sess: auth.Session) -> web.Response:
    body = await read_body(request, OperationBody)
    out = await ops_of(request).start_operation(body.kind, body.area, sess.username, sess.role, body.reason,
                                                exercise=body.exercise)
    return json_response(OperationAccepted(operation_id=out.operation_id, commands=[
        CommandAccepted(cmd_id=c.cmd_id, state=c.state.value) for c in out.commands]), status=202)


# --- exercises -------------------------------------------------------------------------------


async def post_exercise(request: web.Request, sess: auth.Session) -> web.Response:
    ops = ops_of(request)
    body = await read_body(request, ExerciseBody)
    ex_id = await ops.start_exercise(body.area, sess.username, sess.role, body.reason)
    return json_response(await ops.reader.run(lambda c: queries.exercise(c, ex_id)), status=201)


async def end_exercise(request: web.Request, sess: auth.Session) -> web.Response:
    ops = ops_of(request)
    body = await read_body(request, DecisionBody)
    ex_id = request.match_info["ex_id"]
    await ops.end_exercise(ex_id, sess.username, sess.role, body.reason)
    return json_response(await ops.reader.run(lambda c: queries.exercise(c, ex_id)))
