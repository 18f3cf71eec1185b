"""The edge's event kinds (shared/site_events.py): one list, each alarm with a way back to normal."""

from __future__ import annotations

from shared import site_events as se
from shared.messages import Action


def test_every_local_action_has_its_start_and_both_outcomes() -> None:
    for action in se.LOCAL_ACTIONS:
        assert {se.local(action), se.local_outcome(action, True), se.local_outcome(action, False)} <= set(se.KINDS)
    assert se.local_outcome(Action.BARRIER_CLOSE, False) == "local.barrier.close.failed"


def test_the_designs_alarms_are_alarms_and_bookkeeping_is_not() -> None:
    """DESIGN §6: a barrier that failed to close, a siren that sounded, a slope alarm."""
    failed = se.alarm_of("local.barrier.close.failed")
    slope = se.alarm_of("displacement.alarm")
    siren = se.alarm_of("local.siren.on.verified")
    assert failed is not None
    assert slope is not None
    assert siren is not None
    assert (failed.priority, slope.priority) == ("critical", "critical")
    assert "local.barrier.close.verified" in failed.cleared_by
    assert "displacement.normal" in slope.cleared_by
    for kind in ("local.barrier.close", "outbox.thinned", "outbox.new_epoch", "outbox.replaced", "agent.health",
                 "policy.depth_untrusted", "displacement.normal", "no.such.kind", ""):
        assert se.alarm_of(kind) is None, kind


def test_every_alarm_can_return_to_normal_by_a_kind_that_exists_and_is_not_itself() -> None:
    for alarm in se.ALARMS:
        assert alarm.cleared_by or alarm.cleared_when, alarm.name
        assert alarm.name not in alarm.cleared_by
        assert set(alarm.cleared_by) <= set(se.KINDS), alarm.name
        assert all(c.values for c in alarm.cleared_when)
        for kind in alarm.cleared_by:
            assert alarm in se.cleared_by_event(kind)
        for c in alarm.cleared_when:
            assert (alarm, c.values) in se.cleared_by_reading(c.point)


def test_alarm_names_are_unique_and_are_their_raising_kind() -> None:
    names = [a.name for a in se.ALARMS]
    assert len(names) == len(set(names))
    assert all(se.alarm_of(n) is not None for n in names)
