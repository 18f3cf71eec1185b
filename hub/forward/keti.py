"""Pure: the Korean smart-city platform event (the public KETI interworking model) as JSON.

City/county smart-city integrated platforms (스마트시티 통합플랫폼) take external events as a JSON
object: ``evtId`` (the event; the same for all its status changes), ``evtGrad`` (grade),
``ocrSts`` (occurrence status: ``10`` occurred, ``40`` changed, ``91`` ended), ``location``,
``place`` and ``items`` (name/value pairs). This module maps a planned CAP message onto it:

    msgType Alert  → ocrSts 10      priority critical → evtGrad 1
    msgType Update → ocrSts 40               high     → 2
    msgType Cancel → ocrSts 91               medium   → 3,  low → 4

``msgId`` (the CAP identifier) is unique per message: it is what the receiver dedupes on and
what its acknowledgement must contain. Times are ``yyyyMMddHHmmss`` in the configured offset;
the location is WGS84 (``x`` longitude, ``y`` latitude): the site, or the area polygon's centroid;
null for a notice placed only by its area's geocode.
"""

from __future__ import annotations

from typing import Final

import msgspec

from hub.forward.cap import AlertFacts, MsgType
from hub.forward.plan import Planned
from hub.rules import AlarmPriority

MIME: Final = "application/json"

OCR_STS: Final = {MsgType.ALERT: "10", MsgType.UPDATE: "40", MsgType.CANCEL: "91"}
EVT_GRAD: Final = {AlarmPriority.CRITICAL: "1", AlarmPriority.HIGH: "2", AlarmPriority.MEDIUM: "3",
                   AlarmPriority.LOW: "4"}


class KetiLocation(msgspec.Struct, frozen=True):
    x: float
    y: float
    crs: str = "EPSG:4326"


class KetiItem(msgspec.Struct, frozen=True):
    name: str
    value: str


class KetiEvent(msgspec.Struct, frozen=True):
    msgId: str
    evtId: str
    evtNm: str
    evtGrad: str
    ocrSts: str
    ocrDtm: str
    evtCntn: str
    location: KetiLocation | None
    """None for a notice placed only by its area's geocode (the ``area`` item names it)."""
    place: str
    sender: str
    status: str
    items: list[KetiItem]


_encoder = msgspec.json.Encoder()


def event(planned: Planned, facts: AlertFacts) -> KetiEvent:
    """The platform event for one planned message (``facts`` as the recipient gets them)."""
    notice = planned.notice
    location: KetiLocation | None = None
    if notice.position is not None:
        location = KetiLocation(x=round(notice.position.lon, 7), y=round(notice.position.lat, 7))
    elif notice.polygon:
        pts = notice.polygon
        lat, lon = sum(p.lat for p in pts) / len(pts), sum(p.lon for p in pts) / len(pts)
        location = KetiLocation(x=round(lon, 7), y=round(lat, 7))
    items = [
        KetiItem("headline", facts.headline.ko),
        KetiItem("headlineEn", facts.headline.en),
        KetiItem("responseType", ",".join(r.value for r in facts.response_types)),
        KetiItem("hazard", notice.hazard.value),
        KetiItem("priority", notice.priority.value),
        KetiItem("area", notice.area),
        KetiItem("references", " ".join(str(r) for r in facts.references)),
    ]
    if notice.site:
        items.append(KetiItem("site", notice.site))
    for i, (ev, res) in enumerate(zip(planned.evidence, facts.resources, strict=True), start=1):
        items.append(KetiItem(f"cctv{i}.camera", ev.camera_id))
        items.append(KetiItem(f"cctv{i}.sha256", ev.sha256))
        if res.uri:
            items.append(KetiItem(f"cctv{i}.uri", res.uri))
    return KetiEvent(
        msgId=facts.identifier,
        evtId=planned.event_id,
        evtNm=facts.event.ko,
        evtGrad=EVT_GRAD[notice.priority],
        ocrSts=OCR_STS[facts.msg_type],
        ocrDtm=facts.sent.strftime("%Y%m%d%H%M%S"),
        evtCntn=facts.description.ko,
        location=location,
        place=facts.areas[0].desc.ko if facts.areas else "",
        sender=facts.sender,
        status=facts.status.value,
        items=items,
    )


def render(planned: Planned, facts: AlertFacts) -> bytes:
    return _encoder.encode(event(planned, facts))


def decode(data: bytes) -> KetiEvent:
    """Read a platform event (the reference receiver); raises msgspec.ValidationError/DecodeError."""
    return msgspec.json.decode(data, type=KetiEvent)
