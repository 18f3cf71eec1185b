"""The console's live events keep their JSON shape: each typed change encodes to the body the
console (hub/web/) reads, field for field."""

from __future__ import annotations

import msgspec
import pytest

from hub.live import (
    AlarmChanged,
    Change,
    CommandChanged,
    EscalationRaised,
    IncidentChanged,
    LatestChanged,
    LatestPoint,
    LiveEvent,
    OperationStarted,
    SiteBorn,
    SiteEvent,
    SiteStateChanged,
)

CASES: list[tuple[Change, str, dict[str, object]]] = [
    (LatestChanged(site="s", points=[LatestPoint(device="d", point="p", value=1.5, quality="good", ts=1.0)]),
     "latest", {"site": "s", "points": [{"device": "d", "point": "p", "value": 1.5, "quality": "good", "ts": 1.0}]}),
    (SiteEvent(site="s", seq=3, kind="barrier.closed", device=None, detail="x", ts=2.0),
     "event", {"site": "s", "seq": 3, "kind": "barrier.closed", "device": None, "detail": "x", "ts": 2.0}),
    (AlarmChanged(id=1, site="s", device="d", point="p", rule="r", priority="high", state="unack", active=True,
                  event="activate", actor="system", reason="why", ts=1.0, incident_id=None, late=True, source="edge"),
     "alarm", {"id": 1, "site": "s", "device": "d", "point": "p", "rule": "r", "priority": "high",
               "state": "unack", "active": True, "event": "activate", "actor": "system", "reason": "why",
               "ts": 1.0, "incident_id": None, "late": True, "source": "edge"}),
    (IncidentChanged(id=7, area="a", state="open"), "incident", {"id": 7, "area": "a", "state": "open"}),
    (CommandChanged(cmd_id="c", state="sent", detail=""), "command", {"cmd_id": "c", "state": "sent", "detail": ""}),
    (OperationStarted(id="o", kind="block", area="a"), "operation", {"id": "o", "kind": "block", "area": "a"}),
    (SiteStateChanged(site="s", state="online", boot="b"), "site", {"site": "s", "state": "online", "boot": "b"}),
    (SiteBorn(site="s", birth="b", devices=2), "site", {"site": "s", "birth": "b", "devices": 2}),
    (EscalationRaised(delivery_id=1, identifier="i", thread="t", recipient="r", headline="h", state="pending",
                      attempts=2, last_error="e", escalated_to=None),
     "escalation", {"delivery_id": 1, "identifier": "i", "thread": "t", "recipient": "r", "headline": "h",
                    "state": "pending", "attempts": 2, "last_error": "e", "escalated_to": None}),
]


@pytest.mark.parametrize(("change", "kind", "body"), CASES, ids=[c[1] for c in CASES])
def test_each_change_is_the_json_the_console_reads(change: Change, kind: str, body: dict[str, object]) -> None:
    """Same event name, same keys in the same order, same values."""
    ev = LiveEvent.of(change)
    assert ev.kind == kind
    assert ev.data == msgspec.json.encode(body)
