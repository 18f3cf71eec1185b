"""The agent's slope detector on an accelerating displacement simulator, and ``stale`` quality
when a line stalls; real simulators, a real mTLS broker and the real hub."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from edge.agent import age_limit_s
from edge.sim.servers import run_simulator
from shared import messages as m
from shared.paths import profiles_dir
from shared.profiles import load_profile
from tests.conftest import PkiFixture
from tests.edge.harness import running_agent, underpass_sim, until, write_config
from tests.edge.real_hub import RealHub, running_real_hub
from trust.broker import RunningBroker

pytestmark = pytest.mark.broker

SIM_HOURS_PER_SECOND = 3600.0  # the slope's physics runs an hour per real second


def _slope_site(tmp_path: Path, pki: PkiFixture, site: str, broker: RunningBroker, pty: str, profile: Path) -> Path:
    d = pki.dir
    path = tmp_path / "site.toml"
    path.write_text(f"""
[site]
id = "{site}"
state_dir = "{tmp_path / "state"}"

[hub]
host = "{broker.host}"
port = {broker.port}
ca = "{d / "ca.pem"}"
cert = "{d / site / "cert.pem"}"
key = "{d / site / "key.pem"}"
command_key = "{d / "command-signing" / "pub.pem"}"

[slope]
noise_mm = 0.001
baseline_mm_per_day = 0.0
watch_mm_per_day = 1.0
velocity_window_days = {2.0 / 86400}
downslope_sign = 1
sample_every_s = 0.4

[devices.slope]
profile = "{profile}"
transport = "rtu://{pty}"
""")
    return path


def _fast_profile(tmp_path: Path) -> Path:
    """The JK-DX200 profile polled every 0.5 s instead of 5 s, so a test sees many samples."""
    text = (profiles_dir() / "displacement-jk-dx200.toml").read_text()
    assert "poll_s = 5.0" in text
    path = tmp_path / "displacement-fast.toml"
    path.write_text(text.replace("poll_s = 5.0", "poll_s = 0.5"))
    return path


@pytest.mark.parametrize(("accel_per_h", "final"), [(1.15, "alarm"), (1.0, "watch")],
                         ids=["accelerating", "steady-creep"])
async def test_slope_detector_raises_an_alarm_priority_event_only_when_the_slope_accelerates(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path, accel_per_h: float, final: str
) -> None:
    """Accelerating creep (the rate grows 15 % per simulated hour): the grade climbs to
    ``displacement.alarm``, sent with alarm priority and the detector's time of failure.
    Steady creep at the same starting rate: ``displacement.watch`` and never an alarm."""
    site = test_pki.take_site()
    profile_path = _fast_profile(tmp_path)
    start = time.monotonic()
    async with (
        run_simulator(load_profile(profile_path), transport="pty",
                      clock=lambda: (time.monotonic() - start) * SIM_HOURS_PER_SECOND) as sim,
        running_real_hub(broker, test_pki, tmp_path) as hub,
    ):
        sim.physics.slope.rate_mm_per_h = 0.05
        sim.physics.slope.accel_per_h = accel_per_h
        cfg = _slope_site(tmp_path, test_pki, site, broker, sim.path, profile_path)
        async with running_agent(cfg):
            def kinds() -> list[str]:
                return [e.kind for e in hub.events(site) if e.kind.startswith("displacement.")]

            if final == "alarm":
                await until(lambda: "displacement.alarm" in kinds(), 40, "a displacement alarm at the hub")
            else:
                await until(lambda: "displacement.watch" in kinds(), 20, "the creep is watched")
                await asyncio.sleep(12.0)  # long enough for the accelerating case to reach its alarm
    events = [e for e in hub.events(site) if e.kind.startswith("displacement.")]
    assert events[-1].kind == f"displacement.{final}"
    if final == "alarm":
        alarm = events[-1]
        assert alarm.prio is m.Priority.ALARM
        assert alarm.device == "slope"
        assert "slope detector: alarm" in alarm.detail
        assert alarm.values["detector"] == "alarm"
        assert isinstance(alarm.values["time_of_failure_in_days"], float)
        assert [e.kind for e in events] == ["displacement.watch", "displacement.warning", "displacement.alarm"]
        assert all(e.prio is m.Priority.EVENT for e in events[:-1])
    else:
        assert [e.kind for e in events] == ["displacement.watch"]


def _stale_depths(hub: RealHub, site: str) -> list[tuple[float, float]]:
    """(acquisition time, value) of every stale water_depth_cm reading the hub committed."""
    rows = hub._rows("SELECT ts, num FROM records WHERE site=? AND type='reading' AND point='water_depth_cm'"
                     " AND quality='stale' ORDER BY seq", (site,))
    return [(float(ts), float(num)) for ts, num in rows]  # type: ignore[arg-type]


async def test_a_value_not_read_again_within_its_age_limit_goes_stale_and_is_never_restamped(
    broker: RunningBroker, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """Another request holds the underpass's line for 3 s (as a slow transaction would): the
    depth, polled every 0.5 s, goes stale after 1.5 s with its value and acquisition time
    unchanged; the stale reading reaches the hub, the local policy reports the depth as
    untrusted, and the next poll after the stall is good again."""
    site = test_pki.take_site()
    profile = load_profile(profiles_dir() / "underpass-jk-up300.toml")
    assert age_limit_s(profile, profile.points["water_depth_cm"]) == 1.5
    async with underpass_sim() as sim, running_real_hub(broker, test_pki, tmp_path) as hub:
        sim.physics.water.depth_cm = 4.0
        cfg = write_config(tmp_path / "site.toml", test_pki, site, broker, sim)
        key = ("barrier", "water_depth_cm")
        async with running_agent(cfg) as agent:
            await until(lambda: key in agent.latest and agent.latest[key].quality is m.Quality.GOOD, 10,
                        "a good depth")
            sched = next(iter(agent.schedulers.values()))
            async with sched._line:  # the line is busy: no poll gets through
                last_good = agent.latest[key]
                await until(lambda: agent.latest[key].quality is m.Quality.STALE, 5, "the depth goes stale")
                stale = agent.latest[key]
                assert (stale.ts, stale.value) == (last_good.ts, last_good.value)
                assert time.time() - stale.ts > 1.5
                await asyncio.sleep(1.0)
                assert agent.latest[key] == stale  # marked once, not re-stamped or repeated
            await until(lambda: agent.latest[key].quality is m.Quality.GOOD, 5, "fresh again after the stall")
            await until(lambda: bool(_stale_depths(hub, site)), 10, "the stale reading at the hub")
            await until(lambda: "policy.depth_untrusted" in {e.kind for e in hub.events(site)}, 10,
                        "the policy reports the untrusted depth")
    assert _stale_depths(hub, site) == [(last_good.ts, last_good.value)]
