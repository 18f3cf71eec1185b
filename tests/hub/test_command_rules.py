"""Table tests for the hub's pure command rules: what a kind may be told (from the action
vocabulary) and what block and evacuate plan for an area."""

from __future__ import annotations

import pytest

from hub.commands import DeviceRef, Draft, OperationKind, check_action, plan_operation
from hub.errors import Refused
from shared.messages import Action, Scalar

AREA = [
    DeviceRef("s1", "up", "underpass"),
    DeviceRef("s2", "gate", "river_gate"),
    DeviceRef("s3", "alarm", "flood_alarm"),
    DeviceRef("s4", "slope", "displacement"),
    DeviceRef("s5", "rain", "rain_gauge"),
]


@pytest.mark.parametrize(
    ("kind", "action", "params"),
    [
        ("underpass", Action.BARRIER_CLOSE, {}),
        ("underpass", Action.DEVICE_SELFTEST, {}),
        ("river_gate", Action.SIGN_SHOW, {"text": "FLOOD RISK - NO ENTRY"}),
        ("river_gate", Action.BROADCAST_PLAY, {"message": "flood_warning"}),
        ("flood_alarm", Action.SIREN_OFF, {}),
    ],
)
def test_actions_a_kind_offers_with_fitting_params_pass(kind: str, action: Action, params: dict[str, Scalar]) -> None:
    check_action(kind, Draft("s", "d", action, params))


@pytest.mark.parametrize(
    ("kind", "action", "params", "reason"),
    [
        (None, Action.BARRIER_CLOSE, {}, "s/d: unknown device"),
        ("underpass", Action.SIREN_ON, {}, "s/d: a underpass does not take siren.on"),
        ("displacement", Action.BARRIER_CLOSE, {}, "a displacement does not take barrier.close"),
        ("river_gate", Action.SIGN_SHOW, {"message": "대피하십시오 / Evacuate now"}, "does not take params.message"),
        ("river_gate", Action.SIGN_SHOW, {"text": "대피하십시오 / Evacuate now"}, "is not one of"),
        ("river_gate", Action.BROADCAST_PLAY, {"message": "대피하십시오 / Evacuate now"}, "is not one of"),
        ("river_gate", Action.BROADCAST_PLAY, {}, "needs params.message"),
    ],
)
def test_what_a_kind_cannot_do_is_refused_with_the_reason(kind: str | None, action: Action,
                                                          params: dict[str, Scalar], reason: str) -> None:
    """Refused at the hub, before anything is signed, saying why."""
    with pytest.raises(Refused) as exc:
        check_action(kind, Draft("s", "d", action, params))
    assert reason in str(exc.value)


def test_block_closes_every_barrier_and_gate() -> None:
    assert plan_operation(OperationKind.BLOCK, AREA) == [
        Draft("s1", "up", Action.BARRIER_CLOSE),
        Draft("s2", "gate", Action.GATE_CLOSE),
    ]


def test_evacuate_plans_only_actions_the_kinds_have_with_valid_params() -> None:
    """Sirens on flood alarms, sign and broadcast on river gates; an underpass has no siren."""
    drafts = plan_operation(OperationKind.EVACUATE, AREA)
    assert drafts == [
        Draft("s2", "gate", Action.SIGN_SHOW, {"text": "하천 범람 위험: 진입 금지"}),
        Draft("s2", "gate", Action.BROADCAST_PLAY, {"message": "evacuate"}),
        Draft("s3", "alarm", Action.SIREN_ON),
    ]
    kinds = {(d.site, d.device): d.kind for d in AREA}
    for d in drafts:
        check_action(kinds[(d.site, d.device)], d)
