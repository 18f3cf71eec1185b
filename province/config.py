"""The provincial hub's config file, parsed once into frozen types (``jikimi province run``).

Every problem is a :class:`shared.errors.ConfigError` naming the file and the key; the process
refuses to start. Sections::

    [province]  id = "province-gyeonggi"       its certificate's CN on the provincial broker
    [broker]    host, port, ca, cert, key      the provincial broker (mutual TLS)
    [database]  path                           the province's SQLite file
    [grouping]  distance_m = 3000              alarms of different cities this close are one incident
                alert_every_s = 5              how often provincial incidents are looked for (CAP alerts)
    [ingest]    max_clock_skew_s, gap_grace_s, resend_interval_s   (as the hub's [ingest])
    [api]       listen = "127.0.0.1:8443", cert, key (default: the broker identity's), enabled,
                trusted_proxy_header, trusted_proxies     the HTTPS API, as the hub's [api]; absent: none
    [auth]      session_ttl_s, login_max_failures, ...   sessions and login back-off, as the hub's
    [forward]   sender, signing_key, signing_cert, [forward.recipients.NAME] ...   provincial CAP
                alerts of cross-boundary incidents (province/alerts.py), as the hub's [forward]; absent: none
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hub.config import ApiConfig, AuthConfig, BrokerConfig, IngestConfig, parse_api, parse_auth
from hub.forward.config import ForwardConfig
from shared import tomlread
from shared.tls import TlsFiles, cert_cn
from shared.tomlread import Table

_PROVINCE_RE: Final = re.compile(r"^province-[a-z0-9][a-z0-9-]{0,52}$")


@dataclass(frozen=True)
class ProvinceConfig:
    province_id: str
    broker: BrokerConfig
    db_path: Path
    distance_m: float
    ingest: IngestConfig
    api: ApiConfig
    auth: AuthConfig
    forward: ForwardConfig | None = None
    """The recipients of provincial CAP alerts (``[forward]``); None: the province alerts no one."""
    alert_every_s: float = 5.0


def load(path: Path) -> ProvinceConfig:
    """Read and check the province's config file."""
    return parse(tomlread.load(path).data, path)


def parse(raw: Mapping[str, Any], file: Path) -> ProvinceConfig:
    root = Table(file, raw)

    p = root.table("province", required=True)
    pid = p.text("id")
    if not _PROVINCE_RE.match(pid):
        raise p.error("id", f"{pid!r} is not a province id: 'province-' then a-z, 0-9 and '-'")
    p.done()

    b = root.table("broker", required=True)
    tls = TlsFiles(ca=b.path("ca"), cert=b.path("cert"), key=b.path("key"))
    for name, f in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key)):
        if not os.path.isfile(f):
            raise b.error(name, f"{f}: no such file")
    cn = cert_cn(tls.cert)
    if cn != pid:
        raise b.error("cert", f"{tls.cert}: its CN is {cn!r}, not province.id {pid!r} (the broker binds the"
                              " client id to the certificate's CN)")
    broker = BrokerConfig(host=b.text("host", "localhost"), port=b.integer("port", 8883, lo=1, hi=65535), tls=tls,
                          keepalive_s=b.integer("keepalive_s", 30, lo=5, hi=3600))
    b.done()

    d = root.table("database", required=True)
    db_path = d.path("path")
    d.done()

    g = root.table("grouping")
    distance = g.number("distance_m", 3000.0, lo=0.0)
    alert_every_s = g.number("alert_every_s", 5.0, lo=0.5, hi=3600.0)
    g.done()

    i = root.table("ingest")
    default = IngestConfig()
    ingest = IngestConfig(
        max_clock_skew_s=i.number("max_clock_skew_s", default.max_clock_skew_s, lo=0.0),
        gap_grace_s=i.number("gap_grace_s", default.gap_grace_s, lo=0.0),
        resend_interval_s=i.number("resend_interval_s", default.resend_interval_s, lo=0.1),
    )
    i.done()

    a = root.table("api")
    api = parse_api(a, tls)
    if "api" not in raw:  # no [api]: the ingest alone, no HTTPS listener
        api = dataclasses.replace(api, enabled=False)
    for name, f in (("cert", api.tls.cert), ("key", api.tls.key)):
        if api.enabled and not os.path.isfile(f):
            raise a.error(name, f"{f}: no such file")
    auth = parse_auth(root.table("auth"))
    forward = None
    if "forward" in raw:
        from hub.forward.config import parse_config as parse_forward

        forward = parse_forward(root.table("forward").data, file, hub_id=pid)
    root.done()
    return ProvinceConfig(pid, broker, db_path, distance, ingest, api, auth, forward, alert_every_s)
