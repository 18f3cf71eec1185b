"""The hub's configuration: one TOML file, parsed once at start-up into frozen types.

Every problem is a :class:`shared.errors.ConfigError` naming the file and the dotted key, and
the hub refuses to start; unknown keys are refused too (a typo must not silently fall back to
a default). Relative paths are relative to the config file's folder.

``hub.id`` must be the CN of the hub's certificate (``broker.cert``): the broker binds every
MQTT client id to its certificate's CN (``use_username_as_clientid``), so the hub's client id
and its status topic are its CN; the hub refuses to start when they differ.

Example (every key but ``hub.id``, the broker's files, the command key and the database has a
default)::

    [hub]
    id = "hub-suwon"

    [broker]
    host = "localhost"
    port = 8883
    ca = "pki/ca.pem"
    cert = "pki/hub-suwon/cert.pem"
    key = "pki/hub-suwon/key.pem"
    client_process = true       # TLS and MQTT packets in a child process (more records/s)

    [commands]
    signing_key = "pki/command-signing/key.pem"
    ttl_s = 60                  # a command's not_after is issued_at + ttl_s
    reply_grace_s = 30          # no terminal reply by not_after + grace: timed_out

    [database]
    path = "var/hub.db"

    [api]
    listen = "127.0.0.1:8443"   # loopback by default; cert/key default to the broker identity's
    # cert = "pki/hub-suwon/cert.pem"
    # key = "pki/hub-suwon/key.pem"
    # trusted_proxy_header = "X-Forwarded-For"   # believed only from these proxies (default: the peer)
    # trusted_proxies = ["10.0.0.5"]
    events_keepalive_s = 15     # the live stream re-checks its session at each keep-alive

    [audit]                     # signed checkpoints of the audit chain's head (hub/anchor.py)
    checkpoint_key = "pki/audit-signing/key.pem"   # default: the command-signing key
    checkpoint_every_s = 300    # and at shutdown; the file is <database>.checkpoints

    [sites]
    accept_any = true           # any site with a valid certificate (the broker's ACL binds CN to topics)
    [sites.registry.gg-suwon-up-0031]
    area = "suwon-gwonseon"
    name = "Gwonseon underpass"

    [rules.kinds.underpass]     # per kind; [rules.sites.<site>] overrides per site
    closing_depth_cm = 15.0
    reopening_depth_cm = 5.0
    data_age_limit_s = 60

    [forecast]                  # the network forecast (hub/forecast_config.py); absent: off
    priority = "high"
    cap = false                 # forward its alarms as CAP (urgency Expected)
    prealert = true             # send the site's edge a signed forecast.prealert

    [province]                  # report to the province (hub/province_config.py); absent: off
    site_state_every_s = 30

    [retention]
    raw_days = 7
    downsample_s = 60
    downsampled_days = 365
    events_days = 365
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from hub.anchor import AuditConfig, parse_audit
from hub.forecast_config import ForecastConfig, parse_forecast
from hub.liveview import LiveConfig
from hub.liveview import parse_config as parse_live
from hub.logins import IpNetwork, parse_proxies
from hub.province_config import ProvinceLinkConfig, parse_province_link
from hub.sites import RulesConfig, SitesConfig, parse_rules, parse_sites, unplaced_problem, with_enrolled
from shared import tomlread
from shared.addr import host_port
from shared.errors import ConfigError
from shared.tomlread import Table
from trust.enrolment import EnrolmentError, registered_places
from trust.places import Place

if TYPE_CHECKING:
    from hub.cctv import CctvConfig
    from hub.forward.config import ForwardConfig
from shared.tls import TlsFiles, cert_cn

_HUB_RE: Final = re.compile(r"^hub-[a-z0-9][a-z0-9-]{0,58}$")
_HEADER_RE: Final = re.compile(r"^[A-Za-z0-9-]{1,64}$")

@dataclass(frozen=True)
class BrokerConfig:
    host: str
    port: int
    tls: TlsFiles
    keepalive_s: int = 30
    client_process: bool = True
    """Run the hub's MQTT client (TLS, paho's packet handling) in a child process
    (shared/mqtt_process.py), so the writer thread does not share its GIL with them: the hub
    sustains more records a second (``jikimi bench ingest``), for one more process. ``false``
    keeps it in the hub's own process."""


@dataclass(frozen=True)
class EnrolmentConfig:
    """``[enrolment]``: the field-enrolment endpoint the hub runs (trust/enrolment.py)."""

    host: str
    port: int
    pki_dir: Path
    db_path: Path
    mqtt_host: str
    mqtt_port: int
    broker_dir: Path | None = None
    """The broker's config folder: its ACL is rewritten when a site is enrolled."""
    broker_pid_file: Path | None = None
    """A file holding the broker's pid, to reload it (SIGHUP) after the ACL changed."""


@dataclass(frozen=True)
class ApiConfig:
    host: str
    port: int
    tls: TlsFiles
    enabled: bool = True
    trusted_proxy_header: str | None = None
    """A header naming the client (``X-Forwarded-For``), believed only from ``trusted_proxies``."""
    trusted_proxies: tuple[IpNetwork, ...] = ()
    events_keepalive_s: float = 15.0
    """The live stream's keep-alive; the session is checked again at each (hub/api_live.py)."""


@dataclass(frozen=True)
class RetentionConfig:
    raw_days: float = 7.0
    downsample_s: int = 60
    downsampled_days: float = 365.0
    events_days: float = 365.0
    every_s: float = 3600.0


@dataclass(frozen=True)
class IngestConfig:
    queue_max: int = 2000
    """Bound of the receiver → writer queue; when full the receiver waits (and the broker holds
    the rest, since messages are PUBACKed only after commit)."""
    max_records_per_tx: int = 5000
    linger_s: float = 0.005
    receive_maximum: int = 400
    incoming_max: int = 2000
    """Bound of the MQTT client's incoming queue; overflow is PUBACKed, dropped, counted and
    recovered end to end (hub/mqtt.py rule 3)."""
    gap_grace_s: float = 1.0
    ack_interval_s: float = 0.2
    resend_interval_s: float = 3.0
    max_clock_skew_s: float = 300.0
    """A status, birth or record dated further than this after its receipt is quarantined."""
    # the quarantine's caps (hub/quarantine.py): rows, stored bytes, age, bytes kept per payload
    quarantine_max_rows: int = 10_000
    quarantine_max_bytes: int = 16 * 1024 * 1024
    quarantine_days: float = 7.0
    quarantine_payload_max: int = 4096


@dataclass(frozen=True)
class CommandsConfig:
    signing_key: Path
    ttl_s: float = 60.0
    reply_grace_s: float = 30.0


@dataclass(frozen=True)
class AlarmsConfig:
    max_shelve_s: float = 8 * 3600.0
    flood_count: int = 10
    """More than this many alarms ..."""
    flood_window_s: float = 600.0
    """... within this window in one area open an incident (EEMUA 191)."""
    stale_check_s: float = 5.0


@dataclass(frozen=True)
class AuthConfig:
    session_ttl_s: float = 8 * 3600.0
    login_max_failures: int = 5
    login_window_s: float = 300.0
    login_backoff_s: float = 10.0
    login_backoff_max_s: float = 900.0


@dataclass(frozen=True)
class HubConfig:
    file: Path
    hub_id: str
    broker: BrokerConfig
    db_path: Path
    api: ApiConfig
    commands: CommandsConfig
    sites: SitesConfig = field(default_factory=SitesConfig)
    rules: RulesConfig = field(default_factory=lambda: RulesConfig(kinds={}))
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    alarms: AlarmsConfig = field(default_factory=AlarmsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    audit: AuditConfig | None = None
    """Signed checkpoints of the audit chain's head (``[audit]``, hub/anchor.py)."""
    enrolment: EnrolmentConfig | None = None
    """The field-enrolment endpoint (``[enrolment]``); None: enrolment runs elsewhere."""
    forward: ForwardConfig | None = None
    """Recipients of alerts (``[forward]``); None: alerts stay in the hub."""
    cctv: CctvConfig | None = None
    """Cameras and evidence (``[cctv]``); None: no camera linkage."""
    live_view: LiveConfig = field(default_factory=LiveConfig)
    """Live video and view links (``[live_view]``, hub/liveview.py); used when there are cameras."""
    forecast: ForecastConfig | None = None
    """The network forecast (``[forecast]``, hub/forecast_config.py); None: it does not run."""
    province: ProvinceLinkConfig | None = None
    """Reporting to the province (``[province]``, hub/province_config.py); None: the city stands alone."""


def load(path: Path) -> HubConfig:
    """Read and check the hub's config file; raise :class:`ConfigError` naming file and key."""
    return parse(tomlread.load(path).data, path)


def parse_api(a: Table, default_tls: TlsFiles) -> ApiConfig:
    """``[api]``: the operator API's listen address and TLS files (default: ``default_tls``'s
    certificate and key; its CA). The province's config reads its ``[api]`` with this too."""
    listen = a.text("listen", "127.0.0.1:8443")
    api_addr = host_port(listen, lowest_port=0)
    if api_addr is None:
        raise a.error("listen", f"{listen!r} is not HOST:PORT")
    host, api_port = api_addr
    proxy_header = a.optional_text("trusted_proxy_header", pattern=_HEADER_RE)
    try:
        proxies = parse_proxies(a.strings("trusted_proxies", ()))
    except ValueError as exc:
        raise a.error("trusted_proxies", str(exc)) from None
    if proxy_header is not None and not proxies:
        raise a.error("trusted_proxy_header", "needs trusted_proxies: the addresses of the proxies that set it")
    api = ApiConfig(
        host=host.strip("[]"),
        port=api_port,
        tls=TlsFiles(ca=default_tls.ca, cert=a.path("cert", default_tls.cert), key=a.path("key", default_tls.key)),
        enabled=a.flag("enabled", True),
        trusted_proxy_header=proxy_header,
        trusted_proxies=proxies,
        events_keepalive_s=a.number("events_keepalive_s", 15.0, positive=True),
    )
    a.done()
    return api


def parse_auth(au: Table) -> AuthConfig:
    """``[auth]``: sessions and login back-off (hub/auth.py, hub/logins.py)."""
    auth = AuthConfig(
        session_ttl_s=au.number("session_ttl_s", 8 * 3600.0, positive=True),
        login_max_failures=au.integer("login_max_failures", 5, lo=1),
        login_window_s=au.number("login_window_s", 300.0, positive=True),
        login_backoff_s=au.number("login_backoff_s", 10.0, positive=True),
        login_backoff_max_s=au.number("login_backoff_max_s", 900.0, positive=True),
    )
    au.done()
    return auth


def parse(raw: Mapping[str, Any], file: Path) -> HubConfig:
    root = Table(file, raw)

    hub = root.table("hub")
    hub_id = hub.text("id")
    if not _HUB_RE.match(hub_id):
        raise hub.error("id", f"{hub_id!r} is not a hub id: 'hub-' then a-z, 0-9 and '-'")
    hub.done()

    b = root.table("broker")
    broker_tls = TlsFiles(ca=b.path("ca"), cert=b.path("cert"), key=b.path("key"))
    for name, p in (("ca", broker_tls.ca), ("cert", broker_tls.cert), ("key", broker_tls.key)):
        if not os.path.isfile(p):
            raise b.error(name, f"{p}: no such file")
    cn = cert_cn(broker_tls.cert)
    if cn != hub_id:
        raise b.error("cert", f"{broker_tls.cert}: its CN is {cn!r}, not hub.id {hub_id!r} (the broker binds"
                              " the client id to the certificate's CN)")
    broker = BrokerConfig(
        host=b.text("host", "localhost"),
        port=b.integer("port", 8883, lo=1, hi=65535),
        tls=broker_tls,
        keepalive_s=b.integer("keepalive_s", 30, lo=5, hi=3600),
        client_process=b.flag("client_process", True),
    )
    b.done()

    d = root.table("database")
    db_path = d.path("path")
    d.done()

    api = parse_api(root.table("api"), broker_tls)

    c = root.table("commands")
    commands = CommandsConfig(
        signing_key=c.path("signing_key"),
        ttl_s=c.number("ttl_s", 60.0, positive=True),
        reply_grace_s=c.number("reply_grace_s", 30.0, positive=True),
    )
    if not os.path.isfile(commands.signing_key):
        raise c.error("signing_key", f"{commands.signing_key}: no such file")
    c.done()

    sites = parse_sites(root.table("sites"))
    rules = parse_rules(root.table("rules"))

    t = root.table("retention")
    retention = RetentionConfig(
        raw_days=t.number("raw_days", 7.0, positive=True),
        downsample_s=t.integer("downsample_s", 60, lo=1, hi=86400),
        downsampled_days=t.number("downsampled_days", 365.0, positive=True),
        events_days=t.number("events_days", 365.0, positive=True),
        every_s=t.number("every_s", 3600.0, positive=True),
    )
    t.done()

    i = root.table("ingest")
    ingest = IngestConfig(
        queue_max=i.integer("queue_max", 2000, lo=10),
        max_records_per_tx=i.integer("max_records_per_tx", 5000, lo=100),
        linger_s=i.number("linger_s", 0.005),
        receive_maximum=i.integer("receive_maximum", 400, lo=1, hi=65535),
        incoming_max=i.integer("incoming_max", 2000, lo=10),
        gap_grace_s=i.number("gap_grace_s", 1.0),
        ack_interval_s=i.number("ack_interval_s", 0.2),
        resend_interval_s=i.number("resend_interval_s", 3.0, positive=True),
        max_clock_skew_s=i.number("max_clock_skew_s", 300.0, positive=True),
        quarantine_max_rows=i.integer("quarantine_max_rows", 10_000, lo=10),
        quarantine_max_bytes=i.integer("quarantine_max_bytes", 16 * 1024 * 1024, lo=64 * 1024),
        quarantine_days=i.number("quarantine_days", 7.0, positive=True),
        quarantine_payload_max=i.integer("quarantine_payload_max", 4096, lo=256, hi=1024 * 1024),
    )
    i.done()

    al = root.table("alarms")
    alarms = AlarmsConfig(
        max_shelve_s=al.number("max_shelve_s", 8 * 3600.0, positive=True),
        flood_count=al.integer("flood_count", 10, lo=1),
        flood_window_s=al.number("flood_window_s", 600.0, positive=True),
        stale_check_s=al.number("stale_check_s", 5.0, positive=True),
    )
    al.done()

    auth = parse_auth(root.table("auth"))
    audit = parse_audit(root.table("audit"), db_path, commands.signing_key)
    forecast = parse_forecast(root.table("forecast"), present="forecast" in raw)
    province = parse_province_link(root.table("province"), present="province" in raw)

    enrolment = None
    if "enrolment" in raw:
        en = root.table("enrolment")
        en_addr = host_port(en.text("listen", "127.0.0.1:8443"))
        if en_addr is None:
            raise en.error("listen", "expected HOST:PORT")
        host, en_port = en_addr
        pki_dir = en.path("pki")
        if not os.path.isfile(pki_dir / "issuing-ca" / "key.pem"):
            raise en.error("pki", f"{pki_dir}: no issuing CA here ('jikimi pki init')")
        enrolment = EnrolmentConfig(
            host=host, port=en_port, pki_dir=pki_dir, db_path=en.path("db"),
            mqtt_host=en.text("mqtt_host", broker.host), mqtt_port=en.integer("mqtt_port", broker.port, lo=1, hi=65535),
            broker_dir=en.optional_path("broker_dir"),
            broker_pid_file=en.optional_path("broker_pid_file"),
        )
        en.done()

    forward = cctv = None
    if "forward" in raw:
        from hub.forward.config import parse_config as parse_forward

        forward = parse_forward(root.table("forward").data, file, hub_id=hub_id)
    if "cctv" in raw:
        from hub.cctv import parse_config as parse_cctv

        cctv = parse_cctv(root.table("cctv").data, file)
    live_view = parse_live(root.table("live_view").data, file) if "live_view" in raw else LiveConfig()

    enrolled: dict[str, Place | None] = {}
    if enrolment is not None:
        try:
            enrolled = registered_places(enrolment.db_path)
        except EnrolmentError as exc:
            raise ConfigError(str(file), "enrolment.db", str(exc)) from None
        sites = with_enrolled(sites, enrolled)
    if forward is not None:
        unplaced = unplaced_problem(sites, enrolled)
        if unplaced is not None:
            raise ConfigError(str(file), *unplaced)

    root.done()
    return HubConfig(
        file=file,
        hub_id=hub_id,
        broker=broker,
        db_path=db_path,
        api=api,
        commands=commands,
        sites=sites,
        rules=rules,
        retention=retention,
        ingest=ingest,
        alarms=alarms,
        auth=auth,
        audit=audit,
        enrolment=enrolment,
        forward=forward,
        cctv=cctv,
        live_view=live_view,
        forecast=forecast,
        province=province,
    )
