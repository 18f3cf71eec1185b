"""Pure: the wire messages of DESIGN §3, as versioned, frozen msgspec Structs.

Nothing else crosses the wire. Every payload is JSON with a ``v`` field (the message
version, currently :data:`VERSION`); a decoder refuses other versions, unknown fields,
missing fields, wrong types and payloads over :data:`MAX_PAYLOAD_BYTES`, always with one
:class:`shared.errors.WireError` whose message says what and where.

Times are Unix time in seconds (float, UTC) throughout. ``seq`` is a uint64, per site and
outbox *epoch*, that is never reused (the edge's outbox persists both). An epoch is a random id
drawn when an outbox is created (:data:`MAX_EPOCH` bounds it so it is a positive SQLite
INTEGER); epoch 0 is the *legacy* epoch of outboxes made before epochs, and of their records
at the hub.

Message                    topic (shared.topics)        direction
-------------------------  ---------------------------  ---------------
:class:`Status`            jk/v1/site/{site}/status     edge → hub (retained, Will)
:class:`Birth`             jk/v1/site/{site}/birth      edge → hub (retained)
:class:`DataBatch`         jk/v1/site/{site}/data       edge → hub
:class:`Command`           jk/v1/site/{site}/cmd        hub → edge (signed)
:class:`Ack`               jk/v1/site/{site}/ack        hub → edge
:class:`HubStatus`         jk/v1/hub/{hub}/status       hub → edges (retained, Will)
:class:`CityStatus`        jk/v1/city/{city}/status     city hub → province (retained, Will)
:class:`CityBirth`         jk/v1/city/{city}/birth      city hub → province (retained)
:class:`CityBatch`         jk/v1/city/{city}/data       city hub → province
:class:`CityAck`           jk/v1/city/{city}/ack        province → city hub

A :class:`DataBatch` carries records of three kinds, told apart by their ``type`` tag:
:class:`Reading`, :class:`Event` and :class:`Reply`. A :class:`CityBatch` carries a city hub's
province records (DESIGN §8; never raw telemetry): :class:`AlarmRecord`, :class:`IncidentRecord`,
:class:`SiteStateRecord`, :class:`OperationRecord`, :class:`DeliveryRecord`, and the city
outbox's own :class:`Event` records. The city channels mirror the site channels: the same seq,
epoch, floor, thinned ranges and ack rules (shared/outbox.py).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Annotated, Final, Literal, TypeAlias, TypeVar

import msgspec

from shared.errors import WireError

VERSION: Final = 1
MAX_PAYLOAD_BYTES: Final = 256 * 1024
"""Largest payload any jikimi message may have; the broker's ``max_packet_size`` is above it."""

MAX_UINT64: Final = 2**64 - 1
MAX_EPOCH: Final = 2**63 - 1
MAX_SEQ: Final = 2**63 - 1
"""The highest seq the hub's store can hold (SQLite's INTEGER is signed 64-bit)."""
MAX_THINNED: Final = 4096
"""Most thinned ranges one :class:`DataBatch` may announce."""

SiteId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
"""A site's id, also its certificate CN, e.g. ``gg-suwon-up-0031``. No MQTT wildcards."""
HubId = Annotated[str, msgspec.Meta(pattern=r"^hub-[a-z0-9][a-z0-9-]{0,58}$")]
MAX_NAME: Final = 64
"""Longest name (an id, a user, a device, a point, a parameter's name) on the wire."""
MAX_TEXT: Final = 1024
"""Longest free text on the wire: a command's ``reason``, a string parameter, an event's detail.
The hub's API takes no longer text (hub/apitypes.py uses these very types), so an over-long
reason is refused at the API instead of being signed and then dropped by the edge."""
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
Seq = Annotated[int, msgspec.Meta(ge=0)]
"""uint64: msgspec decodes ``int`` up to 2**64 - 1; the bound below it is ``ge=0``."""
Epoch = Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH)]
"""An outbox epoch: 0 (legacy) or random in 1 .. 2**63 - 1 (fits SQLite's signed INTEGER)."""
Timestamp = Annotated[float, msgspec.Meta(ge=0)]
Origin = tuple[Epoch, Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)]]
"""Where a record was first assigned: its (epoch, seq) there."""
Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
Scalar: TypeAlias = bool | int | float | str | None
Param: TypeAlias = bool | int | float | Text | None
"""A command parameter's value: a :data:`Scalar` whose text is at most :data:`MAX_TEXT`."""


class _Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every top-level message: carries the version."""

    v: int = VERSION


class _Record(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    omit_defaults=True,
    tag_field="type",
    gc=False,
):
    """Base of the records in a :class:`DataBatch`.

    Not tracked by Python's garbage collector (``gc=False``): a record holds only scalars, a
    tuple of ints and a dict of scalars, so it can never be part of a reference cycle. A busy
    hub holds hundreds of thousands of them in its queues; tracked, they survived into the
    oldest generation and each full collection then paused the hub for about 200 ms
    (``jikimi bench ingest`` at 55,000 records/s: 30 such pauses in a run).
    """

    seq: Seq
    ts: Timestamp
    """Acquisition (or occurrence) time; never re-stamped when a value is replayed."""
    prio: Priority
    historical: bool = False
    """True when the record is replayed after an outage rather than sent live."""
    origin: Origin | None = None
    """Set when an outbox carried the record into a new epoch (renumbered): the (epoch, seq) it was
    first assigned, kept through repeated carries. The hub stores a record whose origin it has
    already committed only once (hub/intake.py); a record never carried has none."""


# --- closed sets ---------------------------------------------------------------------------


class SiteState(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class Quality(enum.StrEnum):
    """Every reading carries its quality (DESIGN §5)."""

    GOOD = "good"
    STALE = "stale"
    COMM_FAIL = "comm_fail"
    OUT_OF_RANGE = "out_of_range"
    SENSOR_FAULT = "sensor_fault"


class Priority(enum.StrEnum):
    """Outbox priority classes. Alarms, events and replies are never evicted; telemetry is
    thinned first when the outbox is full."""

    ALARM = "alarm"
    EVENT = "event"
    REPLY = "reply"
    TELEMETRY = "telemetry"


class Action(enum.StrEnum):
    """The closed set of command actions (DESIGN §3); what each means is in shared/vocabulary.py."""

    BARRIER_CLOSE = "barrier.close"
    BARRIER_OPEN = "barrier.open"
    GATE_CLOSE = "gate.close"
    GATE_OPEN = "gate.open"
    SIREN_ON = "siren.on"
    SIREN_OFF = "siren.off"
    SIGN_SHOW = "sign.show"
    BROADCAST_PLAY = "broadcast.play"
    DEVICE_SELFTEST = "device.selftest"
    FORECAST_PREALERT = "forecast.prealert"


class ReplyStatus(enum.StrEnum):
    """A command's replies: ``received`` first, then exactly one terminal status."""

    RECEIVED = "received"
    REJECTED = "rejected"
    EXPIRED = "expired"
    VERIFIED = "verified"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self is not ReplyStatus.RECEIVED


# --- records ----------------------------------------------------------------------------------


class Reading(_Record, frozen=True, kw_only=True, tag="reading"):
    """One point's value at its acquisition time, with its quality."""

    device: Name
    point: Name
    value: Scalar
    quality: Quality
    unit: Annotated[str, msgspec.Meta(max_length=16)] = ""


class Event(_Record, frozen=True, kw_only=True, tag="event"):
    """Something that happened at the site, e.g. ``barrier.closed_locally``."""

    kind: Name
    device: Name | None = None
    detail: Text = ""
    values: dict[Name, Scalar] = msgspec.field(default_factory=dict)


MAX_REPORT: Final = 256
"""At most this many points in a self-test report (a profile has far fewer)."""


class PointCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One point as ``device.selftest`` found it: its value and quality, and whether it passed."""

    point: Name
    value: Param = None
    quality: Quality
    ok: bool
    why: Text = ""
    """Empty when ``ok``; otherwise what was wrong (``comm_fail``, ``out of range 0..300``, ...)."""


class Reply(_Record, frozen=True, kw_only=True, tag="reply"):
    """The edge's answer to a command: ``received`` then one terminal status. A terminal reply
    to ``device.selftest`` carries the per-point ``report`` (empty for every other action)."""

    cmd_id: Name
    status: ReplyStatus
    reason: Text = ""
    report: Annotated[list[PointCheck], msgspec.Meta(max_length=MAX_REPORT)] = msgspec.field(default_factory=list)


Record: TypeAlias = Reading | Event | Reply

AnyRecord: TypeAlias = _Record
"""The base of every record an outbox holds (shared/outbox.py): the edge's :data:`Record` and a
city hub's province records alike carry ``seq``, ``ts``, ``prio``, ``historical`` and ``origin``."""

UNAUTHENTICATED: Final = "unauthenticated: "
"""How the reason of a ``rejected`` reply begins when the edge could not authenticate the command
(not addressed to it, or not signed by the hub's key). Such a reply may answer a forgery sent
under a real command's ``cmd_id``: the hub, which signed the real one, lets a later verified,
failed, expired or other rejected reply to that ``cmd_id`` replace it (hub/commanddesk.py rule 4)."""


# --- messages ---------------------------------------------------------------------------------


class Status(_Message, frozen=True, kw_only=True):
    """The edge's liveness; retained, and also its MQTT Will (``offline``)."""

    site: SiteId
    state: SiteState
    boot: Name
    """Identifies this run of the agent (changes at every start)."""
    ts: Timestamp


class DeviceInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    id: Name
    kind: Name
    profile: Name
    profile_sha256: Sha256Hex
    points: list[Name]


class ModelInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Name
    sha256: Sha256Hex | None
    health: Name
    """``ok``, ``model_missing``, ``model_corrupt`` or ``failed``."""


class Birth(_Message, frozen=True, kw_only=True):
    """Sent retained on every (re)connect: who this edge is and what it runs."""

    site: SiteId
    agent_version: Name
    boot: Name
    ts: Timestamp
    devices: list[DeviceInfo]
    models: list[ModelInfo] = msgspec.field(default_factory=list)


ThinnedRanges = Annotated[list[tuple[Seq, Seq]], msgspec.Meta(max_length=MAX_THINNED)]
"""Inclusive [from, to] seq ranges a full outbox thinned (a batch's ``thinned``)."""


def check_thinned(ranges: list[tuple[int, int]]) -> None:
    """A batch's thinned ranges each run forwards (decoding refuses the batch otherwise)."""
    for lo, hi in ranges:
        if lo > hi:
            raise ValueError(f"thinned range [{lo}, {hi}] is backwards")


class DataBatch(_Message, frozen=True, kw_only=True):
    """A batch of records (ascending seq within a batch; live records may overtake replay).

    ``floor_seq`` is the lowest seq the edge still holds unacknowledged (its next seq when it
    holds none): every seq below it is either acknowledged already or was thinned out of a
    full outbox (announced by an ``outbox.thinned`` event). The hub never asks to resend
    below it, so thinning closes gaps instead of leaving the hub waiting forever.

    ``epoch`` names the outbox the seqs belong to: the hub tracks and dedupes each
    (site, epoch) on its own, so a replaced or wiped edge, whose seqs start again at 1, is
    never taken for a replay of the old one.

    ``thinned`` lists inclusive [from, to] seq ranges whose every seq the edge does *not*
    hold (a full outbox thinned them; they will never come): the hub closes those holes at
    once instead of asking for them one round trip at a time. Seqs of the ranges are never
    in ``records``.
    """

    site: SiteId
    boot: Name
    records: list[Record]
    floor_seq: Seq | None = None
    epoch: Epoch = 0
    thinned: ThinnedRanges = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        check_thinned(self.thinned)


class Command(_Message, frozen=True, kw_only=True):
    """One command for one device, signed with the hub's Ed25519 command key.

    ``sig`` is base64 of the signature over :func:`shared.signing.canonical_bytes` (every
    field but ``sig``); ``key_id`` names the key so a rotated key is told apart from a
    forged signature.
    """

    cmd_id: Name
    site: SiteId
    device: Name
    action: Action
    params: dict[Name, Param] = msgspec.field(default_factory=dict)
    issued_by: Name
    approved_by: list[Name] = msgspec.field(default_factory=list)
    issued_at: Timestamp
    not_after: Timestamp
    reason: Text = ""
    exercise: bool = False
    """An exercise (drill): the edge answers with a dry run, interlocks checked and nothing written."""
    key_id: Annotated[str, msgspec.Meta(max_length=64)] = ""
    sig: Annotated[str, msgspec.Meta(max_length=128)] = ""


class Ack(_Message, frozen=True, kw_only=True):
    """The hub's end-to-end acknowledgement: all of ``through_seq`` of ``epoch`` is committed,
    and/or the edge should resend from ``resend_from``. An edge ignores an ack for an epoch
    other than its outbox's. ``rebirth`` asks the edge to publish its status and birth again
    (the hub lacks them: a new site whose birth was lost, or one the hub had to drop)."""

    site: SiteId
    epoch: Epoch = 0
    through_seq: Seq | None = None
    resend_from: Seq | None = None
    rebirth: bool = False

    def __post_init__(self) -> None:
        if self.through_seq is None and self.resend_from is None and not self.rebirth:
            raise ValueError("an ack needs through_seq, resend_from or rebirth")


class HubStatus(_Message, frozen=True, kw_only=True):
    """The hub's liveness; retained, and also its Will (``offline``)."""

    hub: HubId
    state: SiteState
    ts: Timestamp


# --- the province (DESIGN §8) ------------------------------------------------------------------

CityId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,58}$")]
"""A city's id: its hub's id without ``hub-`` (shared.topics.city_of_hub)."""
Latitude = Annotated[float, msgspec.Meta(ge=-90, le=90)]
Longitude = Annotated[float, msgspec.Meta(ge=-180, le=180)]
MAX_CITY_SITES: Final = 20_000
"""Most sites one city's birth may list (Gyeonggi's largest city has a few thousand endpoints
that are sites; a city over it would be split into districts, each its own hub)."""
MAX_INCIDENT_ALARMS: Final = 1024
"""Most alarm ids one incident record lists."""


class Place(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Where a site is: what the province groups alarms by (distance, or the same catchment)."""

    lat: Latitude
    lon: Longitude
    catchment: Name | None = None


class AlarmRecord(_Record, frozen=True, kw_only=True, tag="alarm"):
    """An alarm of the city hub as it is now, sent on each of its transitions (``state`` is the
    hub's alarm state, hub/alarms.py; ``by``/``why`` say who moved it and why)."""

    alarm_id: Name
    site: SiteId
    rule: Name
    severity: Name
    state: Name
    raised_at: Timestamp
    place: Place | None = None
    by: Name | None = None
    why: Text = ""


class IncidentRecord(_Record, frozen=True, kw_only=True, tag="incident"):
    """A city incident as it is now: the alarms it groups and its area."""

    incident_id: Name
    state: Name
    area: Name
    opened_at: Timestamp
    alarm_ids: Annotated[list[Name], msgspec.Meta(max_length=MAX_INCIDENT_ALARMS)] = msgspec.field(
        default_factory=list)


class SiteStateRecord(_Record, frozen=True, kw_only=True, tag="site_state"):
    """A site as its city hub sees it at ``ts``: online or not, and when its newest data was
    acquired (the province shows the data age, ``now - last_data_ts``, never a re-stamped time)."""

    site: SiteId
    online: bool
    last_data_ts: Timestamp | None = None
    place: Place | None = None


class OperationRecord(_Record, frozen=True, kw_only=True, tag="operation"):
    """An area operation (block or evacuate) of the city hub and how far its commands got."""

    op_id: Name
    action: Name
    area: Name
    state: Name
    commands: Annotated[int, msgspec.Meta(ge=0)] = 0
    verified: Annotated[int, msgspec.Meta(ge=0)] = 0
    failed: Annotated[int, msgspec.Meta(ge=0)] = 0


class DeliveryRecord(_Record, frozen=True, kw_only=True, tag="delivery"):
    """One alert delivery of the city hub's forwarding outbox to one recipient, as it is now."""

    delivery_id: Name
    alert_id: Name
    recipient: Name
    state: Name
    attempts: Annotated[int, msgspec.Meta(ge=0)] = 0


class Operation(enum.StrEnum):
    """Area operations (DESIGN §3): block closes barriers and gates, evacuate warns people. The
    vocabulary plans them (shared/vocabulary.py); the province may request them of a city."""

    BLOCK = "block"
    EVACUATE = "evacuate"


RequestState = Literal["pending", "accepted", "refused"]


class RequestRecord(_Record, frozen=True, kw_only=True, tag="request"):
    """A provincial request as its city hub has it now: sent on receipt and on each decision; the
    operation it started reports on its own (:class:`OperationRecord`, the same ``op_id``)."""

    request_id: Name
    action: Operation
    area: Name
    state: RequestState
    """Waiting for a city operator; accepted (an operation started); or refused (by an operator, by
    the city's rules, or expired before a decision)."""
    op_id: Name | None = None
    decided_by: Name | None = None
    why: Text = ""


CityRecord: TypeAlias = (AlarmRecord | IncidentRecord | SiteStateRecord | OperationRecord | DeliveryRecord
                         | RequestRecord | Event)
"""What a city hub's province outbox holds (hub/upstream.py) and a :class:`CityBatch` carries."""


class CityStatus(_Message, frozen=True, kw_only=True):
    """A city hub's liveness towards the province; retained, and also its Will (``offline``)."""

    city: CityId
    hub: HubId
    state: SiteState
    ts: Timestamp


class CityBirth(_Message, frozen=True, kw_only=True):
    """Sent retained on every (re)connect to the province: which hub serves the city, its
    version, and the city's sites."""

    city: CityId
    hub: HubId
    hub_version: Name
    boot: Name
    ts: Timestamp
    sites: Annotated[list[SiteId], msgspec.Meta(max_length=MAX_CITY_SITES)]


class CityBatch(_Message, frozen=True, kw_only=True):
    """A batch of a city's province records; ``floor_seq``, ``epoch`` and ``thinned`` mean what
    they mean in a :class:`DataBatch`."""

    city: CityId
    boot: Name
    records: list[CityRecord]
    floor_seq: Seq | None = None
    epoch: Epoch = 0
    thinned: ThinnedRanges = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        check_thinned(self.thinned)


class CityAck(_Message, frozen=True, kw_only=True):
    """The province's acknowledgement to a city hub; its fields mean what they mean in an
    :class:`Ack`."""

    city: CityId
    epoch: Epoch = 0
    through_seq: Seq | None = None
    resend_from: Seq | None = None
    rebirth: bool = False

    def __post_init__(self) -> None:
        if self.through_seq is None and self.resend_from is None and not self.rebirth:
            raise ValueError("an ack needs through_seq, resend_from or rebirth")


class CityRequest(_Message, frozen=True, kw_only=True):
    """A provincial operator's request to one city (``jk/v1/city/{city}/req``): block or evacuate
    an area of it. The city applies its own approvals and rules and answers with a
    :class:`RequestRecord`; the province repeats the request until that answer is committed (a
    bridge does not queue what goes down to a city whose link is broken)."""

    city: CityId
    request_id: Name
    action: Operation
    area: Name
    reason: Text
    requested_by: Name
    ts: Timestamp
    not_after: Timestamp
    """After this the city refuses it undecided (``expired``)."""


CityMessage: TypeAlias = CityStatus | CityBirth | CityBatch | CityAck | CityRequest

Message: TypeAlias = Status | Birth | DataBatch | Command | Ack | HubStatus | CityMessage
M = TypeVar("M", Status, Birth, DataBatch, Command, Ack, HubStatus, CityStatus, CityBirth, CityBatch, CityAck,
             CityRequest)
C = TypeVar("C", CityStatus, CityBirth, CityBatch, CityAck, CityRequest)


# --- encode / decode --------------------------------------------------------------------------


class _Envelope(msgspec.Struct):
    v: int


_encoder = msgspec.json.Encoder()
_envelope = msgspec.json.Decoder(_Envelope)
_decoders: dict[type[msgspec.Struct], msgspec.json.Decoder[msgspec.Struct]] = {}


def encode(msg: Message) -> bytes:
    """Encode a message as compact JSON. Raises :class:`WireError` if it is over the size limit."""
    out = _encoder.encode(msg)
    if len(out) > MAX_PAYLOAD_BYTES:
        raise WireError(
            f"{type(msg).__name__} is {len(out)} bytes, over the {MAX_PAYLOAD_BYTES} byte limit"
        )
    return out


def encode_record(record: AnyRecord) -> bytes:
    """One record as it stands inside a batch (what an outbox stores)."""
    return _encoder.encode(record)


_HISTORICAL: Final = b',"historical":true}'


def encode_batch(
    site: str,
    boot: str,
    records: Sequence[bytes],
    *,
    floor_seq: int | None,
    epoch: int = 0,
    thinned: Sequence[tuple[int, int]] = (),
    historical: bool = False,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    sender: Literal["site", "city"] = "site",
) -> tuple[bytes, int]:
    """A :class:`DataBatch` from records already encoded by :func:`encode_record`, without
    decoding them again: it decodes to the same batch as :func:`encode`'s bytes (and is those
    very bytes unless ``historical``, whose field lands last in each record instead of fourth).

    ``historical`` flags every record; the records must not carry the flag already (false is
    the default and omitted, so flagging one is appending the field to its object). Records
    are taken in order while the payload stays within ``max_bytes`` (always at least one).
    Returns the payload and how many of ``records`` it holds. With ``sender="city"``, ``site`` is a
    city id and the payload is a :class:`CityBatch` (the records are a city outbox's).
    """
    head = b'{"v":%d,"%s":%s,"boot":%s,"records":[' % (VERSION, sender.encode(), _encoder.encode(site),
                                                        _encoder.encode(boot))
    parts: list[bytes] = []
    ranges = b",".join(b"[%d,%d]" % (lo, hi) for lo, hi in thinned[:MAX_THINNED])
    size = len(head) + 80 + len(ranges)  # room for the tail
    for record in records:
        part = record[:-1] + _HISTORICAL if historical else record
        size += len(part) + 1
        if size > max_bytes and parts:
            break
        parts.append(part)
    floor = b"null" if floor_seq is None else b"%d" % floor_seq
    tail = b'],"floor_seq":' + floor + b',"epoch":%d,"thinned":[' % epoch + ranges + b"]}"
    return head + b",".join(parts) + tail, len(parts)


def decode(kind: type[M], payload: bytes) -> M:
    """Decode and validate ``payload`` as ``kind``.

    Every failure, whatever its cause, is one :class:`WireError` naming the message type and
    the problem (with msgspec's JSON path, e.g. ``at `$.records[3].seq```).
    """
    name = kind.__name__
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(f"{name}: payload of {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES} byte limit")
    try:
        version = _envelope.decode(payload).v
    except msgspec.DecodeError as exc:
        raise WireError(f"{name}: {exc}") from exc
    if version != VERSION:
        raise WireError(f"{name}: unsupported message version {version} (this build speaks {VERSION})")
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        msg = decoder.decode(payload)
    except (msgspec.DecodeError, ValueError) as exc:
        raise WireError(f"{name}: {exc}") from exc
    assert isinstance(msg, kind)
    return msg


def to_builtins(msg: Message) -> dict[str, object]:
    """The message as plain JSON-compatible Python objects (for canonical encodings, logs)."""
    out = msgspec.to_builtins(msg)
    assert isinstance(out, dict)
    return out


def decode_city(kind: type[C], payload: bytes, city: str) -> C:
    """Decode ``payload`` as ``kind`` (:func:`decode`) from the topic of ``city``, and refuse it
    when the city it names is another: a city may speak only for itself, whatever the broker's
    ACL let through."""
    msg = decode(kind, payload)
    if msg.city != city:
        raise WireError(f"{kind.__name__}: names city {msg.city!r} but came on the topic of {city!r}")
    return msg
