"""The edge agent's site config (TOML), parsed once into frozen types.

Every problem is reported as ``file: key: problem`` (a :class:`shared.errors.ConfigError`)
and the agent refuses to start; nothing is dropped with a warning. Relative paths are taken
relative to the config file. Example::

    [site]
    id = "gg-suwon-up-0031"
    state_dir = "/var/lib/jikimi"

    [hub]
    host = "hub.suwon.example"
    port = 8883
    ca = "pki/ca.pem"
    cert = "pki/cert.pem"
    key = "pki/key.pem"
    command_key = "pki/hub-command.pub.pem"

    [policy]
    closing_depth_cm = 15.0

    [devices.barrier]
    profile = "underpass-jk-up300.toml"      # a file, or a name in firmware-configs/profiles
    transport = "tcp://192.0.2.10:502"        # or "rtu:///dev/ttyUSB0", "serial:///dev/ttyUSB1"
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec

from shared.errors import ConfigError, ProfileError
from shared.paths import profiles_dir
from shared.profiles import Profile, Transport, load_profile
from shared.tls import TlsFiles

_Positive = Annotated[float, msgspec.Meta(gt=0)]
_NonNeg = Annotated[float, msgspec.Meta(ge=0)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class SiteSection(_Strict, frozen=True, kw_only=True):
    id: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
    state_dir: str
    name: str = ""
    lat: float | None = None
    lon: float | None = None


class HubSection(_Strict, frozen=True, kw_only=True):
    host: str
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8883
    ca: str
    cert: str
    key: str
    command_key: str


class PolicySection(_Strict, frozen=True, kw_only=True):
    """Local safety policy (DESIGN §5). Depths in cm, times in seconds."""

    closing_depth_cm: _Positive = 15.0
    debounce_s: _NonNeg = 0.0
    reopening_depth_cm: _NonNeg = 5.0
    data_age_limit_s: _Positive = 10.0
    forecast_lead_s: _NonNeg = 600.0
    siren_depth_cm: _Positive = 10.0
    displacement_warn_mm_per_day: _Positive = 1.0
    displacement_alarm_mm_per_day: _Positive = 10.0
    verify_timeout_s: _Positive = 30.0
    max_clock_skew_s: _Positive = 30.0


class OutboxSection(_Strict, frozen=True, kw_only=True):
    max_records: Annotated[int, msgspec.Meta(ge=100)] = 200_000
    replay_rate: _Positive = 2000.0


class DeviceSection(_Strict, frozen=True, kw_only=True):
    profile: str
    transport: str
    unit_id: Annotated[int, msgspec.Meta(ge=0, le=247)] | None = None
    depth_source: str | None = None
    """For a river gate: ``device.point`` that gives the water depth its policy watches."""
    model: str | None = None
    """A model from firmware-configs/models (e.g. ``flood``) to run on this device's depth."""


class _ConfigFile(_Strict, frozen=True, kw_only=True):
    site: SiteSection
    hub: HubSection
    devices: dict[str, DeviceSection]
    policy: PolicySection = msgspec.field(default_factory=PolicySection)
    outbox: OutboxSection = msgspec.field(default_factory=OutboxSection)


@dataclass(frozen=True)
class Endpoint:
    """Where a device is: ``tcp`` host/port, or a serial ``path`` (RTU or line protocol)."""

    scheme: str  # tcp | rtu | serial
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def bus(self) -> str:
        """Devices on the same serial line share one bus scheduler."""
        return self.path if self.scheme in ("rtu", "serial") else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    profile: Profile
    profile_path: Path
    endpoint: Endpoint
    unit_id: int | None
    depth_source: tuple[str, str] | None
    model: str | None


@dataclass(frozen=True)
class SiteConfig:
    source: Path
    site: SiteSection
    hub: HubSection
    tls: TlsFiles
    command_key: Path
    state_dir: Path
    policy: PolicySection
    outbox: OutboxSection
    devices: tuple[DeviceConfig, ...]

    def device(self, name: str) -> DeviceConfig:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)


_TRANSPORT = re.compile(r"^(?P<scheme>tcp|rtu|serial)://(?P<rest>.+)$")


def _endpoint(file: str, key: str, value: str) -> Endpoint:
    m = _TRANSPORT.match(value)
    if not m:
        raise ConfigError(file, key, f"{value!r}: use tcp://HOST:PORT, rtu:///dev/PORT or serial:///dev/PORT")
    scheme, rest = m["scheme"], m["rest"]
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(file, key, f"{value!r}: expected tcp://HOST:PORT")
        return Endpoint("tcp", host=host.strip("[]"), port=int(port))
    if not rest.startswith("/"):
        raise ConfigError(file, key, f"{value!r}: expected an absolute device path, e.g. {scheme}:///dev/ttyUSB0")
    return Endpoint(scheme, path=rest)


def _key_of(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec says ``problem - at `$.a.b```: turn that into (``a.b``, problem)."""
    text = str(exc)
    problem, _, where = text.partition(" - at `$")
    key = where.rstrip("`").lstrip(".").replace("][", ".").replace("[", ".").replace("]", "")
    m = re.search(r"unknown field `([^`]+)`", problem)
    if m:
        key = f"{key}.{m[1]}" if key else m[1]
        problem = "unknown key"
    m = re.search(r"missing required field `([^`]+)`", problem)
    if m:
        key = f"{key}.{m[1]}" if key else m[1]
        problem = "missing"
    return key, problem


def load_site_config(path: Path) -> SiteConfig:
    """Read, validate and resolve a site config; raise :class:`ConfigError` naming file and key."""
    file = str(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"not valid TOML: {exc}") from exc
    try:
        cfg = msgspec.convert(raw, _ConfigFile)
    except msgspec.ValidationError as exc:
        key, problem = _key_of(exc)
        raise ConfigError(file, key, problem) from exc
    base = path.parent

    def rel(key: str, value: str, *, must_exist: bool = True) -> Path:
        p = Path(value)
        p = p if p.is_absolute() else base / p
        if must_exist and not p.exists():
            raise ConfigError(file, key, f"{p}: no such file")
        return p

    tls = TlsFiles(ca=rel("hub.ca", cfg.hub.ca), cert=rel("hub.cert", cfg.hub.cert), key=rel("hub.key", cfg.hub.key))
    command_key = rel("hub.command_key", cfg.hub.command_key)
    if not cfg.devices:
        raise ConfigError(file, "devices", "a site needs at least one device")
    devices: list[DeviceConfig] = []
    for name, d in cfg.devices.items():
        key = f"devices.{name}"
        if not re.match(r"^[a-z0-9][a-z0-9_-]{0,31}$", name):
            raise ConfigError(file, key, "device names use a-z, 0-9, '_' and '-' (up to 32)")
        candidate = Path(d.profile)
        if not candidate.is_absolute():
            candidate = base / candidate if (base / candidate).exists() else profiles_dir() / candidate
        if not candidate.exists():
            raise ConfigError(file, f"{key}.profile", f"{d.profile}: no such profile (looked beside the config "
                              f"and in {profiles_dir()})")
        try:
            profile = load_profile(candidate)
        except ProfileError as exc:
            raise ConfigError(file, f"{key}.profile", str(exc)) from exc
        endpoint = _endpoint(file, f"{key}.transport", d.transport)
        wanted = {Transport.MODBUS_TCP: "tcp", Transport.MODBUS_RTU: "rtu", Transport.SERIAL_LINE: "serial"}
        if wanted[profile.transport.type] != endpoint.scheme:
            raise ConfigError(file, f"{key}.transport", f"the profile {candidate.name} speaks "
                              f"{profile.transport.type.value}; use {wanted[profile.transport.type]}://...")
        depth: tuple[str, str] | None = None
        if d.depth_source is not None:
            dev, _, point = d.depth_source.partition(".")
            if dev not in cfg.devices or not point:
                raise ConfigError(file, f"{key}.depth_source", f"{d.depth_source!r}: expected DEVICE.POINT of a "
                                  "device in this file")
            depth = (dev, point)
        devices.append(DeviceConfig(name, profile, candidate, endpoint, d.unit_id, depth, d.model))
    for dc in devices:
        if dc.depth_source is not None:
            src_dev, src_point = dc.depth_source
            src = next(x for x in devices if x.name == src_dev)
            if src_point not in src.profile.points:
                raise ConfigError(file, f"devices.{dc.name}.depth_source",
                                  f"device {src_dev} ({src.profile.model}) has no point {src_point!r}")
    if cfg.policy.reopening_depth_cm >= cfg.policy.closing_depth_cm:
        raise ConfigError(file, "policy.reopening_depth_cm", "must be below policy.closing_depth_cm")
    return SiteConfig(
        source=path,
        site=cfg.site,
        hub=cfg.hub,
        tls=tls,
        command_key=command_key,
        state_dir=rel("site.state_dir", cfg.site.state_dir, must_exist=False),
        policy=cfg.policy,
        outbox=cfg.outbox,
        devices=tuple(devices),
    )
