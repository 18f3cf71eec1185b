"""The edge package's commands: ``profile show|check``, ``sim run``, ``sim camera``, ``edge status``
and ``edge template``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Final

from edge.sim.servers import Faults, Simulator, run_simulator
from shared.addr import host_port
from shared.cli import Cli, parse_listen, until_stopped
from shared.errors import ConfigError, JikimiError
from shared.paths import REPO_ROOT, firmware_configs
from shared.profiles import Kind, Point, Profile, load_profile
from shared.topics import check_site_id

log = logging.getLogger(__name__)


def register(cli: Cli) -> None:
    p = cli.subcommand(
        "profile",
        "show",
        "show a device profile's register map",
        _show,
        group_help="device profiles (firmware-configs/profiles/*.toml)",
    )
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable point list")
    p = cli.subcommand("profile", "check", "validate a device profile", _check)
    p.add_argument("file", type=Path)

    p = cli.subcommand(
        "sim", "run", "serve a simulated device built from a profile", _sim_run, group_help="device simulators"
    )
    p.add_argument("--profile", type=Path, required=True)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", metavar="tcp://HOST:PORT", help="Modbus TCP")
    where.add_argument("--pty", action="store_true", help="a new pseudo-terminal (path printed)")
    where.add_argument("--serial", metavar="DEV", help="a serial port")
    p.add_argument("--unit-id", type=int, help="override the profile's unit id")
    p.add_argument("--silent", action="store_true", help="fault: never answer")
    p.add_argument("--garbage", action="store_true", help="fault: answer random bytes")
    p.add_argument("--bad-crc", action="store_true", help="fault: corrupt checksums")
    p.add_argument("--exception", type=int, metavar="CODE", help="fault: answer this exception")
    p.add_argument("--stuck", action="append", default=[], metavar="POINT", help="fault: freeze")
    p.add_argument(
        "--sensor-fault", action="append", default=[], metavar="POINT", help="fault: report the sensor-fault value"
    )
    p.add_argument("--water-cm", type=float, help="initial water depth")
    p.add_argument("--rain-mm-h", type=float, help="rain intensity")
    p.add_argument(
        "--replay", metavar="floodnet[:SEL]|walnut-creek[:DAY]", help="drive the water/rain from a recorded event"
    )
    p.add_argument("--speed", type=float, default=60.0, help="replay speed-up (default 60)")
    p.add_argument("--control", metavar="HOST:PORT",
                   help="serve the HTTP control API here (loopback only; see edge/sim/control.py)")

    g = "the edge agent (one per site, a systemd service)"
    p = cli.subcommand("edge", "status", "what the site's outbox holds: epoch, seqs, records waiting, last ack",
                       _status, group_help=g)
    p.add_argument("--config", type=Path, required=True, help="the site config (TOML)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p = cli.subcommand("edge", "template", "print a commented site config for a kind of device", _template)
    p.add_argument("--kind", required=True, choices=[k.value for k in Kind])
    p.add_argument("--site", help="the site id (the CN of its certificate); default: an example id")
    p.add_argument("--hub", metavar="HOST:PORT", help="the city hub's broker; default: an example")
    p.add_argument("--transport", metavar="URL", help="the device's address, e.g. tcp://192.0.2.10:502 or "
                   "rtu:///dev/ttyUSB0; default: left to fill in")
    p.add_argument("--out", type=Path, help="write the config here (default: standard output)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")

    p = cli.subcommand("sim", "camera", "a simulated CCTV camera: JPEG snapshots and PTZ presets, over plain HTTP "
                       "(--listen) and/or ONVIF (--onvif), and H.264 video over RTSP (--rtsp)", _camera)
    p.add_argument("--listen", metavar="tcp://HOST:PORT", help="serve the plain-HTTP snapshot and preset URLs here")
    p.add_argument("--onvif", metavar="HOST:PORT", help="serve an ONVIF device at http://HOST:PORT/onvif/device_service")
    p.add_argument("--rtsp", metavar="HOST:PORT", help="stream H.264 at rtsp://HOST:PORT/stream (needs --onvif; "
                   "RTSP digest auth with --user/--password)")
    p.add_argument("--no-snapshot", action="store_true",
                   help="an ONVIF profile without a snapshot URI (clients take a frame of the RTSP stream)")
    p.add_argument("--id", required=True, dest="camera_id", help="the camera id shown in its pictures")
    p.add_argument("--user", help="the ONVIF (WS-Security) and snapshot (HTTP digest) user name")
    p.add_argument("--password", help="the ONVIF and snapshot password")
    p.add_argument("--presets", type=int, default=4, metavar="N", help="PTZ presets 1..N (default 4)")
    p.add_argument("--travel-s", type=float, default=1.0, help="how long a move to a preset takes (default 1 s)")


def point_row(p: Point) -> dict[str, Any]:
    """The ``profile show --json`` shape of one point."""
    return {
        "name": p.name,
        "table": p.table.value if p.table else None,
        "address": p.address,
        "type": p.type.value,
        "byte_order": p.byte_order.value,
        "word_order": p.word_order.value,
        "scale": p.scale,
        "offset": p.offset,
        "unit": p.unit,
        "values": dict(p.values),
        "writable": p.writable,
    }


def _show(args: argparse.Namespace) -> int:
    profile = load_profile(args.file)
    points = sorted(profile.points.values(), key=_order)
    if args.json:
        print(json.dumps({"points": [point_row(p) for p in points]}, ensure_ascii=False, indent=2))
        return 0
    t = profile.transport
    print(f"{profile.model}  ({profile.kind.value}, {t.type.value}, unit {t.unit_id})  sha256 {profile.hash[:12]}")
    if t.type.value != "modbus_tcp":
        print(f"line: {t.baudrate} {t.bytesize}{t.parity.value}{t.stopbits}, timeout {t.timeout_s:g} s")
    header = (
        f"{'point':<22} {'table':<9} {'addr':>5} {'type':<8} {'order':<6} {'scale':>7}"
        f" {'unit':<5} {'range':<14} {'poll':>5}  rw  values"
    )
    print(header)
    print("-" * len(header))
    for p in points:
        where = p.table.value if p.table else ("derived" if p.derived else "key")
        addr = p.address if p.address is not None else (p.key or "")
        order = f"{p.byte_order.value[0]}{p.word_order.value[0]}".upper()
        rng = "" if p.valid_min is None else f"{p.valid_min:g}..{p.valid_max:g}"
        extra = ", ".join(f"{k}={v}" for k, v in {**p.values, **p.bits}.items())
        if p.writable:
            extra = (extra + "; " if extra else "") + f"readback {p.readback}"
        rw = "rw" if p.writable else "r"
        print(
            f"{p.name:<22} {where:<9} {addr!s:>5} {p.type.value:<8} {order:<6} {p.scale:>7g}"
            f" {p.unit:<5} {rng:<14} {p.poll_s:>5g}  {rw:<3} {extra}"
        )
    return 0


def _order(p: Point) -> tuple[str, int, str]:
    return (p.table.value if p.table else "~", p.address or 0, p.name)


def _check(args: argparse.Namespace) -> int:
    profile = load_profile(args.file)
    print(
        f"{args.file}: ok: {profile.model} ({profile.kind.value}), {len(profile.points)} points, sha256 {profile.hash}"
    )
    return 0


def _faults_from(args: argparse.Namespace, faults: Faults, profile: Profile) -> None:
    for name in [*args.stuck, *args.sensor_fault]:
        if name not in profile.points:
            raise ConfigError(profile.source, f"points.{name}", "no such point (from the command line)")
    faults.silent = args.silent
    faults.garbage = args.garbage
    faults.bad_crc = args.bad_crc
    faults.exception = args.exception
    faults.stuck.update(args.stuck)
    faults.sensor_fault.update(args.sensor_fault)


CONTROL_HELP = """commands on stdin (one a line):
  silent|garbage|bad_crc on|off    exception CODE|off    stuck|sensor_fault POINT|off
  water CM    rain MM_H    jam on|off    local on|off    clear    quit"""


def control(sim: Simulator, line: str) -> str:
    """Apply one run-time control line to a simulator; return a one-line answer."""
    words = line.split()
    if not words:
        return ""
    cmd, arg = words[0], (words[1] if len(words) > 1 else "")
    f, ph = sim.faults, sim.physics
    if cmd in ("silent", "garbage", "bad_crc"):
        setattr(f, cmd, arg == "on")
    elif cmd == "exception":
        f.exception = None if arg == "off" else int(arg)
    elif cmd in ("stuck", "sensor_fault"):
        target: set[str] = getattr(f, cmd)
        if arg == "off":
            target.clear()
        elif arg in sim.device.profile.points:
            target.add(arg)
        else:
            return f"error: no point {arg!r}"
    elif cmd == "water":
        ph.water.depth_cm = float(arg)
    elif cmd == "rain":
        ph.set_rain(float(arg))
    elif cmd == "jam":
        ph.barrier.jammed = arg == "on"
        if arg == "off":
            ph.barrier.clear_jam()
    elif cmd == "local":
        ph.barrier.local = arg == "on"
    elif cmd == "clear":
        f.clear()
    else:
        return f"error: unknown command {cmd!r}\n{CONTROL_HELP}"
    return "ok"


async def _serve(args: argparse.Namespace, profile: Profile) -> int:
    if args.listen:
        if not args.listen.startswith("tcp://"):
            raise ConfigError("--listen", args.listen, "expected tcp://HOST:PORT")
        host, _, port = args.listen[6:].rpartition(":")
        kwargs: dict[str, Any] = {"transport": "tcp", "host": host or "127.0.0.1", "port": int(port)}
    elif args.pty:
        kwargs = {"transport": "pty"}
    else:
        kwargs = {"transport": "serial", "serial_device": args.serial}
    from edge.sim.control import loopback, serve_control  # only here: the other commands need no aiohttp

    control_addr = loopback(args.control) if args.control else None
    async with run_simulator(profile, unit_id=args.unit_id, **kwargs) as sim, contextlib.AsyncExitStack() as stack:
        if control_addr is not None:
            ctl = await stack.enter_async_context(serve_control(sim.devices, *control_addr))
            print(f"control {ctl.url}", file=sys.stderr, flush=True)
        _faults_from(args, sim.faults, profile)
        if args.water_cm is not None:
            sim.physics.water.depth_cm = args.water_cm
        if args.rain_mm_h is not None:
            sim.physics.set_rain(args.rain_mm_h)
        if args.replay:
            from edge.sim import replay

            kind, _, sel = args.replay.partition(":")
            if kind == "floodnet":
                replay.apply(sim.physics, replay.floodnet_event(sel or "deepest"), args.speed)
            elif kind == "walnut-creek":
                replay.apply(sim.physics, replay.walnut_creek_storm(sel or "2024-08-08"), args.speed)
            else:
                raise ConfigError("--replay", args.replay, "expected floodnet[:SEL] or walnut-creek[:DAY]")
        print(sim.address, flush=True)
        print(f"serving {profile.model} unit {sim.device.unit_id}; {CONTROL_HELP}", file=sys.stderr)
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:  # stdin closed: keep serving until interrupted
                await asyncio.Event().wait()
            if line.strip() == "quit":
                return 0
            try:
                answer = control(sim, line)
            except ValueError as exc:
                answer = f"error: {exc}"
            if answer:
                print(answer, file=sys.stderr, flush=True)


def _sim_run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    return asyncio.run(_serve(args, profile))


def _camera(args: argparse.Namespace) -> int:
    from edge.sim import camera, camera_onvif, camera_rtsp  # only here: the other commands need no Pillow
    from shared import logs

    if args.listen is None and args.onvif is None:
        raise ConfigError("--onvif", "", "give --onvif HOST:PORT (or --listen tcp://HOST:PORT for plain HTTP)")
    plain = parse_listen(args.listen) if args.listen is not None else None
    onvif: tuple[str, int] | None = None
    if args.onvif is not None:
        try:
            onvif = parse_listen(args.onvif)
        except ConfigError as exc:
            raise ConfigError("--onvif", "", f"{args.onvif!r}: expected HOST:PORT") from exc
        if not args.user or not args.password:
            raise ConfigError("--user", "", "an ONVIF camera needs --user and --password")
        if not 1 <= args.presets <= 255:
            raise ConfigError("--presets", "", f"{args.presets}: expected 1 to 255")
        if not 0.0 <= args.travel_s <= 60.0:
            raise ConfigError("--travel-s", "", f"{args.travel_s}: expected 0 to 60 seconds")
    rtsp: tuple[str, int] | None = None
    if args.rtsp is not None:
        if onvif is None:
            raise ConfigError("--rtsp", "", "the RTSP stream shows the ONVIF camera's PTZ state: give --onvif too")
        try:
            rtsp = parse_listen(args.rtsp)
        except ConfigError as exc:
            raise ConfigError("--rtsp", "", f"{args.rtsp!r}: expected HOST:PORT") from exc
    if args.no_snapshot and onvif is None:
        raise ConfigError("--no-snapshot", "", "only an ONVIF camera (--onvif) can be without a snapshot URI")
    logs.setup()

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            if plain is not None:
                running = await stack.enter_async_context(camera.serve(args.camera_id, host=plain[0], port=plain[1]))
                log.info("camera.listening", extra={"url": running.base_url, "camera": args.camera_id,
                                                    "snapshot_url": running.snapshot_url,
                                                    "ptz_preset_url": running.ptz_preset_url})
            if onvif is not None:
                device = await stack.enter_async_context(camera_onvif.serve(
                    args.camera_id, user=args.user, password=args.password, host=onvif[0], port=onvif[1],
                    presets=args.presets, travel_s=args.travel_s, snapshot_uri=not args.no_snapshot))
                if rtsp is not None:
                    try:
                        stream = stack.enter_context(camera_rtsp.serve(
                            args.camera_id, user=args.user, password=args.password, preset=device.sim.preset_now,
                            host=rtsp[0], port=rtsp[1]))
                    except camera_rtsp.RtspUnavailable as exc:
                        raise ConfigError("--rtsp", "", str(exc)) from exc
                    device.sim.stream_uri = stream.url
                log.info("camera.onvif_listening", extra={"device_url": device.device_url, "camera": args.camera_id,
                                                          "presets": args.presets, "stream_uri": device.sim.stream_uri,
                                                          "snapshot": not args.no_snapshot})
            await until_stopped()

    asyncio.run(main())
    return 0


# --- edge status -------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    from edge.config import load_site_config
    from edge.outbox import OUTBOX_FILE
    from edge.outbox_status import read_status

    cfg = load_site_config(args.config)
    st = read_status(cfg.state_dir / OUTBOX_FILE)
    now = time.time()
    if args.json:
        print(json.dumps({"site": cfg.site.id, **st.as_json(now)}, indent=2))
        return 0
    by_prio = ", ".join(f"{p.value} {n}" for p, n in st.held.items())
    age = st.oldest_age_s(now)
    lines = [
        f"site       {cfg.site.id}",
        f"outbox     {st.path}",
        f"epoch      {st.epoch}" + ("  (legacy: made before epochs)" if st.epoch == 0 else ""),
        f"next seq   {st.next_seq}",
        f"held       {st.held_total} ({by_prio})" + (f", lowest seq {st.lowest_seq}" if st.lowest_seq else ""),
        "oldest     " + ("-" if age is None or st.oldest_ts is None else f"{_ago(age)} ({_utc(st.oldest_ts)})"),
        "last ack   " + ("none in this epoch" if st.last_ack is None else
                         f"seq {st.last_ack.seq}, {_ago(now - st.last_ack.at)} ({_utc(st.last_ack.at)})"),
        f"commands   {st.commands} result(s) kept",
    ]
    print("\n".join(lines))
    return 0


def _ago(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.1f} s ago"
    if s < 7200:
        return f"{s / 60:.1f} min ago"
    return f"{s / 3600:.1f} h ago"


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# --- edge template -----------------------------------------------------------------------------

_TRANSPORT_OK: Final = re.compile(r"^(tcp|rtu|serial)://[A-Za-z0-9._:/\[\]-]+$")
_HOST_OK: Final = re.compile(r"^[A-Za-z0-9.\-\[\]:]+$")


class TemplateError(JikimiError):
    """A site config template cannot be made as asked."""


def site_templates_dir() -> Path:
    """``firmware-configs/sites/``: one commented site config per device kind (installed, else
    this checkout's: an editable install may point at another checkout)."""
    shipped = firmware_configs() / "sites"
    return shipped if shipped.is_dir() else REPO_ROOT / "firmware-configs" / "sites"


def render_template(kind: Kind, *, site: str | None = None, hub: str | None = None,
                    transport: str | None = None) -> str:
    """The commented site config template of ``kind``, with what is given filled in."""
    path = site_templates_dir() / f"{kind.value}.toml"
    try:
        text = path.read_text()
    except OSError as exc:
        raise TemplateError(f"{path}: cannot read the {kind.value} template: {exc}") from exc
    if site is not None:
        check_site_id(site)
        example = re.search(r'^id = "([^"]+)"', text, re.MULTILINE)
        if example is None:
            raise TemplateError(f"{path}: the template has no [site] id to fill in")
        text = text.replace(example[1], site)
    if hub is not None:
        addr = host_port(hub)
        if addr is None or not _HOST_OK.match(addr[0]):
            raise TemplateError(f"--hub {hub!r}: expected HOST:PORT")
        text = re.sub(r'^host = "[^"]*"', f'host = "{addr[0].strip("[]")}"', text, count=1, flags=re.MULTILINE)
        text = re.sub(r"^port = \d+", f"port = {addr[1]}", text, count=1, flags=re.MULTILINE)
    if transport is not None:
        if not _TRANSPORT_OK.match(transport):
            raise TemplateError(f"--transport {transport!r}: expected tcp://HOST:PORT, rtu:///dev/PORT or "
                                "serial:///dev/PORT")
        text = re.sub(r'^transport = "[^"]*" *#[^\n]*', f'transport = "{transport}"', text, count=1,
                      flags=re.MULTILINE)
    return text


def _template(args: argparse.Namespace) -> int:
    text = render_template(Kind(args.kind), site=args.site, hub=args.hub, transport=args.transport)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    out: Path = args.out
    if os.path.lexists(out) and not args.force:
        raise TemplateError(f"{out} exists; give --force to overwrite it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out)
    except OSError as exc:
        raise TemplateError(f"{out}: cannot write: {exc}") from exc
    print(f"{out}: {args.kind} site config written; fill in what it says, then 'jikimi edge check --config {out}'",
          file=sys.stderr)
    return 0
