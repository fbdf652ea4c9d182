"""Grouping: single linkage on centres, resolution independence, min size, margin, clipping."""

from __future__ import annotations

import math

import pytest

from traffic.grouping import find_groups, largest_groups, link_distance
from traffic.models import Detection
from traffic.settings import GroupingSettings

HD = (1280, 720)


def box_at(cx: float, cy: float, cls: str = "car", size: float = 20.0, conf: float = 0.9) -> Detection:
    return Detection(cls=cls, confidence=conf, bbox=(cx - size, cy - size, cx + size, cy + size))


def test_threshold_is_150px_at_1280x720_and_scales_with_the_diagonal() -> None:
    settings = GroupingSettings()
    assert link_distance(HD, settings) == pytest.approx(150.0)
    assert link_distance((2560, 1440), settings) == pytest.approx(300.0)


def test_links_within_threshold_and_not_beyond() -> None:
    settings = GroupingSettings()
    near = [box_at(100, 100), box_at(249, 100)]
    far = [box_at(100, 100), box_at(251, 100)]
    assert [g.member_indices for g in find_groups(near, HD, settings)] == [(0, 1)]
    assert find_groups(far, HD, settings) == []


def test_single_linkage_chains_through_intermediate_members() -> None:
    dets = [box_at(100, 300), box_at(240, 300), box_at(380, 300), box_at(520, 300), box_at(1200, 100)]
    groups = find_groups(dets, HD, GroupingSettings())
    assert [g.member_indices for g in groups] == [(0, 1, 2, 3)]


def test_same_scene_groups_identically_at_double_resolution() -> None:
    dets = [box_at(100, 300), box_at(240, 300), box_at(700, 300), box_at(800, 350), box_at(1200, 100)]
    doubled = [
        Detection(d.cls, d.confidence, (d.bbox[0] * 2, d.bbox[1] * 2, d.bbox[2] * 2, d.bbox[3] * 2)) for d in dets
    ]
    small = find_groups(dets, HD, GroupingSettings())
    large = find_groups(doubled, (2560, 1440), GroupingSettings())
    assert [g.member_indices for g in small] == [g.member_indices for g in large] == [(0, 1), (2, 3)]


def test_min_group_size_and_singletons() -> None:
    dets = [box_at(100, 100), box_at(150, 100), box_at(900, 600)]
    assert [g.member_indices for g in find_groups(dets, HD, GroupingSettings(min_group_size=3))] == []
    assert [g.member_indices for g in find_groups(dets, HD, GroupingSettings(min_group_size=2))] == [(0, 1)]
    assert find_groups([], HD, GroupingSettings()) == []


def test_union_box_with_margin_is_clipped_to_the_image() -> None:
    dets = [
        Detection("car", 0.8, (5.0, 10.0, 50.0, 60.0)),
        Detection("person", 0.6, (40.0, 20.0, 90.5, 80.2)),
    ]
    (group,) = find_groups(dets, HD, GroupingSettings(margin_px=12))
    assert group.bbox == (0.0, 0.0, 103.0, 93.0)
    assert group.classes == ("car", "person")
    assert group.average_confidence == pytest.approx(0.7)
    assert group.index == 1 and group.object_count == 2

    edge = [
        Detection("car", 0.9, (1250.0, 700.0, 1280.0, 720.0)),
        Detection("car", 0.9, (1200, 690, 1260, 719)),
    ]
    (clipped,) = find_groups(edge, HD, GroupingSettings())
    assert clipped.bbox[2] <= 1280 and clipped.bbox[3] <= 720


def test_groups_are_numbered_by_first_member() -> None:
    dets = [box_at(1000, 600), box_at(100, 100), box_at(1050, 600), box_at(130, 120)]
    groups = find_groups(dets, HD, GroupingSettings())
    assert [(g.index, g.member_indices) for g in groups] == [(1, (0, 2)), (2, (1, 3))]


def test_largest_groups_keeps_the_most_populous_in_index_order() -> None:
    dets = [box_at(100, 100), box_at(120, 100), box_at(600, 300), box_at(620, 300), box_at(640, 300)]
    dets += [box_at(1100, 600), box_at(1120, 600)]
    groups = find_groups(dets, HD, GroupingSettings())
    assert [g.index for g in largest_groups(groups, 2)] == [1, 2]
    assert [g.object_count for g in largest_groups(groups, 1)] == [3]
    assert largest_groups(groups, 0) == []


def test_two_hundred_detections_group_quickly_and_deterministically() -> None:
    dets = [box_at(10 + (i % 20) * 60, 10 + (i // 20) * 70) for i in range(200)]
    first = find_groups(dets, HD, GroupingSettings())
    assert first == find_groups(dets, HD, GroupingSettings())
    assert sum(g.object_count for g in first) == 200
    assert math.isclose(first[0].average_confidence, 0.9)
