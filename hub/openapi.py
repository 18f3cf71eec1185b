"""The OpenAPI 3.1 description of the operator API, built from the route table and the msgspec
types, so the document cannot drift from what the hub serves (a test checks every route is in it).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from hub import apitypes as t
from hub import views as q
from hub.requestdesk import StoredRequest
from hub.roles import Role
from shared.vocabulary import Vocabulary

# (method, path) -> (summary, request body type, response type, response is a list)
SPEC: Final[dict[tuple[str, str], tuple[str, type | None, type | None, bool]]] = {
    ("GET", "/api/health"): ("Liveness, broker connection and ingest counters", None, t.HealthView, False),
    ("GET", "/api/openapi.json"): ("This document", None, None, False),
    ("POST", "/api/session"): ("Log in; sets the HttpOnly session cookie and returns the CSRF token",
                               t.LoginBody, t.SessionView, False),
    ("GET", "/api/session"): ("Who is logged in, and the CSRF token", None, t.SessionView, False),
    ("DELETE", "/api/session"): ("Log out", None, None, False),
    ("GET", "/api/sites"): ("Sites, optionally of one ?area", None, q.SiteView, True),
    ("GET", "/api/places"): ("Registered sites with their WGS84 position (for the map)", None, t.SitePlace, True),
    ("GET", "/api/vocabulary"): ("The action vocabulary: per device kind the actions it offers, their parameters, "
                                 "the point each writes and reads back, openings, and what block/evacuate send",
                                 None, Vocabulary, False),
    ("GET", "/api/sites/{site}"): ("One site with its devices", None, q.SiteDetail, False),
    ("GET", "/api/sites/{site}/latest"): ("Latest value of every point, with quality and age", None,
                                          q.LatestView, True),
    ("GET", "/api/sites/{site}/history"): ("History of one point: ?device&point&since&until&limit", None,
                                           q.History, False),
    ("GET", "/api/sites/{site}/events"): ("The site's recent events, newest first (?limit, at most 1000), each "
                                          "with the priority of the alarm its kind raises", None, q.SiteEventView,
                                          True),
    ("GET", "/api/alarms"): ("Alarms (default: not normal; ?state=all|<state>&site); source rule|edge, late when "
                             "raised or cleared from data that came late", None, q.AlarmView, True),
    ("GET", "/api/alarms/{id}"): ("One alarm with every transition (who, when, why) and its camera evidence",
                                  None, q.AlarmDetail, False),
    ("GET", "/api/evidence/{id}"): ("A camera snapshot (image/jpeg); every view is audited", None, None, False),
    ("GET", "/api/cameras"): ("The configured cameras (ONVIF or plain HTTP) with their capture and fault counters "
                              "since the hub started", None, t.CameraView, True),
    ("GET", "/api/sites/{site}/cameras"): ("The cameras that see a site, nearest first, with their live viewers",
                                          None, t.CameraSeen, True),
    ("POST", "/api/cameras/{camera}/live"): ("Watch a camera live: a WebRTC offer (H.264) in, the answer out; "
                                             "at most [live_view] max_viewers per camera; audited",
                                             t.LiveOfferBody, t.LiveAnswer, False),
    ("DELETE", "/api/live/{view}"): ("End one's own live view (audited)", None, None, False),
    ("GET", "/api/camera-links"): ("View links for 112/119, newest first (their tokens are not kept)", None,
                                   t.CameraLinkView, True),
    ("POST", "/api/camera-links"): ("Make an expiring view link to one camera for a recipient; the answer's url "
                                    "carries the token, shown only here", t.CameraLinkBody, t.CameraLinkView, False),
    ("DELETE", "/api/camera-links/{id}"): ("Revoke a view link; its running views end", None, t.CameraLinkView,
                                           False),
    ("GET", "/live/{token}"): ("A view link's page (no login; the token opens one camera's live view only)", None,
                               None, False),
    ("POST", "/live/{token}/offer"): ("A view link's WebRTC offer; every use is audited with the recipient",
                                      t.LiveOfferBody, t.LiveAnswer, False),
    ("DELETE", "/live/{token}/views/{view}"): ("End a view a link opened", None, None, False),
    ("GET", "/api/forwarding"): ("Alert deliveries per recipient: pending (retrying), acked, failed, escalated",
                                 None, q.ForwardingView, False),
    ("GET", "/api/escalations"): ("Escalations not settled: an alert a recipient has not acknowledged in time,"
                                  " with the alarm it raised", None, q.EscalationView, True),
    ("POST", "/api/alarms/{id}/ack"): ("Acknowledge", t.AlarmActionBody, q.AlarmDetail, False),
    ("POST", "/api/alarms/{id}/shelve"): ("Shelve with a reason for duration_s", t.AlarmActionBody, q.AlarmDetail,
                                          False),
    ("POST", "/api/alarms/{id}/unshelve"): ("Unshelve", t.AlarmActionBody, q.AlarmDetail, False),
    ("POST", "/api/alarms/{id}/remove"): ("Take out of service", t.AlarmActionBody, q.AlarmDetail, False),
    ("POST", "/api/alarms/{id}/restore"): ("Return to service", t.AlarmActionBody, q.AlarmDetail, False),
    ("GET", "/api/incidents"): ("Incidents (alarm floods by area)", None, q.IncidentView, True),
    ("POST", "/api/incidents/{id}/close"): ("Close an incident", t.DecisionBody, None, False),
    ("GET", "/api/commands"): ("Commands (?state&site)", None, q.CommandView, True),
    ("POST", "/api/commands"): ("Issue a command; openings wait for a second person's approval", t.CommandBody,
                                t.CommandAccepted, False),
    ("GET", "/api/commands/{cmd_id}"): ("One command with its replies (and a self-test's per-point report)", None,
                                        q.CommandView, False),
    ("POST", "/api/commands/{cmd_id}/approve"): ("Approve an opening (a supervisor other than the issuer; fresh "
                                                 "low-water data)", t.DecisionBody, t.CommandAccepted, False),
    ("POST", "/api/commands/{cmd_id}/reject"): ("Refuse (supervisor) or cancel (issuer) an opening", t.DecisionBody,
                                                q.CommandView, False),
    ("GET", "/api/operations"): ("Area operations", None, q.OperationView, True),
    ("POST", "/api/operations"): ("Block or evacuate an area: one command per device", t.OperationBody,
                                  t.OperationAccepted, False),
    ("GET", "/api/operations/{op_id}"): ("One operation: each device's plan and state (planned, refused with "
                                         "the reason, sent, ..., terminal) with counts, and its commands", None,
                                         q.OperationView, False),
    ("GET", "/api/province-requests"): ("The province's requests to this city (block or evacuate an area), newest"
                                        " first, with the city's answers (?limit)", None, StoredRequest, True),
    ("POST", "/api/province-requests/{id}/accept"): ("Accept a provincial request: the city's own operation starts in"
                                                     " the operator's name", t.DecisionBody, t.OperationAccepted,
                                                     False),
    ("POST", "/api/province-requests/{id}/refuse"): ("Refuse a provincial request (a reason is required)",
                                                     t.DecisionBody, None, False),
    ("GET", "/api/exercises"): ("The active exercises (drills) by area", None, q.ExerciseView, True),
    ("POST", "/api/exercises"): ("Start an exercise over an area (supervisor): commands and operations may then "
                                 "carry exercise (dry run at the edge; CAP status Exercise)", t.ExerciseBody,
                                 q.ExerciseView, False),
    ("POST", "/api/exercises/{ex_id}/end"): ("End an active exercise (supervisor)", t.DecisionBody, q.ExerciseView,
                                             False),
    ("GET", "/api/audit"): ("The hash-chained audit log (?after&limit)", None, q.AuditRow, True),
    ("GET", "/api/quarantine"): ("Refused edge messages: time, site, topic, reason, size (?reason=)", None,
                                 q.QuarantineRow, True),
    ("GET", "/api/events"): ("Server-Sent Events: alarm, latest, site, command, operation, exercise, incident, "
                             "event, escalation, province_request, resync", None, None, False),
}

_ERRORS: Final = {
    "400": "bad input", "401": "not logged in", "403": "role too low, CSRF token missing or cross-site",
    "404": "not found", "409": "conflict or illegal alarm transition",
    "422": "refused (two-person rule, stale data, unknown device)", "429": "too many failed logins",
}


def _types() -> list[type]:
    seen: dict[type, None] = {}
    for _s, req, resp, _l in SPEC.values():
        for x in (req, resp):
            if x is not None:
                seen[x] = None
    return list(seen)


@functools.cache
def _components() -> dict[str, Any]:
    _, comps = msgspec.json.schema_components(_types(), ref_template="#/components/schemas/{name}")
    return comps


def _ref(kind: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{kind.__name__}"}


def document(routes: Sequence[tuple[str, str, Role | None]]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, role in routes:
        summary, req, resp, many = SPEC[(method, path)]
        op: dict[str, Any] = {
            "summary": summary,
            "x-min-role": role.value if role else "public",
            "responses": {"200": {"description": "OK"}},
        }
        if role is None:
            op["security"] = []
        if "{" in path:
            op["parameters"] = [{"name": seg[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
                                for seg in path.split("/") if seg.startswith("{")]
        if req is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(req)}}}
        if resp is not None:
            schema = {"type": "array", "items": _ref(resp)} if many else _ref(resp)
            code = "202" if method == "POST" and resp in (t.CommandAccepted, t.OperationAccepted) else \
                "201" if (method, path) == ("POST", "/api/exercises") else "200"
            op["responses"] = {code: {"description": "OK", "content": {"application/json": {"schema": schema}}}}
        elif path == "/api/events":
            op["responses"] = {"200": {"description": "an event stream",
                                       "content": {"text/event-stream": {"schema": {"type": "string"}}}}}
        if role is not None or method != "GET":
            op["responses"].update({code: {"description": d} for code, d in _ERRORS.items()})
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "jikimi hub API", "version": "1",
                 "description": "The situation centre's API. Log in with POST /api/session; send the returned "
                                "csrf token as X-CSRF-Token on every POST and DELETE."},
        "components": {
            "schemas": _components(),
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": "jk_session"}},
        },
        "security": [{"session": []}],
        "paths": paths,
    }
