"""Forwarding's configuration: the ``[forward]`` table of the hub's TOML, parsed into frozen types.

Example::

    [forward]
    sender = "hub-suwon@jikimi.go.kr"            # CAP <sender>: no spaces or commas
    sender_name_ko = "수원시 재난안전 지킴이"
    sender_name_en = "Suwon jikimi disaster-safety hub"
    utc_offset = "+09:00"                         # the offset CAP times are written in
    exercise = false                              # true: every message has status Exercise
    evidence_base_url = "https://hub-suwon.example:8443/api/evidence"
    area_radius_km = 0.5                          # the circle around an alarm's site
    signing_key = "pki/alert-hub-suwon/key.pem"   # the hub's CAP alert-signing key and certificate
    signing_cert = "pki/alert-hub-suwon/cert.pem" # (jikimi pki issue --role alert); needed by CAP recipients

    [forward.recipients.suwon-centre]
    kind = "city_centre"                          # city_centre | police_112 | fire_119 | agency
    format = "cap"                                # cap | keti | webhook
    url = "https://centre.suwon.example/cap"
    ca = "pki/recipients/suwon-ca.pem"            # whom to trust for this recipient
    cert = "pki/hub-suwon/cert.pem"               # our client certificate (with key)
    key = "pki/hub-suwon/key.pem"
    areas = ["suwon-*"]                           # hub area ids (glob); ["*"] for all
    priorities = ["critical", "high"]             # alarm priorities it receives
    operations = true                             # block/evacuate operations in its areas
    escalate_after_s = 120                        # unacknowledged this long: escalate
    escalate_to = "gyeonggi-119"                  # ... to this recipient (and the console)
    max_attempts = 30
    timeout_s = 10
    embed_evidence = true                         # CCTV pictures inside the CAP (derefUri)

Transport rule: a recipient's URL is ``https://`` (TLS 1.3, the server verified against ``ca``,
our certificate sent when ``cert``/``key`` are set); plain ``http://`` is accepted only for a
loopback host (127.0.0.0/8, ::1, localhost) — the demo and tests — never across a network.

Signing rule (DESIGN §6): with any CAP recipient, ``signing_key`` and ``signing_cert`` are
required; they are loaded here, once (key and certificate must match, the certificate be valid
now), into :attr:`ForwardConfig.signer`, and every CAP message is signed with it.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from hub.forward.cap import Scope, Text
from hub.forward.capsign import CapSigner, load_chain, load_key
from hub.forward.errors import CapError
from hub.rules import AlarmPriority
from shared.errors import ConfigError
from shared.tomlread import Table

_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_OFFSET_RE: Final = re.compile(r"^([+-])(\d\d):(\d\d)$")


class RecipientKind(enum.StrEnum):
    CITY_CENTRE = "city_centre"
    POLICE_112 = "police_112"
    FIRE_119 = "fire_119"
    AGENCY = "agency"


class Format(enum.StrEnum):
    CAP = "cap"
    """CAP 1.2 XML (``application/cap+xml``)."""
    KETI = "keti"
    """The Korean smart-city platform event (JSON)."""
    WEBHOOK = "webhook"
    """A plain JSON webhook."""


@dataclass(frozen=True)
class RecipientTls:
    ca: Path
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class Recipient:
    name: str
    kind: RecipientKind
    format: Format
    url: str
    tls: RecipientTls | None = None
    areas: tuple[str, ...] = ("*",)
    priorities: frozenset[AlarmPriority] = frozenset(AlarmPriority)
    operations: bool = True
    escalate_after_s: float | None = 300.0
    escalate_to: str | None = None
    max_attempts: int = 30
    timeout_s: float = 10.0
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    embed_evidence: bool = False

    def covers(self, area: str) -> bool:
        return any(fnmatchcase(area, pattern) for pattern in self.areas)


@dataclass(frozen=True)
class ForwardConfig:
    sender: str
    recipients: tuple[Recipient, ...] = ()
    sender_name: Text | None = None
    utc_offset_min: int = 9 * 60
    exercise: bool = False
    scope: Scope = Scope.PUBLIC
    evidence_base_url: str | None = None
    area_radius_km: float = 0.5
    concurrency: int = 8
    """Deliveries attempted at once."""
    signer: CapSigner | None = None
    """The hub's alert-signing key and certificate; set whenever a recipient takes CAP."""

    def recipient(self, name: str) -> Recipient | None:
        for r in self.recipients:
            if r.name == name:
                return r
        return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str | None:
    """Why ``url`` may not be a recipient's (None if it may)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "expected an https:// URL"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "plain http is allowed only for a loopback receiver (127.0.0.1, ::1, localhost); use https"
    return None


def parse_config(raw: Mapping[str, object], file: Path, *, hub_id: str) -> ForwardConfig:
    """Read the ``[forward]`` table (pass ``raw.get("forward", {})``); ConfigError names file and key."""
    root = Table(file, raw, "forward")
    sender = root.text("sender", f"{hub_id}@jikimi")
    if re.search(r"[\s,<&]", sender):
        raise root.error("sender", f"{sender!r}: a CAP sender has no spaces, commas, '<' or '&'")
    name_ko, name_en = root.text("sender_name_ko", ""), root.text("sender_name_en", "")
    offset = root.text("utc_offset", "+09:00")
    m = _OFFSET_RE.match(offset)
    if not m or int(m.group(2)) > 14 or int(m.group(3)) > 59:
        raise root.error("utc_offset", f"{offset!r}: expected ±HH:MM")
    minutes = (int(m.group(2)) * 60 + int(m.group(3))) * (-1 if m.group(1) == "-" else 1)
    scope_text = root.text("scope", Scope.PUBLIC.value)
    try:
        scope = Scope(scope_text)
    except ValueError:
        raise root.error("scope", f"{scope_text!r}: one of Public, Private") from None
    if scope is Scope.RESTRICTED:
        raise root.error("scope", "Restricted needs a restriction text; use Public or Private")
    base = root.text("evidence_base_url", "") or None
    if base is not None and not base.startswith(("https://", "http://")):
        raise root.error("evidence_base_url", f"{base!r}: expected an https:// URL")

    recipients: list[Recipient] = []
    rt = root.table("recipients")
    for name in rt.data:
        if not _NAME_RE.match(name):
            raise rt.error(name, "a recipient name is 1-63 of a-z, 0-9, '_' and '-'")
        recipients.append(_recipient(name, rt.table(name)))
    rt.done()
    names = {r.name for r in recipients}
    for r in recipients:
        if r.escalate_to is not None and r.escalate_to not in names:
            raise ConfigError(str(file), f"forward.recipients.{r.name}.escalate_to",
                              f"{r.escalate_to!r} is not a recipient here")
        if r.escalate_to == r.name:
            raise ConfigError(str(file), f"forward.recipients.{r.name}.escalate_to", "cannot escalate to itself")
    config = ForwardConfig(
        sender=sender,
        recipients=tuple(recipients),
        sender_name=Text(name_ko or name_en, name_en or name_ko) if (name_ko or name_en) else None,
        utc_offset_min=minutes,
        exercise=root.flag("exercise", False),
        scope=scope,
        evidence_base_url=base.rstrip("/") if base else None,
        area_radius_km=root.number("area_radius_km", 0.5, lo=0.0, hi=100.0),
        concurrency=root.integer("concurrency", 8, lo=1, hi=256),
        signer=_signer(root, recipients),
    )
    root.done()
    return config


def _signer(root: Table, recipients: list[Recipient]) -> CapSigner | None:
    """The alert signer from ``signing_key``/``signing_cert``; required when a recipient takes CAP."""
    key_file, cert_file = root.optional_path("signing_key"), root.optional_path("signing_cert")
    cap_names = [r.name for r in recipients if r.format is Format.CAP]
    if key_file is None and cert_file is None:
        if cap_names:
            raise root.error("signing_key", f"missing: CAP recipients ({', '.join(cap_names)}) get signed alerts "
                                            "only; issue a key with 'jikimi pki issue --role alert --cn alert-<hub>'"
                                            " and set signing_key and signing_cert")
        return None
    if key_file is None or cert_file is None:
        raise root.error("signing_key" if key_file is None else "signing_cert",
                         "signing_key and signing_cert go together")
    try:
        key = load_key(key_file)
    except CapError as exc:
        raise root.error("signing_key", str(exc)) from exc
    try:
        return CapSigner(key, load_chain(cert_file))
    except CapError as exc:
        raise root.error("signing_cert", str(exc)) from exc


def _recipient(name: str, t: Table) -> Recipient:
    kind_text = t.text("kind")
    try:
        kind = RecipientKind(kind_text)
    except ValueError:
        raise t.error("kind", f"{kind_text!r}: one of {', '.join(k.value for k in RecipientKind)}") from None
    fmt_text = t.text("format", Format.CAP.value)
    try:
        fmt = Format(fmt_text)
    except ValueError:
        raise t.error("format", f"{fmt_text!r}: one of {', '.join(f.value for f in Format)}") from None
    url = t.text("url")
    problem = check_url(url)
    if problem:
        raise t.error("url", f"{url!r}: {problem}")
    tls: RecipientTls | None = None
    ca, cert, key = t.optional_path("ca"), t.optional_path("cert"), t.optional_path("key")
    if (cert is None) != (key is None):
        raise t.error("cert" if cert is None else "key", "cert and key go together")
    if urlsplit(url).scheme == "https":
        if ca is None:
            raise t.error("ca", "an https recipient needs the CA to verify it by")
        tls = RecipientTls(ca=ca, cert=cert, key=key)
        for label, path in (("ca", ca), ("cert", cert), ("key", key)):
            if path is not None and not os.path.isfile(path):
                raise t.error(label, f"{path}: no such file")
    elif ca is not None or cert is not None:
        raise t.error("ca", "TLS files are for an https:// URL")
    prios: set[AlarmPriority] = set()
    for p in t.strings("priorities", tuple(p.value for p in AlarmPriority)):
        try:
            prios.add(AlarmPriority(p))
        except ValueError:
            raise t.error("priorities", f"{p!r}: one of {', '.join(x.value for x in AlarmPriority)}") from None
    areas = t.strings("areas", ("*",))
    if not areas:
        raise t.error("areas", "lists no area: the recipient would receive nothing")
    escalate_after: float | None = t.number("escalate_after_s", 300.0, lo=0.0)
    if escalate_after == 0:
        escalate_after = None  # 0 turns escalation off
    escalate_to = t.text("escalate_to", "") or None
    r = Recipient(
        name=name,
        kind=kind,
        format=fmt,
        url=url,
        tls=tls,
        areas=areas,
        priorities=frozenset(prios),
        operations=t.flag("operations", True),
        escalate_after_s=escalate_after,
        escalate_to=escalate_to,
        max_attempts=t.integer("max_attempts", 30, lo=1, hi=10_000),
        timeout_s=t.number("timeout_s", 10.0, lo=0.1, hi=300.0),
        initial_backoff_s=t.number("initial_backoff_s", 1.0, lo=0.0, hi=3600.0),
        max_backoff_s=t.number("max_backoff_s", 60.0, lo=0.0, hi=86400.0),
        embed_evidence=t.flag("embed_evidence", False),
    )
    t.done()
    return r
