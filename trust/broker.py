"""Mosquitto configuration for jikimi's mutual-TLS MQTT 5 broker, and running it.

The listener is TLS 1.3 only, requires a client certificate from the PKI, checks the CRL and
takes the certificate's CN as the username (``use_identity_as_username``) and the username as
the client id (``use_username_as_clientid``: whatever client id a client asks for, it gets its
CN, so an edge cannot connect as ``hub-<name>`` and throw the hub off; two connections with one
certificate take each other's session over). The ACL is
generated from the PKI index, one block per identity, so that revoking an identity removes it
from the ACL in the same reload (Mosquitto applies ACL changes to established connections,
but a CRL change only to new ones):

- an edge may write only ``jk/v1/site/<its CN>/{status,birth,data}`` and read only
  ``jk/v1/site/<its CN>/{cmd,ack}`` and ``jk/v1/hub/+/status``;
- a hub may read every site's status, birth and data, write every site's cmd and ack, and
  write its own ``jk/v1/hub/<its CN>/status``;
- a hub ``hub-<city>`` may also write its city's up channels ``jk/v1/city/<city>/{status,birth,
  data}`` and read its down channels ``jk/v1/city/<city>/{ack,req}`` (DESIGN §8), nothing of
  another city's;
- any other identity (operators, revoked edges) gets nothing.

The provincial broker (``Scope.PROVINCE``) admits only the cities' bridges and the provincial
hubs: ``bridge-<city>`` has exactly its city's rights above, ``province-<name>`` reads every city's
up channels and writes every city's down channels. A city broker may carry a :class:`Bridge` to
the provincial broker (a Mosquitto ``connection`` section, mutual TLS 1.3, MQTT 5, persistent
session both sides, QoS 1 both ways). The topic strings all come from ``shared/topics.py``.

Queues are sized for the hub: Mosquitto 2.0's default ``max_queued_messages 1000`` drops the
*newest* messages for a slow subscriber, so a hub catching up after a restart would lose data
it never saw. The hub's end-to-end ack and ``resend_from`` recover any loss anyway, but the
broker should not cause it.
"""

from __future__ import annotations

import enum
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from shared.errors import TrustError, WireError
from shared.topics import ROOT, CityChannel, SiteChannel, all_cities, city_of_hub, city_topic
from trust.pki import Pki, PkiError, Role, bridge_cn, city_of_bridge

DEFAULT_PORT = 8883
MAX_QUEUED_MESSAGES = 1_000_000
MAX_PACKET_SIZE = 512 * 1024
_BIND_RE = re.compile(r"^[A-Za-z0-9.:-]{1,253}$")
_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")


class BrokerError(TrustError):
    """The broker cannot be configured or started."""


BRIDGE_MAX_QUEUED_BYTES = 256 * 1024 * 1024
"""A bridged city broker's per-client queue cap in bytes (Mosquitto 2.0 has only global queue
limits, so it binds the hub's queue too). While the province is unreachable the bridge queues the
city's up channels in RAM (and in the persistence file): at a typhoon's ~10 kB/s of city records
this holds hours of outage, and it keeps one dead link from eating the city broker's memory.
Whatever is dropped beyond it the city hub's durable outbox sends again (DESIGN §8)."""
BRIDGE_KEEPALIVE_S = 30
BRIDGE_RESTART_S = (2, 30)
"""The bridge's reconnect backoff (jittered, base and cap in seconds): back within seconds of a
short outage, not hammering a province that is down for longer."""


@dataclass(frozen=True)
class Bridge:
    """A city broker's bridge to the provincial broker (DESIGN §8).

    ``pki_dir`` is the province's PKI: its ``ca.pem`` verifies the provincial broker, and its
    ``bridge-<city>/cert.pem, key.pem`` are the identity the bridge connects with.
    """

    city: str
    host: str
    port: int
    pki_dir: Path

    @property
    def cn(self) -> str:
        return bridge_cn(self.city)

    def lines(self) -> list[str]:
        """The ``connection`` section of mosquitto.conf."""
        if not _BIND_RE.match(self.host):
            raise BrokerError(f"--bridge-to {self.host!r}: expected HOST:PORT")
        if not 1 <= self.port <= 65535:
            raise BrokerError(f"--bridge-to port {self.port}: not a TCP port")
        pki = Pki(self.pki_dir)
        try:
            cn = self.cn
        except PkiError as exc:
            raise BrokerError(str(exc)) from exc
        for path in (pki.ca_chain, pki.cert(cn), pki.key(cn)):
            if not path.exists():
                raise BrokerError(f"{path}: missing; issue the bridge identity in the province's PKI: "
                                  f"'jikimi pki issue --dir {pki.dir} --cn {cn} --role bridge'")
        return [
            "# Bridge to the provincial broker (DESIGN §8): the city's up channels go out, the",
            "# province's acks and requests come in, QoS 1 both ways. cleansession false keeps the",
            "# local session, so the city's records queue here while the province is unreachable.",
            "# Mosquitto 2.0's MQTT 5 bridge sends no session expiry, so the province does not queue",
            "# acks and requests for a broken link: the federation protocol repeats them (docs/bridge.md).",
            f"connection {cn}",
            f"address {self.host}:{self.port}",
            f"remote_clientid {cn}",
            f"local_clientid local.{cn}",
            "bridge_protocol_version mqttv50",
            f"bridge_cafile {pki.ca_chain.resolve()}",
            f"bridge_certfile {pki.cert(cn).resolve()}",
            f"bridge_keyfile {pki.key(cn).resolve()}",
            "bridge_tls_version tlsv1.3",
            "bridge_insecure false",
            "cleansession false",
            "try_private true",
            "# no $SYS notifications: the provincial ACL gives a bridge nothing outside its city",
            "notifications false",
            "start_type automatic",
            f"keepalive_interval {BRIDGE_KEEPALIVE_S}",
            f"restart_timeout {BRIDGE_RESTART_S[0]} {BRIDGE_RESTART_S[1]}",
            *(f"topic {city_topic(self.city, c)} {'out' if c.from_city else 'in'} 1" for c in CityChannel),
            "",
        ]


@dataclass(frozen=True)
class BrokerConfig:
    conf: Path
    acl: Path
    port: int


class Scope(enum.StrEnum):
    """Which broker an ACL is for: a city's (hubs and edges) or the province's (bridges and
    provincial hubs). One PKI may hold both kinds of identity (the demo's does); each broker
    admits only its own kind."""

    CITY = "city"
    PROVINCE = "province"


_SCOPE_LINE = "# scope: "


def render_acl(pki: Pki, scope: Scope = Scope.CITY) -> str:
    """The ACL file for every active identity of ``pki`` that ``scope``'s broker admits."""
    lines = [
        "# Generated by 'jikimi broker config' from the PKI index; do not edit by hand.",
        "# Identities not listed here (operators, revoked certificates) may do nothing.",
        f"{_SCOPE_LINE}{scope.value}",
        "",
    ]
    if scope is Scope.PROVINCE:
        return "\n".join(lines + _province_blocks(pki))
    for hub in sorted(pki.active(Role.HUB)):
        lines += [
            f"user {hub}",
            f"topic read {ROOT}/site/+/{SiteChannel.STATUS.value}",
            f"topic read {ROOT}/site/+/{SiteChannel.BIRTH.value}",
            f"topic read {ROOT}/site/+/{SiteChannel.DATA.value}",
            f"topic write {ROOT}/site/+/{SiteChannel.CMD.value}",
            f"topic write {ROOT}/site/+/{SiteChannel.ACK.value}",
            f"topic readwrite {ROOT}/hub/{hub}/status",
            f"topic read {ROOT}/hub/+/status",
            *_city_lines(city_of_hub(hub)),
            "",
        ]
    for site in sorted(pki.active(Role.EDGE)):
        lines += [f"user {site}"]
        lines += [f"topic write {ROOT}/site/{site}/{c.value}" for c in SiteChannel if c.from_edge]
        lines += [f"topic read {ROOT}/site/{site}/{c.value}" for c in SiteChannel if not c.from_edge]
        lines += [f"topic read {ROOT}/hub/+/status", ""]
    return "\n".join(lines)


def _city_lines(city: str) -> list[str]:
    """What a city's own voice towards the province may do (its hub at the city broker, its
    bridge at the provincial broker): write its up channels, read its down channels."""
    return [f"topic {'write' if c.from_city else 'read'} {city_topic(city, c)}" for c in CityChannel]


def _province_blocks(pki: Pki) -> list[str]:
    lines: list[str] = []
    for cn in sorted(pki.active(Role.BRIDGE)):
        lines += [f"user {cn}", *_city_lines(city_of_bridge(cn)), ""]
    for cn in sorted(pki.active(Role.PROVINCE)):
        lines += [f"user {cn}"]
        lines += [f"topic {'read' if c.from_city else 'write'} {all_cities(c)}" for c in CityChannel]
        lines += [""]
    return lines


def _scope_of(acl_path: Path) -> Scope:
    """The scope an existing ACL was written for (files from before scopes existed are a city's)."""
    for line in acl_path.read_text().splitlines():
        if line.startswith(_SCOPE_LINE):
            try:
                return Scope(line[len(_SCOPE_LINE):].strip())
            except ValueError:
                raise BrokerError(f"{acl_path}: unknown scope {line!r}") from None
    return Scope.CITY


def render_conf(
    pki: Pki,
    acl_path: Path,
    *,
    port: int,
    bind: str,
    user: str,
    persistence_dir: Path | None,
    log_file: Path | None,
    bridge: Bridge | None = None,
) -> str:
    broker_cert, broker_key = pki.cert("broker"), pki.key("broker")
    if not _BIND_RE.match(bind):
        raise BrokerError(f"--bind {bind!r}: expected an IP address or a host name")
    if not _USER_RE.match(user):
        raise BrokerError(f"--user {user!r}: not an account name")
    for path in (acl_path, persistence_dir, log_file, pki.dir, bridge.pki_dir if bridge else None):
        # one directive per line: a line break in a path would add directives of its own
        if path is not None and any(c in str(path.resolve()) for c in "\r\n\0"):
            raise BrokerError(f"{str(path)!r}: a path with a line break cannot go into mosquitto.conf")
    for path in (pki.ca_chain, pki.crl, broker_cert, broker_key):
        if not path.exists():
            hint = (
                f"run 'jikimi pki issue --dir {pki.dir} --cn broker --role broker'"
                if path in (broker_cert, broker_key)
                else f"run 'jikimi pki init --dir {pki.dir}'"
            )
            raise BrokerError(f"{path}: missing; {hint}")
    lines = [
        "# Generated by 'jikimi broker config'. Mutual-TLS MQTT for jikimi.",
        f"user {user}",
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {acl_path.resolve()}",
        "",
        "# Size queues for the hub: the default (1000) drops the newest messages.",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        *([
            f"# ...and cap them at {BRIDGE_MAX_QUEUED_BYTES // 2**20} MiB per client: the bridge queues the city's",
            "# records in RAM while the province is unreachable; the city outbox resends any drop.",
            f"max_queued_bytes {BRIDGE_MAX_QUEUED_BYTES}",
        ] if bridge is not None else ["max_queued_bytes 0"]),
        "max_inflight_messages 100",
        f"max_packet_size {MAX_PACKET_SIZE}",
        "# Send each packet at once: with Nagle a small packet (a PUBACK, an ack) waits for the peer's",
        "# delayed ACK, and a receiver that acks one batch before taking the next gets ~30 a second.",
        "set_tcp_nodelay true",
        "",
    ]
    if persistence_dir is not None:
        lines += [
            "persistence true",
            f"persistence_location {persistence_dir.resolve()}/",
            "autosave_interval 30",
        ]
    else:
        lines += ["persistence false"]
    if log_file is not None:
        lines += [f"log_dest file {log_file.resolve()}"]
    lines += ["log_dest stderr"]
    lines += [
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        *(["log_type all"] if os.environ.get("JIKIMI_BROKER_DEBUG") else []),
        "connection_messages true",
        "log_timestamp true",
        "",
        f"listener {port} {bind}",
        "protocol mqtt",
        f"cafile {pki.ca_chain.resolve()}",
        f"certfile {broker_cert.resolve()}",
        f"keyfile {broker_key.resolve()}",
        f"crlfile {pki.crl.resolve()}",
        "require_certificate true",
        "use_identity_as_username true",
        "# the client id is the username (the CN): nobody can take over another identity's session",
        "use_username_as_clientid true",
        "tls_version tlsv1.3",
        "",
    ]
    if bridge is not None:
        lines += bridge.lines()
    return "\n".join(lines)


def write_config(
    pki_dir: Path,
    out_dir: Path,
    *,
    port: int = DEFAULT_PORT,
    bind: str = "127.0.0.1",
    user: str | None = None,
    persistence: bool = True,
    persistence_dir: Path | None = None,
    log_file: Path | None = None,
    scope: Scope = Scope.CITY,
    bridge: Bridge | None = None,
    dry_run: bool = False,
) -> BrokerConfig:
    """Write ``OUT/mosquitto.conf`` and ``OUT/acl`` for the PKI in ``pki_dir``.

    With ``persistence`` Mosquitto keeps sessions, queued QoS 1 messages and retained messages
    in ``persistence_dir`` (default ``OUT/data``; a systemd unit that mounts OUT read-only gives its
    state directory) as ``mosquitto.db``, saved every 30 s and at a clean stop; without, a restart
    forgets them (the end-to-end acks recover what edges sent). ``log_file`` adds a log file to
    the log on stderr.

    ``user`` is the account Mosquitto runs as after start; it defaults to the current user,
    so that the generated files (and the private key) stay readable without widening their
    permissions. The systemd units of ``jikimi provision units`` choose a dedicated account.

    ``scope`` chooses whom the ACL admits: a city's hubs and edges, or (``Scope.PROVINCE``, the
    provincial broker) the cities' bridges and the provincial hubs. ``bridge`` adds a city
    broker's bridge to the provincial broker.
    """
    if not 1 <= port <= 65535:
        raise BrokerError(f"--port {port}: not a TCP port")
    if bridge is not None and scope is Scope.PROVINCE:
        raise BrokerError("--bridge-to: the provincial broker is the bridges' end, it bridges nowhere")
    pki = Pki(pki_dir)
    try:
        acl = render_acl(pki, scope)
    except (PkiError, WireError) as exc:
        raise BrokerError(str(exc)) from exc
    conf_path, acl_path = out_dir / "mosquitto.conf", out_dir / "acl"
    conf = render_conf(
        pki,
        acl_path,
        port=port,
        bind=bind,
        user=user or getpass.getuser(),
        persistence_dir=(persistence_dir or out_dir / "data") if persistence else None,
        log_file=log_file,
        bridge=bridge,
    )
    if not dry_run:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            if persistence and persistence_dir is None:
                (out_dir / "data").mkdir(exist_ok=True)
            for path, text in ((acl_path, acl), (conf_path, conf)):
                tmp = path.with_suffix(".tmp")
                tmp.write_text(text)
                os.replace(tmp, path)
        except OSError as exc:
            raise BrokerError(f"{out_dir}: cannot write the broker's config there: {exc}") from exc
    return BrokerConfig(conf=conf_path, acl=acl_path, port=port)


def refresh_acl(pki_dir: Path, out_dir: Path, pid: int | None) -> None:
    """Rewrite the ACL of an existing broker config from the PKI index; SIGHUP ``pid`` if given.

    The listener settings are kept as they were written (port, bind, user): only the ACL changes.
    """
    acl_path = out_dir / "acl"
    if not acl_path.exists():
        raise BrokerError(f"{out_dir}: no broker config here (run 'jikimi broker config' first)")
    try:
        text = render_acl(Pki(pki_dir), _scope_of(acl_path))
    except (PkiError, WireError) as exc:
        raise BrokerError(str(exc)) from exc
    tmp = acl_path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)  # the broker runs as another account; the ACL holds no secret
    os.replace(tmp, acl_path)
    if pid is not None:
        try:
            reload(pid)
        except ProcessLookupError as exc:
            raise BrokerError(f"no broker with pid {pid} to reload; the new ACL applies at its next start") from exc


@dataclass(frozen=True)
class ManagedBroker:
    """The broker a hub keeps in step with its PKI: after each enrolment its ACL is rewritten
    and (with a pid file) the broker reloaded, so the new edge may publish at once.

    :meth:`problem` tells *before* a certificate is issued whether that will work, so that an
    enrolment that could not reach the broker is refused with the token still unspent.
    """

    pki_dir: Path
    broker_dir: Path | None = None
    pid_file: Path | None = None

    def problem(self) -> str | None:
        """Why an identity issued now could not be used (None: it could)."""
        pki = Pki(self.pki_dir)
        issuing_key = pki.dir / "issuing-ca" / "key.pem"
        if not os.access(issuing_key, os.R_OK):
            return f"{issuing_key} is not readable by the hub's account"
        for path in (pki.dir, pki.index_file):
            if not os.access(path, os.W_OK):
                return f"{path} is not writable by the hub's account"
        if self.broker_dir is not None:
            if not (self.broker_dir / "acl").exists():
                return f"{self.broker_dir}: no broker config here (run 'jikimi broker config' first)"
            if not os.access(self.broker_dir, os.W_OK):
                return f"{self.broker_dir} is not writable by the hub's account (the broker's ACL is there)"
        if self.pid_file is not None:
            try:
                pid = self._pid()
                os.kill(pid, 0)
            except BrokerError as exc:
                return str(exc)
            except ProcessLookupError:
                return f"no broker with pid {pid} (from {self.pid_file}) to reload"
            except PermissionError:
                return f"the hub's account may not signal the broker (pid {pid}); see the units' broker-acl path unit"
        return None

    def _pid(self) -> int:
        assert self.pid_file is not None
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError) as exc:
            raise BrokerError(f"{self.pid_file}: cannot read the broker's pid: {exc}") from exc

    def refresh(self) -> None:
        """Rewrite the ACL (and reload the broker when there is a pid file)."""
        if self.broker_dir is not None:
            refresh_acl(self.pki_dir, self.broker_dir, self._pid() if self.pid_file is not None else None)


def mosquitto_binary() -> str:
    """Where Debian's Mosquitto is (``/usr/sbin`` is not on every PATH)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise BrokerError("mosquitto is not installed: 'apt-get install mosquitto' (make test does it)")
    return found


def reload(pid: int) -> None:
    """Make a running Mosquitto re-read its ACL and CRL (SIGHUP), without dropping anyone."""
    os.kill(pid, signal.SIGHUP)


def exec_broker(config: BrokerConfig, pid_file: Path) -> NoReturn:
    """Replace this process by Mosquitto (``exec``), after writing its pid to ``pid_file``.

    The process keeps its pid, so a supervisor's signals (SIGTERM, SIGINT, SIGHUP to reload)
    and a SIGKILL reach Mosquitto itself: there is no parent left to die and orphan it.
    """
    binary = mosquitto_binary()
    try:
        pid_file.write_text(f"{os.getpid()}\n")
    except OSError as exc:
        raise BrokerError(f"{pid_file}: cannot write the broker's pid: {exc}") from exc
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(binary, [binary, "-c", str(config.conf)])  # noqa: S606 - a fixed argument list, no shell


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for tests, benchmarks and the demo)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class RunningBroker:
    """A Mosquitto process with a jikimi config, started and stopped by its owner.

    Used by the test fixture, the benchmarks and the demo::

        with RunningBroker.start(pki_dir, workdir) as b:
            ... b.port ...
    """

    def __init__(self, proc: subprocess.Popen[bytes], config: BrokerConfig, log: Path,
                 pki_dir: Path, workdir: Path, persistence: bool) -> None:
        self.proc = proc
        self.config = config
        self.log = log
        self.pki_dir = pki_dir
        self.workdir = workdir
        self.persistence = persistence
        self.host = "localhost"

    @property
    def port(self) -> int:
        return self.config.port

    @classmethod
    def start(
        cls,
        pki_dir: Path,
        workdir: Path,
        *,
        port: int | None = None,
        persistence: bool = False,
        scope: Scope = Scope.CITY,
        bridge: Bridge | None = None,
        ready_timeout_s: float = 10.0,
    ) -> RunningBroker:
        config = write_config(pki_dir, workdir, port=port or free_port(), persistence=persistence,
                              scope=scope, bridge=bridge)
        log = workdir / "mosquitto.log"
        proc = _spawn(config, log)
        broker = cls(proc, config, log, pki_dir, workdir, persistence)
        broker._wait_ready(ready_timeout_s)
        return broker

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.port} within {timeout_s} s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def reload(self) -> None:
        """Regenerate the ACL from the PKI index and SIGHUP the broker (CRL and ACL re-read)."""
        refresh_acl(self.pki_dir, self.workdir, self.proc.pid)

    def restart(self) -> None:
        """Stop and start again on the same port (state is lost unless persistence is on)."""
        self.stop()
        self.proc = _spawn(self.config, self.log)
        self._wait_ready(10.0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> RunningBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(config: BrokerConfig, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [mosquitto_binary(), "-c", str(config.conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
