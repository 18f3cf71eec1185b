"""The province's requests in the city's API (hub/requestdesk.py): the list, and a city operator's
accept or refuse.

    GET  /api/province-requests                    viewer: newest first, with their answers
    POST /api/province-requests/{id}/accept        operator: starts the city's own operation
    POST /api/province-requests/{id}/refuse        operator: a reason is required
"""

from __future__ import annotations

from aiohttp import web

from hub import auth, requestdesk
from hub.api_base import int_param, json_response, ops_of, read_body
from hub.apitypes import CommandAccepted, DecisionBody, OperationAccepted


async def list_requests(request: web.Request, sess: auth.Session) -> web.Response:
    limit = int_param(request, "limit", 100, 1, 1000)
    return json_response(await ops_of(request).reader.run(lambda c: requestdesk.listing(c, limit)))


async def accept_request(request: web.Request, sess: auth.Session) -> web.Response:
    body = await read_body(request, DecisionBody)
    out = await ops_of(request).accept_request(request.match_info["id"], sess.username, sess.role, body.reason)
    return json_response(OperationAccepted(operation_id=out.operation_id, commands=[
        CommandAccepted(cmd_id=c.cmd_id, state=c.state.value) for c in out.commands]), status=202)


async def refuse_request(request: web.Request, sess: auth.Session) -> web.Response:
    body = await read_body(request, DecisionBody)
    await ops_of(request).refuse_request(request.match_info["id"], sess.username, sess.role, body.reason)
    return web.Response(status=204)
