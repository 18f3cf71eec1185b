r"""Pure: what the hub tells whom, when an alarm or an area operation changes.

The hub hands forwarding a :class:`Notice` (an alarm raised, changed or cleared; an operation
started, changed or ended). :func:`plan` decides, from the notice and the state of its *thread*
(all messages about one alarm occurrence or one operation), which message to send and to whom:

Threads and message types (CAP 1.2 msgType):

    raise   no open thread → Alert (a new thread; its event id is this message's identifier)
            open thread    → Update (a repeated raise is news, not a new incident)
    update  open thread    → Update;  no open thread → Alert (nothing is lost if the raise was)
    clear   open thread    → Cancel, and the thread closes;  no open thread → nothing to send

Every Update and Cancel references every earlier message of its thread
(``sender,identifier,sent``); every message carries the thread's event id in ``incidents``
(plus the hub's incident ids), so a receiver can group them.

Recipients: those whose areas cover the notice's area and that take its priority (alarms) or
take operations (operations), plus everyone who already got a message of the thread — so a
recipient that was told of an alarm is always told of its end, even if the priority fell.

Live-view links (hub/liveview.py): a notice may carry :class:`ViewLink`\ s, each for one
recipient. Such a notice goes to those recipients only, and a link is a ``<resource>`` (its URL,
``text/html``) in the CAP messages to its own recipient, never in anyone else's.

Nothing here reads a clock or the database: the identifier is chosen by the caller.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from hub.cctv_geo import Evidence, GeoPoint
from hub.forward.cap import (
    AlertFacts,
    Area,
    Category,
    Certainty,
    Circle,
    MsgType,
    Polygon,
    Reference,
    Resource,
    ResponseType,
    Severity,
    Status,
    Text,
    Urgency,
)
from hub.forward.config import Format, ForwardConfig, Recipient
from hub.rules import AlarmPriority


class Change(enum.StrEnum):
    RAISE = "raise"
    UPDATE = "update"
    CLEAR = "clear"


class Source(enum.StrEnum):
    ALARM = "alarm"
    OPERATION = "operation"


class Hazard(enum.StrEnum):
    FLOOD = "flood"
    """Semi-basement home flooding."""
    UNDERPASS = "underpass_flood"
    LANDSLIDE = "landslide"
    EMBANKMENT = "embankment"
    RIVER = "river_flood"
    HEAVY_RAIN = "heavy_rain"
    DEVICE = "device_fault"
    EVACUATION = "evacuation"
    BLOCK = "block"
    OTHER = "other"


@dataclass(frozen=True)
class HazardInfo:
    event: Text
    category: tuple[Category, ...]
    response: ResponseType


HAZARDS: Final[dict[Hazard, HazardInfo]] = {
    Hazard.FLOOD: HazardInfo(Text("반지하 침수", "Semi-basement flooding"), (Category.MET,), ResponseType.EVACUATE),
    Hazard.UNDERPASS: HazardInfo(Text("지하차도 침수", "Underpass flooding"), (Category.MET, Category.TRANSPORT),
                                 ResponseType.AVOID),
    Hazard.LANDSLIDE: HazardInfo(Text("급경사지 붕괴 위험", "Landslide risk"), (Category.GEO,),
                                 ResponseType.EVACUATE),
    Hazard.EMBANKMENT: HazardInfo(Text("제방 붕괴 위험", "Embankment failure risk"), (Category.GEO, Category.INFRA),
                                  ResponseType.EVACUATE),
    Hazard.RIVER: HazardInfo(Text("하천변 침수", "Riverside flooding"), (Category.MET,), ResponseType.AVOID),
    Hazard.HEAVY_RAIN: HazardInfo(Text("집중호우", "Heavy rain"), (Category.MET,), ResponseType.MONITOR),
    Hazard.DEVICE: HazardInfo(Text("재난 감지 장치 이상", "Safety device fault"), (Category.INFRA,),
                              ResponseType.MONITOR),
    Hazard.EVACUATION: HazardInfo(Text("대피 명령", "Evacuation order"), (Category.SAFETY,), ResponseType.EVACUATE),
    Hazard.BLOCK: HazardInfo(Text("통행 차단", "Road and trail closure"), (Category.SAFETY, Category.TRANSPORT),
                             ResponseType.AVOID),
    Hazard.OTHER: HazardInfo(Text("재난 안전 경보", "Disaster-safety alarm"), (Category.SAFETY,),
                             ResponseType.MONITOR),
}

_LEVELS: Final = {
    # priority: (urgency, severity) when observed
    AlarmPriority.CRITICAL: (Urgency.IMMEDIATE, Severity.EXTREME),
    AlarmPriority.HIGH: (Urgency.IMMEDIATE, Severity.SEVERE),
    AlarmPriority.MEDIUM: (Urgency.EXPECTED, Severity.MODERATE),
    AlarmPriority.LOW: (Urgency.EXPECTED, Severity.MINOR),
}


@dataclass(frozen=True)
class ViewLink:
    """An expiring live-view link to one camera, for one recipient (hub/liveview.py rule 6)."""

    recipient: str
    camera: str
    url: str
    expires_at: float


@dataclass(frozen=True)
class Notice:
    """What happened, as the hub tells forwarding.

    ``key`` makes enqueueing idempotent (e.g. ``alarm-transition:1234``): a key seen before
    plans nothing. ``thread`` names the alarm occurrence or the operation (``alarm:42``).
    """

    key: str
    thread: str
    change: Change
    at: float
    source: Source
    area: str
    priority: AlarmPriority
    hazard: Hazard
    headline: Text
    description: Text
    place: Text
    position: GeoPoint | None = None
    polygon: tuple[GeoPoint, ...] = ()
    radius_km: float | None = None
    geocodes: tuple[tuple[str, str], ...] = ()
    """CAP ``<geocode>`` (valueName, value) pairs: how a notice without a position is placed
    (the area it belongs to)."""
    response: ResponseType | None = None
    instruction: Text | None = None
    site: str = ""
    incidents: tuple[str, ...] = ()
    exercise: bool = False
    forecast: bool = False
    evidence: tuple[Evidence, ...] = ()
    links: tuple[ViewLink, ...] = ()
    """Live-view links: the notice goes to their recipients only, each link to its own."""

    def __post_init__(self) -> None:
        if self.position is None and not self.polygon and not self.geocodes:
            raise ValueError("a notice needs a position (site), a polygon or a geocode (area)")


@dataclass(frozen=True)
class Thread:
    """The state of one thread: its event id, messages so far, who got them, whether it is open."""

    key: str
    event_id: str
    open: bool
    refs: tuple[Reference, ...]
    recipients: frozenset[str]


@dataclass(frozen=True)
class Planned:
    """One message to send, and to whom, and the thread after it."""

    facts: AlertFacts
    notice: Notice
    event_id: str
    recipients: tuple[Recipient, ...]
    thread: Thread
    evidence: tuple[Evidence, ...]
    links: tuple[tuple[str, Resource], ...] = ()
    """(recipient name, resource) of the notice's live-view links."""

    def facts_for(self, recipient: Recipient) -> AlertFacts:
        """The facts as this recipient gets them (pictures embedded or not; a CAP message to a
        link's recipient with the link)."""
        facts = self.facts
        if not recipient.embed_evidence and facts.resources:
            facts = replace(facts, resources=tuple(replace(r, deref=None) for r in facts.resources))
        mine = self.links_for(recipient)
        return replace(facts, resources=facts.resources + mine) if mine else facts

    def links_for(self, recipient: Recipient) -> tuple[Resource, ...]:
        """The link resources this recipient's messages carry (CAP only: the other formats list
        evidence alone)."""
        if recipient.format is not Format.CAP:
            return ()
        return tuple(res for name, res in self.links if name == recipient.name)


def qualifies(recipient: Recipient, notice: Notice) -> bool:
    if not recipient.covers(notice.area):
        return False
    if notice.source is Source.OPERATION:
        return recipient.operations
    return notice.priority in recipient.priorities


def local_time(at: float, utc_offset_min: int) -> datetime:
    return datetime.fromtimestamp(int(at), tz=UTC).astimezone(timezone(timedelta(minutes=utc_offset_min)))


def plan(notice: Notice, thread: Thread | None, config: ForwardConfig, identifier: str,
         pictures: dict[int, bytes] | None = None) -> Planned | None:
    """The message for ``notice`` (None when there is nothing to tell anyone).

    ``pictures`` maps evidence ids to their bytes, for recipients that take them embedded.
    """
    is_open = thread is not None and thread.open
    if notice.change is Change.CLEAR:
        if not is_open:
            return None
        msg_type = MsgType.CANCEL
    else:
        msg_type = MsgType.UPDATE if is_open else MsgType.ALERT
    continuing = thread if is_open else None
    event_id = continuing.event_id if continuing else identifier
    refs = continuing.refs if continuing else ()
    before = continuing.recipients if continuing else frozenset()
    chosen = [r for r in config.recipients if r.name in before or
              (msg_type is not MsgType.CANCEL and qualifies(r, notice))]
    if notice.links:  # a link is news for its recipient alone
        chosen = [r for r in config.recipients if r.name in {link.recipient for link in notice.links}]
    facts = _facts(notice, config, identifier, msg_type, refs, event_id, pictures or {})
    names = frozenset(r.name for r in chosen) | before
    new_thread = Thread(key=notice.thread, event_id=event_id, open=msg_type is not MsgType.CANCEL,
                        refs=(*refs, facts.reference), recipients=names)
    links = tuple((link.recipient, link_resource(link, config)) for link in notice.links)
    return Planned(facts, notice, event_id, tuple(chosen), new_thread, notice.evidence, links)


def _facts(notice: Notice, config: ForwardConfig, identifier: str, msg_type: MsgType,
           refs: tuple[Reference, ...], event_id: str, pictures: dict[int, bytes]) -> AlertFacts:
    info = HAZARDS[notice.hazard]
    sent = local_time(notice.at, config.utc_offset_min)
    urgency, severity = _LEVELS[notice.priority]
    certainty = Certainty.OBSERVED
    if notice.forecast:
        urgency, certainty = Urgency.EXPECTED, Certainty.LIKELY
    response = notice.response or info.response
    note = ""
    if msg_type is MsgType.CANCEL:
        urgency, certainty, response = Urgency.PAST, Certainty.OBSERVED, ResponseType.ALL_CLEAR
        note = "cleared: the condition returned to normal"
    circles: tuple[Circle, ...] = ()
    polygons: tuple[Polygon, ...] = ()
    if notice.polygon:
        polygons = (Polygon.closed(notice.polygon),)
    if notice.position is not None:
        radius = config.area_radius_km if notice.radius_km is None else notice.radius_km
        circles = (Circle(notice.position, radius),)
    params: list[tuple[str, str]] = [
        ("jikimi:event", event_id),
        ("jikimi:source", notice.source.value),
        ("jikimi:hazard", notice.hazard.value),
        ("jikimi:priority", notice.priority.value),
        ("jikimi:area", notice.area),
    ]
    if notice.site:
        params.append(("jikimi:site", notice.site))
    resources = tuple(_resource(ev, config, pictures.get(ev.id)) for ev in notice.evidence)
    return AlertFacts(
        identifier=identifier,
        sender=config.sender,
        sent=sent,
        status=Status.EXERCISE if (notice.exercise or config.exercise) else Status.ACTUAL,
        msg_type=msg_type,
        scope=config.scope,
        note=note,
        references=refs,
        incidents=(event_id, *notice.incidents),
        event=info.event,
        category=info.category,
        response_types=(response,),
        urgency=urgency,
        severity=severity,
        certainty=certainty,
        sender_name=config.sender_name,
        headline=notice.headline,
        description=notice.description,
        instruction=notice.instruction,
        parameters=tuple(params),
        resources=resources,
        areas=(Area(notice.place, circles=circles, polygons=polygons, geocodes=notice.geocodes),),
    )


def _resource(ev: Evidence, config: ForwardConfig, data: bytes | None) -> Resource:
    when = local_time(ev.captured_at, config.utc_offset_min).strftime("%Y-%m-%d %H:%M:%S%z")
    uri = f"{config.evidence_base_url}/{ev.id}" if config.evidence_base_url else None
    return Resource(
        desc=Text(f"CCTV {ev.camera_id} 현장 사진 ({when})", f"CCTV {ev.camera_id} snapshot ({when})"),
        mime=ev.mime,
        size=ev.size,
        uri=uri,
        digest=ev.sha1,
        deref=data,
    )


def link_resource(link: ViewLink, config: ForwardConfig) -> Resource:
    """A live-view link as a CAP ``<resource>``: the page's URL, until when it opens."""
    until = local_time(link.expires_at, config.utc_offset_min).strftime("%Y-%m-%d %H:%M:%S%z")
    return Resource(
        desc=Text(f"CCTV {link.camera} 실시간 영상 링크 ({until}까지)",
                  f"CCTV {link.camera} live view link (until {until})"),
        mime="text/html",
        uri=link.url,
    )
