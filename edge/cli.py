"""The edge package's commands: ``profile show|check``, ``sim run`` and ``sim camera``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from edge.sim.servers import Faults, Simulator, run_simulator
from shared.cli import Cli, parse_listen, until_stopped
from shared.errors import ConfigError
from shared.profiles import Point, Profile, load_profile

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

    p = cli.subcommand("sim", "camera", "a simulated CCTV camera: JPEG snapshots and PTZ presets", _camera)
    p.add_argument("--listen", required=True, metavar="tcp://HOST:PORT")
    p.add_argument("--id", required=True, dest="camera_id", help="the camera id shown in its pictures")


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
    from edge.sim import camera  # only here: the other commands need no Pillow
    from shared import logs

    host, port = parse_listen(args.listen)
    logs.setup()

    async def main() -> None:
        async with camera.serve(args.camera_id, host=host, port=port) as running:
            log.info("camera.listening", extra={"url": running.base_url, "camera": args.camera_id,
                                                "snapshot_url": running.snapshot_url,
                                                "ptz_preset_url": running.ptz_preset_url})
            await until_stopped()

    asyncio.run(main())
    return 0
