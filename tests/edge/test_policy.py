"""Table tests for the pure local policy and the pure command planner."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.commands import DryRun, Prealert, Refusal, SelfTest, SelfTestPoint, WritePlan, judge_selftest, plan
from edge.config import PolicySection
from edge.policy import PolicyDevice, PolicyEvent, PolicyState, decide, velocity_mm_per_day
from shared import messages as m
from shared.paths import profiles_dir
from shared.profiles import Kind, load_profile
from shared.signing import sign_command

P = PolicySection(debounce_s=2.0)
UP = (PolicyDevice("up", Kind.UNDERPASS, ("up", "water_depth_cm")),)


def r(point: str, value: m.Scalar, ts: float, q: m.Quality = m.Quality.GOOD, device: str = "up") -> m.Reading:
    return m.Reading(seq=0, ts=ts, prio=m.Priority.TELEMETRY, device=device, point=point, value=value, quality=q)


def latest(*readings: m.Reading) -> dict[tuple[str, str], m.Reading]:
    return {(x.device, x.point): x for x in readings}


@pytest.mark.parametrize(
    ("depths", "state", "closes"),
    [
        ([(0, 10.0), (1, 14.9)], "open", False),  # below the closing depth
        ([(0, 15.0), (1, 15.5)], "open", False),  # above, but not for the debounce period yet
        ([(0, 15.0), (2, 15.5)], "open", True),  # above for 2 s: close
        ([(0, 15.0), (1, 14.0), (2, 15.1)], "open", False),  # dipped below: debounce restarts
        ([(0, 15.0), (2, 16.0)], "closed", False),  # already closed
        ([(0, 15.0), (2, 16.0)], "closing", False),  # already closing
    ],
)
def test_underpass_closes_after_debounce(depths: list[tuple[float, float]], state: str, closes: bool) -> None:
    s = PolicyState()
    actions: list[m.Action] = []
    for ts, d in depths:
        dec = decide(s, UP, latest(r("water_depth_cm", d, ts), r("barrier_state", state, ts)), P, ts)
        s = dec.state
        actions += [a.action for a in dec.actions]
    assert actions == ([m.Action.BARRIER_CLOSE] if closes else [])


@pytest.mark.parametrize(
    "quality", [m.Quality.STALE, m.Quality.COMM_FAIL, m.Quality.OUT_OF_RANGE, m.Quality.SENSOR_FAULT]
)
def test_untrusted_depth_never_acts_and_is_reported_once(quality: m.Quality) -> None:
    s = PolicyState()
    events: list[PolicyEvent] = []
    for ts in (0.0, 5.0, 10.0):
        dec = decide(s, UP, latest(r("water_depth_cm", 99.0, ts, quality), r("barrier_state", "open", ts)), P, ts)
        s = dec.state
        assert dec.actions == ()
        events += dec.events
    assert [e.kind for e in events] == ["policy.depth_untrusted"]


def test_old_reading_is_not_fresh() -> None:
    """A good reading older than the data age limit does not close anything."""
    dec = decide(
        PolicyState(),
        UP,
        latest(r("water_depth_cm", 30.0, 0.0), r("barrier_state", "open", 0.0)),
        PolicySection(),
        now=60.0,
    )
    assert dec.actions == ()


def test_forecast_closes_before_the_depth_is_reached() -> None:
    dec = decide(
        PolicyState(),
        UP,
        latest(r("water_depth_cm", 6.0, 0.0), r("barrier_state", "open", 0.0)),
        P,
        0.0,
        forecast_warns=frozenset({"up"}),
    )
    assert [a.action for a in dec.actions] == [m.Action.BARRIER_CLOSE]
    assert "forecast" in dec.actions[0].reason


def test_close_is_not_repeated_while_in_progress() -> None:
    """One request, then another only after the verify timeout if the barrier still is not closed."""
    s, n = PolicyState(), 0
    p = PolicySection(verify_timeout_s=10.0)
    for ts in range(0, 25):
        dec = decide(s, UP, latest(r("water_depth_cm", 20.0, ts), r("barrier_state", "open", ts)), p, ts)
        s, n = dec.state, n + len(dec.actions)
    assert n == 3  # at 0, 10 and 20 s


def test_gate_watches_the_depth_source_it_is_given() -> None:
    gate = (PolicyDevice("gate", Kind.RIVER_GATE, ("gauge", "water_depth_cm")),)
    dec = decide(
        PolicyState(),
        gate,
        latest(r("water_depth_cm", 40.0, 0.0, device="gauge"), r("gate_state", "open", 0.0, device="gate")),
        PolicySection(),
        0.0,
    )
    assert [(a.device, a.action) for a in dec.actions] == [("gate", m.Action.GATE_CLOSE)]


def test_flood_alarm_sounds_siren_at_its_depth() -> None:
    fa = (PolicyDevice("fa", Kind.FLOOD_ALARM, ("fa", "water_depth_cm")),)
    quiet = decide(
        PolicyState(),
        fa,
        latest(r("water_depth_cm", 9.0, 0.0, device="fa"), r("siren_on", False, 0.0, device="fa")),
        PolicySection(),
        0.0,
    )
    loud = decide(
        PolicyState(),
        fa,
        latest(r("water_depth_cm", 10.5, 0.0, device="fa"), r("siren_on", False, 0.0, device="fa")),
        PolicySection(),
        0.0,
    )
    assert quiet.actions == ()
    assert [a.action for a in loud.actions] == [m.Action.SIREN_ON]


def test_displacement_grades_change_with_velocity() -> None:
    """2 mm/day is a warning, 20 mm/day an alarm; each change of grade is one event."""
    dev = (PolicyDevice("slope", Kind.DISPLACEMENT, None),)
    s, kinds = PolicyState(), []
    t, d = 0.0, 0.0
    for rate in [0.1] * 130 + [2.0] * 130 + [20.0] * 130:  # mm/day, one sample a minute
        t += 60.0
        d += rate * 60 / 86400
        dec = decide(s, dev, latest(r("displacement_mm", d, t, device="slope")), PolicySection(), t)
        s = dec.state
        kinds += [e.kind for e in dec.events]
    assert kinds == ["displacement.warning", "displacement.alarm"]


def test_velocity_needs_an_hour() -> None:
    assert velocity_mm_per_day(((0.0, 0.0), (1800.0, 1.0))) is None
    assert velocity_mm_per_day(((0.0, 0.0), (3600.0, 1.0))) == pytest.approx(24.0)


# --- command planning ----------------------------------------------------------------------------

KEY = Ed25519PrivateKey.generate()
PROFILE = load_profile(profiles_dir() / "underpass-jk-up300.toml")


def cmd(action: m.Action, **kw: object) -> m.Command:
    now = time.time()
    base: dict[str, object] = {
        "cmd_id": "c1",
        "site": "gg-a-01",
        "device": "up",
        "action": action,
        "issued_by": "kim",
        "issued_at": now,
        "not_after": now + 7 * 86400,  # the parametrized commands are built at import time
    }
    base.update(kw)
    return sign_command(m.Command(**base), KEY)  # type: ignore[arg-type]


def do_plan(c: m.Command, *readings: m.Reading) -> Refusal | WritePlan | SelfTest | DryRun | Prealert:
    return plan(
        c,
        site="gg-a-01",
        key=KEY.public_key(),
        devices={"up": PROFILE},
        depth_of={"up": ("up", "water_depth_cm")},
        latest=latest(*readings),
        policy=PolicySection(),
        now=time.time(),
    )


def test_close_plans_a_write_with_read_back() -> None:
    p = do_plan(cmd(m.Action.BARRIER_CLOSE))
    assert p == WritePlan("up", "barrier_cmd", "close", "barrier_state", "closed", 30.0)


@pytest.mark.parametrize(
    ("command", "age_depth", "reason"),
    [
        (cmd(m.Action.BARRIER_OPEN), (0, 1.0), "second approver"),
        (cmd(m.Action.BARRIER_OPEN, approved_by=["kim"]), (0, 1.0), "second approver"),
        (cmd(m.Action.BARRIER_OPEN, approved_by=["lee"]), (0, 7.0), "reopening depth"),
        (cmd(m.Action.BARRIER_OPEN, approved_by=["lee"]), (600, 1.0), "old"),
        (
            cmd(m.Action.BARRIER_OPEN, approved_by=["lee"]),
            (0, 1.0, m.Quality.SENSOR_FAULT),
            "sensor_fault",
        ),
        (cmd(m.Action.BARRIER_CLOSE, site="gg-b-01"), (0, 1.0), "addressed to"),
        (
            cmd(m.Action.BARRIER_CLOSE, issued_at=time.time() + 3600, not_after=time.time() + 7200),
            (0, 1.0),
            "future",
        ),
        (cmd(m.Action.GATE_CLOSE), (0, 1.0), "not an action"),
    ],
    ids=[
        "no-approver",
        "self-approval",
        "water-high",
        "stale-data",
        "sensor-fault",
        "other-site",
        "future",
        "wrong-kind",
    ],
)
def test_refusals(command: m.Command, age_depth: tuple[float, float] | tuple[float, float, m.Quality],
                  reason: str) -> None:
    """``age_depth``: the depth reading's age in seconds, its value and quality (default good)."""
    age, depth, *q = age_depth
    out = do_plan(command, r("water_depth_cm", depth, time.time() - age, *q))
    assert isinstance(out, Refusal)
    assert out.status is m.ReplyStatus.REJECTED
    assert reason in out.reason


def test_open_with_two_people_and_low_fresh_water_is_planned() -> None:
    out = do_plan(cmd(m.Action.BARRIER_OPEN, approved_by=["lee"]), r("water_depth_cm", 1.0, time.time()))
    assert isinstance(out, WritePlan)
    assert out.expect == "open"


def test_local_mode_refuses() -> None:
    out = do_plan(cmd(m.Action.BARRIER_CLOSE), r("mode", "local", time.time()))
    assert isinstance(out, Refusal)
    assert "local mode" in out.reason


GATE = load_profile(profiles_dir() / "river-gate-jk-rg10.toml")


def gate_plan(action: m.Action, params: dict[str, m.Scalar]) -> Refusal | WritePlan | SelfTest | DryRun | Prealert:
    c = cmd(action, device="gate", params=params)
    return plan(c, site="gg-a-01", key=KEY.public_key(), devices={"gate": GATE}, depth_of={}, latest={},
                policy=PolicySection(), now=time.time())


@pytest.mark.parametrize(
    ("action", "params", "write"),
    [
        (m.Action.SIGN_SHOW, {"text": "산책로 통제 중"},
         ("sign_message", "산책로 통제 중", "sign_message", "산책로 통제 중")),
        (m.Action.BROADCAST_PLAY, {"message": "evacuate"}, ("broadcast", "evacuate", "broadcast", "evacuate")),
        (m.Action.GATE_CLOSE, {}, ("gate_cmd", "close", "gate_state", "closed")),
    ],
)
def test_a_river_gate_plans_what_the_vocabulary_writes(action: m.Action, params: dict[str, m.Scalar],
                                                       write: tuple[str, m.Scalar, str, m.Scalar]) -> None:
    """The point, value and read-back come from the vocabulary and the gate's profile."""
    out = gate_plan(action, params)
    assert isinstance(out, WritePlan)
    assert (out.point, out.value, out.readback, out.expect) == write


@pytest.mark.parametrize(
    ("action", "params", "reason"),
    [
        (m.Action.SIGN_SHOW, {"message": "산책로 통제 중"}, "does not take params.message"),
        (m.Action.SIGN_SHOW, {}, "needs params.text"),
        (m.Action.SIGN_SHOW, {"text": "Evacuate now"}, "is not one of"),
        (m.Action.BROADCAST_PLAY, {"message": "대피하십시오"}, "is not one of"),
        (m.Action.SIREN_ON, {}, "not an action of gate"),
    ],
)
def test_a_river_gate_refuses_what_the_vocabulary_does_not_allow(action: m.Action, params: dict[str, m.Scalar],
                                                                 reason: str) -> None:
    """Wrong parameter names, free text where the set is closed, an action the kind lacks."""
    out = gate_plan(action, params)
    assert isinstance(out, Refusal)
    assert reason in out.reason


def test_selftest_plans_a_read_of_every_polled_point_with_its_range() -> None:
    out = gate_plan(m.Action.DEVICE_SELFTEST, {})
    assert isinstance(out, SelfTest)
    assert [p.name for p in out.points] == [p.name for p in GATE.polled]
    level = next(p for p in out.points if p.name == "water_level_cm")
    assert (level.lo, level.hi) == (GATE.points["water_level_cm"].valid_min, GATE.points["water_level_cm"].valid_max)


ST = SelfTest("up", (SelfTestPoint("water_depth_cm", 0.0, 500.0), SelfTestPoint("barrier_state", None, None)))
GOOD = m.Quality.GOOD


@pytest.mark.parametrize(
    ("got", "status", "reason", "oks"),
    [
        ({"water_depth_cm": (3.0, GOOD), "barrier_state": ("open", GOOD)}, m.ReplyStatus.VERIFIED, "passed",
         [True, True]),
        ({"water_depth_cm": (600.0, GOOD), "barrier_state": ("open", GOOD)}, m.ReplyStatus.FAILED,
         "water_depth_cm (out of range 0..500)", [False, True]),
        ({"water_depth_cm": (612.0, m.Quality.OUT_OF_RANGE), "barrier_state": ("open", GOOD)}, m.ReplyStatus.FAILED,
         "water_depth_cm (out of range 0..500)", [False, True]),
        ({"water_depth_cm": (None, m.Quality.SENSOR_FAULT), "barrier_state": ("open", GOOD)}, m.ReplyStatus.FAILED,
         "water_depth_cm (sensor_fault)", [False, True]),
        ({"barrier_state": ("open", GOOD)}, m.ReplyStatus.FAILED, "water_depth_cm (comm_fail)", [False, True]),
        ({}, m.ReplyStatus.FAILED, "cannot be reached", [False, False]),
    ],
    ids=["healthy", "out-of-range", "classified-out-of-range", "sensor-fault", "point-not-read", "unreachable"],
)
def test_selftest_verdict_names_what_was_wrong(got: dict[str, tuple[m.Scalar, m.Quality]], status: m.ReplyStatus,
                                               reason: str, oks: list[bool]) -> None:
    """Verified only when every point is good and in range; otherwise failed, naming the point."""
    out_status, out_reason, report = judge_selftest(ST, got)
    assert out_status is status
    assert reason in out_reason
    assert [c.point for c in report] == ["water_depth_cm", "barrier_state"]
    assert [c.ok for c in report] == oks
    assert all(c.why == "" for c in report if c.ok)
    assert all(c.why for c in report if not c.ok)


def test_an_exercise_close_is_planned_as_a_dry_run_of_the_same_write() -> None:
    out = do_plan(cmd(m.Action.BARRIER_CLOSE, exercise=True))
    assert out == DryRun(WritePlan("up", "barrier_cmd", "close", "barrier_state", "closed", 30.0))


@pytest.mark.parametrize(
    ("command", "readings", "reason"),
    [
        (cmd(m.Action.BARRIER_OPEN, approved_by=["lee"], exercise=True), [("water_depth_cm", 7.0)],
         "reopening depth"),
        (cmd(m.Action.BARRIER_OPEN, exercise=True), [("water_depth_cm", 1.0)], "second approver"),
        (cmd(m.Action.BARRIER_CLOSE, exercise=True), [("mode", "local")], "local mode"),
        (cmd(m.Action.BARRIER_CLOSE, exercise=True, site="gg-b-01"), [], "addressed to"),
        (cmd(m.Action.BARRIER_CLOSE, exercise=True, issued_at=1.0, not_after=2.0), [], "expired"),
    ],
    ids=["water-high", "no-approver", "local-mode", "other-site", "expired"],
)
def test_an_exercise_meets_every_check_a_real_command_meets(command: m.Command, readings: list[tuple[str, m.Scalar]],
                                                           reason: str) -> None:
    """``readings``: (point, value), read just now."""
    out = do_plan(command, *(r(point, value, time.time()) for point, value in readings))
    assert isinstance(out, Refusal)
    assert reason in out.reason


def test_no_close_before_the_barrier_state_has_been_read() -> None:
    """Just started, water at 20 cm, only the depth read so far: nothing is asked; the state's
    reading (same poll) then decides: closed → nothing, open → close."""
    dec = decide(PolicyState(), UP, latest(r("water_depth_cm", 20.0, 0.0)), PolicySection(), 0.0)
    assert dec.actions == ()
    closed = decide(dec.state, UP, latest(r("water_depth_cm", 20.0, 0.0), r("barrier_state", "closed", 0.0)),
                    PolicySection(), 0.0)
    assert closed.actions == ()
    opened = decide(dec.state, UP, latest(r("water_depth_cm", 20.0, 0.0), r("barrier_state", "open", 0.0)),
                    PolicySection(), 0.0)
    assert [a.action for a in opened.actions] == [m.Action.BARRIER_CLOSE]


def test_a_state_read_but_not_good_does_not_hold_back_a_close() -> None:
    """Closing is the fail-safe direction: a barrier_state in comm_fail still gets the close."""
    dec = decide(PolicyState(), UP, latest(r("water_depth_cm", 20.0, 0.0),
                                           r("barrier_state", None, 0.0, m.Quality.COMM_FAIL)), PolicySection(), 0.0)
    assert [a.action for a in dec.actions] == [m.Action.BARRIER_CLOSE]
