"""systemd units for a site or a hub, least privilege by default.

``jikimi provision units --out DIR`` writes:

- ``jikimi-edge@.service``: the edge agent, one instance per site id (``%i``), reading
  ``/etc/jikimi/%i/site.toml``. ``Type=notify`` with a watchdog fed by acquisition. Each site
  runs as *its own* system user (``DynamicUser=`` named ``jikimi-%i``), sees only its own
  ``/etc/jikimi/%i`` (the rest of ``/etc/jikimi`` is an empty tmpfs in its namespace), gets its
  private key from systemd as a credential (``LoadCredential=``: the key stays root's 0600 file),
  writes only its state folder ``/var/lib/jikimi/%i``, reaches serial ports only through the
  ``dialout`` group, no new privileges, no capabilities.
- ``jikimi-renew@.service`` + ``.timer``: daily certificate renewal, only once two thirds of the
  certificate's life have passed (``ExecCondition=``); it runs as root without capabilities and
  sees only its own site's folder, then restarts that site's agent so it loads the new key.
- ``jikimi-hub.service``: the hub, its own account, state in ``/var/lib/jikimi-hub``; it may
  write the PKI (``/etc/jikimi/pki``, which must belong to ``jikimi-hub``) to enrol devices.
- ``jikimi-broker.service``: Mosquitto with the generated mTLS config in
  ``/etc/jikimi/broker``; ``systemctl reload`` re-reads the ACL and CRL (SIGHUP).
- ``jikimi-broker-acl.path`` + ``.service``: when the PKI index changes (an enrolment, a
  revocation), root rewrites the broker's ACL from it and reloads the broker, so the hub needs
  no right over the broker's files or process.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from edge.agent_cli import AGENT_ENV
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
    env = "\n".join(f"Environment={k}={v}" for k, v in AGENT_ENV.items())
    return Unit("jikimi-edge@.service", f"""\
[Unit]
Description=jikimi edge agent for site %i
After=network-online.target time-sync.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={jikimi} edge run --config /etc/jikimi/%i/site.toml
# The agent's footprint (edge/agent_cli.py AGENT_ENV; bench edge runs it with the same).
{env}
# Fed by the acquisition loop, not by a timer: a stuck bus restarts the agent.
WatchdogSec={watchdog_s}
Restart=always
RestartSec=2
TimeoutStopSec=20
# One system user per site: no site can read another's key, state or outbox.
DynamicUser=yes
User=jikimi-%i
SupplementaryGroups=dialout
StateDirectory=jikimi/%i
StateDirectoryMode=0700
# The key stays root's 0600 file; systemd hands this service a private copy.
LoadCredential=key.pem:/etc/jikimi/%i/key.pem
TemporaryFileSystem=/etc/jikimi:ro
BindReadOnlyPaths=/etc/jikimi/%i
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
# Skipped (not failed) until two thirds of the certificate's life have passed.
ExecCondition={jikimi} provision renew --dir /etc/jikimi/%i --check
ExecStart={jikimi} provision renew --dir /etc/jikimi/%i --url ${{JIKIMI_ENROL_URL}}
# The agent holds its key as a credential copy: restart it to load the new one.
ExecStartPost=+/bin/systemctl try-restart jikimi-edge@%i.service
# root without capabilities, and only this site's folder exists in its namespace.
TemporaryFileSystem=/etc/jikimi:ro
BindPaths=/etc/jikimi/%i
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
ReadWritePaths=/var/lib/jikimi-hub /etc/jikimi/pki
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
# The config must be written with `jikimi broker config ... --persistence-dir /var/lib/jikimi-broker`:
# the state directory below is the only place this unit lets Mosquitto write.
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


def broker_acl_units(jikimi: str) -> list[Unit]:
    path = Unit("jikimi-broker-acl.path", """\
[Unit]
Description=Rewrite the broker's ACL when the PKI index changes

[Path]
PathChanged=/etc/jikimi/pki/index.json
Unit=jikimi-broker-acl.service

[Install]
WantedBy=multi-user.target
""")
    service = Unit("jikimi-broker-acl.service", f"""\
[Unit]
Description=Rewrite the broker's ACL from the PKI index and reload the broker
After=jikimi-broker.service

[Service]
Type=oneshot
ExecStart={jikimi} broker acl --pki /etc/jikimi/pki --out /etc/jikimi/broker
ExecStartPost=/bin/systemctl reload-or-restart jikimi-broker.service
ReadWritePaths=/etc/jikimi/broker
RestrictAddressFamilies=AF_UNIX
{_HARDENING}""")
    return [path, service]


def all_units(jikimi: str | None = None) -> list[Unit]:
    exe = jikimi or default_exec()
    return [edge_unit(exe), *renew_units(exe), hub_unit(exe), broker_unit(), *broker_acl_units(exe)]


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
