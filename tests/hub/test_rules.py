"""Pure rules, sequence tracking and flood grouping: tables and properties."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.incidents import FloodGrouper
from hub.rules import RuleKind, RuleParams, Sample, evaluate, rules_for, stale_verdict
from hub.seqs import SiteSeqs
from shared.messages import Quality, Scalar

P = RuleParams()
UNDERPASS = rules_for("underpass", P)


def verdicts(point: str, value: Scalar, quality: Quality = Quality.GOOD, active: frozenset[str] = frozenset(),
             window: tuple[tuple[float, float], ...] = ()) -> dict[str, bool]:
    return {v.rule.name: v.active for v in evaluate(UNDERPASS[point], Sample(1000.0, value, quality), window, active)}


@pytest.mark.parametrize(
    ("value", "active", "expected"),
    [
        (14.9, frozenset(), False),
        (15.0, frozenset(), True),  # the closing depth itself raises
        (14.5, frozenset({"closing_depth"}), True),  # hysteresis: within the deadband stays active
        (14.0, frozenset({"closing_depth"}), False),
    ],
)
def test_closing_depth_threshold_with_hysteresis(value: float, active: frozenset[str], expected: bool) -> None:
    """The underpass water-depth alarm raises at 15 cm and clears only below the deadband."""
    assert verdicts("water_depth_cm", value, active=active)["closing_depth"] is expected


def test_a_bad_value_neither_raises_nor_clears_a_threshold_but_raises_a_fault() -> None:
    """A failing sensor is a fault, not a flood and not the end of one."""
    v = verdicts("water_depth_cm", 99.0, Quality.SENSOR_FAULT, active=frozenset({"closing_depth"}))
    assert "closing_depth" not in v
    assert v["fault"] is True


def test_rate_of_rise_needs_a_window_and_raises_above_the_limit() -> None:
    """3 cm/min over five minutes raises the rise alarm; one sample is not enough to judge."""
    assert "rise" not in verdicts("water_depth_cm", 5.0)
    window = ((700.0, 0.0), (850.0, 7.5))
    assert verdicts("water_depth_cm", 15.0 * 1.0, window=window)["rise"] is True
    assert verdicts("water_depth_cm", 1.0, window=window)["rise"] is False


@pytest.mark.parametrize(("value", "expected"), [("fault", True), ("closed", False), ("open", False)])
def test_barrier_fault_state(value: str, expected: bool) -> None:
    assert verdicts("barrier_state", value)["fault"] is expected


def test_stale_by_age_quality_or_offline_site() -> None:
    """Data older than the limit, a value flagged stale, or an offline site are stale."""
    rule = next(r for r in UNDERPASS["water_depth_cm"] if r.kind is RuleKind.STALE)
    assert stale_verdict(rule, 1000.0, Quality.GOOD, 1000.0 + P.data_age_limit_s - 1, True).active is False
    assert stale_verdict(rule, 1000.0, Quality.GOOD, 1000.0 + P.data_age_limit_s + 1, True).active is True
    assert stale_verdict(rule, 1000.0, Quality.STALE, 1001.0, True).active is True
    assert stale_verdict(rule, 1000.0, Quality.GOOD, 1001.0, False).active is True


def test_every_kind_has_rules_and_unknown_kinds_none() -> None:
    for kind in ("flood_alarm", "displacement", "underpass", "river_gate", "rain_gauge"):
        assert rules_for(kind, P)
    assert rules_for("toaster", P) == {}


# --- sequence tracking ---------------------------------------------------------------------


@settings(max_examples=200)
@given(n=st.integers(1, 120), drop=st.sets(st.integers(1, 120)), thinned=st.sets(st.integers(1, 120)),
       seed=st.integers(0, 2**16))
def test_watermark_never_passes_a_record_the_hub_lacks(n: int, drop: set[int], thinned: set[int], seed: int) -> None:
    """An edge sends seqs 1..n in shuffled batches, some lost on the way and some thinned at the
    edge; after resends every record still held is committed once and the watermark reaches n,
    and it never passes a record that the edge still held but the hub had not committed."""
    rng = random.Random(seed)
    tr = SiteSeqs()
    held = {s for s in range(1, n + 1) if s not in thinned}
    committed: list[int] = []

    def deliver(batch: list[int]) -> None:
        floor = min(held) if held else n + 1
        for s in batch:
            if tr.is_new(s):
                tr.add(s)
                committed.append(s)
        tr.settle(floor)
        # the edge deletes what is acked
        for s in [s for s in held if s <= tr.through]:
            assert s in committed, "acked a record the hub never committed"
            held.discard(s)

    order = sorted(held)
    batches = [order[i:i + 7] for i in range(0, len(order), 7)]
    rng.shuffle(batches)
    for b in batches:
        if not any(s in drop for s in b):
            deliver(b)
    now = 0.0
    for _ in range(50):
        now += 10
        want = tr.want_resend(now, 1.0, 3.0)
        if want is None and not tr.held and not held:
            break
        start = want if want is not None else tr.through + 1
        again = sorted(s for s in held if s >= start)
        for i in range(0, max(len(again), 1), 7):
            deliver(again[i:i + 7])
    assert tr.through >= max(committed, default=0)
    assert not held
    assert len(committed) == len(set(committed))
    assert set(committed) == {s for s in range(1, n + 1) if s not in thinned}


def test_resend_is_asked_after_the_grace_and_again_only_without_progress() -> None:
    tr = SiteSeqs()
    for s in (1, 2, 5, 6):
        tr.add(s)
    assert tr.through == 2
    assert tr.gap() == (3, 4)
    assert tr.want_resend(10.0, 1.0, 3.0) is None  # gap just seen
    assert tr.want_resend(11.0, 1.0, 3.0) == 3
    assert tr.want_resend(12.0, 1.0, 3.0) is None  # asked a moment ago
    assert tr.want_resend(14.5, 1.0, 3.0) == 3  # no progress: ask again
    tr.add(3)
    tr.add(4)
    assert tr.through == 6
    assert tr.want_resend(15.0, 1.0, 3.0) is None


# --- flood grouping --------------------------------------------------------------------------


def test_ten_alarms_in_ten_minutes_open_one_incident_per_area() -> None:
    """The 10th alarm in an area within the window opens an incident holding all 10 (DESIGN §6:
    ≥ 10 in 10 minutes); later alarms join it; another area is untouched; alarms spread over
    time never flood."""
    g = FloodGrouper(10, 600.0)
    for i in range(9):
        assert g.raised("suwon", i, 100.0 + i).open_new is False
    for i in range(10):
        assert g.raised("osan", 100 + i, i * 100.0).open_new is False
    tenth = g.raised("suwon", 9, 120.0)
    assert tenth.open_new
    assert tenth.alarms == tuple(range(10))
    g.opened("suwon", 7)
    assert g.raised("suwon", 10, 130.0).join == 7
    assert g.raised("osan", 200, 1700.0).open_new is False
    g.closed("suwon", 7)
    assert g.raised("suwon", 12, 140.0).join is None
