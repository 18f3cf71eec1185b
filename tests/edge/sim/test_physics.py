"""Simulator physics: barrier travel and limit switches, jams, creep, rain, replays."""

from __future__ import annotations

import pytest

from edge.sim import replay
from edge.sim.physics import Barrier, DevicePhysics, RainCounter, Slope, Water
from shared.profiles import Kind


def test_the_barrier_takes_its_travel_time_and_sets_limit_switches() -> None:
    b = Barrier(travel_s=8.0)
    assert (b.state, b.limit_open, b.limit_closed) == ("open", True, False)
    assert b.command("close")
    b.step(4.0)
    assert (b.state, b.limit_open, b.limit_closed) == ("closing", False, False)
    b.step(4.0)
    assert (b.state, b.limit_closed) == ("closed", True)
    b.command("open")
    b.step(2.0)
    assert b.state == "opening"
    b.command("close")  # reverse mid-travel: closes from where it is
    b.step(2.0)
    assert b.state == "closed"


def test_a_jammed_barrier_faults_and_local_mode_ignores_commands() -> None:
    b = Barrier(travel_s=8.0, jam_detect_s=3.0, jammed=True)
    b.command("close")
    b.step(2.0)
    assert b.state == "closing"
    b.step(1.5)
    assert (b.state, b.limit_open, b.limit_closed) == ("fault", False, False)
    assert not b.command("open")
    b.clear_jam()
    b.local = True
    assert not b.command("close")


def test_water_rises_with_rain_and_drains() -> None:
    w = Water(rain_mm_per_h=60.0, inflow_cm_per_mm=0.5, drain_cm_per_h=10.0)
    w.step(3600)
    assert w.depth_cm == pytest.approx(20.0)
    w.rain_mm_per_h = 0.0
    w.step(3 * 3600)
    assert w.depth_cm == 0.0


def test_creep_can_accelerate() -> None:
    steady, accel = Slope(rate_mm_per_h=1.0), Slope(rate_mm_per_h=1.0, accel_per_h=2.0)
    for _ in range(10):
        steady.step(3600)
        accel.step(3600)
    assert steady.displacement_mm == pytest.approx(10.0)
    assert accel.displacement_mm > 100.0


def test_the_rain_counter_counts_whole_tips() -> None:
    r = RainCounter(rain_mm_per_h=1.2, mm_per_tip=0.5)
    r.step(3600)
    assert (r.tips, r.total_mm) == (2, 1.0)
    assert r.accumulated_mm == pytest.approx(0.2)


def test_a_floodnet_event_replays_at_speed(shared_data: object) -> None:
    event = replay.floodnet_event("deepest")
    assert event.max_depth_cm > 50
    phys = DevicePhysics(kind=Kind.FLOOD_ALARM)
    replay.apply(phys, event, speed=100.0)
    peak_t = max(event.depth_cm, key=lambda p: p[1])[0]
    phys.step(peak_t / 100.0)
    assert phys.water.depth_cm == pytest.approx(event.max_depth_cm)


def test_the_walnut_creek_storm_drives_rain_and_stage(shared_data: object) -> None:
    storm = replay.walnut_creek_storm("2024-08-08")
    assert max(v for _, v in storm.rain_mm_per_h) > 20  # Debby's heaviest 5 minutes
    phys = DevicePhysics(kind=Kind.RAIN_GAUGE)
    replay.apply(phys, storm, speed=3600.0)
    for _ in range(24 * 60):
        phys.step(1.0)  # one simulated day in 24 minutes of steps
    assert phys.rain.total_mm > 50
    assert max(v for _, v in storm.stage_rise_cm) > 100
