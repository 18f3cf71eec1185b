"""The API's request bodies and small responses (the resources themselves are in hub/queries.py).

A body's text fields are bounded by the wire's own types (shared/messages.py: ``Name``,
``Text``, ``Param``), so what the API takes always fits the signed command it may become; an
over-long field is refused (422) before anything is planned or signed.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from hub.commands import OperationKind
from shared.messages import MAX_NAME, Action, Name, Param, SiteId, Text

MAX_PASSWORD: Final = 1024
"""Longest password the login takes (scrypt's work does not depend on it, but a body's size does)."""


class Body(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class LoginBody(Body, frozen=True, kw_only=True):
    username: Annotated[str, msgspec.Meta(max_length=MAX_NAME)]
    password: Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD)]


class AlarmActionBody(Body, frozen=True, kw_only=True):
    reason: Text = ""
    duration_s: float | None = None
    """For ``shelve``: how long (at most the configured maximum)."""


class CommandBody(Body, frozen=True, kw_only=True):
    site: SiteId
    device: Name
    action: Action
    params: dict[Name, Param] = {}
    reason: Text
    exercise: bool = False
    """Part of the active exercise over the site's area: signed with ``exercise``, a dry run at the edge."""


class DecisionBody(Body, frozen=True, kw_only=True):
    reason: Text = ""


class OperationBody(Body, frozen=True, kw_only=True):
    kind: OperationKind
    area: Name
    reason: Text
    exercise: bool = False
    """Part of the active exercise over the area: dry-run commands, a CAP alert with status Exercise."""


class ExerciseBody(Body, frozen=True, kw_only=True):
    area: Name
    reason: Text


class SessionView(msgspec.Struct, frozen=True, kw_only=True):
    username: str
    role: str
    csrf: str
    expires_at: float


class HealthView(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    hub: str
    mqtt_connected: bool
    uptime_s: float
    ingest: dict[str, int]
    writer: dict[str, float]
    forecast: dict[str, int] | None = None
    """The network forecast's counters (``[forecast]``; hub/forecastdesk.py): sites it scores,
    evaluations, samples left out as late, and sites skipped (their reasons are logged as
    ``forecast.site_skipped``; site ids are not shown on this public endpoint)."""


class CameraView(msgspec.Struct, frozen=True, kw_only=True):
    """One configured camera and what its captures gave since the hub started (hub/cctv.py)."""

    id: str
    name: str
    access: str
    """``onvif`` or ``http``."""
    ptz: bool
    captures: int
    failures: dict[str, int]
    """Failed captures by kind (hub/cctv_onvif.py FaultKind)."""
    last_fault: str | None
    last_error: str
    last_fault_at: float | None
    last_ok_at: float | None


class CommandAccepted(msgspec.Struct, frozen=True, kw_only=True):
    cmd_id: str
    state: str


class OperationAccepted(msgspec.Struct, frozen=True, kw_only=True):
    operation_id: str
    commands: list[CommandAccepted]




class SitePlace(msgspec.Struct, frozen=True, kw_only=True):
    """Where a registered site is (``[sites.registry]`` in the hub config), for the console's map."""

    site: str
    area: str
    name: str
    lat: float | None
    lon: float | None


# --- live video and view links (hub/liveview.py) -----------------------------------------------


class LiveOfferBody(Body, frozen=True, kw_only=True):
    """A browser's WebRTC offer (SDP, non-trickle: every candidate in it)."""

    sdp: str
    camera: Name | None = None
    """Through a link: the camera asked for (refused unless it is the link's)."""


class LiveAnswer(msgspec.Struct, frozen=True, kw_only=True):
    view: str
    """The view's id, to end it (``DELETE /api/live/{view}``)."""
    camera: str
    sdp: str


class CameraSeen(msgspec.Struct, frozen=True, kw_only=True):
    """A camera that sees a site (nearest first), and how many watch it live now."""

    camera: str
    name: str
    distance_m: float
    preset: int | None
    viewers: int
    max_viewers: int


class CameraLinkBody(Body, frozen=True, kw_only=True):
    camera: Name
    recipient: Name
    ttl_s: float | None = None
    """Lifetime in seconds (default ``[live_view] link_ttl_s``, 30 min)."""
    alarm: int | None = None
    """Send the link to the recipient now, as a CAP ``<resource>`` in an update of this alarm's alert."""


class CameraLinkView(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    camera: str
    recipient: str
    created_by: str
    created_at: float
    expires_at: float
    revoked_at: float | None
    revoked_by: str | None
    url: str | None = None
    """Only in the answer that made the link: the token is not kept (hub/liveview.py rule 6)."""
    alert: str | None = None
    """With ``alarm``: the identifier of the CAP message that carries the link to its recipient."""
