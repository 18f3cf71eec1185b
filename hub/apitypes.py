"""The API's request bodies and small responses (the resources themselves are in hub/queries.py)."""

from __future__ import annotations

import msgspec

from hub.commands import OperationKind
from shared.messages import Action, Scalar


class Body(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class LoginBody(Body, frozen=True, kw_only=True):
    username: str
    password: str


class AlarmActionBody(Body, frozen=True, kw_only=True):
    reason: str = ""
    duration_s: float | None = None
    """For ``shelve``: how long (at most the configured maximum)."""


class CommandBody(Body, frozen=True, kw_only=True):
    site: str
    device: str
    action: Action
    params: dict[str, Scalar] = {}
    reason: str


class DecisionBody(Body, frozen=True, kw_only=True):
    reason: str = ""


class OperationBody(Body, frozen=True, kw_only=True):
    kind: OperationKind
    area: str
    reason: str


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
