"""Pure: CAP 1.2 (OASIS Common Alerting Protocol) messages rendered from frozen facts.

:class:`AlertFacts` is everything one message says; :func:`render` turns it into the XML of the
OASIS schema (``CAP-v1.2.xsd``; elements in the schema's order) with two ``<info>`` blocks, one
in Korean (``ko-KR``) and one in English (``en-US``). No clock, no I/O: the same facts always give
the same bytes, so every delivery attempt of a message sends identical bytes.

CAP rules this module enforces (CAP 1.2 §3.2, beyond what the schema checks):

- ``identifier`` and ``sender`` contain no spaces, commas, ``<`` or ``&``.
- times carry an explicit offset and whole seconds (``2024-08-08T15:30:00+09:00``, never ``Z``).
- ``references`` are ``sender,identifier,sent`` triples, separated by spaces; an Update or a
  Cancel references at least one earlier message, an Alert none.
- a circle is ``lat,lon radius_km``; a polygon is at least four ``lat,lon`` pairs, first = last.
- a resource's ``<digest>`` is the SHA-1 of the resource (CAP 1.2 §3.2.3, "digest"), and its
  ``<derefUri>`` (when embedded) the base64 of the same bytes.
"""

from __future__ import annotations

import base64
import enum
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from hub.cctv_geo import GeoPoint
from hub.forward.errors import CapError

CAP_NS: Final = "urn:oasis:names:tc:emergency:cap:1.2"
MIME: Final = "application/cap+xml"
_BAD_ID: Final = re.compile(r"[\s,<&]")
_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
"""Characters XML 1.0 cannot carry at all (not even escaped): dropped from texts."""


class Status(enum.StrEnum):
    ACTUAL = "Actual"
    EXERCISE = "Exercise"
    SYSTEM = "System"
    TEST = "Test"
    DRAFT = "Draft"


class MsgType(enum.StrEnum):
    ALERT = "Alert"
    UPDATE = "Update"
    CANCEL = "Cancel"
    ACK = "Ack"
    ERROR = "Error"


class Scope(enum.StrEnum):
    PUBLIC = "Public"
    RESTRICTED = "Restricted"
    PRIVATE = "Private"


class Category(enum.StrEnum):
    GEO = "Geo"
    MET = "Met"
    SAFETY = "Safety"
    SECURITY = "Security"
    RESCUE = "Rescue"
    FIRE = "Fire"
    HEALTH = "Health"
    ENV = "Env"
    TRANSPORT = "Transport"
    INFRA = "Infra"
    CBRNE = "CBRNE"
    OTHER = "Other"


class ResponseType(enum.StrEnum):
    SHELTER = "Shelter"
    EVACUATE = "Evacuate"
    PREPARE = "Prepare"
    EXECUTE = "Execute"
    AVOID = "Avoid"
    MONITOR = "Monitor"
    ASSESS = "Assess"
    ALL_CLEAR = "AllClear"
    NONE = "None"


class Urgency(enum.StrEnum):
    IMMEDIATE = "Immediate"
    EXPECTED = "Expected"
    FUTURE = "Future"
    PAST = "Past"
    UNKNOWN = "Unknown"


class Severity(enum.StrEnum):
    EXTREME = "Extreme"
    SEVERE = "Severe"
    MODERATE = "Moderate"
    MINOR = "Minor"
    UNKNOWN = "Unknown"


class Certainty(enum.StrEnum):
    OBSERVED = "Observed"
    LIKELY = "Likely"
    POSSIBLE = "Possible"
    UNLIKELY = "Unlikely"
    UNKNOWN = "Unknown"


def cap_time(dt: datetime) -> str:
    """A CAP ``dateTime``: whole seconds and an explicit ``±hh:mm`` offset."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise CapError(f"a CAP time needs an offset: {dt!r}")
    return dt.replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class Text:
    """One text in both languages of the message."""

    ko: str
    en: str

    def get(self, lang: str) -> str:
        return self.ko if lang == "ko" else self.en


@dataclass(frozen=True)
class Reference:
    """An earlier message: ``sender,identifier,sent``."""

    sender: str
    identifier: str
    sent: str

    def __str__(self) -> str:
        return f"{self.sender},{self.identifier},{self.sent}"

    @classmethod
    def parse(cls, text: str) -> Reference:
        parts = text.split(",")
        if len(parts) != 3 or not all(parts):
            raise CapError(f"not a CAP reference (sender,identifier,sent): {text!r}")
        return cls(parts[0], parts[1], parts[2])


@dataclass(frozen=True)
class Circle:
    center: GeoPoint
    radius_km: float

    def __str__(self) -> str:
        return f"{self.center.lat:.6f},{self.center.lon:.6f} {self.radius_km:g}"


@dataclass(frozen=True)
class Polygon:
    """A closed ring of WGS84 points (first equals last, at least four points)."""

    points: tuple[GeoPoint, ...]

    def __str__(self) -> str:
        return " ".join(f"{p.lat:.6f},{p.lon:.6f}" for p in self.points)

    @classmethod
    def closed(cls, points: tuple[GeoPoint, ...]) -> Polygon:
        """The ring through ``points``, closed if it is not already."""
        if points and points[0] != points[-1]:
            points = (*points, points[0])
        return cls(points)


@dataclass(frozen=True)
class Area:
    desc: Text
    circles: tuple[Circle, ...] = ()
    polygons: tuple[Polygon, ...] = ()
    geocodes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Resource:
    """A file the message points at, e.g. a CCTV snapshot; ``digest`` is its SHA-1 (hex)."""

    desc: Text
    mime: str
    size: int | None = None
    uri: str | None = None
    digest: str | None = None
    deref: bytes | None = None
    """The bytes themselves, embedded as ``<derefUri>`` (base64) when set."""


@dataclass(frozen=True)
class AlertFacts:
    """Everything one CAP message says (both languages)."""

    identifier: str
    sender: str
    sent: datetime
    status: Status
    msg_type: MsgType
    event: Text
    category: tuple[Category, ...]
    urgency: Urgency
    severity: Severity
    certainty: Certainty
    headline: Text
    description: Text
    areas: tuple[Area, ...]
    scope: Scope = Scope.PUBLIC
    source: str = ""
    restriction: str = ""
    note: str = ""
    references: tuple[Reference, ...] = ()
    incidents: tuple[str, ...] = ()
    response_types: tuple[ResponseType, ...] = ()
    sender_name: Text | None = None
    instruction: Text | None = None
    expires: datetime | None = None
    web: str | None = None
    contact: str = ""
    parameters: tuple[tuple[str, str], ...] = ()
    resources: tuple[Resource, ...] = field(default=())

    @property
    def sent_text(self) -> str:
        return cap_time(self.sent)

    @property
    def reference(self) -> Reference:
        """How later messages refer to this one."""
        return Reference(self.sender, self.identifier, self.sent_text)


LANGUAGES: Final = (("ko", "ko-KR"), ("en", "en-US"))


def check(facts: AlertFacts) -> None:
    """Raise :class:`CapError` if ``facts`` break a CAP rule the schema does not check."""
    problems: list[str] = []
    for name, value in (("identifier", facts.identifier), ("sender", facts.sender)):
        if not value or _BAD_ID.search(value):
            problems.append(f"{name} {value!r} is empty or has a space, comma, '<' or '&'")
    for inc in facts.incidents:
        if not inc or _BAD_ID.search(inc):
            problems.append(f"incident {inc!r} is empty or has a space, comma, '<' or '&'")
    for ref in facts.references:
        if any(not part or _BAD_ID.search(part) for part in (ref.sender, ref.identifier, ref.sent)):
            problems.append(f"reference {ref} has an empty part, a space or a comma")
    if facts.msg_type in (MsgType.UPDATE, MsgType.CANCEL, MsgType.ACK, MsgType.ERROR) and not facts.references:
        problems.append(f"a {facts.msg_type.value} must reference the message(s) it is about")
    if facts.msg_type is MsgType.ALERT and facts.references:
        problems.append("an Alert references nothing: use Update to refer to earlier messages")
    if facts.scope is Scope.RESTRICTED and not facts.restriction:
        problems.append("a Restricted message needs a restriction text")
    if not facts.category:
        problems.append("at least one category")
    for area in facts.areas:
        for circle in area.circles:
            if not circle.radius_km >= 0:
                problems.append(f"circle radius {circle.radius_km} is negative")
        for poly in area.polygons:
            if len(poly.points) < 4 or poly.points[0] != poly.points[-1]:
                problems.append("a polygon needs at least four points and must be closed (first = last)")
    for res in facts.resources:
        if res.deref is not None and res.size is not None and res.size != len(res.deref):
            problems.append(f"resource size {res.size} is not the embedded {len(res.deref)} bytes")
    if problems:
        raise CapError(f"CAP message {facts.identifier!r} breaks the rules", tuple(problems))


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    # Plain tags under a root that declares the default namespace: no ns0: prefixes, no global
    # ET.register_namespace.
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = _NOT_XML.sub("", text)
    return el


def _pair(parent: ET.Element, tag: str, name: str, value: str) -> None:
    el = _sub(parent, tag)
    _sub(el, "valueName", name)
    _sub(el, "value", value)


def render(facts: AlertFacts) -> bytes:
    """The message as UTF-8 XML (with declaration), valid against the OASIS CAP 1.2 schema."""
    check(facts)
    root = ET.Element("alert", {"xmlns": CAP_NS})
    _sub(root, "identifier", facts.identifier)
    _sub(root, "sender", facts.sender)
    _sub(root, "sent", facts.sent_text)
    _sub(root, "status", facts.status.value)
    _sub(root, "msgType", facts.msg_type.value)
    if facts.source:
        _sub(root, "source", facts.source)
    _sub(root, "scope", facts.scope.value)
    if facts.restriction:
        _sub(root, "restriction", facts.restriction)
    if facts.note:
        _sub(root, "note", facts.note)
    if facts.references:
        _sub(root, "references", " ".join(str(r) for r in facts.references))
    if facts.incidents:
        _sub(root, "incidents", " ".join(facts.incidents))
    for lang, tag in LANGUAGES:
        info = _sub(root, "info")
        _sub(info, "language", tag)
        for cat in facts.category:
            _sub(info, "category", cat.value)
        _sub(info, "event", facts.event.get(lang))
        for rt in facts.response_types:
            _sub(info, "responseType", rt.value)
        _sub(info, "urgency", facts.urgency.value)
        _sub(info, "severity", facts.severity.value)
        _sub(info, "certainty", facts.certainty.value)
        if facts.expires is not None:
            _sub(info, "expires", cap_time(facts.expires))
        if facts.sender_name is not None:
            _sub(info, "senderName", facts.sender_name.get(lang))
        _sub(info, "headline", facts.headline.get(lang))
        _sub(info, "description", facts.description.get(lang))
        if facts.instruction is not None:
            _sub(info, "instruction", facts.instruction.get(lang))
        if facts.web:
            _sub(info, "web", facts.web)
        if facts.contact:
            _sub(info, "contact", facts.contact)
        for name, value in facts.parameters:
            _pair(info, "parameter", name, value)
        for res in facts.resources:
            r = _sub(info, "resource")
            _sub(r, "resourceDesc", res.desc.get(lang))
            _sub(r, "mimeType", res.mime)
            if res.size is not None:
                _sub(r, "size", str(res.size))
            if res.uri:
                _sub(r, "uri", res.uri)
            if res.deref is not None:
                _sub(r, "derefUri", base64.b64encode(res.deref).decode("ascii"))
            if res.digest:
                _sub(r, "digest", res.digest)
        for area in facts.areas:
            a = _sub(info, "area")
            _sub(a, "areaDesc", area.desc.get(lang))
            for poly in area.polygons:
                _sub(a, "polygon", str(poly))
            for circle in area.circles:
                _sub(a, "circle", str(circle))
            for name, value in area.geocodes:
                _pair(a, "geocode", name, value)
    ET.indent(root)
    body = bytes(ET.tostring(root, encoding="utf-8", xml_declaration=False))
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body
