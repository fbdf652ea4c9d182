"""Clustering of detections into traffic groups (single linkage on box centres)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from traffic.models import BBox, Detection, TrafficGroup
from traffic.settings import GroupingSettings


def link_distance(image_size: tuple[int, int], settings: GroupingSettings) -> float:
    """Link distance in pixels for an image: a fixed fraction of its shorter side.

    The shorter side rather than the width or diagonal, so that portrait and landscape frames of one
    scene scale alike; for every 16:9 frame this equals 150 px at 1280x720.
    """
    return settings.distance_ratio * min(image_size)


def find_groups(
    detections: Sequence[Detection], image_size: tuple[int, int], settings: GroupingSettings
) -> list[TrafficGroup]:
    """Cluster detections whose centres chain within the link distance; keep clusters of min size."""
    if len(detections) < max(settings.min_group_size, 1):
        return []
    labels = _single_linkage(detections, link_distance(image_size, settings))
    clusters: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        clusters.setdefault(label, []).append(index)
    members = sorted((m for m in clusters.values() if len(m) >= settings.min_group_size), key=lambda m: m[0])
    return [
        _make_group(number, tuple(m), detections, image_size, settings.margin_px)
        for number, m in enumerate(members, start=1)
    ]


def largest_groups(groups: Sequence[TrafficGroup], limit: int) -> list[TrafficGroup]:
    """At most ``limit`` groups, the most populous first among equals by index, in index order."""
    if limit <= 0:
        return []
    ranked = sorted(groups, key=lambda g: (-g.object_count, g.index))[:limit]
    return sorted(ranked, key=lambda g: g.index)


def _single_linkage(detections: Sequence[Detection], threshold: float) -> list[int]:
    """Connected-component labels of the graph linking centres no further apart than ``threshold``."""
    centres = np.array([d.center for d in detections], dtype=np.float64)
    diff = centres[:, None, :] - centres[None, :, :]
    adjacent = np.einsum("ijk,ijk->ij", diff, diff) <= threshold * threshold
    parent = list(range(len(detections)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(adjacent, k=1)), strict=True):
        ri, rj = root(int(i)), root(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return [root(i) for i in range(len(detections))]


def _make_group(
    number: int,
    members: tuple[int, ...],
    detections: Sequence[Detection],
    image_size: tuple[int, int],
    margin: int,
) -> TrafficGroup:
    """Build one group: union box plus margin clipped to the image, classes, mean confidence."""
    boxes = [detections[i].bbox for i in members]
    width, height = image_size
    bbox: BBox = (
        float(max(0, math.floor(min(b[0] for b in boxes)) - margin)),
        float(max(0, math.floor(min(b[1] for b in boxes)) - margin)),
        float(min(width, math.ceil(max(b[2] for b in boxes)) + margin)),
        float(min(height, math.ceil(max(b[3] for b in boxes)) + margin)),
    )
    confidences = [detections[i].confidence for i in members]
    return TrafficGroup(
        index=number,
        member_indices=members,
        bbox=bbox,
        classes=tuple(sorted({detections[i].cls for i in members})),
        average_confidence=round(sum(confidences) / len(confidences), 4),
    )
