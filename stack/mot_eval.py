"""Tracking quality against generated ground truth with ``motmetrics`` (IDF1, identity switches, MOTA)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stack.scenes import Scene
from traffic.models import BBox, Detection
from traffic.tracking import TrackedDetection

MAX_DISTANCE = 0.5
"""A track box matches a true box when their IoU is at least 0.5 (motmetrics' distance 1 - IoU)."""


class FrameTracker(Protocol):
    """Anything that tracks frame by frame (traffic's tracker, or one compared with it)."""

    def update(self, detections: Sequence[Detection], timestamp: float) -> list[TrackedDetection]:
        """Track ids of ``detections``, in input order."""
        ...


@dataclass(frozen=True)
class TrackingQuality:
    """CLEAR-MOT and identity figures over one or more sequences."""

    idf1: float
    id_switches: int
    mota: float
    frames: int
    truths: int


def iou_distances(truth: Sequence[BBox], tracked: Sequence[BBox], max_distance: float = MAX_DISTANCE) -> np.ndarray:
    """1 - IoU between every true and every tracked box; NaN where they may not match.

    motmetrics 1.4's own ``iou_matrix`` calls ``np.asfarray``, which NumPy 2 removed.
    """
    a = np.asarray(truth, dtype=float).reshape(-1, 4)
    b = np.asarray(tracked, dtype=float).reshape(-1, 4)
    if not len(a) or not len(b):
        return np.empty((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    distance: np.ndarray = 1.0 - inter / (area_a[:, None] + area_b[None, :] - inter)
    distance[distance > max_distance] = np.nan
    return distance


def evaluate(scenes: Iterable[Scene], fps: float, make_tracker: Callable[[], FrameTracker]) -> TrackingQuality:
    """Run a fresh tracker over each scene sampled at ``fps`` and score every confirmed track box."""
    import motmetrics as mm

    accumulators = []
    frames = truths = 0
    for scene in scenes:
        tracker = make_tracker()
        acc = mm.MOTAccumulator(auto_id=True)
        for frame in scene.frames(fps):
            tracked = [t for t in tracker.update(frame.detections, frame.t) if t.track_id is not None]
            acc.update(
                [user_id for user_id, _, _ in frame.truth],
                [t.track_id for t in tracked],
                iou_distances([box for _, _, box in frame.truth], [t.detection.bbox for t in tracked]),
            )
            frames += 1
            truths += len(frame.truth)
        accumulators.append(acc)
    metrics = mm.metrics.create()
    summary = metrics.compute_many(accumulators, metrics=["idf1", "num_switches", "mota"], generate_overall=True)
    overall = summary.loc["OVERALL"]
    return TrackingQuality(float(overall["idf1"]), int(overall["num_switches"]), float(overall["mota"]), frames, truths)
