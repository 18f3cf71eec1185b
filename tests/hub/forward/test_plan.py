"""Pure planning: Alert/Update/Cancel threading, references, recipients by area and priority."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hub.forward.cap import MsgType, ResponseType, Status
from hub.forward.plan import Change, Source, Thread, plan
from hub.rules import AlarmPriority
from tests.hub.forward.helpers import T0, config, notice, recipient

CENTRE = recipient("suwon-centre", "https://centre.example/cap", areas=("suwon-*",))
POLICE = recipient("police-112", "https://112.example/cap", areas=("*",),
                   priorities=frozenset({AlarmPriority.CRITICAL}))
FAR = recipient("yongin-centre", "https://yongin.example/cap", areas=("yongin-*",))
CFG = config(CENTRE, POLICE, FAR)


def test_raise_update_clear_thread_alert_update_cancel_with_references() -> None:
    first = plan(notice(Change.RAISE), None, CFG, "hub-test.a")
    assert first is not None
    assert first.facts.msg_type is MsgType.ALERT
    assert first.facts.references == ()
    assert [r.name for r in first.recipients] == ["suwon-centre", "police-112"]
    second = plan(notice(Change.UPDATE, at=T0 + 60), first.thread, CFG, "hub-test.b")
    assert second is not None
    assert second.facts.msg_type is MsgType.UPDATE
    assert second.facts.references == (first.facts.reference,)
    third = plan(notice(Change.CLEAR, at=T0 + 600), second.thread, CFG, "hub-test.c")
    assert third is not None
    assert third.facts.msg_type is MsgType.CANCEL
    assert third.facts.references == (first.facts.reference, second.facts.reference)
    assert third.facts.response_types == (ResponseType.ALL_CLEAR,)
    assert not third.thread.open
    # every message of the thread carries its event id (the first identifier) in incidents
    assert {m.facts.incidents[0] for m in (first, second, third)} == {"hub-test.a"}


def test_a_clear_without_an_open_thread_sends_nothing_and_a_raise_after_it_starts_anew() -> None:
    assert plan(notice(Change.CLEAR), None, CFG, "x") is None
    closed = Thread("alarm:1", "hub-test.a", False, (), frozenset({"suwon-centre"}))
    again = plan(notice(Change.RAISE), closed, CFG, "hub-test.z")
    assert again is not None
    assert again.facts.msg_type is MsgType.ALERT
    assert again.event_id == "hub-test.z"


def test_an_update_without_a_thread_is_sent_as_an_alert() -> None:
    p = plan(notice(Change.UPDATE), None, CFG, "hub-test.u")
    assert p is not None
    assert p.facts.msg_type is MsgType.ALERT


def test_who_got_the_alert_gets_its_cancel_even_when_the_priority_fell() -> None:
    first = plan(notice(Change.RAISE), None, CFG, "a")
    assert first is not None
    low = plan(notice(Change.UPDATE, priority=AlarmPriority.LOW), first.thread, CFG, "b")
    assert low is not None
    assert [r.name for r in low.recipients] == ["suwon-centre", "police-112"]
    end = plan(notice(Change.CLEAR, priority=AlarmPriority.LOW), low.thread, CFG, "c")
    assert end is not None
    assert [r.name for r in end.recipients] == ["suwon-centre", "police-112"]


@pytest.mark.parametrize(
    ("area", "priority", "source", "expected"),
    [
        ("suwon-gwonseon", AlarmPriority.CRITICAL, Source.ALARM, ["suwon-centre", "police-112"]),
        ("suwon-gwonseon", AlarmPriority.HIGH, Source.ALARM, ["suwon-centre"]),
        ("yongin-giheung", AlarmPriority.HIGH, Source.ALARM, ["yongin-centre"]),
        ("yongin-giheung", AlarmPriority.LOW, Source.OPERATION, ["police-112", "yongin-centre"]),
    ],
)
def test_recipients_are_chosen_by_area_and_priority(area: str, priority: AlarmPriority, source: Source,
                                                    expected: list[str]) -> None:
    p = plan(notice(area=area, priority=priority, source=source), None, CFG, "id")
    assert p is not None
    assert [r.name for r in p.recipients] == expected


def test_exercise_notices_and_configs_say_exercise() -> None:
    p = plan(notice(exercise=True), None, CFG, "id")
    assert p is not None
    assert p.facts.status is Status.EXERCISE
    q = plan(notice(), None, replace(CFG, exercise=True), "id")
    assert q is not None
    assert q.facts.status is Status.EXERCISE


def test_sent_is_written_in_the_configured_offset() -> None:
    p = plan(notice(), None, CFG, "id")
    assert p is not None
    assert p.facts.sent_text == "2024-08-08T15:30:00+09:00"
