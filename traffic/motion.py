"""One camera's motion state: its tracker and the analytics fed by its tracks, saved and restored as one."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from traffic.analytics import CameraAnalytics, MotionUpdate
from traffic.errors import TrackerStateError
from traffic.models import Detection
from traffic.tracking import TrackedDetection, Tracker

_MAGIC = b"TMS1"
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class MotionStep:
    """What one frame did: its detections with track ids, in input order, and the analytics' update."""

    tracked: tuple[TrackedDetection, ...]
    analytics: MotionUpdate | None


class CameraMotion:
    """A camera's tracker and (optionally) its analytics, fed the camera's frames in capture order."""

    def __init__(self, tracker: Tracker, analytics: CameraAnalytics | None = None) -> None:
        self.tracker = tracker
        self.analytics = analytics

    def update(self, detections: Sequence[Detection], timestamp: float, image_size: tuple[int, int]) -> MotionStep:
        """Track one frame's detections, then measure from the tracks."""
        tracked = tuple(self.tracker.update(detections, timestamp))
        if self.analytics is None:
            return MotionStep(tracked, None)
        with_ids = [t.detection if t.track_id is None else _with_track(t) for t in tracked]
        return MotionStep(tracked, self.analytics.update(with_ids, timestamp, image_size))

    def state(self) -> bytes:
        """Both states in one blob: a magic, the tracker's state (length-prefixed), the analytics' state."""
        tracker = self.tracker.state()
        analytics = self.analytics.state() if self.analytics is not None else b""
        return _MAGIC + _LENGTH.pack(len(tracker)) + tracker + analytics

    def restore(self, data: bytes) -> None:
        """Continue from ``state()``'s output; ``TrackerStateError`` when it cannot."""
        head = len(_MAGIC) + _LENGTH.size
        if len(data) < head or not data.startswith(_MAGIC):
            raise TrackerStateError("not a camera motion state")
        (size,) = _LENGTH.unpack_from(data, len(_MAGIC))
        if head + size > len(data):
            raise TrackerStateError("camera motion state is truncated")
        self.tracker.restore(data[head : head + size])
        rest = data[head + size :]
        if self.analytics is not None:
            if rest:
                self.analytics.restore(rest)
            else:
                self.analytics.reset()

    def reset(self) -> None:
        """Forget every track and every measure in progress."""
        self.tracker.reset()
        if self.analytics is not None:
            self.analytics.reset()


def _with_track(tracked: TrackedDetection) -> Detection:
    """The detection carrying its track id."""
    detection = tracked.detection
    if detection.track_id == tracked.track_id:
        return detection
    return Detection(detection.cls, detection.confidence, detection.bbox, tracked.track_id)
