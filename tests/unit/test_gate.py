"""The assessment gate: scene signature, reuse of recent verdicts, cooldown, budget and max_groups."""

from __future__ import annotations

import math

import pytest

from traffic.gate import (
    GateDecision,
    RecentVerdict,
    SkipReason,
    decide,
    group_signature,
    same_scene,
    scene_key,
    spacing,
    track_set,
    watched,
)
from traffic.models import (
    BBox,
    Detection,
    GroupContext,
    GroupVerdict,
    RiskLevel,
    TrafficGroup,
    Usage,
    VerdictStatus,
)
from traffic.risk import error_verdict
from traffic.settings import PipelineSettings

SIZE = (1280, 720)
NOW = 1000.0
PIPELINE = PipelineSettings()


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
        "dedupe_window_s": PIPELINE.dedupe_window_s,
        "recheck_s": PIPELINE.dedupe_recheck_s,
        "distance_tolerance": PIPELINE.dedupe_distance_tolerance,
    }
    options.update(overrides)
    return decide(contexts, **options)  # type: ignore[arg-type]


CARS = _context(1, ("car", "person", "car"), (100, 100, 300, 250))


def test_signature_is_class_multiset_and_grid_box_then_spacing() -> None:
    assert scene_key(CARS) == "car,car,person@0,1,1,2"
    assert scene_key(CARS, cells=4) == "car,car,person@0,0,0,1"
    assert group_signature(CARS) == "car,car,person@0,1,1,2|0.00,0.00"  # car-car, car-person; one box


def test_signature_ignores_member_order_and_jitter_within_a_cell() -> None:
    moved = _context(5, ("person", "car", "car"), (104, 97, 305, 252))
    assert group_signature(moved) == group_signature(CARS)


def test_signature_changes_with_members_or_a_real_move() -> None:
    assert group_signature(_context(1, ("car", "person"), (100, 100, 300, 250))) != group_signature(CARS)
    assert group_signature(_context(1, ("car", "person", "car"), (700, 400, 900, 550))) != group_signature(CARS)


def test_signature_clamps_the_far_edge_into_the_last_cell() -> None:
    edge = _context(1, ("car", "car"), (1200, 650, 1280, 720))
    assert scene_key(edge).endswith("@7,7,7,7")


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
    recent = {group_signature(CARS): RecentVerdict(_verdict(1), NOW - 5)}
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
    assert (decision.assess, decision.reuse, decision.skipped_reason, decision.dropped) == ((1,), (), None, ())
    # Stale and ERROR verdicts will never be reused: the caller may forget them; a future one may be.
    assert decision.forget == (() if recent.assessed_at > NOW else (group_signature(CARS),))


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


# --------------------------------------------------------------------------- spacing and re-checks

CAR: BBox = (400, 300, 600, 420)
"""120 px high, centre (500, 360)."""
KERB: BBox = (640, 300, 680, 400)
"""A pedestrian on the kerb: 100 px high, centre (660, 350)."""


def _scene(index: int, *members: tuple[str, BBox]) -> GroupContext:
    """A group of ``members`` (class, box); its box is their union."""
    detections = tuple(Detection(cls, 0.9, box) for cls, box in members)
    union = (
        min(b[0] for _, b in members),
        min(b[1] for _, b in members),
        max(b[2] for _, b in members),
        max(b[3] for _, b in members),
    )
    group = TrafficGroup(index, tuple(range(len(members))), union, tuple(sorted({c for c, _ in members})), 0.9)
    return GroupContext(group=group, detections=detections, image_size=SIZE)


def _shift(box: BBox, dx: float, dy: float = 0.0) -> BBox:
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def _remember(context: GroupContext, level: RiskLevel, age: float) -> dict[str, RecentVerdict]:
    return {group_signature(context): RecentVerdict(_verdict(context.group.index, level), NOW - age)}


def test_spacing_is_the_closest_pair_per_class_pair_in_box_heights() -> None:
    other_car = _shift(CAR, -250)
    [car_car, car_person] = spacing(_scene(1, ("car", CAR), ("person", KERB), ("car", other_car)))
    assert car_car == pytest.approx(250 / 120)
    assert car_person == pytest.approx(math.hypot(160, 10) / 110)  # the nearer car; mean height (120 + 100) / 2
    assert spacing(_scene(1, ("car", CAR), ("car", other_car))) == pytest.approx((250 / 120,))


def test_spacing_does_not_depend_on_member_order_or_distance_to_the_camera() -> None:
    near = _scene(1, ("car", CAR), ("person", KERB))
    assert spacing(_scene(1, ("person", KERB), ("car", CAR))) == spacing(near)
    far = _scene(1, ("car", tuple(c / 2 for c in CAR)), ("person", tuple(c / 2 for c in KERB)))  # type: ignore[arg-type]
    assert spacing(far) == pytest.approx(spacing(near))


def test_same_scene_needs_every_pair_within_the_tolerance() -> None:
    assert same_scene((1.0, 2.0), (1.1, 1.9), 0.15)
    assert not same_scene((1.0, 2.0), (1.0, 2.2), 0.15)
    assert not same_scene((1.0,), (1.0, 2.0), 10.0)
    assert same_scene((), (), 0.0)


def test_a_pedestrian_stepping_towards_the_car_breaks_reuse_jitter_does_not() -> None:
    before = _scene(1, ("car", CAR), ("person", KERB))
    recent = _remember(before, RiskLevel.NONE, age=2)
    jittered = _scene(2, ("car", _shift(CAR, 2, -1)), ("person", _shift(KERB, -3, 2)))
    stepped = _scene(2, ("car", CAR), ("person", _shift(KERB, -40)))  # off the kerb, 40 px towards the car
    assert scene_key(jittered) == scene_key(stepped) == scene_key(before)  # the coarse key cannot tell
    assert [i for i, _ in _decide([jittered], recent=recent).reuse] == [2]
    assert _decide([stepped], recent=recent).assess == (2,)


def test_drift_is_measured_from_the_verdict_not_from_the_last_frame() -> None:
    recent = _remember(_scene(1, ("car", CAR), ("person", KERB)), RiskLevel.NONE, age=2)
    # One 6-px step is 0.05 box heights, well inside the tolerance; four of them add up to 0.2.
    outcomes = [_decide([_scene(1, ("car", CAR), ("person", _shift(KERB, -6 * n)))], recent=recent) for n in (1, 2, 4)]
    assert [bool(d.reuse) for d in outcomes] == [True, True, False]


def test_never_reused_across_a_change_in_member_count() -> None:
    pair = _scene(1, ("car", CAR), ("person", KERB))
    # A second pedestrian as far from the car, inside the group's box: the car-person spacing and the grid
    # box stay, but there is one member more (or, the other way round, one the detector missed).
    crowd = _scene(1, ("car", CAR), ("person", KERB), ("person", (640, 320, 680, 420)))
    assert group_signature(crowd).startswith(f"car,person,person@{scene_key(pair).split('@')[1]}|")
    assert _decide([crowd], recent=_remember(pair, RiskLevel.NONE, age=2)).assess == (1,)
    assert _decide([pair], recent=_remember(crowd, RiskLevel.NONE, age=2)).assess == (1,)


@pytest.mark.parametrize(
    ("members", "level", "expected"),
    [
        ((("car", CAR), ("person", KERB)), RiskLevel.NONE, True),
        ((("car", CAR), ("bicycle", KERB)), RiskLevel.NONE, True),
        ((("truck", CAR), ("motorcycle", KERB)), RiskLevel.NONE, True),
        ((("car", CAR), ("truck", _shift(CAR, 250))), RiskLevel.NONE, False),
        ((("car", CAR), ("truck", _shift(CAR, 250))), RiskLevel.LOW, True),
        ((("person", KERB), ("bicycle", _shift(KERB, 10))), RiskLevel.NONE, False),  # a cyclist: no vehicle
        ((("person", KERB), ("person", _shift(KERB, 50))), RiskLevel.MEDIUM, True),
    ],
)
def test_watched_groups(members: tuple[tuple[str, BBox], ...], level: RiskLevel, expected: bool) -> None:
    assert watched(_scene(1, *members), _verdict(1, level)) is expected


def test_watched_groups_are_rechecked_sooner_than_a_longer_window() -> None:
    window = 30.0  # a deployment that lengthens the window to save calls
    age = (PIPELINE.dedupe_recheck_s + window) / 2
    assert PIPELINE.dedupe_recheck_s < age < window
    pedestrian = _scene(1, ("car", CAR), ("person", KERB))
    queue = _scene(1, ("car", CAR), ("truck", _shift(CAR, 250)))

    def decide_at(context: GroupContext, level: RiskLevel, at: float, **options: object) -> GateDecision:
        return _decide([context], recent=_remember(context, level, at), dedupe_window_s=window, **options)

    assert decide_at(pedestrian, RiskLevel.NONE, age).assess == (1,)
    assert decide_at(queue, RiskLevel.LOW, age).assess == (1,)
    assert len(decide_at(queue, RiskLevel.NONE, age).reuse) == 1
    # Younger than the re-check age, a watched group reuses like any other.
    assert len(decide_at(pedestrian, RiskLevel.NONE, PIPELINE.dedupe_recheck_s / 2).reuse) == 1
    # A re-check age at or above the window changes nothing.
    assert len(decide_at(pedestrian, RiskLevel.NONE, age, recheck_s=60.0).reuse) == 1


def test_by_default_every_group_is_rechecked_within_the_recheck_interval() -> None:
    assert PIPELINE.dedupe_window_s <= PIPELINE.dedupe_recheck_s
    queue = _scene(1, ("car", CAR), ("truck", _shift(CAR, 250)))
    assert not watched(queue, _verdict(1, RiskLevel.NONE))
    assert _decide([queue], recent=_remember(queue, RiskLevel.NONE, PIPELINE.dedupe_recheck_s + 0.5)).assess == (1,)


def test_the_newest_matching_verdict_is_reused() -> None:
    then = _scene(1, ("car", CAR), ("person", KERB))
    nearly = _scene(1, ("car", CAR), ("person", _shift(KERB, -5)))
    recent = {
        group_signature(then): RecentVerdict(_verdict(1, RiskLevel.NONE), NOW - 4),
        group_signature(nearly): RecentVerdict(_verdict(1, RiskLevel.LOW), NOW - 2),
        group_signature(_scene(1, ("car", CAR), ("person", _shift(KERB, -60)))): RecentVerdict(
            _verdict(1, RiskLevel.HIGH), NOW - 1
        ),
    }
    [(_, verdict)] = _decide([then], recent=recent).reuse
    assert verdict.risk_level is RiskLevel.LOW


def test_only_what_no_rule_will_reuse_is_forgotten() -> None:
    fresh = group_signature(_scene(1, ("car", CAR), ("person", KERB)))
    recent = {
        fresh: RecentVerdict(_verdict(), NOW - 1),
        group_signature(CARS): RecentVerdict(_verdict(), NOW - PIPELINE.dedupe_window_s),
        "car,car@0,1,1,2": RecentVerdict(_verdict(), NOW - 1),  # an older release's signature
        "car,car@0,1,1,2|x": RecentVerdict(_verdict(), NOW - 1),
        "bus,car@3,3,4,4|1.00": RecentVerdict(error_verdict(1, "timeout"), NOW - 1),
        "bus,car@3,3,4,4|2.00": RecentVerdict(_verdict(), NOW + 5),
    }
    for contexts in ([], [CARS]):
        decision = _decide(contexts, recent=recent)
        assert decision.forget == (
            group_signature(CARS),
            "car,car@0,1,1,2",
            "car,car@0,1,1,2|x",
            "bus,car@3,3,4,4|1.00",
        )
    assert _decide([_context(1, ("car", "car"), (100, 100, 300, 250))], recent=recent).assess == (1,)


def _tracked(index: int, members: dict[int, tuple[str, BBox]], epoch: int = 2) -> GroupContext:
    """A group whose members carry track ids (as with tracking on): keyed by epoch and oldest track."""
    detections = tuple(Detection(cls, 0.9, box, track_id) for track_id, (cls, box) in members.items())
    boxes = [box for _, box in members.values()]
    bbox = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    tracks = tuple(sorted(members))
    group = TrafficGroup(
        index,
        tuple(range(len(members))),
        bbox,
        tuple(sorted({c for c, _ in members.values()})),
        0.9,
        tracks=tracks,
        key=f"e{epoch}t{tracks[0]}",
    )
    return GroupContext(group=group, detections=detections, image_size=SIZE)


def _known(context: GroupContext, verdict: GroupVerdict, at: float = NOW - 5) -> dict[str, RecentVerdict]:
    return {group_signature(context): RecentVerdict(verdict, at)}


def test_a_tracked_group_keeps_its_verdict_as_it_moves_and_is_asked_again_when_a_track_joins() -> None:
    before = _tracked(1, {3: ("car", (100, 100, 180, 160)), 7: ("car", (200, 100, 280, 160))})
    # The whole group drove 400 px right: other grid cells, the same tracks, the same spacing.
    moved = _tracked(2, {3: ("car", (500, 100, 580, 160)), 7: ("car", (600, 100, 680, 160))})
    assert scene_key(before) == scene_key(moved) == "tracks:e2:3,7"
    decision = _decide([moved], recent=_known(before, _verdict(level=RiskLevel.NONE)))
    assert decision.assess == () and [i for i, _ in decision.reuse] == [2]
    # A third road user joins: another key, so the model is asked.
    joined = _tracked(
        1, {3: ("car", (500, 100, 580, 160)), 7: ("car", (600, 100, 680, 160)), 9: ("car", (700, 100, 780, 160))}
    )
    assert _decide([joined], recent=_known(before, _verdict(level=RiskLevel.NONE))).assess == (1,)
    # A member without a track yet: the group falls back to classes and place.
    untracked = replace_track(joined, 2, None)
    assert scene_key(untracked).startswith("car,car,car@")


def replace_track(context: GroupContext, member: int, track_id: int | None) -> GroupContext:
    detections = list(context.detections)
    d = detections[member]
    detections[member] = Detection(d.cls, d.confidence, d.bbox, track_id)
    tracks = tuple(sorted(t for t in (x.track_id for x in detections) if t is not None))
    group = TrafficGroup(
        context.group.index,
        context.group.member_indices,
        context.group.bbox,
        context.group.classes,
        context.group.average_confidence,
        tracks=tracks,
        key=context.group.key,
    )
    return GroupContext(group=group, detections=tuple(detections), image_size=SIZE)


def test_an_urgent_group_reuses_nothing_and_beats_the_cooldown_but_not_the_budget() -> None:
    near = _tracked(1, {3: ("car", (100, 100, 180, 160)), 7: ("person", (190, 110, 210, 160))})
    calm = _tracked(2, {11: ("car", (800, 100, 880, 160)), 12: ("car", (900, 100, 980, 160))})
    recent = {**_known(near, _verdict(1, RiskLevel.NONE)), **_known(calm, _verdict(2, RiskLevel.NONE))}
    decision = _decide([near, calm], recent=recent, urgent={1}, cooldown_active=True)
    assert decision.assess == (1,) and [i for i, _ in decision.reuse] == [2] and decision.skipped_reason is None
    other = _tracked(3, {20: ("bus", (400, 300, 600, 500)), 21: ("car", (610, 300, 700, 400))})
    cooled = _decide([near, other], urgent={1}, cooldown_active=True)
    assert cooled.assess == (1,) and cooled.dropped == ()  # the other group waits out the cooldown
    broke = _decide([near], urgent={1}, cooldown_active=True, budget_left=0)
    assert broke.assess == () and broke.skipped_reason is SkipReason.COOLDOWN


def test_members_already_close_that_close_in_further_break_reuse() -> None:
    # 0.17 box heights apart, then 0.08: less than the 0.15 tolerance, but more than 40 % of the distance.
    assert not same_scene((0.67, 0.65, 0.08), (0.67, 0.65, 0.17), 0.15)
    # Moving apart by the same amount, or closing in by less than 0.05 box heights (jitter), does not.
    assert same_scene((0.67, 0.65, 0.26), (0.67, 0.65, 0.17), 0.15)
    assert same_scene((0.67, 0.65, 0.05), (0.67, 0.65, 0.09), 0.15)


def test_a_tracked_group_is_compared_with_its_latest_verdict_only() -> None:
    # Person 7 stood 1.2 box heights from car 3 (verdict at NOW - 20), stepped away to 3 (NOW - 5), and is
    # back at 1.2: the older verdict matches that spacing, but the group changed since its latest one.
    near = _tracked(1, {3: ("car", (100, 100, 180, 200)), 7: ("person", (240, 100, 280, 200))})
    away = _tracked(1, {3: ("car", (100, 100, 180, 200)), 7: ("person", (420, 100, 460, 200))})
    recent = {**_known(near, _verdict(level=RiskLevel.NONE), NOW - 20), **_known(away, _verdict(), NOW - 5)}
    assert _decide([near], recent=recent, recheck_s=60.0).assess == (1,)


def test_a_join_refused_by_the_cooldown_is_not_forgotten_when_the_detector_misses_the_joiner() -> None:
    pair = {3: ("car", (100, 100, 180, 160)), 7: ("car", (200, 100, 280, 160))}
    before = _tracked(1, pair)
    joined = _tracked(1, {**pair, 9: ("motorcycle", (290, 110, 330, 160))})
    recent = _known(before, _verdict(level=RiskLevel.NONE), NOW - 10)
    # Frame 1: the motorcycle joins under cooldown: no call, and the gate names the change it left unserved.
    first = _decide([joined], recent=recent, cooldown_active=True)
    assert first.assess == () and first.skipped_reason is SkipReason.COOLDOWN
    assert first.unserved == ("tracks:e2:3,7,9",)
    unserved = dict.fromkeys(first.unserved, NOW)
    # Frame 2: the detector misses the motorcycle; the group looks as before, but its old verdict predates
    # the unserved change among its tracks, so it is not reused (without the record it would be), and as
    # the cooldown refused that change once, it is not refused again.
    assert [i for i, _ in _decide([before], recent=recent, now=NOW + 1.8).reuse] == [1]
    second = _decide([before], recent=recent, now=NOW + 1.8, unserved=unserved, cooldown_active=True)
    assert second.reuse == () and second.assess == (1,) and second.unserved == ()
    # Or frame 2 sees the motorcycle again: the same.
    third = _decide([joined], recent=recent, now=NOW + 1.8, unserved=unserved, cooldown_active=True)
    assert third.assess == (1,) and third.skipped_reason is None
    # A group of other tracks still waits out the cooldown.
    other = _tracked(2, {20: ("bus", (600, 300, 800, 500)), 21: ("car", (810, 300, 900, 400))})
    assert _decide([other], now=NOW + 1.8, unserved=unserved, cooldown_active=True).assess == ()
    # The budget still applies.
    assert _decide([joined], recent=recent, now=NOW + 3.6, unserved=unserved, budget_left=0).assess == ()


def test_a_verdict_newer_than_the_unserved_change_is_reused_and_old_changes_are_forgotten() -> None:
    pair = {3: ("car", (100, 100, 180, 160)), 7: ("car", (200, 100, 280, 160))}
    before = _tracked(1, pair)
    unserved = {"tracks:e2:3,7,9": NOW - 12, "tracks:e1:3,7": NOW - 2, "car,car@0,1,1,2": NOW - 1}
    decision = _decide([before], recent=_known(before, _verdict(level=RiskLevel.NONE), NOW - 5), unserved=unserved)
    assert [i for i, _ in decision.reuse] == [1]  # the change came before the verdict; another epoch's is no matter
    assert decision.forget_unserved == ("car,car@0,1,1,2",)  # not a key made of tracks
    stale = _decide([before], unserved={"tracks:e2:3,7,9": NOW - PIPELINE.dedupe_window_s})
    assert stale.forget_unserved == ("tracks:e2:3,7,9",) and stale.assess == (1,)


def test_track_set_reads_the_tracks_of_a_tracked_scene_key_only() -> None:
    assert track_set("tracks:e2:3,7,9") == ("e2", frozenset({3, 7, 9}))
    assert track_set("car,car@0,1,1,2") is None and track_set("tracks:e2:x") is None
