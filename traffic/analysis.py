"""One frame's detection stage: detect, group, and describe each group for assessment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from traffic.detector import Detector
from traffic.grouping import find_groups
from traffic.imaging import Image, image_size
from traffic.models import Detection, GroupContext, TrafficGroup, scale_bbox
from traffic.settings import GroupingSettings


@dataclass(frozen=True)
class FrameAnalysis:
    """What the detector stage found in one frame."""

    image_size: tuple[int, int]
    detections: tuple[Detection, ...]
    groups: tuple[TrafficGroup, ...]
    tracking_epoch: int | None = None
    """The camera's tracking epoch the track ids belong to (a new epoch: ids start again); None: no tracking."""

    def context(self, group: TrafficGroup) -> GroupContext:
        """The assessor's view of one group."""
        members = tuple(self.detections[i] for i in group.member_indices)
        return GroupContext(group=group, detections=members, image_size=self.image_size)


def analyse_detections(
    detections: Sequence[Detection], size: tuple[int, int], grouping: GroupingSettings
) -> FrameAnalysis:
    """Group already-detected objects of a frame of ``size`` (width, height)."""
    found = tuple(detections)
    return FrameAnalysis(image_size=size, detections=found, groups=tuple(find_groups(found, size, grouping)))


def analyse_frame(image: Image, detector: Detector, grouping: GroupingSettings) -> FrameAnalysis:
    """Detect objects in ``image`` and group them."""
    return analyse_detections(detector.detect(image), image_size(image), grouping)


def analyse_frames(
    images: Sequence[Image],
    detector: Detector,
    grouping: GroupingSettings,
    sizes: Sequence[tuple[int, int]] | None = None,
) -> list[FrameAnalysis]:
    """Detect objects in every image, one batched predict per image size, then group each frame on its own.

    Frames of one size are letterboxed alike, so each gets the boxes it would get alone; a batch of
    mixed sizes would be padded to one square shape and its boxes would move (measured: IoU 0.68).
    ``sizes``: each frame's full (width, height) when its image was decoded smaller; boxes are scaled to it.
    """
    by_size: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_size.setdefault(tuple(image.shape), []).append(index)
    found: dict[int, list[Detection]] = {}
    for indexes in by_size.values():
        found |= dict(zip(indexes, detector.detect_many([images[i] for i in indexes]), strict=True))
    analyses = []
    for i, image in enumerate(images):
        size = image_size(image)
        full = sizes[i] if sizes is not None else size
        detections = found[i] if full == size else scaled(found[i], size, full)
        analyses.append(analyse_detections(detections, full, grouping))
    return analyses


def scaled(detections: Sequence[Detection], size: tuple[int, int], full: tuple[int, int]) -> list[Detection]:
    """Detections found on an image of ``size``, in the coordinates of the same frame at ``full`` size."""
    return [replace(d, bbox=scale_bbox(d.bbox, size, full)) for d in detections]
