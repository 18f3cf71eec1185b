"""The bus scheduler: one per physical line; it alone talks to the devices on that line.

Rules and invariants:

* **Serialised.** Exactly one request is on a line at a time: every read and write goes
  through :meth:`BusScheduler.run_due` (called in a loop by :meth:`BusScheduler.run`); when
  :meth:`run` is not running, a caller's write or read runs in the caller, alone.
* **Writes first.** Queued writes and requested reads run before any poll and between every
  two poll requests.
* **Polls by due time.** Each point is due every ``poll_s``; due points of one device are read
  together in the fewest requests the device accepts. A point polled late is polled once,
  not once per missed period.
* **Circuit breaker per device** (:class:`Breaker`): a failure that says the device is not
  answering properly (timeout, framing, I/O) opens it for a jittered, growing backoff
  (``shared.retry.backoff_delays``). While open, the device is not asked: its due points get
  ``comm_fail`` readings at once. When the backoff ends, one probe request is allowed
  (half-open); success closes the breaker, failure opens it for the next, longer backoff.
  So a silent device costs the others at most one timeout per backoff period. An exception
  response proves the device is alive and does not open the breaker.
* **Quality and time.** Every reading carries its acquisition time from the injected clock;
  failures give ``comm_fail`` readings without a value; the last good reading is kept apart
  and never re-stamped (:func:`edge.drivers.readings.aged` marks it stale by age).
* **Derived points** (e.g. ``rain_mm_10min``) are computed from good readings of their source
  and carry the source's acquisition time.
* **Counters per device**: requests, successes, timeouts, framing errors, exception responses,
  other errors, requests skipped by the open breaker, and latency (last, max, total).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, TypeVar, cast

from edge.drivers.codec import Value
from edge.drivers.derived import WindowDelta
from edge.drivers.readings import Quality, Reading, classify
from edge.drivers.serial_line import Decoded
from edge.errors import (
    CodecError,
    CommandRejected,
    DeviceError,
    DeviceException,
    DeviceTimeout,
    DeviceUnavailable,
    FramingError,
)
from shared.profiles import Point, Profile
from shared.retry import backoff_delays

log = logging.getLogger(__name__)
T = TypeVar("T")


class DeviceLink(Protocol):
    """What the scheduler needs from a driver (ModbusDevice, SerialLineDevice, a fake)."""

    name: str
    profile: Profile

    def requests_for(self, points: Sequence[Point]) -> Sequence[tuple[Point, ...]]: ...

    async def read(self, points: Sequence[Point]) -> Mapping[str, Decoded]: ...

    async def write(self, point: Point, value: Value) -> None: ...


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    """A per-device circuit breaker (pure: the caller passes the time)."""

    def __init__(self, delays: Callable[[], Iterator[float]], threshold: int = 1, name: str = "") -> None:
        self.name = name
        self._new_delays = delays
        self._delays = delays()
        self.threshold = threshold
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.open_until = 0.0

    def allow(self, now: float) -> bool:
        """May a request go to the device now? Moves open -> half-open when the wait is over."""
        if self.state is BreakerState.OPEN and now >= self.open_until:
            self.state = BreakerState.HALF_OPEN
        return self.state is not BreakerState.OPEN

    def success(self) -> None:
        if self.state is not BreakerState.CLOSED:
            log.info("device.breaker_closed", extra={"device": self.name, "failures": self.failures})
            self._delays = self._new_delays()  # back to short waits after a recovery
        self.state = BreakerState.CLOSED
        self.failures = 0

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self.state = BreakerState.OPEN
            wait = next(self._delays)
            self.open_until = now + wait
            log.info(
                "device.breaker_opened",
                extra={"device": self.name, "failures": self.failures, "wait_s": wait},
            )


@dataclass
class Counters:
    """Per-device statistics (mutable; read :meth:`snapshot` for a copy)."""

    requests: int = 0
    ok: int = 0
    timeouts: int = 0
    framing_errors: int = 0
    exceptions: int = 0
    other_errors: int = 0
    skipped: int = 0
    writes: int = 0
    latency_last_s: float = 0.0
    latency_max_s: float = 0.0
    latency_total_s: float = 0.0

    def snapshot(self) -> dict[str, float]:
        return dict(vars(self))


@dataclass
class _Device:
    link: DeviceLink
    breaker: Breaker
    counters: Counters = field(default_factory=Counters)
    next_due: dict[str, float] = field(default_factory=dict)
    # source point -> [(derived point, its calculator)]
    derived: dict[str, list[tuple[Point, WindowDelta]]] = field(default_factory=dict)


@dataclass
class _Op:
    """A priority operation: a write, or a read somebody is waiting for."""

    run: Callable[[], Awaitable[object]]
    done: asyncio.Future[object]


class BusScheduler:
    """Serialises all access to the devices of one line (see the module's rules)."""

    def __init__(
        self,
        devices: Sequence[DeviceLink],
        sink: Callable[[Reading], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        rng: random.Random | None = None,
        breaker_threshold: int = 1,
    ) -> None:
        self._clock = clock
        self._sink = sink
        self._devices: dict[str, _Device] = {}
        now = clock()
        for d in devices:
            delays = functools.partial(backoff_delays, backoff_initial_s, backoff_max_s, rng)
            dev = _Device(d, Breaker(delays, breaker_threshold, d.name))
            dev.next_due = {p.name: now for p in d.profile.polled}
            for p in d.profile.points.values():
                if p.derived is not None:
                    dev.derived.setdefault(p.derived.source, []).append((p, WindowDelta(p.derived)))
            self._devices[d.name] = dev
        self._ops: deque[_Op] = deque()
        self._running = False
        self._line = asyncio.Lock()  # held by whoever is talking on the line
        self._wake = asyncio.Event()
        self.latest: dict[tuple[str, str], Reading] = {}
        self.last_good: dict[tuple[str, str], Reading] = {}

    def counters(self, device: str) -> Counters:
        return self._devices[device].counters

    def breaker(self, device: str) -> Breaker:
        return self._devices[device].breaker

    # --- priority operations -------------------------------------------------------------

    async def write(self, device: str, point: str, value: Value) -> None:
        """Write ahead of all polls and wait for it (raises the DeviceError it met).

        Points the profile does not mark writable, and values outside its ``allowed`` list,
        are refused with :class:`CommandRejected` before anything goes on the line. The
        read-back point is polled at the next chance; verifying it is the caller's job.
        """
        dev = self._devices[device]
        p = dev.link.profile.points[point]
        if not p.writable:
            raise CommandRejected(f"{device}.{point} is not writable")
        if p.allowed and value not in p.allowed:
            raise CommandRejected(f"{device}.{point}: {value!r} is not one of {list(p.allowed)}")

        async def op() -> None:
            dev.counters.writes += 1
            await self._call(dev, functools.partial(dev.link.write, p, value))
            if p.readback is not None:
                dev.next_due[p.readback] = self._clock()

        await self._submit(op)

    async def read_now(self, device: str, points: Sequence[str]) -> list[Reading]:
        """Read points ahead of the polls (e.g. to verify a write); same breaker and counters."""
        dev = self._devices[device]
        wanted = [dev.link.profile.points[n] for n in points]

        async def op() -> list[Reading]:
            got: list[Reading] = []
            for group in dev.link.requests_for(wanted):
                got.extend(await self._poll(dev, group))
            return got

        return await self._submit(op)

    async def _submit(self, op: Callable[[], Awaitable[T]]) -> T:
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._ops.append(_Op(op, fut))
        if self._running:
            self._wake.set()
        else:  # nobody else drives the line: run it here, still one at a time
            async with self._line:
                await self._run_ops()
        return cast(T, await fut)

    async def _run_ops(self) -> None:
        while self._ops:
            item = self._ops.popleft()
            try:
                result = await item.run()
            except (DeviceError, CodecError) as exc:
                if not item.done.done():
                    item.done.set_exception(exc)
                continue
            if not item.done.done():
                item.done.set_result(result)

    # --- polls ---------------------------------------------------------------------------

    def next_due(self) -> float:
        """The earliest time any point is due."""
        return min(
            (min(d.next_due.values(), default=float("inf")) for d in self._devices.values()), default=float("inf")
        )

    async def run_due(self) -> None:
        """Run queued writes, then poll every point due now, device by device."""
        async with self._line:
            await self._run_ops()
            now = self._clock()
            for dev in self._devices.values():
                due = [dev.link.profile.points[n] for n, t in dev.next_due.items() if t <= now]
                if not due:
                    continue
                for p in due:
                    dev.next_due[p.name] = now + p.poll_s
                for group in dev.link.requests_for(due):
                    await self._run_ops()
                    await self._poll(dev, group)

    async def _poll(self, dev: _Device, group: Sequence[Point]) -> list[Reading]:
        name = dev.link.name
        try:
            decoded = await self._call(dev, functools.partial(dev.link.read, group))
        except DeviceError as exc:
            ts = self._clock()
            return [
                self._emit(Reading(name, p.name, None, Quality.COMM_FAIL, ts, error=f"{type(exc).__name__}: {exc}"))
                for p in group
            ]
        ts = self._clock()
        out = []
        for p in group:
            item = decoded.get(p.name)
            if item is None or isinstance(item, CodecError):
                out.append(
                    self._emit(Reading(name, p.name, None, Quality.SENSOR_FAULT, ts, error=str(item or "missing")))
                )
                continue
            raw, value = item
            out.append(self._emit(Reading(name, p.name, value, classify(p, raw, value), ts, raw)))
        for r in list(out):
            out.extend(self._derive(dev, r))
        return out

    def _derive(self, dev: _Device, source: Reading) -> list[Reading]:
        """Readings of the points derived from ``source`` (same time, never fresher)."""
        out = []
        for p, calc in dev.derived.get(source.point, []):
            if source.quality is not Quality.GOOD or not isinstance(source.value, int | float):
                continue
            value = calc.add(source.ts, float(source.value))
            if value is not None:
                r = Reading(source.device, p.name, value, classify(p, value, value), source.ts)
                out.append(self._emit(r))
        return out

    def _emit(self, r: Reading) -> Reading:
        self.latest[(r.device, r.point)] = r
        if r.quality is Quality.GOOD:
            self.last_good[(r.device, r.point)] = r
        if self._sink is not None:
            self._sink(r)
        return r

    async def _call(self, dev: _Device, fn: Callable[[], Awaitable[T]]) -> T:
        """One request through the breaker, counted; DeviceErrors re-raised after counting."""
        c = dev.counters
        now = self._clock()
        if not dev.breaker.allow(now):
            c.skipped += 1
            raise DeviceUnavailable(f"{dev.link.name}: breaker open for {dev.breaker.open_until - now:.1f} s")
        c.requests += 1
        started = time.perf_counter()
        try:
            result = await fn()
        except DeviceException as exc:
            c.exceptions += 1
            dev.breaker.success()  # it answered: it is alive
            log.warning("device.exception", extra={"device": dev.link.name, "code": exc.code})
            raise
        except DeviceError as exc:
            if isinstance(exc, DeviceTimeout):
                c.timeouts += 1
            elif isinstance(exc, FramingError):
                c.framing_errors += 1
            else:
                c.other_errors += 1
            dev.breaker.failure(self._clock())
            log.warning(
                "device.request_failed",
                extra={
                    "device": dev.link.name,
                    "error": f"{type(exc).__name__}: {exc}",
                    "breaker": dev.breaker.state.value,
                },
            )
            raise
        finally:
            elapsed = time.perf_counter() - started
            c.latency_last_s = elapsed
            c.latency_max_s = max(c.latency_max_s, elapsed)
            c.latency_total_s += elapsed
        c.ok += 1
        dev.breaker.success()
        return result

    async def run(self) -> None:
        """Poll and write forever (a named task in the agent's TaskGroup)."""
        self._running = True
        try:
            await self._loop()
        finally:
            self._running = False

    async def _loop(self) -> None:
        while True:
            await self.run_due()
            wait = self.next_due() - self._clock()
            if wait > 0 and not self._ops:
                self._wake.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation that
                # arrives as the wait completes, and this loop would then never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(wait, 60.0)):
                        await self._wake.wait()
