"""The assessment gate: scene signature, reuse of recent verdicts, cooldown, budget and max_groups."""

from __future__ import annotations

import pytest

from traffic.gate import GateDecision, RecentVerdict, SkipReason, decide, group_signature
from traffic.models import Detection, GroupContext, GroupVerdict, RiskLevel, TrafficGroup, Usage, VerdictStatus
from traffic.risk import error_verdict

SIZE = (1280, 720)
NOW = 1000.0


def _context(index: int, classes: tuple[str, ...], bbox: tuple[float, float, float, float]) -> GroupContext:
    """A group of ``classes`` (one detection each) with the given box."""
    detections = tuple(Detection(cls, 0.9, bbox) for cls in classes)
    group = TrafficGroup(index, tuple(range(len(classes))), bbox, tuple(sorted(set(classes))), 0.9)
    return GroupContext(group=group, detections=detections, image_size=SIZE)


def _verdict(index: int = 1, level: RiskLevel = RiskLevel.MEDIUM) -> GroupVerdict:
    """An OK verdict with latency and usage, as a real call gives."""
    return GroupVerdict(
        index, VerdictStatus.OK, level, 0.7, ("jaywalking",), "d", model="m", latency_s=2.0, usage=Usage(100, 20)
    )


def _decide(contexts: list[GroupContext], **overrides: object) -> GateDecision:
    """``decide`` with permissive defaults: no cooldown, nothing recent, plenty of budget."""
    options: dict[str, object] = {
        "now": NOW,
        "cooldown_active": False,
        "recent": {},
        "budget_left": 100,
        "max_groups": 8,
        "dedupe_window_s": 30.0,
    }
    options.update(overrides)
    return decide(contexts, **options)  # type: ignore[arg-type]


CARS = _context(1, ("car", "person", "car"), (100, 100, 300, 250))


def test_signature_is_class_multiset_and_grid_box() -> None:
    assert group_signature(CARS) == "car,car,person@0,1,1,2"
    assert group_signature(CARS, cells=4) == "car,car,person@0,0,0,1"


def test_signature_ignores_member_order_and_jitter_within_a_cell() -> None:
    moved = _context(5, ("person", "car", "car"), (104, 97, 305, 252))
    assert group_signature(moved) == group_signature(CARS)


def test_signature_changes_with_members_or_a_real_move() -> None:
    assert group_signature(_context(1, ("car", "person"), (100, 100, 300, 250))) != group_signature(CARS)
    assert group_signature(_context(1, ("car", "person", "car"), (700, 400, 900, 550))) != group_signature(CARS)


def test_signature_clamps_the_far_edge_into_the_last_cell() -> None:
    edge = _context(1, ("car", "car"), (1200, 650, 1280, 720))
    assert group_signature(edge).endswith("@7,7,7,7")


def test_signature_rejects_an_empty_grid() -> None:
    with pytest.raises(ValueError, match="cells"):
        group_signature(CARS, cells=0)


def test_no_groups_is_skipped() -> None:
    assert _decide([]) == GateDecision((), (), SkipReason.NO_GROUPS, ())
    assert _decide([]).skipped_reason == "no_groups"


def test_every_group_is_assessed_when_allowed() -> None:
    decision = _decide([CARS, _context(2, ("bus", "car"), (800, 300, 1000, 500))])
    assert decision == GateDecision((1, 2), (), None, ())
    assert decision.expected == (1, 2)


def test_unchanged_group_reuses_a_fresh_ok_verdict_relabelled() -> None:
    moved = _context(3, ("car", "person", "car"), (102, 101, 301, 251))
    recent = {group_signature(CARS): RecentVerdict(_verdict(1), NOW - 10)}
    decision = _decide([moved], recent=recent)
    assert decision.assess == () and decision.skipped_reason is None and decision.dropped == ()
    [(index, verdict)] = decision.reuse
    assert index == 3 and verdict.group_index == 3
    assert verdict.risk_level is RiskLevel.MEDIUM and verdict.risk_types == ("jaywalking",)
    assert verdict.latency_s == 0.0 and verdict.usage == Usage()
    assert decision.expected == (3,)


@pytest.mark.parametrize(
    "recent",
    [
        RecentVerdict(_verdict(), NOW - 30.0),
        RecentVerdict(_verdict(), NOW - 31.0),
        RecentVerdict(_verdict(), NOW + 5.0),
        RecentVerdict(error_verdict(1, "timeout"), NOW - 1.0),
    ],
    ids=["at-window", "stale", "future", "error"],
)
def test_stale_future_or_error_verdicts_are_not_reused(recent: RecentVerdict) -> None:
    decision = _decide([CARS], recent={group_signature(CARS): recent})
    assert decision == GateDecision((1,), (), None, ())


def test_changed_group_is_assessed_not_reused() -> None:
    recent = {group_signature(CARS): RecentVerdict(_verdict(), NOW - 1)}
    changed = _context(1, ("car", "person", "car", "bicycle"), (100, 100, 300, 250))
    assert _decide([changed], recent=recent).assess == (1,)


def test_cooldown_assesses_nothing_but_still_reuses() -> None:
    other = _context(2, ("bus", "car"), (800, 300, 1000, 500))
    recent = {group_signature(CARS): RecentVerdict(_verdict(), NOW - 1)}
    decision = _decide([CARS, other], cooldown_active=True, recent=recent)
    assert decision.assess == () and decision.dropped == ()
    assert decision.skipped_reason == "cooldown"
    assert [index for index, _ in decision.reuse] == [1]


def test_cooldown_with_nothing_reusable() -> None:
    assert _decide([CARS], cooldown_active=True) == GateDecision((), (), SkipReason.COOLDOWN, ())


def test_everything_reused_counts_as_assessed_even_in_cooldown_or_without_budget() -> None:
    recent = {group_signature(CARS): RecentVerdict(_verdict(), NOW - 1)}
    for overrides in ({}, {"cooldown_active": True}, {"budget_left": 0}):
        decision = _decide([CARS], recent=recent, **overrides)
        assert decision.skipped_reason is None and decision.assess == () and len(decision.reuse) == 1


def _crowd() -> list[GroupContext]:
    """Four groups of sizes 2, 4, 3, 4 (indexes 1..4)."""
    return [
        _context(1, ("car", "car"), (0, 0, 100, 100)),
        _context(2, ("car",) * 4, (200, 0, 300, 100)),
        _context(3, ("car",) * 3, (400, 0, 500, 100)),
        _context(4, ("person",) * 4, (600, 0, 700, 100)),
    ]


def test_max_groups_keeps_the_largest_then_lowest_index() -> None:
    decision = _decide(_crowd(), max_groups=2)
    assert decision == GateDecision((2, 4), (), None, (1, 3))


def test_budget_limits_like_max_groups() -> None:
    decision = _decide(_crowd(), budget_left=3, max_groups=8)
    assert decision == GateDecision((2, 3, 4), (), None, (1,))


def test_no_budget_left_skips_with_budget_and_drops_every_group() -> None:
    decision = _decide(_crowd(), budget_left=0)
    assert decision == GateDecision((), (), SkipReason.BUDGET, (1, 2, 3, 4))
    assert decision.skipped_reason == "budget"


def test_reused_groups_do_not_use_the_budget() -> None:
    crowd = _crowd()
    recent = {group_signature(crowd[1]): RecentVerdict(_verdict(), NOW - 1)}
    decision = _decide(crowd, recent=recent, budget_left=2)
    assert decision.assess == (3, 4) and decision.dropped == (1,)
    assert [index for index, _ in decision.reuse] == [2]
    assert decision.expected == (2, 3, 4)


def test_no_budget_with_some_reuse_still_reports_budget() -> None:
    crowd = _crowd()
    recent = {group_signature(crowd[0]): RecentVerdict(_verdict(), NOW - 1)}
    decision = _decide(crowd, recent=recent, budget_left=0)
    assert decision.skipped_reason == "budget" and decision.dropped == (2, 3, 4) and len(decision.reuse) == 1


def test_decision_ignores_input_order() -> None:
    assert _decide(list(reversed(_crowd())), max_groups=2) == _decide(_crowd(), max_groups=2)


def test_max_groups_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_groups"):
        _decide([CARS], max_groups=0)
