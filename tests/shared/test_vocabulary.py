"""The action vocabulary: what each kind offers, what each action writes, and that it never
drifts from the shipped device profiles."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from shared import vocabulary as v
from shared.messages import Action
from shared.paths import profiles_dir
from shared.profiles import Kind, Profile, load_profile

PROFILES = sorted(profiles_dir().glob("*.toml"))


def _profile(kind: Kind) -> Profile:
    return next(p for p in map(load_profile, PROFILES) if p.kind is kind)


def test_every_action_and_every_kind_has_exactly_one_entry() -> None:
    """The vocabulary covers the closed set of actions and of kinds once each."""
    assert sorted(a.action for a in v.VOCABULARY.actions) == sorted(Action)
    assert sorted(k.kind.value for k in v.VOCABULARY.kinds) == sorted(k.value for k in Kind)


@pytest.mark.parametrize(
    ("kind", "actions"),
    [
        (Kind.FLOOD_ALARM, {Action.SIREN_ON, Action.SIREN_OFF, Action.DEVICE_SELFTEST, Action.FORECAST_PREALERT}),
        (Kind.DISPLACEMENT, {Action.DEVICE_SELFTEST}),
        (Kind.UNDERPASS, {Action.BARRIER_CLOSE, Action.BARRIER_OPEN, Action.DEVICE_SELFTEST,
                          Action.FORECAST_PREALERT}),
        (Kind.RIVER_GATE, {Action.GATE_CLOSE, Action.GATE_OPEN, Action.SIGN_SHOW, Action.BROADCAST_PLAY,
                           Action.DEVICE_SELFTEST, Action.FORECAST_PREALERT}),
        (Kind.RAIN_GAUGE, {Action.DEVICE_SELFTEST}),
    ],
)
def test_what_each_kind_offers(kind: Kind, actions: set[Action]) -> None:
    """Each kind offers the actions its points can carry out (an underpass has no siren)."""
    assert set(v.offers(kind)) == actions
    assert set(v.offers(kind.value)) == actions


@pytest.mark.parametrize(
    ("action", "params", "write"),
    [
        (Action.BARRIER_CLOSE, {}, ("barrier_cmd", "close")),
        (Action.BARRIER_OPEN, {}, ("barrier_cmd", "open")),
        (Action.GATE_CLOSE, {}, ("gate_cmd", "close")),
        (Action.GATE_OPEN, {}, ("gate_cmd", "open")),
        (Action.SIREN_ON, {}, ("siren", True)),
        (Action.SIREN_OFF, {}, ("siren", False)),
        (Action.SIGN_SHOW, {"text": "산책로 통제 중"}, ("sign_message", "산책로 통제 중")),
        (Action.BROADCAST_PLAY, {"message": "evacuate"}, ("broadcast", "evacuate")),
        (Action.DEVICE_SELFTEST, {}, None),
    ],
)
def test_what_each_action_writes(action: Action, params: dict[str, object], write: object) -> None:
    """Each action writes one point with a fixed value or a parameter's value; self-test writes nothing."""
    assert v.check_params(action, params) is None
    assert v.write_of(action, params) == write


def test_only_the_openings_need_two_people() -> None:
    """barrier.open and gate.open are the deliberate (two-person) actions."""
    assert {a for a in Action if v.is_opening(a)} == {Action.BARRIER_OPEN, Action.GATE_OPEN}


@pytest.mark.parametrize(
    ("kind", "action", "params", "problem"),
    [
        ("underpass", Action.SIREN_ON, {}, "a underpass does not take siren.on"),
        ("lamp_post", Action.DEVICE_SELFTEST, {}, "a lamp_post does not take device.selftest"),
        ("river_gate", Action.SIGN_SHOW, {}, "sign.show needs params.text"),
        ("river_gate", Action.SIGN_SHOW, {"message": "x"}, "sign.show does not take params.message (it takes text)"),
        ("river_gate", Action.SIGN_SHOW, {"text": "free text"}, "params.text='free text' is not one of"),
        ("river_gate", Action.BROADCAST_PLAY, {"message": "hello"}, "params.message='hello' is not one of"),
        ("river_gate", Action.BROADCAST_PLAY, {"message": 3}, "params.message must be a str, not 3"),
        ("river_gate", Action.GATE_CLOSE, {"speed": 1}, "gate.close does not take params.speed (it takes no "),
    ],
)
def test_what_is_refused_and_why(kind: str, action: Action, params: dict[str, object], problem: str) -> None:
    """An action a kind lacks, a missing, unknown, mistyped or unlisted parameter: each says why."""
    reason = v.check(kind, action, params)
    assert reason is not None
    assert problem in reason


@pytest.mark.parametrize(
    ("kind", "block", "evacuate"),
    [
        (Kind.FLOOD_ALARM, [], [(Action.SIREN_ON, {})]),
        (Kind.DISPLACEMENT, [], []),
        (Kind.UNDERPASS, [(Action.BARRIER_CLOSE, {})], []),
        (Kind.RIVER_GATE, [(Action.GATE_CLOSE, {})],
         [(Action.SIGN_SHOW, {"text": "하천 범람 위험: 진입 금지"}), (Action.BROADCAST_PLAY, {"message": "evacuate"})]),
        (Kind.RAIN_GAUGE, [], []),
    ],
)
def test_what_block_and_evacuate_send_to_each_kind(kind: Kind, block: list[object], evacuate: list[object]) -> None:
    """Block closes barriers and gates; evacuate sounds sirens and sets signs and broadcasts."""
    assert [(s.action, s.params) for s in v.steps(kind, v.Operation.BLOCK)] == block
    assert [(s.action, s.params) for s in v.steps(kind, v.Operation.EVACUATE)] == evacuate


def test_operation_steps_are_actions_the_kind_offers_with_valid_params() -> None:
    """Every step of an operation would pass the hub's own check."""
    for spec in v.VOCABULARY.kinds:
        for op in v.Operation:
            for step in spec.steps(op):
                assert v.check(spec.kind, step.action, step.params) is None, (spec.kind, step)


def test_the_vocabulary_round_trips_as_json() -> None:
    """What the console is served decodes back to the same vocabulary."""
    assert msgspec.json.decode(v.encode(), type=v.Vocabulary) == v.VOCABULARY


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_the_vocabulary_fits_every_shipped_profile(path: Path) -> None:
    """For every action a profile's kind offers: the point it writes exists, is writable and allows
    every value the action can write; the read-back point exists and is the profile's read-back."""
    profile = load_profile(path)
    for action in v.offers(profile.kind):
        spec = v.action_spec(action)
        if spec.write is None:
            continue
        point = profile.points.get(spec.write.point)
        assert point is not None, f"{profile.model}: {action} writes missing point {spec.write.point}"
        assert point.writable, f"{profile.model}: {spec.write.point} is not writable"
        values = spec.values()
        assert values, f"{action} writes no value the profile could check"
        for value in values:
            assert value in point.allowed, f"{profile.model}: {spec.write.point}={value!r} is not allowed"
        assert spec.readback is not None
        assert spec.readback in profile.points
        assert point.readback == spec.readback, f"{profile.model}: {spec.write.point} reads back {point.readback}"


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_a_kinds_depth_point_is_a_numeric_point_of_every_shipped_profile(path: Path) -> None:
    """The point the hub judges an opening by, and the edge's policy watches by default, exists."""
    profile = load_profile(path)
    point = v.depth_point(profile.kind)
    if profile.kind in (Kind.UNDERPASS, Kind.FLOOD_ALARM, Kind.RIVER_GATE):
        assert point is not None
        assert point in profile.points, f"{profile.model} has no {point}"
        assert profile.points[point].unit == "cm"
    else:
        assert point is None


def test_every_kind_has_a_shipped_profile() -> None:
    """So the check above covers every kind."""
    assert {load_profile(p).kind for p in PROFILES} == set(Kind)
    assert _profile(Kind.UNDERPASS).points.get("siren") is None  # why an underpass offers no siren
