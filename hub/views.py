"""What the console sees, as frozen msgspec Structs: the API's resources and its OpenAPI schemas
(hub/openapi.py). Pure values; hub/queries.py reads them from the database.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared.messages import Scalar


class View(msgspec.Struct, frozen=True, kw_only=True):
    pass


class SiteView(View, frozen=True, kw_only=True):
    site: str
    area: str
    name: str
    state: str
    """``online``, ``offline`` or ``unknown`` (no status seen yet)."""
    boot: str
    state_ts: float | None
    agent_version: str
    last_seen: float
    through_seq: int
    records: int
    open_alarms: int


class DeviceView(View, frozen=True, kw_only=True):
    site: str
    device: str
    kind: str
    profile: str
    profile_sha256: str
    points: list[str]


class SiteDetail(View, frozen=True, kw_only=True):
    site: SiteView
    devices: list[DeviceView]


class LatestView(View, frozen=True, kw_only=True):
    device: str
    point: str
    value: Scalar
    unit: str
    quality: str
    """The effective quality: ``stale`` when the site is offline or the value is older than the limit."""
    reported_quality: str
    ts: float
    age_s: float
    seq: int


class HistoryPoint(View, frozen=True, kw_only=True):
    ts: float
    value: Scalar
    quality: str
    historical: bool


class AggPoint(View, frozen=True, kw_only=True):
    bucket: float
    n: int
    min: float | None
    max: float | None
    avg: float | None


class History(View, frozen=True, kw_only=True):
    site: str
    device: str
    point: str
    raw: list[HistoryPoint]
    downsampled: list[AggPoint]


class AlarmView(View, frozen=True, kw_only=True):
    id: int
    site: str
    device: str
    point: str
    rule: str
    area: str
    priority: str
    state: str
    active: bool
    message: str
    raised_at: float | None
    changed_at: float
    shelved_until: float | None
    shelve_reason: str
    incident_id: int | None
    late: bool = False
    """Its current episode was raised or cleared from data that came late (after an outage):
    ``raised_at`` and the transitions carry the records' original times."""
    source: str = "rule"
    """``rule``: the hub's rules on readings; ``edge``: the edge's own alarm events."""


class TransitionView(View, frozen=True, kw_only=True):
    id: int
    ts: float
    """When it happened: for a transition judged from a late record, that record's time."""
    event: str
    from_state: str
    to_state: str
    actor: str
    reason: str
    late: bool = False


class SiteEventView(View, frozen=True, kw_only=True):
    """One event an edge sent (shared/site_events.py lists the kinds)."""

    ts: float
    """When it happened at the edge."""
    kind: str
    device: str | None
    detail: str
    values: dict[str, Scalar]
    prio: str
    """The edge's priority class (``alarm``, ``event``, ...)."""
    alarm: str | None
    """The priority of the alarm this kind raises at the hub (``critical``...), None if none."""
    historical: bool
    """Replayed after an outage rather than sent live."""
    seq: int
    received_at: float


class EvidenceRef(View, frozen=True, kw_only=True):
    """A stored camera snapshot of an alarm; the picture is GET /api/evidence/{id} (audited)."""

    id: int
    camera: str
    ts: float
    sha256: str


class AlarmDetail(View, frozen=True, kw_only=True):
    alarm: AlarmView
    transitions: list[TransitionView]
    evidence: list[EvidenceRef] = []


class DeliveryView(View, frozen=True, kw_only=True):
    """One alert to one recipient. ``state``: queued (not tried yet), retrying, acknowledged,
    escalated (not acknowledged in time; still retried), failed (attempts used up)."""

    id: int
    alert_id: str
    thread: str
    msg_type: str
    headline: str
    recipient: str
    state: str
    attempts: int
    last_error: str
    created_at: float
    updated_at: float
    escalated: bool


class IncidentView(View, frozen=True, kw_only=True):
    id: int
    area: str
    opened_at: float
    closed_at: float | None
    state: str
    title: str
    alarms: int


class ReplyView(View, frozen=True, kw_only=True):
    seq: int
    status: str
    reason: str
    ts: float
    received_at: float


class CommandView(View, frozen=True, kw_only=True):
    cmd_id: str
    site: str
    device: str
    action: str
    params: dict[str, Scalar]
    issued_by: str
    approved_by: list[str]
    reason: str
    state: str
    detail: str
    created_at: float
    issued_at: float | None
    not_after: float | None
    updated_at: float
    operation_id: str | None
    replies: list[ReplyView] = []


class OperationView(View, frozen=True, kw_only=True):
    id: str
    kind: str
    area: str
    issued_by: str
    reason: str
    created_at: float
    note: str
    commands: list[CommandView]
    states: dict[str, int]


class AuditRow(View, frozen=True, kw_only=True):
    id: int
    ts: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class QuarantineRow(View, frozen=True, kw_only=True):
    id: int
    received_at: float
    topic: str
    site: str | None
    reason: str
    error: str
    size: int
    """The payload's size as received (the stored copy is truncated)."""
    payload_preview: str


class ForwardingView(View, frozen=True, kw_only=True):
    deliveries: list[DeliveryView]
