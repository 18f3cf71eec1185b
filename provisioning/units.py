"""systemd units for a site or a hub, least privilege by default.

``jikimi provision units --out DIR`` writes:

- ``jikimi-edge@.service``: the edge agent, one instance per site id (``%i``), reading
  ``/etc/jikimi/%i/site.toml``. ``Type=notify`` with a watchdog fed by acquisition, its own
  account, serial access only through the ``dialout`` group, a read-only system except its
  state folder ``/var/lib/jikimi/%i``, no new privileges, no capabilities.
- ``jikimi-renew@.service`` + ``.timer``: daily certificate renewal (it renews only after two
  thirds of the certificate's life); the agent picks the new certificate up at its next
  connection.
- ``jikimi-hub.service``: the hub, its own account, state in ``/var/lib/jikimi-hub``.
- ``jikimi-broker.service``: Mosquitto with the generated mTLS config in
  ``/etc/jikimi/broker``; ``systemctl reload`` re-reads the ACL and CRL (SIGHUP).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ProvisioningError

# Shared hardening for every jikimi service (systemd.exec(5)).
_HARDENING = """\
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=no
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service
UMask=0077
"""


@dataclass(frozen=True)
class Unit:
    name: str
    text: str


def default_exec() -> str:
    """The ``jikimi`` script of this installation."""
    found = shutil.which("jikimi") or str(Path(sys.executable).with_name("jikimi"))
    return found


def edge_unit(jikimi: str, watchdog_s: int = 30) -> Unit:
    return Unit("jikimi-edge@.service", f"""\
[Unit]
Description=jikimi edge agent for site %i
After=network-online.target time-sync.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={jikimi} edge run --config /etc/jikimi/%i/site.toml
# Fed by the acquisition loop, not by a timer: a stuck bus restarts the agent.
WatchdogSec={watchdog_s}
Restart=always
RestartSec=2
TimeoutStopSec=20
User=jikimi-edge
Group=jikimi-edge
SupplementaryGroups=dialout
StateDirectory=jikimi/%i
StateDirectoryMode=0700
ReadWritePaths=/var/lib/jikimi/%i
ReadOnlyPaths=/etc/jikimi/%i
DevicePolicy=closed
DeviceAllow=char-ttyUSB rw
DeviceAllow=char-ttyS rw
DeviceAllow=char-ttyACM rw
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
{_HARDENING}
[Install]
WantedBy=multi-user.target
""")


def renew_units(jikimi: str) -> list[Unit]:
    service = Unit("jikimi-renew@.service", f"""\
[Unit]
Description=jikimi certificate renewal for site %i
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
# JIKIMI_ENROL_URL=https://hub.example:8443 (written at enrolment)
EnvironmentFile=/etc/jikimi/%i/renew.env
ExecStart={jikimi} provision renew --dir /etc/jikimi/%i --url ${{JIKIMI_ENROL_URL}}
User=jikimi-edge
Group=jikimi-edge
ReadWritePaths=/etc/jikimi/%i
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
{_HARDENING}""")
    timer = Unit("jikimi-renew@.timer", """\
[Unit]
Description=Daily jikimi certificate renewal check for site %i

[Timer]
OnCalendar=daily
RandomizedDelaySec=3h
Persistent=true

[Install]
WantedBy=timers.target
""")
    return [service, timer]


def hub_unit(jikimi: str) -> Unit:
    return Unit("jikimi-hub.service", f"""\
[Unit]
Description=jikimi hub (city/county situation centre)
After=network-online.target jikimi-broker.service
Wants=network-online.target

[Service]
Type=exec
ExecStart={jikimi} hub run --config /etc/jikimi/hub/hub.toml
Restart=always
RestartSec=2
User=jikimi-hub
Group=jikimi-hub
StateDirectory=jikimi-hub
StateDirectoryMode=0700
ReadWritePaths=/var/lib/jikimi-hub
ReadOnlyPaths=/etc/jikimi/hub
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
PrivateDevices=yes
{_HARDENING.replace("PrivateDevices=no", "")}
[Install]
WantedBy=multi-user.target
""")


def broker_unit(mosquitto: str = "/usr/sbin/mosquitto") -> Unit:
    return Unit("jikimi-broker.service", f"""\
[Unit]
Description=Mosquitto with jikimi's mutual-TLS configuration
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={mosquitto} -c /etc/jikimi/broker/mosquitto.conf
# Re-reads the ACL and the CRL without dropping anyone (revocation cuts off at once).
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=2
User=mosquitto
Group=mosquitto
StateDirectory=jikimi-broker
ReadWritePaths=/var/lib/jikimi-broker
ReadOnlyPaths=/etc/jikimi/broker
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
PrivateDevices=yes
{_HARDENING.replace("PrivateDevices=no", "")}
[Install]
WantedBy=multi-user.target
""")


def all_units(jikimi: str | None = None) -> list[Unit]:
    exe = jikimi or default_exec()
    return [edge_unit(exe), *renew_units(exe), hub_unit(exe), broker_unit()]


def write_units(out: Path, units: list[Unit], *, dry_run: bool = False) -> list[Path]:
    paths = [out / u.name for u in units]
    if dry_run:
        return paths
    try:
        out.mkdir(parents=True, exist_ok=True)
        for u, p in zip(units, paths, strict=True):
            p.write_text(u.text)
            p.chmod(0o644)
    except OSError as exc:
        raise ProvisioningError(f"{out}: cannot write units: {exc.strerror or exc}") from exc
    return paths
