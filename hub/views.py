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


class DriverView(View, frozen=True, kw_only=True):
    """A neighbour that drove a network-forecast alarm (hub/forecastdesk.py), as it stood at the raise."""

    site: str
    distance_km: float
    crossed_ago_s: float | None
    """Seconds since it crossed the closing depth; None: it is wet, it has not crossed."""
    depth_cm: float
    rise_cm_per_min: float
    weight: float


class AlarmDetail(View, frozen=True, kw_only=True):
    alarm: AlarmView
    transitions: list[TransitionView]
    evidence: list[EvidenceRef] = []
    drivers: list[DriverView] = []
    """A forecast alarm's neighbours, heaviest first (empty for every other alarm)."""


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


class PointCheckView(View, frozen=True, kw_only=True):
    """One point of a self-test report, as the edge sent it. ``known``: the device's birth names
    the point (a report is shown, never trusted: nothing at the hub acts on it)."""

    point: str
    value: Scalar
    quality: str
    ok: bool
    why: str
    known: bool


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
    exercise_id: str | None = None
    """Set for a command of an exercise: signed with ``exercise``, answered with a dry run."""
    replies: list[ReplyView] = []
    report: list[PointCheckView] = []
    """A ``device.selftest``'s per-point report, from its terminal reply (empty otherwise)."""


class OperationDevice(View, frozen=True, kw_only=True):
    """One device of an operation: what was planned for it, and where it stands. ``state``:
    planned, refused (up front, with the ``reason``; no ``cmd_id``), sent, received, verified,
    failed, rejected or expired (no terminal reply in time)."""

    site: str
    device: str
    kind: str
    action: str
    params: dict[str, Scalar]
    state: str
    reason: str
    cmd_id: str | None


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
    """Commands per command state."""
    devices: list[OperationDevice] = []
    counts: dict[str, int] = {}
    """Devices per device state (every state named, zeros included)."""
    exercise_id: str | None = None


class ExerciseView(View, frozen=True, kw_only=True):
    """An exercise (drill) over an area: active while ``ended_at`` is null."""

    id: str
    area: str
    reason: str
    started_by: str
    started_at: float
    ended_by: str | None
    ended_at: float | None
    end_reason: str


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
    not_forwarded: dict[str, int] = {}
    """What was not forwarded since the database was made, by reason (hub/alerting.py rule 5)."""


class EscalationView(View, frozen=True, kw_only=True):
    """An alert a recipient has not acknowledged in time, and the console alarm it raised."""

    delivery_id: int
    recipient: str
    alert_id: str
    site: str
    since: float
    alarm_id: int
