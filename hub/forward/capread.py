"""Reading CAP from outside: validation against the OASIS schema, and a tolerant reader.

:class:`CapSchema` wraps the official ``CAP-v1.2.xsd`` (read once, from the reference data by
default) and lists a document's schema errors. :func:`read` is deliberately tolerant: it reads
any well-formed CAP 1.0/1.1/1.2 ``<alert>`` into plain strings, whether it validates or not
(real-world alerts often do not, e.g. a signed one whose XML-DSig ``Id`` holds a space), and
refuses only what is not XML, not a CAP alert, or lacks the three fields every message is known
by (``identifier``, ``sender``, ``sent``).

Untrusted XML is refused if it has a DTD or entity declarations (CAP needs neither), which
rules out entity-expansion attacks; nothing is ever fetched from the network.
"""

from __future__ import annotations

import base64
import binascii
import functools
import xml.etree.ElementTree as ET
import xml.parsers.expat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import xmlschema

from hub.forward.cap import CAP_NS, Reference
from hub.forward.errors import CapError

CAP_NAMESPACES: Final = (
    CAP_NS,
    "urn:oasis:names:tc:emergency:cap:1.1",
    "http://www.incident.com/cap/1.0",
)
MAX_BYTES: Final = 4 * 1024 * 1024


class _Refused(Exception):
    """Raised inside the expat scan when a DTD or entity declaration is met."""


def _refuse(*_: object) -> None:
    raise _Refused


def parse_untrusted(data: bytes) -> ET.Element:
    """Parse XML from outside: no DTD, no entity declarations (CAP needs neither), size-capped.

    Raises :class:`CapError`.
    """
    if len(data) > MAX_BYTES:
        raise CapError(f"an XML document of {len(data)} bytes is larger than {MAX_BYTES}")
    scan = xml.parsers.expat.ParserCreate()
    scan.StartDoctypeDeclHandler = _refuse
    scan.EntityDeclHandler = _refuse
    try:
        scan.Parse(data, True)
    except _Refused:
        raise CapError("XML with a DTD or entity declarations is refused") from None
    except xml.parsers.expat.ExpatError as exc:
        raise CapError(f"not well-formed XML: {exc}") from exc
    except (LookupError, ValueError) as exc:
        # An encoding declaration expat hands to Python's codecs and they refuse: unknown
        # ("UTF-6"), multi-byte ("utf-7"), not a text encoding ("rot13"), or failing ("idna").
        raise CapError(f"an XML encoding that cannot be read: {exc}") from exc
    try:
        return ET.fromstring(data)  # noqa: S314 - the scan above refused DTDs and entity declarations
    except ET.ParseError as exc:
        raise CapError(f"not well-formed XML: {exc}") from exc


def default_schema_path() -> Path:
    return Path(__file__).with_name("schema") / "CAP-v1.2.xsd"


@functools.cache
def shipped_schema() -> CapSchema:
    """The schema that ships with the package, loaded once per process (CapError if it is missing)."""
    return CapSchema()


class CapSchema:
    """The OASIS CAP 1.2 schema, ready to validate documents.

    Validation is by ``xmlschema``, which also checks the optional XML-DSig ``<Signature>``
    (the schema's lax wildcard) against the W3C XML-DSig schema it ships with.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_schema_path()
        if not self.path.is_file():
            raise CapError(f"{self.path}: the CAP schema is not there (set JIKIMI_SHARED_DATA?)")
        try:
            self._schema = xmlschema.XMLSchema(str(self.path))
        except (xmlschema.XMLSchemaException, ET.ParseError, OSError) as exc:
            raise CapError(f"{self.path}: not a usable XML schema: {exc}") from exc

    def errors(self, data: bytes) -> tuple[str, ...]:
        """The schema errors of ``data`` (empty when it validates)."""
        try:
            root = parse_untrusted(data)
        except CapError as exc:
            return (str(exc),)
        try:
            return tuple(f"{e.path or '/'}: {e.reason}" for e in self._schema.iter_errors(root))
        except (OverflowError, ValueError) as exc:
            # xmlschema's datatypes raise on some values instead of reporting them (a year
            # past 9999 digits long: OverflowError); such a document does not validate.
            return (f"/: a value the schema cannot read: {type(exc).__name__}: {exc}",)

    def check(self, data: bytes, what: str = "CAP message") -> None:
        """Raise :class:`CapError` listing the problems unless ``data`` validates."""
        problems = self.errors(data)
        if problems:
            raise CapError(f"{what} does not validate against {self.path.name}", problems)


@dataclass(frozen=True)
class ReadResource:
    desc: str
    mime: str
    size: int | None
    uri: str | None
    digest: str | None
    deref: bytes | None


@dataclass(frozen=True)
class ReadArea:
    desc: str
    polygons: tuple[str, ...]
    circles: tuple[str, ...]
    geocodes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ReadInfo:
    language: str
    categories: tuple[str, ...]
    event: str
    response_types: tuple[str, ...]
    urgency: str
    severity: str
    certainty: str
    headline: str
    description: str
    parameters: tuple[tuple[str, str], ...]
    resources: tuple[ReadResource, ...]
    areas: tuple[ReadArea, ...]


@dataclass(frozen=True)
class CapMessage:
    """A CAP message as read: strings as they were, and the problems the reader tolerated."""

    identifier: str
    sender: str
    sent: str
    status: str
    msg_type: str
    scope: str
    namespace: str
    references: tuple[Reference, ...]
    incidents: tuple[str, ...]
    infos: tuple[ReadInfo, ...]
    signed: bool
    tolerated: tuple[str, ...]


def _split(tag: str) -> tuple[str, str]:
    """(namespace, local name) of an ElementTree tag."""
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _local(el: ET.Element) -> str:
    return _split(el.tag)[1]


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c) == name]


def _text(el: ET.Element, name: str) -> str:
    found = _children(el, name)
    return (found[0].text or "").strip() if found else ""


def _texts(el: ET.Element, name: str) -> tuple[str, ...]:
    return tuple((c.text or "").strip() for c in _children(el, name))


def _pairs(el: ET.Element, name: str) -> tuple[tuple[str, str], ...]:
    return tuple((_text(c, "valueName"), _text(c, "value")) for c in _children(el, name))


def read(data: bytes) -> CapMessage:
    """Read a CAP alert tolerantly; raise :class:`CapError` only if it cannot be one."""
    root = parse_untrusted(data)
    ns = _split(root.tag)[0]
    if _local(root) != "alert":
        raise CapError(f"not a CAP alert: the root element is <{_local(root)}>")
    tolerated: list[str] = []
    if ns not in CAP_NAMESPACES:
        tolerated.append(f"unknown namespace {ns!r}")
    elif ns != CAP_NS:
        tolerated.append(f"an older CAP version ({ns})")
    identifier, sender, sent = _text(root, "identifier"), _text(root, "sender"), _text(root, "sent")
    missing = [n for n, v in (("identifier", identifier), ("sender", sender), ("sent", sent)) if not v]
    if missing:
        raise CapError(f"a CAP alert without {', '.join(missing)} cannot be acknowledged")
    refs: list[Reference] = []
    for part in _text(root, "references").split():
        try:
            refs.append(Reference.parse(part))
        except CapError:
            tolerated.append(f"reference {part!r} is not sender,identifier,sent")
    infos = tuple(_info(i, tolerated) for i in _children(root, "info"))
    return CapMessage(
        identifier=identifier,
        sender=sender,
        sent=sent,
        status=_text(root, "status"),
        msg_type=_text(root, "msgType"),
        scope=_text(root, "scope"),
        namespace=ns,
        references=tuple(refs),
        incidents=tuple(_text(root, "incidents").split()),
        infos=infos,
        signed=any(_local(c) == "Signature" for c in root),
        tolerated=tuple(tolerated),
    )


def _info(el: ET.Element, tolerated: list[str]) -> ReadInfo:
    resources: list[ReadResource] = []
    for r in _children(el, "resource"):
        size_text = _text(r, "size")
        size: int | None = None
        if size_text:
            try:
                size = int(size_text)
            except ValueError:
                tolerated.append(f"resource size {size_text!r} is not an integer")
        deref_text = _text(r, "derefUri")
        deref: bytes | None = None
        if deref_text:
            try:
                deref = base64.b64decode(deref_text, validate=False)
            except (binascii.Error, ValueError):
                tolerated.append("a resource's derefUri is not base64")
        resources.append(ReadResource(
            desc=_text(r, "resourceDesc"), mime=_text(r, "mimeType"), size=size,
            uri=_text(r, "uri") or None, digest=_text(r, "digest") or None, deref=deref,
        ))
    areas = tuple(ReadArea(_text(a, "areaDesc"), _texts(a, "polygon"), _texts(a, "circle"), _pairs(a, "geocode"))
                  for a in _children(el, "area"))
    return ReadInfo(
        language=_text(el, "language") or "en-US",
        categories=_texts(el, "category"),
        event=_text(el, "event"),
        response_types=_texts(el, "responseType"),
        urgency=_text(el, "urgency"),
        severity=_text(el, "severity"),
        certainty=_text(el, "certainty"),
        headline=_text(el, "headline"),
        description=_text(el, "description"),
        parameters=_pairs(el, "parameter"),
        resources=tuple(resources),
        areas=areas,
    )
