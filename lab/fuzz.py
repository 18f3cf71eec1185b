"""``jikimi bench fuzz``: coverage-guided fuzzing of every parser that reads outside input.

A *target* is a function of bytes that calls one real parser. The parser's declared errors
(``WireError``, ``ConfigError``/``ProfileError``, ``CapError``, the ``DeviceError`` tree,
``CodecError``) are expected; anything else it raises is a crash, i.e. a bug.

=================  ================================================================  ==================
target             parser                                                            expected errors
=================  ================================================================  ==================
wire_decode        ``shared.messages.decode`` as each of the six message kinds       WireError
hub_inbound        ``hub.inbound.classify`` (topic line, then payload)               none: never raises
edge_command       decode a ``Command``/``Ack`` and ``shared.signing.verify_command``  WireError, SigningError
modbus_codec       ``edge.drivers.codec.decode`` of raw words, per shipped point     CodecError
modbus_read        ``ModbusDevice.read``: planned blocks of registers/bits → values  DeviceError
modbus_rtu_sim     the simulators' Modbus RTU framing and PDU handling (``RtuBus``)  none: never raises
serial_line        ``serial_line.parse_reply`` then ``decode_text`` per point        DeviceError
serial_line_sim    the simulators' serial line protocol (``LineProtocolBus``)        none: never raises
cap_read           ``hub.forward.capread.read`` (the tolerant CAP reader)            CapError
cap_receive        ``hub.receiver.parse_cap``: schema check, read, digests           CapError
hub_config         ``hub.config.load`` of a hub.toml                                 ConfigError
site_config        ``edge.config.load_site_config`` of a site.toml                   ConfigError
profile            ``shared.profiles.parse_profile``                                 ProfileError
=================  ================================================================  ==================

Each target is seeded with valid inputs built in code: real messages from
:mod:`shared.messages`, the shipped profiles, the OASIS and real-world CAP examples read from the
reference data at run time (never copied into the repo), a CAP alert from the hub's renderer,
config files like the tests write. Where a checksum guards the parser (RTU's CRC, the serial
line's XOR), the first byte's top bit asks the target to frame the rest correctly, so the
fuzzer reaches the code behind the check as well as the check itself.

Engines: each target runs in its own subprocess (``python -m lab.fuzz child NAME``), because
``atheris.Fuzz`` takes the process over. Under atheris (libFuzzer), our packages are
instrumented as they are imported (``atheris.instrument_imports``); the run stops at the first
crash and the crashing input is written under the work folder. Where atheris cannot be
imported, the child says so and drives the same target with Hypothesis (``@given`` over seeds,
spliced seeds and ``st.binary()``) for the same seconds; the report names the engine per target.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

# Our packages are imported inside each target's build function, never at the top of this
# module: the atheris child imports them under instrumentation (a module imported earlier would
# run uninstrumented and the fuzzer would be blind in it).
INSTRUMENTED: Final = ("shared", "trust", "edge", "hub", "tomllib")
ENGINES: Final = ("auto", "atheris", "hypothesis")
RESULT_FILE: Final = "result.json"
CRASH_PREFIXES: Final = ("crash-", "timeout-", "oom-", "leak-")


@dataclass(frozen=True)
class Harness:
    """A target made ready: the call, the errors that are the parser's answer, the seeds."""

    call: Callable[[bytes], object]
    expected: tuple[type[BaseException], ...]
    seeds: tuple[bytes, ...]

    def one_input(self, data: bytes) -> None:
        """Run one input; an expected error is a normal answer, anything else propagates."""
        with contextlib.suppress(*self.expected):
            self.call(data)


@dataclass(frozen=True)
class Target:
    name: str
    about: str
    build: Callable[[], Harness]


# --- seeds ---------------------------------------------------------------------------------


def _messages() -> list[bytes]:
    """One real message of every kind, encoded (a signed command among them)."""
    from shared import messages as m
    from shared.signing import sign_command

    site = "gg-suwon-up-0031"
    batch = m.DataBatch(site=site, boot="b1", floor_seq=7, records=[
        m.Reading(seq=7, ts=1_723_100_000.5, prio=m.Priority.TELEMETRY, device="barrier", point="water_depth_cm",
                  value=12.5, quality=m.Quality.GOOD, unit="cm"),
        m.Reading(seq=8, ts=1_723_100_001.0, prio=m.Priority.TELEMETRY, device="barrier", point="barrier_state",
                  value="closed", quality=m.Quality.GOOD, historical=True),
        m.Event(seq=9, ts=1_723_100_002.0, prio=m.Priority.EVENT, kind="barrier.closed_locally", device="barrier",
                detail="depth 15 cm", values={"depth_cm": 15.0, "ok": True}),
        m.Reply(seq=10, ts=1_723_100_003.0, prio=m.Priority.REPLY, cmd_id="c-1", status=m.ReplyStatus.VERIFIED),
    ])
    birth = m.Birth(site=site, agent_version="0.1.0", boot="b1", ts=1_723_100_000.0,
                    devices=[m.DeviceInfo(id="barrier", kind="underpass", profile="underpass-jk-up300.toml",
                                          profile_sha256="0" * 64, points=["water_depth_cm", "barrier_state"])],
                    models=[m.ModelInfo(name="flood", sha256="a" * 64, health="ok")])
    cmd = sign_command(m.Command(cmd_id="c-1", site=site, device="barrier", action=m.Action.BARRIER_CLOSE,
                                 issued_by="op1", approved_by=["op2"], issued_at=1_723_100_000.0,
                                 not_after=1_723_100_060.0, reason="flooding", params={"text": "x"}),
                       _command_key())
    msgs: list[m.Message] = [
        m.Status(site=site, state=m.SiteState.ONLINE, boot="b1", ts=1_723_100_000.0), birth, batch, cmd,
        m.Ack(site=site, through_seq=10), m.Ack(site=site, through_seq=6, resend_from=7),
        m.HubStatus(hub="hub-suwon", state=m.SiteState.OFFLINE, ts=1_723_100_000.0),
    ]
    return [m.encode(x) for x in msgs]


def _command_key() -> Any:
    """A fixed Ed25519 key, so a seed's signature verifies in the edge_command target."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"jikimi fuzz command key").digest())


def _profiles() -> list[Any]:
    from shared.paths import profiles_dir
    from shared.profiles import load_profile

    return [load_profile(p) for p in sorted(profiles_dir().glob("*.toml"))]


def _profile_bytes() -> list[bytes]:
    from shared.paths import profiles_dir

    return [p.read_bytes() for p in sorted(profiles_dir().glob("*.toml"))]


def _cap_examples() -> list[bytes]:
    """The OASIS and real-world CAP examples (read from the reference data, never copied) and
    one alert from the hub's own renderer."""
    from datetime import datetime, timedelta, timezone

    from hub.cctv_geo import GeoPoint
    from hub.forward import cap
    from shared.paths import shared_data_dir

    folder = shared_data_dir() / "cap"
    out = [p.read_bytes() for sub in ("examples_oasis", "examples_realworld")
           for p in sorted((folder / sub).glob("*.xml"))]
    picture = b"\xff\xd8\xff\xe0 not really a jpeg"
    facts = cap.AlertFacts(
        identifier="hub-suwon.0001", sender="hub-suwon@jikimi.example",
        sent=datetime(2024, 8, 8, 15, 30, tzinfo=timezone(timedelta(hours=9))),
        status=cap.Status.ACTUAL, msg_type=cap.MsgType.UPDATE,
        event=cap.Text("지하차도 침수", "Underpass flooding"), category=(cap.Category.MET,),
        urgency=cap.Urgency.IMMEDIATE, severity=cap.Severity.EXTREME, certainty=cap.Certainty.OBSERVED,
        headline=cap.Text("권선 지하차도 침수", "Gwonseon underpass flooded"),
        description=cap.Text("수위 15cm", "Water 15 cm deep"),
        areas=(cap.Area(cap.Text("권선", "Gwonseon"), circles=(cap.Circle(GeoPoint(37.26, 127.03), 0.5),),
                        polygons=(cap.Polygon.closed((GeoPoint(37.0, 127.0), GeoPoint(37.1, 127.0),
                                                      GeoPoint(37.1, 127.1))),)),),
        references=(cap.Reference("hub-suwon@jikimi.example", "hub-suwon.0000", "2024-08-08T15:00:00+09:00"),),
        incidents=("hub-suwon.0000",), response_types=(cap.ResponseType.AVOID,),
        parameters=(("depth_cm", "15"),),
        resources=(cap.Resource(cap.Text("사진", "snapshot"), "image/jpeg", size=len(picture),
                                digest=hashlib.sha1(picture, usedforsecurity=False).hexdigest(), deref=picture),),
    )
    out.append(cap.render(facts))
    return out


_SITE_TOML: Final = """\
[site]
id = "gg-suwon-up-0031"
state_dir = "state"

[hub]
host = "localhost"
port = 8883
ca = "pki/ca.pem"
cert = "pki/site/cert.pem"
key = "pki/site/key.pem"
command_key = "pki/command-signing/pub.pem"

[policy]
closing_depth_cm = 15.0
reopening_depth_cm = 5.0

[outbox]
max_records = 100000

[devices.barrier]
profile = "underpass-jk-up300.toml"
transport = "tcp://127.0.0.1:1502"
unit_id = 1

[devices.alarm]
profile = "flood-alarm-jk-fa100.toml"
transport = "rtu:///dev/ttyUSB0"
depth_source = "barrier.water_depth_cm"

[devices.gate]
profile = "river-gate-jk-rg10.toml"
transport = "serial:///dev/ttyUSB1"
"""

_HUB_TOML: Final = """\
[hub]
id = "hub-suwon"

[broker]
host = "localhost"
port = 8883
ca = "pki/ca.pem"
cert = "pki/hub-suwon/cert.pem"
key = "pki/hub-suwon/key.pem"

[commands]
signing_key = "pki/command-signing/key.pem"
ttl_s = 60
reply_grace_s = 30

[database]
path = "var/hub.db"

[api]
listen = "127.0.0.1:8443"

[sites]
accept_any = false
[sites.registry.gg-suwon-up-0031]
area = "suwon-gwonseon"
name = "Gwonseon underpass"
lat = 37.2636
lon = 127.0286

[rules.kinds.underpass]
closing_depth_cm = 15.0
reopening_depth_cm = 5.0
[rules.sites.gg-suwon-up-0031]
data_age_limit_s = 30

[retention]
raw_days = 3
"""

_FORWARD_TOML: Final = """
[forward]
sender = "hub-suwon@jikimi.example"
sender_name_ko = "수원 지킴이"
[forward.recipients.centre]
kind = "city_centre"
format = "cap"
url = "http://127.0.0.1:8480/alerts"
areas = ["suwon-*"]
priorities = ["critical", "high"]
escalate_after_s = 120
escalate_to = "fire"
[forward.recipients.fire]
kind = "fire_119"
format = "keti"
url = "http://127.0.0.1:8481/events"
"""

_PKI_FILES: Final = (
    "pki/ca.pem", "pki/site/cert.pem", "pki/site/key.pem", "pki/command-signing/pub.pem",
    "pki/command-signing/key.pem", "pki/hub-suwon/cert.pem", "pki/hub-suwon/key.pem", "pki/issuing-ca/key.pem",
)


def _config_folder() -> Path:
    """A folder with the (empty) files a config names, so loaders get past existence checks."""
    folder = Path(tempfile.mkdtemp(prefix="jikimi-fuzz-config-"))
    for name in _PKI_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).touch()
    return folder


def _file_loader(name: str, load: Callable[[Path], object]) -> Callable[[bytes], object]:
    """Run ``load`` on the input written to ``name`` in a config folder (loaders take paths)."""
    path = _config_folder() / name

    def call(data: bytes) -> object:
        path.write_bytes(data)
        return load(path)

    return call


# --- the targets ---------------------------------------------------------------------------


def _wire_decode() -> Harness:
    from shared import messages
    from shared.errors import WireError

    kinds = (messages.Status, messages.Birth, messages.DataBatch, messages.Command, messages.Ack, messages.HubStatus)

    def call(data: bytes) -> None:
        for kind in kinds:
            with contextlib.suppress(WireError):
                messages.decode(kind, data)  # type: ignore[type-var]

    return Harness(call, (WireError,), tuple(_messages()))


def _hub_inbound() -> Harness:
    from hub.inbound import classify

    def call(data: bytes) -> None:
        topic, _, payload = data.partition(b"\n")
        got = classify(topic.decode("utf-8", "replace"), payload, received=1_723_100_000.0)
        if got.msg is None and not got.error:
            raise AssertionError("a message refused without a reason")

    site = "jk/v1/site/gg-suwon-up-0031/"
    seeds = [f"{site}{ch}\n".encode() + msg for msg in _messages() for ch in ("data", "status", "birth")]
    return Harness(call, (), tuple(seeds))


def _edge_command() -> Harness:
    from cryptography.hazmat.primitives import serialization

    from shared import messages
    from shared.ed25519 import VerifyKey
    from shared.errors import SigningError, WireError
    from shared.signing import verify_command

    # the edge's own verifier (the ssl module's OpenSSL through ctypes), as the agent runs it
    key = VerifyKey(_command_key().public_key().public_bytes(serialization.Encoding.Raw,
                                                             serialization.PublicFormat.Raw))

    def call(data: bytes) -> None:
        with contextlib.suppress(WireError):
            messages.decode(messages.Ack, data)
        verify_command(messages.decode(messages.Command, data), key)

    return Harness(call, (WireError, SigningError), tuple(_messages()))


def _pick(data: bytes, items: Sequence[Any]) -> Any:
    return items[data[0] % len(items)] if data else items[0]


def _modbus_codec() -> Harness:
    from edge.drivers.codec import decode, encode
    from edge.errors import CodecError

    points = [p for prof in _profiles() for p in prof.polled if p.table is not None]

    def call(data: bytes) -> None:
        point = _pick(data, points)
        words = [int.from_bytes(data[i : i + 2], "big") for i in range(1, len(data) - 1, 2)]
        decode(point, words)

    seeds: list[bytes] = []
    for i, p in enumerate(points):
        with contextlib.suppress(CodecError):
            seeds.append(bytes([i]) + b"".join(w.to_bytes(2, "big") for w in encode(p, _zero(p))))
    return Harness(call, (CodecError,), tuple(seeds))


def _zero(point: Any) -> Any:
    from shared.profiles import PointType

    if point.type is PointType.ENUM:
        return min(point.values, key=lambda k: point.values[k])
    return {PointType.BOOL: False, PointType.BITFIELD: (), PointType.STR: ""}.get(point.type, 0)


class _FakeResponse:
    def __init__(self, words: list[int], bits: list[bool]) -> None:
        self.registers = words
        self.bits = bits

    def isError(self) -> bool:
        return False


class _FakeLine:
    """Answers each read with the next bytes of the input (short when the input runs out)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def call(self, method: str, address: int, *, count: int, device_id: int) -> _FakeResponse:
        if method in ("read_coils", "read_discrete_inputs"):
            take, self.data = self.data[: (count + 7) // 8], self.data[(count + 7) // 8 :]
            bits = [bool(b >> i & 1) for b in take for i in range(8)]
            return _FakeResponse([], bits)
        take, self.data = self.data[: 2 * count], self.data[2 * count :]
        return _FakeResponse([int.from_bytes(take[i : i + 2], "big") for i in range(0, len(take) - 1, 2)], [])


def _run_sync(coro: Any) -> Any:
    """Run a coroutine that never waits (its I/O is a fake) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("the coroutine waited for something")


def _modbus_read() -> Harness:
    from edge.drivers.modbus import ModbusDevice
    from edge.errors import DeviceError
    from shared.profiles import Transport

    profiles = [p for p in _profiles() if p.transport.type is not Transport.SERIAL_LINE]

    def call(data: bytes) -> None:
        profile = _pick(data, profiles)
        line: Any = _FakeLine(data[1:])
        device = ModbusDevice("fuzz", profile, line)
        _run_sync(device.read(profile.polled))

    seeds = [bytes([i]) + bytes(range(256)) for i in range(len(profiles))]
    return Harness(call, (DeviceError,), tuple(seeds))


def _modbus_rtu_sim() -> Harness:
    from edge.sim.servers import RtuBus, SimDevice, rtu_frame
    from shared.profiles import Transport

    profiles = [p for p in _profiles() if p.transport.type is not Transport.SERIAL_LINE]

    def call(data: bytes) -> None:
        if not data:
            return
        profile = profiles[(data[0] & 0x7F) % len(profiles)]
        bus = RtuBus([SimDevice(profile, clock=lambda: 0.0)])
        if data[0] & 0x80:  # a correctly framed PDU, to get past the CRC
            bus.feed(rtu_frame(profile.transport.unit_id, data[1:]))
        else:
            bus.feed(data[1:])

    seeds: list[bytes] = []
    for i, p in enumerate(profiles):
        for pt in p.polled:
            if pt.table is None or pt.address is None:
                continue
            fc = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}[pt.table.value]
            seeds.append(bytes([0x80 | i, fc]) + pt.address.to_bytes(2, "big") + pt.count.to_bytes(2, "big"))
            if pt.writable:
                seeds.append(bytes([0x80 | i, 16]) + pt.address.to_bytes(2, "big") + pt.count.to_bytes(2, "big")
                             + bytes([2 * pt.count]) + b"\x00\x01" * pt.count)
                seeds.append(bytes([0x80 | i, 6]) + pt.address.to_bytes(2, "big") + b"\x00\x01")
        seeds.append(bytes([i]) + rtu_frame(p.transport.unit_id, b"\x03\x00\x00\x00\x02"))
    return Harness(call, (), tuple(seeds))


def _serial_profiles() -> list[Any]:
    from shared.profiles import Transport

    return [p for p in _profiles() if p.transport.type is Transport.SERIAL_LINE]


def _serial_line() -> Harness:
    from edge.drivers.serial_line import decode_text, frame, parse_reply
    from edge.errors import DeviceError

    profiles = _serial_profiles()

    def call(data: bytes) -> None:
        if len(data) < 2:
            return
        profile = profiles[(data[0] & 0x7F) % len(profiles)]
        point = _pick(data[1:], profile.polled)
        spec = profile.transport
        line = frame(data[2:].decode("utf-8", "replace"), spec.checksum) if data[0] & 0x80 else data[2:]
        body = parse_reply(line, spec.checksum, spec.unit_id, "fuzz")
        _, _, text = body.partition(":")
        got = decode_text(point, text)
        if not isinstance(got, Exception | tuple):
            raise AssertionError(f"decode_text gave {got!r}")

    seeds: list[bytes] = []
    for i, p in enumerate(profiles):
        uid = f"{p.transport.unit_id:02d}"
        for j, pt in enumerate(p.polled):
            for text in ("1", "12.5", "0", "open"):
                seeds.append(bytes([0x80 | i, j]) + f"{uid}:OK:{pt.key}:{text}".encode())
            seeds.append(bytes([i, j]) + frame(f"{uid}:OK:{pt.key}:1", p.transport.checksum))
        seeds.append(bytes([0x80 | i, 0]) + f"{uid}:ER:2".encode())
    return Harness(call, (DeviceError,), tuple(seeds))


def _serial_line_sim() -> Harness:
    from edge.drivers.serial_line import frame
    from edge.sim.servers import LineProtocolBus, SimDevice

    profiles = _serial_profiles()

    def call(data: bytes) -> None:
        if not data:
            return
        profile = profiles[(data[0] & 0x7F) % len(profiles)]
        bus = LineProtocolBus([SimDevice(profile, clock=lambda: 0.0)])
        if data[0] & 0x80:  # one correctly framed request, to get past the checksum
            bus.feed(frame(data[1:].decode("utf-8", "replace"), profile.transport.checksum))
        else:
            bus.feed(data[1:])

    seeds: list[bytes] = []
    for i, p in enumerate(profiles):
        uid = f"{p.transport.unit_id:02d}"
        for pt in p.polled:
            seeds.append(bytes([0x80 | i]) + f"{uid}:R:{pt.key}".encode())
            if pt.writable:
                for text in ("1", "0", "12.5", "hello"):
                    seeds.append(bytes([0x80 | i]) + f"{uid}:W:{pt.key}:{text}".encode())
    return Harness(call, (), tuple(seeds))


def _cap_read() -> Harness:
    from hub.forward.capread import read
    from hub.forward.errors import CapError

    return Harness(read, (CapError,), tuple(_cap_examples()))


def _cap_receive() -> Harness:
    from hub.forward.capread import CapSchema
    from hub.forward.errors import CapError
    from hub.receiver import parse_cap

    schema = CapSchema()
    return Harness(lambda data: parse_cap(data, schema), (CapError,), tuple(_cap_examples()))


def _hub_config() -> Harness:
    from hub.config import load
    from shared.errors import ConfigError

    return Harness(_file_loader("hub.toml", load), (ConfigError,),
                   (_HUB_TOML.encode(), (_HUB_TOML + _FORWARD_TOML).encode()))


def _site_config() -> Harness:
    from edge.config import load_site_config
    from shared.errors import ConfigError

    return Harness(_file_loader("site.toml", load_site_config), (ConfigError,), (_SITE_TOML.encode(),))


def _profile() -> Harness:
    from shared.errors import ProfileError
    from shared.profiles import parse_profile

    return Harness(lambda data: parse_profile(data, "fuzz.toml"), (ProfileError,), tuple(_profile_bytes()))


TARGETS: Final[dict[str, Target]] = {t.name: t for t in (
    Target("wire_decode", "shared.messages.decode, every message kind", _wire_decode),
    Target("hub_inbound", "hub.inbound.classify: topic line, then payload", _hub_inbound),
    Target("edge_command", "decode Command/Ack and verify the signature", _edge_command),
    Target("modbus_codec", "edge.drivers.codec.decode of raw words per shipped point", _modbus_codec),
    Target("modbus_read", "ModbusDevice.read: registers and bits off the wire -> values", _modbus_read),
    Target("modbus_rtu_sim", "the simulators' Modbus RTU framing and PDU handling", _modbus_rtu_sim),
    Target("serial_line", "serial_line.parse_reply and decode_text per point", _serial_line),
    Target("serial_line_sim", "the simulators' serial line protocol", _serial_line_sim),
    Target("cap_read", "hub.forward.capread.read", _cap_read),
    Target("cap_receive", "hub.receiver.parse_cap with the OASIS schema", _cap_receive),
    Target("hub_config", "hub.config.load of hub.toml bytes", _hub_config),
    Target("site_config", "edge.config.load_site_config of site.toml bytes", _site_config),
    Target("profile", "shared.profiles.parse_profile", _profile),
)}


def resolve(name: str) -> Target:
    """A registered target, or ``package.module:attribute`` naming a :class:`Target`."""
    if name in TARGETS:
        return TARGETS[name]
    module, colon, attr = name.partition(":")
    if colon:
        import importlib

        found = getattr(importlib.import_module(module), attr, None)
        if isinstance(found, Target):
            return found
    from shared.errors import JikimiError

    raise JikimiError(f"no fuzz target {name!r} (known: {', '.join(TARGETS)})")


# --- the child: one target, one engine --------------------------------------------------------


def _write_seeds(folder: Path, seeds: Sequence[bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (folder / f"seed-{hashlib.sha1(seed, usedforsecurity=False).hexdigest()}").write_bytes(seed)


def _child_atheris(atheris: Any, target: Target, seconds: float, runs: int | None, workdir: Path) -> None:
    with atheris.instrument_imports(include=list(INSTRUMENTED)):
        harness = target.build()
    corpus = workdir / "corpus"
    _write_seeds(corpus, harness.seeds)
    args = [sys.argv[0], f"-max_total_time={max(1, round(seconds))}", f"-artifact_prefix={workdir}/",
            "-print_final_stats=1", "-timeout=10", "-rss_limit_mb=2048", "-keep_seed=1",
            f"-max_len={max(4096, *(len(s) for s in harness.seeds))}"]
    if runs is not None:
        args.append(f"-runs={runs}")
    atheris.Setup([*args, str(corpus)], harness.one_input)
    atheris.Fuzz()


def _child_hypothesis(target: Target, seconds: float, runs: int | None, workdir: Path) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    harness = target.build()
    seeds = list(harness.seeds) or [b""]

    def splice(t: tuple[bytes, int, int, bytes]) -> bytes:
        seed, at, cut, insert = t
        at %= len(seed) + 1
        return seed[:at] + insert + seed[at + cut :]

    inputs = st.one_of(
        st.sampled_from(seeds),
        st.tuples(st.sampled_from(seeds), st.integers(0, 1 << 20), st.integers(0, 16), st.binary(max_size=16))
        .map(splice),
        st.binary(max_size=4096),
    )
    executions = 0
    failing: list[bytes] = []

    @settings(max_examples=200, deadline=None, database=None, phases=(Phase.generate, Phase.shrink),
              suppress_health_check=list(HealthCheck))
    @given(inputs)
    def prop(data: bytes) -> None:
        nonlocal executions
        executions += 1
        try:
            harness.one_input(data)
        except Exception:
            failing.append(data)
            raise

    start = time.monotonic()
    crash: dict[str, object] = {}
    while time.monotonic() - start < seconds and (runs is None or executions < runs):
        try:
            prop()
        except Exception as exc:  # noqa: BLE001 - any exception here is the crash being reported
            data = failing[-1]  # Hypothesis replays the shrunk example last
            path = workdir / f"crash-{hashlib.sha1(data, usedforsecurity=False).hexdigest()}"
            path.write_bytes(data)
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if "lab/fuzz.py" not in f.filename]
            where = f' (File "{frames[-1].filename}", line {frames[-1].lineno}, in {frames[-1].name})' if frames else ""
            crash = {"crash_input": str(path), "crash": f"{type(exc).__name__}: {exc}{where}"}
            break
    elapsed = time.monotonic() - start
    (workdir / RESULT_FILE).write_text(json.dumps({"executions": executions, "elapsed_s": elapsed, **crash}))


def child(name: str, seconds: float, runs: int | None, workdir: Path, engine: str) -> None:
    """Fuzz one target in this process (it does not return under atheris)."""
    target = resolve(name)
    workdir.mkdir(parents=True, exist_ok=True)
    if engine != "hypothesis":
        try:
            import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError as exc:
            if engine == "atheris":
                raise
            print(f"engine: hypothesis (atheris cannot run here: {exc})", flush=True)
        else:
            print("engine: atheris", flush=True)
            _child_atheris(atheris, target, seconds, runs, workdir)
            return
    else:
        print("engine: hypothesis (asked for)", flush=True)
    _child_hypothesis(target, seconds, runs, workdir)


# --- the parent: one subprocess per target, then the report --------------------------------


@dataclass(frozen=True)
class Result:
    """One target's run. ``seconds`` is the child's wall time (start-up and seeding included);
    ``execs_per_s`` is libFuzzer's own figure (or Hypothesis' loop), wall-clock based only for
    runs too short for one. ``crashes`` is 0 or 1: a run stops at its first crash."""

    target: str
    engine: str
    seconds: float
    executions: int
    execs_per_s: float
    crashes: int
    crash_input: str | None
    crash: str | None
    log: str


_EXECS = (
    re.compile(r"stat::number_of_executed_units:\s*(\d+)"),
    re.compile(r"Done (\d+) runs in"),
)
_STATUS = re.compile(r"^#(\d+)\s", re.MULTILINE)
_RATE = re.compile(r"stat::average_exec_per_sec:\s*(\d+)")
_REPO = str(Path(__file__).resolve().parents[1])


def parse_libfuzzer(output: str) -> int:
    """Executions from libFuzzer's output: the final stats, else the last status line."""
    for pattern in _EXECS:
        found = pattern.findall(output)
        if found:
            return max(int(n) for n in found)
    return max((int(n) for n in _STATUS.findall(output)), default=0)


def _crash_summary(output: str) -> str | None:
    """The exception line of the uncaught exception atheris printed, with where it was raised."""
    _, marker, rest = output.partition("=== Uncaught Python exception: ===")
    if not marker:
        for line in output.splitlines():
            if "ERROR: libFuzzer:" in line:
                return line.split("ERROR: ", 1)[1].strip()
        return None
    lines = [ln for ln in rest.splitlines() if ln.strip()]
    frames = [ln.strip() for ln in lines if ln.strip().startswith("File ")]
    ours = [f for f in frames if _REPO in f and "lab/fuzz.py" not in f]
    where = ours or frames
    what = next((ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b", ln)), lines[0] if lines
                else "")
    return f"{what.strip()} ({where[-1]})" if where else what.strip()


def run_target(name: str, seconds: float, workdir: Path, *, runs: int | None = None, engine: str = "auto") -> Result:
    """Fuzz one target in a subprocess for ``seconds`` (or ``runs`` inputs) and read its figures."""
    folder = workdir / name.replace(":", "_").replace("/", "_")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log = folder / "fuzz.log"
    cmd = [sys.executable, "-m", "lab.fuzz", "child", name, "--seconds", str(seconds), "--workdir", str(folder),
           "--engine", engine]
    if runs is not None:
        cmd += ["--runs", str(runs)]
    start = time.monotonic()
    stuck = False
    with log.open("w") as out:
        try:
            subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=seconds + 300, check=False)
        except subprocess.TimeoutExpired:
            stuck = True  # subprocess.run has killed it
    elapsed = time.monotonic() - start
    output = log.read_text(errors="replace")
    m = re.search(r"^engine: (\w+)", output, re.MULTILINE)
    used = m[1] if m else "unknown"
    crashes = sorted(p for p in folder.iterdir() if p.name.startswith(CRASH_PREFIXES))
    result_file = folder / RESULT_FILE
    summary: str | None
    rate = 0.0
    if result_file.is_file():
        got = json.loads(result_file.read_text())
        executions, fuzzed = int(got["executions"]), float(got["elapsed_s"])
        rate = executions / fuzzed if fuzzed > 0 else 0.0
        summary = got.get("crash")
    else:
        executions = parse_libfuzzer(output)
        summary = _crash_summary(output)
        m_rate = _RATE.search(output)
        rate = float(m_rate[1]) if m_rate else 0.0
    if rate == 0.0 and elapsed > 0:
        rate = executions / elapsed  # a run too short for libFuzzer's own figure; startup included
    if not crashes and summary is None and used == "unknown":
        summary = "the child did not start: see the log"
    if stuck and summary is None:
        summary = f"the child was still running {seconds + 300:g} s after it started, and was stopped"
    return Result(
        target=name, engine=used, seconds=round(elapsed, 2), executions=executions,
        execs_per_s=round(rate, 1),
        crashes=len(crashes) or (1 if summary else 0),
        crash_input=str(crashes[0]) if crashes else None, crash=summary if crashes or summary else None,
        log=str(log),
    )


def report(results: Sequence[Result], seconds: float) -> dict[str, Any]:
    from lab.bench_edge import machine

    return {"machine": machine(), "seconds_per_target": seconds, "targets": [asdict(r) for r in results],
            "crashes": sum(r.crashes for r in results)}


def table(results: Sequence[Result]) -> str:
    head = f"{'target':<16} {'engine':<10} {'seconds':>8} {'executions':>11} {'execs/s':>9} {'crashes':>7}  crash input"
    rows = [head, "-" * len(head)]
    for r in results:
        rows.append(f"{r.target:<16} {r.engine:<10} {r.seconds:>8.1f} {r.executions:>11} {r.execs_per_s:>9.1f} "
                    f"{r.crashes:>7}  {r.crash_input or ''}")
        if r.crash:
            rows.append(f"{'':<16} {r.crash}")
    return "\n".join(rows)


def run_all(names: Sequence[str], seconds: float, workdir: Path, *, runs: int | None = None,
            engine: str = "auto", progress: Callable[[Result], None] | None = None) -> list[Result]:
    results: list[Result] = []
    for name in names:
        resolve(name)  # refuse an unknown name before spending time on the others
    for name in names:
        result = run_target(name, seconds, workdir, runs=runs, engine=engine)
        results.append(result)
        if progress is not None:
            progress(result)
    return results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=60.0, help="per target (default 60)")
    p.add_argument("--target", action="extend", nargs="+", metavar="NAME",
                   help=f"only these targets (default all: {', '.join(TARGETS)})")
    p.add_argument("--runs", type=int, help="also stop each target after this many inputs")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="atheris (libFuzzer), hypothesis, or auto: atheris where it can run")
    p.add_argument("--workdir", type=Path, default=Path("var/fuzz"),
                   help="corpora, crash inputs and logs, one folder per target (default var/fuzz)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the figures here")


def main(args: argparse.Namespace) -> int:
    names = args.target or list(TARGETS)
    results = run_all(names, args.seconds, args.workdir, runs=args.runs, engine=args.engine,
                      progress=lambda r: print(f"fuzz {r.target}: {r.executions} executions, {r.crashes} crash(es)",
                                               file=sys.stderr, flush=True))
    out = report(results, args.seconds)
    print(table(results))
    print(f"machine: {out['machine']['platform']}, {out['machine']['cores']} cores ({out['machine']['cpu_model']})")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 1 if out["crashes"] else 0


def _child_main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m lab.fuzz child")
    p.add_argument("name")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--runs", type=int)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--engine", choices=ENGINES, default="auto")
    a = p.parse_args(argv)
    child(a.name, a.seconds, a.runs, a.workdir, a.engine)


if __name__ == "__main__":
    if sys.argv[1:2] != ["child"]:
        sys.exit("usage: python -m lab.fuzz child NAME --seconds S --workdir DIR  (or: jikimi bench fuzz)")
    # Run as lab.fuzz, not __main__, so a Target named as module:attribute is this module's type.
    from lab import fuzz

    fuzz._child_main(sys.argv[2:])
