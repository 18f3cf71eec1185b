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
    # prealert_warn = true     # a hub's forecast.prealert sounds a semi-basement siren early
    # prealert_close = false   # ... or closes a barrier/gate early (off: the 15 cm rule alone closes)

    [devices.barrier]
    profile = "underpass-jk-up300.toml"      # a file, or a name in firmware-configs/profiles
    transport = "tcp://192.0.2.10:502"        # or "rtu:///dev/ttyUSB0", "serial:///dev/ttyUSB1"

    [slope]                                   # optional: the slope detector of displacement meters
    noise_mm = 0.5
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from shared import tomlread
from shared.addr import host_port
from shared.errors import ConfigError, ProfileError
from shared.paths import profiles_dir
from shared.profiles import Profile, Transport, load_profile
from shared.tls import TlsFiles
from shared.tomlread import Table

_SITE_ID: Final = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
MAX_SLOPE_WINDOW_SAMPLES: Final = 2000


@dataclass(frozen=True, kw_only=True)
class SiteSection:
    id: str
    state_dir: str
    name: str = ""
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True, kw_only=True)
class HubSection:
    host: str
    port: int = 8883
    ca: str
    cert: str
    key: str
    command_key: str


@dataclass(frozen=True, kw_only=True)
class PolicySection:
    """Local safety policy (DESIGN §5). Depths in cm, times in seconds."""

    closing_depth_cm: float = 15.0
    debounce_s: float = 0.0
    reopening_depth_cm: float = 5.0
    data_age_limit_s: float = 10.0
    forecast_lead_s: float = 600.0
    siren_depth_cm: float = 10.0
    displacement_warn_mm_per_day: float = 1.0
    displacement_alarm_mm_per_day: float = 10.0
    verify_timeout_s: float = 30.0
    max_clock_skew_s: float = 30.0
    prealert_warn: bool = True
    """A hub's ``forecast.prealert`` sounds a semi-basement alarm's siren before its own depth does."""
    prealert_close: bool = False
    """A hub's ``forecast.prealert`` closes a barrier or gate before its own depth does (off: the
    local closing rule alone closes it)."""


@dataclass(frozen=True, kw_only=True)
class SlopeSection:
    """The slope detector's settings for the site's displacement meters (edge/inference/slope.py).

    The defaults are those the detector was evaluated with (a meter read every 6 hours with
    0.5 mm noise and 0.06 mm/day background creep); a site calibrated from its own history
    (``jikimi model ...`` / slope_eval.calibrate) sets its own.
    """

    noise_mm: float = 0.5
    baseline_mm_per_day: float = 0.06
    watch_mm_per_day: float = 0.18
    velocity_window_days: float = 2.0
    downslope_sign: float = -1.0
    """+1 when the meter's displacement grows downslope, -1 when it falls."""
    sample_every_s: float = 21600.0
    """One detector sample per this many seconds of readings (the rest are only recorded)."""
    alarm_horizon_days: float = 7.0


@dataclass(frozen=True, kw_only=True)
class OutboxSection:
    max_records: int = 200_000
    replay_rate: float = 2000.0


@dataclass(frozen=True, kw_only=True)
class DeviceSection:
    profile: str
    transport: str
    unit_id: int | None = None
    depth_source: str | None = None
    """For a river gate: ``device.point`` that gives the water depth its policy watches."""
    model: str | None = None
    """A model from firmware-configs/models (e.g. ``flood``) to run on this device's depth."""


def _site(t: Table) -> SiteSection:
    s = SiteSection(id=t.text("id", pattern=_SITE_ID), state_dir=t.text("state_dir"), name=t.text("name", ""),
                    lat=t.optional_number("lat"), lon=t.optional_number("lon"))
    t.done()
    return s


def _hub(t: Table) -> HubSection:
    h = HubSection(host=t.text("host"), port=t.integer("port", 8883, lo=1, hi=65535), ca=t.text("ca"),
                   cert=t.text("cert"), key=t.text("key"), command_key=t.text("command_key"))
    t.done()
    return h


def _policy(t: Table) -> PolicySection:
    d = PolicySection()
    p = PolicySection(
        closing_depth_cm=t.number("closing_depth_cm", d.closing_depth_cm, positive=True),
        debounce_s=t.number("debounce_s", d.debounce_s, lo=0.0),
        reopening_depth_cm=t.number("reopening_depth_cm", d.reopening_depth_cm, lo=0.0),
        data_age_limit_s=t.number("data_age_limit_s", d.data_age_limit_s, positive=True),
        forecast_lead_s=t.number("forecast_lead_s", d.forecast_lead_s, lo=0.0),
        siren_depth_cm=t.number("siren_depth_cm", d.siren_depth_cm, positive=True),
        displacement_warn_mm_per_day=t.number("displacement_warn_mm_per_day", d.displacement_warn_mm_per_day,
                                              positive=True),
        displacement_alarm_mm_per_day=t.number("displacement_alarm_mm_per_day", d.displacement_alarm_mm_per_day,
                                               positive=True),
        verify_timeout_s=t.number("verify_timeout_s", d.verify_timeout_s, positive=True),
        max_clock_skew_s=t.number("max_clock_skew_s", d.max_clock_skew_s, positive=True),
        prealert_warn=t.flag("prealert_warn", d.prealert_warn),
        prealert_close=t.flag("prealert_close", d.prealert_close),
    )
    t.done()
    return p


def _slope(file: str, t: Table) -> SlopeSection:
    d = SlopeSection()
    s = SlopeSection(
        noise_mm=t.number("noise_mm", d.noise_mm, positive=True),
        baseline_mm_per_day=t.number("baseline_mm_per_day", d.baseline_mm_per_day, lo=0.0),
        watch_mm_per_day=t.number("watch_mm_per_day", d.watch_mm_per_day, positive=True),
        velocity_window_days=t.number("velocity_window_days", d.velocity_window_days, positive=True),
        downslope_sign=t.number("downslope_sign", d.downslope_sign),
        sample_every_s=t.number("sample_every_s", d.sample_every_s, positive=True),
        alarm_horizon_days=t.number("alarm_horizon_days", d.alarm_horizon_days, positive=True),
    )
    t.done()
    if s.downslope_sign not in (-1.0, 1.0):
        raise ConfigError(file, "slope.downslope_sign", f"{s.downslope_sign:g}: must be 1 or -1")
    if s.velocity_window_days * 86400.0 < 3 * s.sample_every_s:
        raise ConfigError(file, "slope.velocity_window_days", f"a window of {s.velocity_window_days:g} days holds "
                          f"fewer than 3 samples taken every {s.sample_every_s:g} s (slope.sample_every_s)")
    if s.velocity_window_days * 86400.0 > MAX_SLOPE_WINDOW_SAMPLES * s.sample_every_s:
        raise ConfigError(file, "slope.sample_every_s", f"{s.sample_every_s:g} s puts more than "
                          f"{MAX_SLOPE_WINDOW_SAMPLES} samples in a {s.velocity_window_days:g}-day window "
                          "(the detector refits its windows at every sample)")
    return s


def _outbox(t: Table) -> OutboxSection:
    o = OutboxSection(max_records=t.integer("max_records", 200_000, lo=100, hi=2**62),
                      replay_rate=t.number("replay_rate", 2000.0, positive=True))
    t.done()
    return o


def _device(t: Table) -> DeviceSection:
    d = DeviceSection(profile=t.text("profile"), transport=t.text("transport"),
                      unit_id=t.optional_integer("unit_id", lo=0, hi=247),
                      depth_source=t.optional_text("depth_source"), model=t.optional_text("model"))
    t.done()
    return d


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
    slope: SlopeSection = SlopeSection()

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
        addr = host_port(rest)
        if addr is None:
            raise ConfigError(file, key, f"{value!r}: expected tcp://HOST:PORT")
        return Endpoint("tcp", host=addr[0].strip("[]"), port=addr[1])
    if not rest.startswith("/"):
        raise ConfigError(file, key, f"{value!r}: expected an absolute device path, e.g. {scheme}:///dev/ttyUSB0")
    return Endpoint(scheme, path=rest)


def _private_key(rel: Callable[..., Path], value: str) -> Path:
    """The site's private key: systemd's copy when the unit passes it as a credential.

    The edge unit runs as a per-site dynamic user that cannot read ``/etc/jikimi/SITE/key.pem``
    (0600, root's); systemd reads it and hands the service a private copy in
    ``$CREDENTIALS_DIRECTORY/key.pem`` (``LoadCredential=``). Anywhere else the configured path is used.
    """
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        copy = Path(creds) / Path(value).name
        if copy.is_file():
            return copy
    return rel("hub.key", value)


def load_site_config(path: Path) -> SiteConfig:
    """Read, validate and resolve a site config; raise :class:`ConfigError` naming file and key."""
    file = str(path)
    root = tomlread.load(path)
    site = _site(root.table("site", required=True))
    hub = _hub(root.table("hub", required=True))
    policy = _policy(root.table("policy"))
    outbox = _outbox(root.table("outbox"))
    slope = _slope(file, root.table("slope"))
    dt = root.table("devices", required=True)
    raw_devices = {name: _device(dt.table(name, required=True)) for name in dt.names()}
    root.done()
    base = path.parent

    def rel(key: str, value: str, *, must_exist: bool = True) -> Path:
        p = Path(value)
        p = p if p.is_absolute() else base / p
        if must_exist and not os.path.exists(p):
            raise ConfigError(file, key, f"{p}: no such file")
        return p

    tls = TlsFiles(ca=rel("hub.ca", hub.ca), cert=rel("hub.cert", hub.cert), key=_private_key(rel, hub.key))
    command_key = rel("hub.command_key", hub.command_key)
    if not raw_devices:
        raise ConfigError(file, "devices", "a site needs at least one device")
    devices: list[DeviceConfig] = []
    for name, d in raw_devices.items():
        key = f"devices.{name}"
        if not re.match(r"^[a-z0-9][a-z0-9_-]{0,31}$", name):
            raise ConfigError(file, key, "device names use a-z, 0-9, '_' and '-' (up to 32)")
        candidate = Path(d.profile)
        if not candidate.is_absolute():
            candidate = base / candidate if os.path.exists(base / candidate) else profiles_dir() / candidate
        if not os.path.exists(candidate):
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
            if dev not in raw_devices or not point:
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
    if policy.reopening_depth_cm >= policy.closing_depth_cm:
        raise ConfigError(file, "policy.reopening_depth_cm", "must be below policy.closing_depth_cm")
    return SiteConfig(
        source=path,
        site=site,
        hub=hub,
        tls=tls,
        command_key=command_key,
        state_dir=rel("site.state_dir", site.state_dir, must_exist=False),
        policy=policy,
        outbox=outbox,
        devices=tuple(devices),
        slope=slope,
    )
