"""Tests of the offline rules assessor on hand-built groups."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from traffic.models import BBox, Detection, GroupContext, RiskLevel, TrafficGroup, VerdictStatus
from traffic.risk import RULES_MODEL
from traffic.rules_assessor import RulesAssessor, box_gap, intersection_area, iou
from traffic.settings import RiskThresholds

SIZE = (1280, 720)


def _context(
    members: list[tuple[str, BBox]], *, size: tuple[int, int] = SIZE, first_index: int = 4, scale: float = 1.0
) -> GroupContext:
    """A group of ``members`` with frame indices from ``first_index``, everything scaled by ``scale``."""
    detections = tuple(
        Detection(cls, 0.8, (box[0] * scale, box[1] * scale, box[2] * scale, box[3] * scale)) for cls, box in members
    )
    union = (
        min(d.bbox[0] for d in detections),
        min(d.bbox[1] for d in detections),
        max(d.bbox[2] for d in detections),
        max(d.bbox[3] for d in detections),
    )
    group = TrafficGroup(
        index=1,
        member_indices=tuple(range(first_index, first_index + len(detections))),
        bbox=union,
        classes=tuple(sorted({cls for cls, _ in members})),
        average_confidence=0.8,
    )
    return GroupContext(group, detections, (int(size[0] * scale), int(size[1] * scale)))


def _assessor(language: str = "zh-CN") -> RulesAssessor:
    """An assessor with the default thresholds and a fake clock that advances 5 ms per call."""
    ticks: Iterator[float] = iter(step * 0.005 for step in range(1_000))
    return RulesAssessor(RiskThresholds(), language=language, clock=lambda: next(ticks))


CAR: BBox = (400.0, 300.0, 600.0, 420.0)
SCENES: dict[str, tuple[list[tuple[str, BBox]], RiskLevel]] = {
    "far apart": ([("person", (100.0, 300.0, 130.0, 380.0)), ("car", CAR)], RiskLevel.NONE),
    "person close": ([("person", (630.0, 330.0, 660.0, 410.0)), ("car", CAR)], RiskLevel.LOW),
    "person near": ([("person", (610.0, 330.0, 640.0, 410.0)), ("car", CAR)], RiskLevel.MEDIUM),
    "person on car": ([("person", (580.0, 330.0, 610.0, 410.0)), ("car", CAR)], RiskLevel.HIGH),
    "bicycle on car": ([("bicycle", (580.0, 340.0, 640.0, 410.0)), ("car", CAR)], RiskLevel.MEDIUM),
    "rider on motorcycle": (
        [("person", (480.0, 260.0, 520.0, 380.0)), ("motorcycle", (470.0, 320.0, 530.0, 420.0))],
        RiskLevel.NONE,
    ),
    "cars touching": ([("car", CAR), ("car", (602.0, 300.0, 800.0, 420.0))], RiskLevel.LOW),
    "cars overlapping": ([("car", CAR), ("truck", (500.0, 300.0, 700.0, 420.0))], RiskLevel.MEDIUM),
    "same car twice": ([("car", CAR), ("truck", (405.0, 302.0, 602.0, 420.0))], RiskLevel.NONE),
    "dense": ([("car", (i * 100.0, 100.0, i * 100.0 + 60.0, 150.0)) for i in range(6)], RiskLevel.LOW),
}


@pytest.mark.parametrize("name", list(SCENES))
def test_scene_levels(name: str) -> None:
    members, expected = SCENES[name]
    assert _assessor().assess(_context(members)).risk_level is expected


@pytest.mark.parametrize("name", list(SCENES))
@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_levels_do_not_depend_on_resolution(name: str, scale: float) -> None:
    members, expected = SCENES[name]
    assert _assessor().assess(_context(members, scale=scale)).risk_level is expected


def test_person_overlapping_car_verdict() -> None:
    verdict = _assessor().assess(_context(SCENES["person on car"][0]))
    assert verdict.status is VerdictStatus.OK
    assert verdict.model == RULES_MODEL
    assert verdict.risk_types == ("pedestrian_conflict",)
    assert verdict.trigger_object_ids == (4, 5)
    assert verdict.danger_object_count == 2
    assert verdict.confidence == RiskThresholds().high
    assert verdict.latency_s == pytest.approx(0.005)
    assert verdict.group_index == 1
    assert "行人" in verdict.description


def test_none_verdict_has_no_types_or_triggers() -> None:
    verdict = _assessor().assess(_context(SCENES["far apart"][0]))
    assert (verdict.risk_types, verdict.trigger_object_ids, verdict.danger_object_count) == ((), (), 0)
    assert verdict.description


def test_triggers_are_those_of_the_top_level_and_types_are_ordered() -> None:
    members = [
        ("car", CAR),
        ("person", (570.0, 330.0, 598.0, 410.0)),
        ("car", (602.0, 300.0, 800.0, 420.0)),
    ]
    verdict = _assessor().assess(_context(members, first_index=10))
    assert verdict.risk_level is RiskLevel.HIGH
    assert verdict.trigger_object_ids == (10, 11)
    assert verdict.risk_types[0] == "pedestrian_conflict"
    assert "close_following" in verdict.risk_types


def test_bicycle_overlap_stays_medium_even_next_to_a_severe_type() -> None:
    members = [
        ("bicycle", (580.0, 340.0, 640.0, 410.0)),
        ("car", CAR),
        ("truck", (500.0, 300.0, 700.0, 420.0)),
    ]
    assert _assessor().assess(_context(members)).risk_level is RiskLevel.MEDIUM


def test_big_crowd_is_congestion_and_only_low() -> None:
    members = [("car", (i * 100.0, 100.0, i * 100.0 + 60.0, 150.0)) for i in range(12)]
    verdict = _assessor().assess(_context(members))
    assert (verdict.risk_level, verdict.risk_types) == (RiskLevel.LOW, ("congestion",))
    assert verdict.danger_object_count == 12


def test_english_descriptions() -> None:
    verdict = _assessor("en").assess(_context(SCENES["person on car"][0]))
    assert verdict.description == "A pedestrian is overlapping a car: possible pedestrian conflict"
    none = _assessor("en-US").assess(_context(SCENES["far apart"][0]))
    assert none.description.startswith("No clear risk")


def test_thresholds_set_the_confidences() -> None:
    thresholds = RiskThresholds(low=0.3, medium=0.5, high=0.7)
    assessor = RulesAssessor(thresholds)
    assert assessor.assess(_context(SCENES["person near"][0])).confidence == 0.5
    assert assessor.assess(_context(SCENES["far apart"][0])).confidence == pytest.approx(0.7)


def test_geometry_helpers() -> None:
    a: BBox = (0.0, 0.0, 10.0, 10.0)
    assert intersection_area(a, (5.0, 5.0, 15.0, 15.0)) == 25.0
    assert iou(a, (5.0, 5.0, 15.0, 15.0)) == pytest.approx(25.0 / 175.0)
    assert iou((0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0)) == 0.0
    assert box_gap(a, (13.0, 14.0, 20.0, 20.0)) == 5.0
    assert box_gap(a, (10.0, 0.0, 20.0, 10.0)) == 0.0
