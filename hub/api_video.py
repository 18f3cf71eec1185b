"""The operator API's live video and view links (hub/liveview.py).

Operators (any role) watch a camera: ``POST /api/cameras/{camera}/live`` with a WebRTC offer,
``DELETE /api/live/{view}`` to end the view. Operators make, list and revoke links for 112/119
(``/api/camera-links``).

A link's routes live apart, under ``/live/{token}``: the page (static, no data), the offer and
the end of a view. They take no session and no session takes them; the token opens that one
camera's live view and nothing else (hub/liveview.py rule 6). An unknown or garbled token is a
404 and is logged, not audited (anyone can send one); a known link that no longer opens, or that
is asked for another camera, is refused (403) and audited with its recipient.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Final

from aiohttp import web

from hub import auth, queries
from hub.alerting import AlarmFacts, notice_for
from hub.api_base import BadField, check_origin, id_param, json_response, ops_of, read_body
from hub.apitypes import CameraLinkBody, CameraLinkView, CameraSeen, LiveAnswer, LiveOfferBody
from hub.cctv_geo import GeoPoint
from hub.errors import Forbidden, NotFound, Refused
from hub.forward.outbox import enqueue
from hub.forward.plan import Change, Notice, ViewLink
from hub.forward.tx import WriteTx
from hub.liveview import Link, LiveView, Viewer, check_recipient, create_link, link_by_token, links, revoke_link
from hub.operations import Operations
from hub.store import Tx

log = logging.getLogger(__name__)

WEB_LINK_PAGE: Final = Path(__file__).parent / "web" / "link.html"


def _live(request: web.Request) -> LiveView:
    live = ops_of(request).live
    if live is None:
        raise NotFound("this hub has no cameras configured")
    return live


def _view(link: Link, url: str | None = None, alert: str | None = None) -> CameraLinkView:
    return CameraLinkView(id=link.id, camera=link.camera, recipient=link.recipient, created_by=link.created_by,
                          created_at=link.created_at, expires_at=link.expires_at, revoked_at=link.revoked_at,
                          revoked_by=link.revoked_by, url=url, alert=alert)


# --- operators -----------------------------------------------------------------------------------


async def site_cameras(request: web.Request, sess: auth.Session) -> web.Response:
    """The cameras that see a site, nearest first (the one an alarm there links to is the first)."""
    ops = ops_of(request)
    site = request.match_info["site"]
    entry = ops.cfg.sites.registry.get(site)
    live = ops.live
    if ops.linker is None or live is None or entry is None or entry.lat is None or entry.lon is None:
        return json_response([])
    out = [CameraSeen(camera=c.camera.id, name=c.camera.name, distance_m=round(c.distance_m, 1),
                      preset=c.view.preset, viewers=live.viewers(c.camera.id), max_viewers=live.config.max_viewers)
           for c in ops.linker.pick(GeoPoint(entry.lat, entry.lon))]
    return json_response(out)


async def watch(request: web.Request, sess: auth.Session) -> web.Response:
    body = await read_body(request, LiveOfferBody)
    camera = request.match_info["camera"]
    answer = await _live(request).watch(camera, body.sdp, Viewer(sess.username))
    return json_response(LiveAnswer(view=answer.view, camera=camera, sdp=answer.sdp))


async def unwatch(request: web.Request, sess: auth.Session) -> web.Response:
    await _live(request).end(request.match_info["view"], "closed by the viewer", actor=sess.username)
    return json_response({"ended": True})


def _link_notice(ops: Operations, tx: Tx, alarm_id: int, link_id: int, link: ViewLink) -> Notice:
    """An update of the alarm's alert thread to the link's recipient alone, carrying the link."""
    alerts = ops.engine.alerts
    if alerts is None or ops.cfg.forward is None:
        raise Refused("this hub forwards no alerts ([forward]): the link cannot go out with one")
    a = queries.alarm(tx.conn, alarm_id).alarm
    entry = ops.cfg.sites.registry.get(a.site)
    facts = AlarmFacts(alarm_id=a.id, site=a.site, site_name=entry.name if entry else "", device=a.device,
                       point=a.point, rule=a.rule, area=a.area, priority=a.priority,
                       kind=ops.engine.alarms.state.kinds.get((a.site, a.device)), message=a.message, ts=tx.now,
                       event="link")
    notice = notice_for(facts, Change.UPDATE, alerts.position(a.site))
    return dataclasses.replace(notice, key=f"camera-link:{link_id}", links=(link,))


async def post_link(request: web.Request, sess: auth.Session) -> web.Response:
    """Make a link; with ``alarm``, the link also goes out at once to its recipient as a CAP
    ``<resource>`` in an update of that alarm's alert (hub/forward/plan.py), in the same transaction."""
    ops = ops_of(request)
    live = _live(request)
    body = await read_body(request, CameraLinkBody)
    if body.camera not in live.cameras:
        raise NotFound(f"no camera {body.camera!r}")
    cfg = live.config
    ttl = cfg.link_ttl_s if body.ttl_s is None else body.ttl_s
    if not 1.0 <= ttl <= cfg.link_max_ttl_s:
        raise BadField(f"ttl_s must be between 1 and {cfg.link_max_ttl_s:g} seconds")
    fwd = ops.cfg.forward
    check_recipient(body.recipient, None if fwd is None else [r.name for r in fwd.recipients])
    base = cfg.public_url or f"https://{request.host}"

    def make(tx: Tx) -> tuple[Link, str, str | None]:
        link, token = create_link(tx, tx.now, body.camera, body.recipient, ttl, sess.username)
        url = f"{base}/live/{token}"
        if body.alarm is None or fwd is None:
            return link, url, None
        notice = _link_notice(ops, tx, body.alarm, link.id, ViewLink(link.recipient, link.camera, url, link.expires_at))
        queued = enqueue(tx, notice, fwd, now=tx.now)
        forwarder = ops.forwarder
        if forwarder is not None:
            tx.after_commit(forwarder.wake)
        return link, url, None if queued is None else queued.identifier

    if body.alarm is not None and fwd is None:
        raise Refused("this hub forwards no alerts ([forward]): the link cannot go out with one")
    link, url, alert = await ops.writer.call(make)
    return json_response(_view(link, url, alert), status=201)


async def list_links(request: web.Request, sess: auth.Session) -> web.Response:
    _live(request)
    return json_response([_view(x) for x in await ops_of(request).reader.run(links)])


async def delete_link(request: web.Request, sess: auth.Session) -> web.Response:
    ops = ops_of(request)
    live = _live(request)
    link_id = id_param(request)
    now = ops.clock()
    link = await ops.writer.call(lambda tx: revoke_link(tx, now, link_id, sess.username))
    await live.end_link(link.id, "link revoked")
    return json_response(_view(link))


# --- a link's holder (no session) ----------------------------------------------------------------


async def _holder(request: web.Request, camera: str | None) -> Link:
    """The link the path's token opens, audited as a use; refused (and audited) if it no longer opens."""
    ops = ops_of(request)
    token = request.match_info["token"]
    link = await ops.reader.run(lambda c: link_by_token(c, token))
    if link is None:
        log.warning("live.link_unknown", extra={"remote": request.remote, "path_len": len(request.path)})
        raise NotFound("no such link")
    now = ops.clock()
    refusal = link.refusal(now)
    if refusal is None and camera is not None and camera != link.camera:
        refusal = f"this link shows camera {link.camera} only"

    def use(tx: WriteTx) -> None:
        detail: dict[str, str | float | int | bool | list[str] | None] = {
            "camera": link.camera, "recipient": link.recipient, "asked": camera or link.camera,
            "remote": request.remote or ""}
        if refusal is not None:
            tx.audit(link.actor, "cctv.link.refused", f"camera-link:{link.id}", {**detail, "why": refusal})
        else:
            tx.audit(link.actor, "cctv.link.use", f"camera-link:{link.id}", detail)

    await ops.writer.call(use)
    if refusal is not None:
        raise Forbidden(refusal)
    return link


async def link_page(request: web.Request) -> web.FileResponse:
    """The link's page: static (it holds no data); what it shows comes through the offer."""
    return web.FileResponse(WEB_LINK_PAGE)


async def link_offer(request: web.Request) -> web.Response:
    check_origin(request)
    body = await read_body(request, LiveOfferBody)
    link = await _holder(request, body.camera)
    answer = await _live(request).watch(link.camera, body.sdp, Viewer(link.actor, link))
    return json_response(LiveAnswer(view=answer.view, camera=link.camera, sdp=answer.sdp))


async def link_unwatch(request: web.Request) -> web.Response:
    check_origin(request)
    ops = ops_of(request)
    token = request.match_info["token"]
    link = await ops.reader.run(lambda c: link_by_token(c, token))
    if link is None:
        raise NotFound("no such link")
    await _live(request).end(request.match_info["view"], "closed by the viewer", link_id=link.id)
    return json_response({"ended": True})
