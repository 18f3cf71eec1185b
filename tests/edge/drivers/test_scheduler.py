"""The bus scheduler: a silent device costs the others at most one timeout per backoff period,
faults become quality flags and counters, writes go ahead of polls."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Mapping, Sequence

import pytest

from edge.drivers.codec import Value
from edge.drivers.modbus import ModbusDevice, ModbusLine
from edge.drivers.readings import Quality, Reading, aged
from edge.drivers.scheduler import Breaker, BreakerState, BusScheduler
from edge.drivers.serial_line import Decoded
from edge.errors import CommandRejected
from edge.sim.servers import SimDevice, run_rtu_bus, run_simulator
from shared.profiles import Point, Profile
from shared.retry import zero_waits


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class CapRandom(random.Random):
    """Makes full-jitter backoff deterministic: every wait is its cap."""

    def uniform(self, a: float, b: float) -> float:
        return b


BACKOFF_S = 5.0


@pytest.mark.parametrize("breaker_threshold", [1, 10_000])
async def test_a_silent_device_costs_the_others_one_timeout_per_backoff_period(
    flood: Profile, breaker_threshold: int
) -> None:
    clock = Clock()
    readings: list[Reading] = []
    sims = [SimDevice(flood, unit_id=u) for u in (1, 2, 3)]
    sims[1].faults.silent = True
    async with run_rtu_bus(sims) as bus, ModbusLine.rtu(bus.path, flood.transport, timeout_s=0.05) as line:
        devs = [ModbusDevice(f"fa-{u}", flood, line, unit_id=u) for u in (1, 2, 3)]
        sched = BusScheduler(
            devs,
            sink=readings.append,
            clock=clock,
            backoff_initial_s=BACKOFF_S,
            backoff_max_s=BACKOFF_S,
            rng=CapRandom(),
            breaker_threshold=breaker_threshold,
        )
        cycles = 31 if breaker_threshold == 1 else 8
        with zero_waits(False):  # tests/conftest.py zeroes waits; this test needs them
            for _ in range(cycles):
                await sched.run_due()
                clock.t += 1.0
    good = {
        d: sum(1 for r in readings if r.device == d and r.point == "water_depth_cm" and r.quality is Quality.GOOD)
        for d in ("fa-1", "fa-3")
    }
    # The healthy devices were polled every cycle, whatever the silent one did.
    assert good == {"fa-1": cycles, "fa-3": cycles}
    assert sched.counters("fa-1").timeouts == sched.counters("fa-3").timeouts == 0
    silent = sched.counters("fa-2")
    timeout_times = sorted({r.ts for r in readings if r.device == "fa-2" and r.error.startswith("DeviceTimeout")})
    if breaker_threshold == 1:
        assert silent.timeouts == len(timeout_times)
        # one timeout, then nothing until the backoff period is over
        gaps = [b - a for a, b in itertools.pairwise(timeout_times)]
        assert all(g >= BACKOFF_S for g in gaps)
        assert silent.timeouts <= cycles // BACKOFF_S + 1
        assert silent.skipped > 0
        assert all(r.quality is Quality.COMM_FAIL for r in readings if r.device == "fa-2")
    else:
        # control: without the breaker, every request of every cycle times out
        assert silent.timeouts == silent.requests > cycles


@pytest.mark.parametrize(
    ("fault", "counter"),
    [("garbage", "framing_errors"), ("bad_crc", "framing_errors"), ("exception", "exceptions"), ("silent", "timeouts")],
)
async def test_line_faults_become_comm_fail_readings_and_counters(flood: Profile, fault: str, counter: str) -> None:
    clock = Clock()
    readings: list[Reading] = []
    async with (
        run_simulator(flood, transport="pty") as sim,
        ModbusLine.rtu(sim.path, flood.transport, timeout_s=0.05) as line,
    ):
        sched = BusScheduler([ModbusDevice("fa", flood, line)], sink=readings.append, clock=clock)
        with zero_waits():
            setattr(sim.faults, fault, 4 if fault == "exception" else True)
            for _ in range(3):
                await sched.run_due()
                clock.t += 1.0
            sim.faults.clear()
            await sched.run_due()
    c = sched.counters("fa")
    assert getattr(c, counter) >= 3
    depth = [r for r in readings if r.point == "water_depth_cm"]
    assert [r.quality for r in depth] == [Quality.COMM_FAIL] * 3 + [Quality.GOOD]
    assert all(r.value is None for r in depth[:3])
    assert sched.breaker("fa").state is BreakerState.CLOSED


async def test_sensor_fault_out_of_range_and_stuck_values_are_flagged(flood: Profile) -> None:
    clock = Clock()
    async with run_simulator(flood, transport="pty") as sim, ModbusLine.rtu(sim.path, flood.transport) as line:
        sched = BusScheduler([ModbusDevice("fa", flood, line)], clock=clock)

        async def depth() -> Reading:
            (r,) = await sched.read_now("fa", ["water_depth_cm"])
            return r

        sim.physics.water.depth_cm = 12.0
        assert (await depth()).quality is Quality.GOOD
        sim.faults.sensor_fault.add("water_depth_cm")
        r = await depth()
        assert (r.quality, r.raw) == (Quality.SENSOR_FAULT, 65535)
        sim.faults.clear()
        sim.physics.water.depth_cm = 450.0
        assert (await depth()).quality is Quality.OUT_OF_RANGE
        sim.faults.stuck.add("water_depth_cm")
        assert (await depth()).value == pytest.approx(450.0)
        sim.physics.water.depth_cm = 5.0
        assert (await depth()).value == pytest.approx(450.0)
        sim.faults.clear()
        assert (await depth()).value == pytest.approx(5.0)


class FakeLink:
    """A device that records the order of operations; its first read waits for ``gate``."""

    def __init__(self, name: str, profile: Profile, log: list[str]) -> None:
        self.name = name
        self.profile = profile
        self.log = log
        self.gate = asyncio.Event()
        self.first_read = asyncio.Event()

    def requests_for(self, points: Sequence[Point]) -> Sequence[tuple[Point, ...]]:
        return [(p,) for p in points]

    async def read(self, points: Sequence[Point]) -> Mapping[str, Decoded]:
        if not self.first_read.is_set():
            self.first_read.set()
            await self.gate.wait()
        self.log.append(f"read {points[0].name}")
        return {p.name: (0, False) for p in points}

    async def write(self, point: Point, value: Value) -> None:
        self.log.append(f"write {point.name}")


async def test_a_write_goes_ahead_of_the_polls_still_queued(flood: Profile) -> None:
    log: list[str] = []
    link = FakeLink("fa", flood, log)
    sched = BusScheduler([link], clock=Clock())
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(sched.run(), name="bus")
        await link.first_read.wait()  # a poll cycle of 7 single-point reads has begun
        write = tg.create_task(sched.write("fa", "siren", True))
        await asyncio.sleep(0)
        link.gate.set()
        await write
        runner.cancel()
    # the read in flight finishes, then the write, then the rest of the cycle, whose
    # siren_on read is the write's read-back
    assert log[1] == "write siren"
    assert sum(entry.startswith("read") for entry in log[2:]) >= len(flood.polled) - 1
    assert "read siren_on" in log[2:]


def test_a_cached_reading_turns_stale_without_being_restamped() -> None:
    r = Reading("fa", "water_depth_cm", 12.0, Quality.GOOD, ts=100.0)
    assert aged(r, now=105.0, max_age_s=10.0) == r
    old = aged(r, now=111.0, max_age_s=10.0)
    assert (old.quality, old.ts, old.value) == (Quality.STALE, 100.0, 12.0)


def test_the_breaker_probes_once_after_its_backoff_and_backs_off_further() -> None:
    waits = iter([1.0, 2.0, 4.0])
    b = Breaker(lambda: waits, threshold=1)
    states: list[BreakerState] = []
    assert b.allow(0.0)
    b.failure(0.0)
    states.append(b.state)
    assert not b.allow(0.5)
    assert b.allow(1.0)
    states.append(b.state)
    b.failure(1.0)
    assert not b.allow(2.9)  # the second wait is longer
    assert b.allow(3.0)
    b.success()
    states.append(b.state)
    assert states == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


async def test_ten_minute_rain_is_derived_from_the_tipping_bucket_counter(rain: Profile) -> None:
    clock = Clock()
    readings: list[Reading] = []
    async with (
        run_simulator(rain, transport="pty", clock=clock) as sim,
        ModbusLine.rtu(sim.path, rain.transport) as line,
    ):
        sim.physics.set_rain(60.0)
        sched = BusScheduler([ModbusDevice("rn", rain, line)], sink=readings.append, clock=clock)
        start = clock.t
        for _ in range(70):
            await sched.run_due()
            clock.t += 10.0
    derived = [r for r in readings if r.point == "rain_mm_10min"]
    # nothing until the counter's history covers ten minutes, then 60 mm/h * 10 min
    assert min(r.ts for r in derived) - start == 600.0
    assert all(r.quality is Quality.GOOD for r in derived)
    assert all(isinstance(r.value, float) and 9.5 <= r.value <= 10.5 for r in derived)


def test_a_counter_reset_restarts_the_window() -> None:
    from edge.drivers.derived import WindowDelta
    from shared.profiles import Derived

    w = WindowDelta(Derived(source="c", method="window_delta", window_s=60))
    assert w.add(0, 10.0) is None
    assert w.add(60, 15.0) == 5.0
    assert w.add(90, 1.0) is None  # device restarted: counter went back
    assert w.add(150, 4.0) == 3.0


async def test_the_run_loop_serves_writes_between_polls(underpass: Profile) -> None:
    async with run_simulator(underpass, transport="tcp") as sim, ModbusLine.tcp(sim.host, sim.port) as line:
        sched = BusScheduler([ModbusDevice("up", underpass, line)])
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(sched.run(), name="bus")
            await sched.write("up", "barrier_cmd", "close")
            assert sim.physics.barrier.state == "closing"
            (r,) = await sched.read_now("up", ["barrier_state"])
            assert r.value == "closing"
            task.cancel()
    assert sched.counters("up").writes == 1


async def test_writes_outside_the_profile_are_refused_before_the_line(flood: Profile) -> None:
    log: list[str] = []
    sched = BusScheduler([FakeLink("fa", flood, log)], clock=Clock())
    with pytest.raises(CommandRejected):
        await sched.write("fa", "battery_v", 12.0)
    with pytest.raises(CommandRejected):
        await sched.write("fa", "siren", 3)
    assert log == []
