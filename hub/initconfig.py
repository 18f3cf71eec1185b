"""``jikimi hub init``: a commented hub config for a city, from the PKI and the site registry.

What goes in comes from what is already there: the hub's identity, the CA chain and the
command-signing (and audit-signing) keys from the PKI folder (``jikimi pki init``/``issue``),
the sites from the enrolment registry (``jikimi provision register`` writes it). What is
rendered is parsed back with the hub's own config loader (:func:`hub.config.parse`) before
anything is written, so ``jikimi hub run --config`` accepts the file as it is.

Nothing here invents a secret: operator accounts are created by the caller with a generated
password it shows once (hub/cli.py), or not at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sqlite3
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hub.errors import Refused
from hub.rules import RuleParams
from hub.sites import KINDS, SITE_RE
from shared.addr import host_port
from shared.topics import check_hub_id
from trust.pki import Pki, PkiError, Role

DEFAULT_DB = "var/hub.db"
"""Relative to the config file's folder."""


@dataclass(frozen=True)
class RegisteredSite:
    site: str
    enrolled: bool
    """Its one-time token was used: the box holds its certificate."""


@dataclass(frozen=True)
class InitPlan:
    """Everything the config is made of, checked."""

    hub_id: str
    pki: Pki
    registry: Path
    sites: tuple[RegisteredSite, ...]
    revoked: tuple[str, ...]
    """Registered sites whose every certificate is revoked: left out, named in a comment."""
    unregistered: tuple[str, ...]
    """Edge identities in the PKI the registry does not list: named in a comment."""
    broker_host: str
    broker_port: int
    api_listen: str
    db: str
    audit: bool


def read_registry(path: Path) -> list[RegisteredSite]:
    """The sites of an enrolment registry (trust/enrolment.py), read-only."""
    if not os.path.isfile(path):
        raise Refused(f"--sites {path}: no such file (the enrolment registry 'jikimi provision register' writes)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise Refused(f"--sites {path}: cannot open: {exc}") from exc
    try:
        rows = conn.execute("SELECT site, used_at FROM enrolments ORDER BY site").fetchall()
    except sqlite3.Error as exc:
        raise Refused(f"--sites {path}: not an enrolment registry ({exc})") from exc
    finally:
        conn.close()
    sites = []
    for site, used_at in rows:
        if not isinstance(site, str) or not SITE_RE.match(site):
            raise Refused(f"--sites {path}: holds {site!r}, which is not a site id")
        sites.append(RegisteredSite(site, used_at is not None))
    return sites


def plan(*, city: str, pki_dir: Path, registry: Path, broker: str, api_listen: str, db: str) -> InitPlan:
    """Check what the config needs; :class:`Refused` says what is missing and how to make it."""
    hub_id = check_hub_id(f"hub-{city}")
    pki = Pki(pki_dir)
    try:
        index = pki.index()
    except PkiError as exc:
        raise Refused(f"--pki: {exc}") from exc
    if hub_id not in pki.active(Role.HUB):
        raise Refused(f"--pki {pki_dir}: no valid hub certificate for {hub_id}; run "
                      f"'jikimi pki issue --dir {pki_dir} --cn {hub_id} --role hub'")
    for path in (pki.ca_chain, pki.cert(hub_id), pki.key(hub_id), pki.command_key):
        if not path.is_file():
            raise Refused(f"--pki {pki_dir}: {path} is missing")
    b = host_port(broker)
    if b is None:
        raise Refused(f"--broker {broker!r}: expected HOST:PORT")
    if host_port(api_listen, lowest_port=0) is None:
        raise Refused(f"--api-listen {api_listen!r}: expected HOST:PORT")
    active_edges = set(pki.active(Role.EDGE))
    ever_edges = {e.cn for e in index if e.role is Role.EDGE}
    registered = read_registry(registry)
    revoked = tuple(s.site for s in registered if s.site in ever_edges - active_edges)
    sites = tuple(s for s in registered if s.site not in revoked)
    listed = {s.site for s in registered}
    return InitPlan(
        hub_id=hub_id, pki=pki, registry=registry, sites=sites, revoked=revoked,
        unregistered=tuple(sorted(active_edges - listed)), broker_host=b[0].strip("[]"), broker_port=b[1],
        api_listen=api_listen, db=db, audit=pki.audit_key.is_file())


def _q(value: str | Path) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(str(value), ensure_ascii=False)


def _abs(path: Path) -> str:
    return _q(path.resolve())


def render(p: InitPlan, city: str) -> str:
    """The commented hub config of ``p``."""
    from hub.config import CommandsConfig

    pki = p.pki
    lines = [
        f"# Hub config for {city}, written by 'jikimi hub init'. Start it with",
        "#   jikimi hub run --config THIS_FILE",
        "# Every key is checked at start; an unknown key or a bad value stops the hub, naming it.",
        "# Relative paths are relative to this file's folder.",
        "",
        "[hub]",
        f"id = {_q(p.hub_id)}                 # the CN of the certificate below (the broker binds the client id to it)",
        "",
        "[broker]                          # the city's Mosquitto ('jikimi broker run --pki ...')",
        f"host = {_q(p.broker_host)}",
        f"port = {p.broker_port}",
        f"ca = {_abs(pki.ca_chain)}",
        f"cert = {_abs(pki.cert(p.hub_id))}",
        f"key = {_abs(pki.key(p.hub_id))}",
        "",
        "[commands]",
        f"signing_key = {_abs(pki.command_key)}   # edges act only on commands this key signed",
        f"# ttl_s = {_default(CommandsConfig, 'ttl_s')}     # a command's not_after is issued_at + ttl_s",
        f"# reply_grace_s = {_default(CommandsConfig, 'reply_grace_s')}     # no terminal reply by not_after + "
        "grace: timed out",
        "",
        "[database]",
        f"path = {_q(p.db)}                # SQLite: records, alarms, commands, operators, the audit chain",
        "",
        "[api]                             # the operator console and API (HTTPS with the hub's certificate)",
        f"listen = {_q(p.api_listen)}",
        "# trusted_proxy_header = \"X-Forwarded-For\"   # believed only from trusted_proxies",
        "# trusted_proxies = [\"10.0.0.5\"]",
        "",
    ]
    if p.audit:
        lines += [
            "[audit]                           # signed checkpoints of the audit chain (DB.checkpoints)",
            f"checkpoint_key = {_abs(pki.audit_key)}",
            "",
        ]
    lines += _sites(p)
    lines += _rules()
    lines += [
        "# [retention]                     # how long readings and events are kept",
        *(f"# {k} = {v}" for k, v in _retention_defaults()),
        "",
        "# The field-enrolment endpoint, run by the hub: new boxes get their certificates here and the",
        "# broker's ACL follows. Uncomment to run it (its port must differ from the API's).",
        "# [enrolment]",
        "# listen = \"0.0.0.0:8444\"",
        f"# pki = {_abs(pki.dir)}",
        f"# db = {_abs(p.registry)}",
        "# broker_dir = \"/var/lib/jikimi/broker\"                 # 'jikimi broker run --out'",
        "# broker_pid_file = \"/var/lib/jikimi/broker/mosquitto.pid\"",
        "",
    ]
    return "\n".join(_align(line) for line in lines)


def _align(line: str) -> str:
    """Line up a trailing comment at column 35 (comment lines and values with '#' in them are left as they are)."""
    m = re.match(r'^(\S[^"#]*(?:"(?:[^"\\]|\\.)*"[^"#]*)*?)\s+(# .*)$', line)
    if m is None or line.startswith("#"):
        return line
    return f"{m[1].rstrip():<34} {m[2]}"


def _sites(p: InitPlan) -> list[str]:
    out = ["[sites]"]
    if p.sites:
        out += ["accept_any = false                # only the sites below may report; add a site here to let it in"]
    else:
        out += ["accept_any = true                 # no site registered yet: any site with a certificate may report;",
                "                                  # list sites below and set this to false"]
    for name, what in ((p.revoked, "registered but every certificate revoked, left out"),
                       (p.unregistered, "have a certificate but are not in the registry, not listed")):
        if name:
            out += [f"# {what}: {', '.join(name)}"]
    out += [""]
    for s in p.sites:
        area = "-".join(s.site.split("-")[:2])
        state = "enrolled" if s.enrolled else "registered, not enrolled yet"
        out += [
            f"[sites.registry.{s.site}]        # {state}",
            f"area = {_q(area)}               # the area alarms and block/evacuate operations group by",
            'name = ""                         # shown on the console and in alerts',
            "# lat = 37.2636                   # WGS84 (both or neither): alert areas and the nearest CCTV",
            "# lon = 127.0286",
            "",
        ]
    return out


def _rules() -> list[str]:
    defaults = dataclasses.asdict(RuleParams())
    return [
        "# Rule parameters per kind; [rules.sites.<site>] overrides for one site. Unlisted: these defaults.",
        f"# Kinds: {', '.join(KINDS)}.",
        "# [rules.kinds.underpass]",
        *(f"# {k} = {v!r}" for k, v in defaults.items()),
        "",
    ]


def _retention_defaults() -> Sequence[tuple[str, object]]:
    from hub.config import RetentionConfig

    return [(f.name, f.default) for f in dataclasses.fields(RetentionConfig)]


def _default(cls: type[object], name: str) -> object:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)  # type: ignore[arg-type]


def check(text: str, out: Path) -> None:
    """Parse ``text`` as the hub's config at ``out``: what 'hub run' will do with it."""
    from hub.config import parse

    parse(tomllib.loads(text), out)
