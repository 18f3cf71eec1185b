"""``jikimi bench edge``: how fast the edge reads devices, next to what the wire allows.

RTU section: one pty RTU line with a simulated flood alarm whose three input registers are read
back to back for a few seconds, by jikimi's driver and by pymodbus' own client, in turns. A pty
moves bytes instantly, so a :class:`PacedRelay` sits between client and simulator and lets bytes through at line speed:
11 bits per character (start, 8 data, parity or second stop, stop), with the t3.5 silence
after each frame (3.5 characters, fixed at 1.75 ms above 19200 baud, per the Modbus serial
line spec). The wire-time limit of one read is

    (request chars + response chars) * 11 / baud + 2 * t3.5

and ``ratio_of_wire_limit = reads_per_s / wire_limit_per_s``. That ratio is at most 1 by
construction (the relay enforces the same formula), so it only says how much time software adds;
the comparison is ``ratio = reads_per_s / reference_reads_per_s``: jikimi's driver (as the agent
reads) against pymodbus' own async client doing the same read on the same paced line in the same
run. ``overhead_ms_per_read`` is the time per read beyond the wire's.

The report is a JSON object of top-level sections (``machine``, ``rtu``); other benchmarks
(agent RSS/CPU, inference latency) add their own keys through :data:`SECTIONS` or by merging
into an existing report file (:func:`write_report` keeps keys it did not produce).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymodbus.client import AsyncModbusSerialClient

from edge.drivers.modbus import ModbusDevice, ModbusLine
from edge.sim.servers import Pty, RtuBus, SimDevice, write_all
from shared.paths import profiles_dir
from shared.profiles import load_profile

BITS_PER_CHAR = 11
BAUDS = (19200, 115200)
REQUEST_CHARS = 8  # unit, fc, address(2), count(2), crc(2)
REGISTERS = 3
RESPONSE_CHARS = 5 + 2 * REGISTERS  # unit, fc, byte count, data, crc(2)


def t35_s(baud: int) -> float:
    """The inter-frame silence: 3.5 characters, 1.75 ms fixed above 19200 baud."""
    return 1.75e-3 if baud > 19200 else 3.5 * BITS_PER_CHAR / baud


def wire_limit_per_s(baud: int, request_chars: int, response_chars: int) -> float:
    """Reads per second a perfect master and slave could do on this line."""
    per_read = (request_chars + response_chars) * BITS_PER_CHAR / baud + 2 * t35_s(baud)
    return 1.0 / per_read


class PacedRelay:
    """Sits on a pty's master: delivers the client's bytes to the bus at line speed, and the
    bus's replies back at line speed, with t3.5 after every frame. Half duplex: one wire."""

    def __init__(self, pty: Pty, bus: RtuBus, baud: int) -> None:
        self.pty = pty
        self.bus = bus
        self.char_s = BITS_PER_CHAR / baud
        self.t35 = t35_s(baud)
        self.busy_until = 0.0
        self._loop = asyncio.get_running_loop()

    def start(self) -> None:
        os.set_blocking(self.pty.master, False)
        self._loop.add_reader(self.pty.master, self._on_readable)

    def stop(self) -> None:
        self._loop.remove_reader(self.pty.master)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.pty.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        now = self._loop.time()
        end = max(now, self.busy_until) + len(data) * self.char_s
        # the slave sees the request only after the t3.5 silence that ends it
        self.busy_until = end + self.t35
        self._loop.call_at(self.busy_until, self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        for reply in self.bus.feed(data):
            start = max(self._loop.time(), self.busy_until)
            end = start + len(reply) * self.char_s
            self.busy_until = end + self.t35
            self._loop.call_at(end, write_all, self.pty.master, reply)


async def _paced_rate(seconds: float, read: Callable[[], Awaitable[None]]) -> tuple[int, float]:
    """Back-to-back ``read()`` calls for ``seconds``; (reads, elapsed seconds)."""
    await read()  # warm up
    n = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        await read()
        n += 1
    return n, time.perf_counter() - started


async def rtu_reads_per_s(baud: int, seconds: float, rounds: int = 4) -> dict[str, float]:
    """The same three-register read through one paced pty line at ``baud``, by jikimi's driver
    (:class:`ModbusDevice` over :class:`ModbusLine`, as the agent reads) and by pymodbus' own async
    client (the reference), alternating in ``rounds`` so drift in the machine hits both alike."""
    profile = load_profile(profiles_dir() / "flood-alarm-jk-fa100.toml")
    points = [profile.points[name] for name in ("water_depth_cm", "battery_v", "status")]
    bus = RtuBus([SimDevice(profile)])
    pty = Pty.open()
    relay = PacedRelay(pty, bus, baud)
    relay.start()
    spec = dataclasses.replace(profile.transport, baudrate=baud, timeout_s=1.0)

    async def round_ours(seconds: float) -> tuple[int, float]:
        line = ModbusLine.rtu(pty.path, spec)
        device = ModbusDevice("bench", profile, line)
        if len(device.requests_for(points)) != 1:
            raise RuntimeError("the benchmark's points must plan to one request, like the reference's")

        async def read() -> None:
            got = await device.read(points)
            bad = [k for k, v in got.items() if isinstance(v, Exception)]
            if bad:
                raise RuntimeError(f"benchmark read failed: {bad}")

        await line.connect()
        try:
            return await _paced_rate(seconds, read)
        finally:
            await line.__aexit__(None, None, None)

    async def round_theirs(seconds: float) -> tuple[int, float]:
        client = AsyncModbusSerialClient(pty.path, baudrate=baud, parity="N", timeout=1, retries=0)

        async def read() -> None:
            rr = await client.read_input_registers(0, count=REGISTERS, device_id=1)
            if rr.isError():
                raise RuntimeError(f"benchmark read failed: {rr}")

        await client.connect()
        try:
            return await _paced_rate(seconds, read)
        finally:
            client.close()

    # one client at a time: a serial port (and a pty) is opened exclusively
    counts = {"ours": [0, 0.0], "theirs": [0, 0.0]}
    try:
        for _ in range(rounds):
            for name, measure in (("theirs", round_theirs), ("ours", round_ours)):
                n, elapsed = await measure(seconds / rounds)
                counts[name][0] += n
                counts[name][1] += elapsed
    finally:
        relay.stop()
        pty.close()
    rate = counts["ours"][0] / counts["ours"][1]
    ref = counts["theirs"][0] / counts["theirs"][1]
    limit = wire_limit_per_s(baud, REQUEST_CHARS, RESPONSE_CHARS)
    wire_ms = 1000.0 / limit
    return {
        "baud": baud,
        "reads_per_s": round(rate, 1),
        "reference_reads_per_s": round(ref, 1),
        "ratio": round(rate / ref, 3),
        "wire_limit_per_s": round(limit, 1),
        "ratio_of_wire_limit": round(rate / limit, 3),
        "overhead_ms_per_read": round(1000.0 / rate - wire_ms, 3),
        "reference_overhead_ms_per_read": round(1000.0 / ref - wire_ms, 3),
        "reads": int(counts["ours"][0]),
        "reference_reads": int(counts["theirs"][0]),
        "registers_per_read": REGISTERS,
    }


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    return {
        "cpu_model": model or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass(frozen=True)
class BenchOptions:
    """How long each measurement runs; ``outage_s`` 0 leaves out the agent's outage run."""

    seconds: float = 3.0
    outage_s: float = 240.0


async def rtu_section(opts: BenchOptions) -> list[dict[str, float]]:
    return [await rtu_reads_per_s(baud, opts.seconds) for baud in BAUDS]


async def _agent_section(opts: BenchOptions) -> dict[str, Any]:
    from lab.bench_agent import agent_section

    return await agent_section(opts.seconds, outage_s=opts.outage_s)


async def _inference_section(opts: BenchOptions) -> dict[str, Any]:
    from lab.bench_inference import measure_inference

    return await asyncio.to_thread(measure_inference, 3000)


# Top-level report keys -> how to produce them; other packages add theirs here.
SECTIONS: dict[str, Callable[[BenchOptions], Awaitable[Any]]] = {
    "rtu": rtu_section,
    "inference_ms": _inference_section,
    "agent": _agent_section,
}
# Sections whose keys go straight to the top level of the report (the issue names them so).
FLATTENED = frozenset({"agent"})


async def run_edge_bench(seconds: float = 3.0, outage_s: float = 240.0) -> dict[str, Any]:
    report: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
    }
    opts = BenchOptions(seconds, outage_s)
    for key, produce in SECTIONS.items():
        value = await produce(opts)
        if key in FLATTENED:
            report.update(value)
        else:
            report[key] = value
    return report


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write ``report``, keeping sections of an existing file that this run did not produce."""
    merged: dict[str, Any] = {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
            if isinstance(old, dict):
                merged.update(old)
        except (OSError, json.JSONDecodeError):
            merged = {}
    merged.update(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2) + "\n")
