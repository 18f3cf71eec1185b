"""``jikimi provision doctor``: is this site ready? One line per check, what to do when not.

Checks: the site config and profiles load; the clock is synchronised; the certificate is
valid (days left, renewal due); the hub's command key loads; the broker answers with mutual
TLS; every device answers every point; the outbox's disk has room.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import ssl
import subprocess
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from edge.config import SiteConfig, load_site_config
from edge.drivers.readings import Quality
from provisioning.commission import _open
from shared.errors import ConfigError, JikimiError
from shared.probe import connack_ok, probe
from shared.signing import load_public_key
from shared.tls import client_context

MIN_FREE_BYTES = 1 << 30
WARN_FREE_BYTES = 200 << 20


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str


def _clock(run: Callable[[list[str]], str | None]) -> Check:
    answer = run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if answer == "yes":
        return Check("clock", "ok", "synchronised (NTP)")
    if Path("/run/systemd/timesync/synchronized").exists():
        return Check("clock", "ok", "synchronised (systemd-timesyncd)")
    if answer == "no":
        return Check("clock", "fail", "not synchronised: 'timedatectl set-ntp true' and check the network")
    return Check("clock", "warn", "cannot tell whether the clock is synchronised (no timedatectl here)")


def _run(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _certificate(cfg: SiteConfig, now: dt.datetime) -> Check:
    try:
        cert = x509.load_pem_x509_certificate(cfg.tls.cert.read_bytes())
    except (OSError, ValueError) as exc:
        return Check("certificate", "fail", f"{cfg.tls.cert}: {exc}")
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        return Check("certificate", "fail", f"not valid until {start:%Y-%m-%d %H:%M} UTC: is the clock right?")
    if now > end:
        return Check("certificate", "fail", f"expired {end:%Y-%m-%d}: re-enrol ('jikimi provision enroll')")
    left = (end - now).days
    due = start + (end - start) * 2 / 3
    if now >= due:
        return Check("certificate", "warn", f"{left} days left; renewal is due: 'jikimi provision renew'")
    return Check("certificate", "ok", f"{left} days left (until {end:%Y-%m-%d})")


def _broker(cfg: SiteConfig) -> Check:
    where = f"{cfg.hub.host}:{cfg.hub.port}"
    try:
        answer = probe(cfg.hub.host, cfg.hub.port, client_context(cfg.tls), f"{cfg.site.id}-doctor")
    except ssl.SSLCertVerificationError as exc:
        return Check("broker", "fail", f"{where}: the broker's certificate does not verify: {exc.verify_message}")
    except ssl.SSLError as exc:
        return Check("broker", "fail", f"{where}: TLS refused ({exc.reason}): is this certificate revoked or "
                     "from another CA?")
    except JikimiError as exc:
        return Check("broker", "fail", str(exc))
    except OSError as exc:
        return Check("broker", "fail", f"{where}: unreachable ({exc.strerror or exc}): network, firewall, address?")
    if connack_ok(answer):
        return Check("broker", "ok", f"{where}: mutual TLS and MQTT 5 accepted")
    if not answer:
        return Check("broker", "fail", f"{where}: closed the connection after TLS (certificate refused?)")
    return Check("broker", "fail", f"{where}: refused the MQTT connection ({answer.hex()})")


async def _devices(cfg: SiteConfig) -> list[Check]:
    out = []
    for d in cfg.devices:
        try:
            async with AsyncExitStack() as stack:
                sched = await _open(d.profile, d.endpoint, d.unit_id, stack)
                got = await sched.read_now("device", [p.name for p in d.profile.polled])
        except JikimiError as exc:
            out.append(Check(f"device {d.name}", "fail", str(exc)))
            continue
        bad = [r.point for r in got if r.quality is Quality.COMM_FAIL]
        faults = [r.point for r in got if r.quality in (Quality.SENSOR_FAULT, Quality.OUT_OF_RANGE)]
        if bad:
            out.append(Check(f"device {d.name}", "fail", f"no answer for {', '.join(bad)} at {d.endpoint.bus}: "
                             "wiring, address, unit id, baud rate?"))
        elif faults:
            out.append(Check(f"device {d.name}", "warn", f"answers, but {', '.join(faults)} report a fault"))
        else:
            out.append(Check(f"device {d.name}", "ok", f"{len(got)} points answered ({d.profile.model})"))
    return out


def _disk(cfg: SiteConfig) -> Check:
    path = cfg.state_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    free = shutil.disk_usage(path).free
    text = f"{free / (1 << 30):.1f} GiB free for the outbox at {cfg.state_dir}"
    if free >= MIN_FREE_BYTES:
        return Check("disk", "ok", text)
    return Check("disk", "warn" if free >= WARN_FREE_BYTES else "fail", text)


def run_checks(config: Path, *, now: dt.datetime | None = None,
               run: Callable[[list[str]], str | None] = _run) -> list[Check]:
    return asyncio.run(check_site(config, now=now, run=run))


async def check_site(config: Path, *, now: dt.datetime | None = None,
                     run: Callable[[list[str]], str | None] = _run) -> list[Check]:
    try:
        cfg = load_site_config(config)
    except ConfigError as exc:
        return [Check("config", "fail", str(exc))]
    checks = [Check("config", "ok", f"site {cfg.site.id}, {len(cfg.devices)} device(s)"), _clock(run),
              _certificate(cfg, now or dt.datetime.now(dt.UTC))]
    try:
        load_public_key(cfg.command_key)
        checks.append(Check("command key", "ok", str(cfg.command_key)))
    except ConfigError as exc:
        checks.append(Check("command key", "fail", str(exc)))
    checks.append(await asyncio.to_thread(_broker, cfg))
    checks += await _devices(cfg)
    checks.append(_disk(cfg))
    return checks
