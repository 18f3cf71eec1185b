"""Pure: the plain JSON webhook — the CAP message's facts as one JSON object.

For recipients without a CAP or smart-city platform interface (an agency's chat bot, a ticket
system). Field names follow CAP's; texts carry both languages; evidence carries both digests
(``sha256``, the hub's evidence key, and ``sha1``, CAP's ``<digest>``). ``identifier`` is what the
receiver dedupes on and what its acknowledgement must contain.
"""

from __future__ import annotations

from typing import Final

import msgspec

from hub.forward.cap import AlertFacts, Text
from hub.forward.plan import Planned

MIME: Final = "application/json"
VERSION: Final = 1


class Bilingual(msgspec.Struct, frozen=True):
    ko: str
    en: str


class WebhookCircle(msgspec.Struct, frozen=True):
    lat: float
    lon: float
    radiusKm: float


class WebhookArea(msgspec.Struct, frozen=True):
    desc: Bilingual
    circles: list[WebhookCircle]
    polygons: list[list[tuple[float, float]]]
    geocodes: list[tuple[str, str]] = []
    """(valueName, value) pairs, as CAP's ``<geocode>``: how an area without a position is named."""


class WebhookEvidence(msgspec.Struct, frozen=True):
    camera: str
    capturedAt: float
    mimeType: str
    size: int
    sha256: str
    sha1: str
    uri: str | None = None


class WebhookAlert(msgspec.Struct, frozen=True):
    v: int
    identifier: str
    sender: str
    sent: str
    status: str
    msgType: str
    references: list[str]
    incidents: list[str]
    eventId: str
    source: str
    hazard: str
    priority: str
    area: str
    site: str
    event: Bilingual
    category: list[str]
    responseType: list[str]
    urgency: str
    severity: str
    certainty: str
    headline: Bilingual
    description: Bilingual
    areas: list[WebhookArea]
    evidence: list[WebhookEvidence]
    instruction: Bilingual | None = None


_encoder = msgspec.json.Encoder()


def _bi(t: Text) -> Bilingual:
    return Bilingual(t.ko, t.en)


def alert(planned: Planned, facts: AlertFacts) -> WebhookAlert:
    n = planned.notice
    return WebhookAlert(
        v=VERSION,
        identifier=facts.identifier,
        sender=facts.sender,
        sent=facts.sent_text,
        status=facts.status.value,
        msgType=facts.msg_type.value,
        references=[str(r) for r in facts.references],
        incidents=list(facts.incidents),
        eventId=planned.event_id,
        source=n.source.value,
        hazard=n.hazard.value,
        priority=n.priority.value,
        area=n.area,
        site=n.site,
        event=_bi(facts.event),
        category=[c.value for c in facts.category],
        responseType=[r.value for r in facts.response_types],
        urgency=facts.urgency.value,
        severity=facts.severity.value,
        certainty=facts.certainty.value,
        headline=_bi(facts.headline),
        description=_bi(facts.description),
        instruction=_bi(facts.instruction) if facts.instruction else None,
        areas=[WebhookArea(_bi(a.desc), [WebhookCircle(c.center.lat, c.center.lon, c.radius_km) for c in a.circles],
                           [[(p.lat, p.lon) for p in poly.points] for poly in a.polygons],
                           [(n, v) for n, v in a.geocodes]) for a in facts.areas],
        evidence=[WebhookEvidence(ev.camera_id, ev.captured_at, ev.mime, ev.size, ev.sha256, ev.sha1, res.uri)
                  for ev, res in zip(planned.evidence, facts.resources, strict=True)],
    )


def render(planned: Planned, facts: AlertFacts) -> bytes:
    return _encoder.encode(alert(planned, facts))


def decode(data: bytes) -> WebhookAlert:
    """Read a webhook alert (the reference receiver); raises msgspec.ValidationError/DecodeError."""
    return msgspec.json.decode(data, type=WebhookAlert)
