"""ByteTrack from Roboflow's ``trackers`` package behind ``traffic.tracking.Tracker``: the only module that
imports ``trackers`` or ``supervision``.

Why this one (measured with ``python -m bench.tracking``, docs/DESIGN.md): on generated scenes with
ground truth it kept identities best at the detection rates a camera gets (5 detected frames/s: IDF1
0.93 and no identity switch, against 0.83 and 17 switches for Ultralytics' ByteTrack), it is the
fastest of those measured, and it takes each frame's capture time, so a camera whose frames arrive
unevenly (sampling jitter, frames shed under load) is predicted over the real gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from traffic.errors import DetectorError
from traffic.models import Detection
from traffic.settings import TrackingSettings
from traffic.tracking import TrackedDetection

_BUFFER_RATE = 30.0
"""``trackers`` counts its lost-track buffer in frames of a 30 fps video."""


class ByteTracker:
    """One camera's ByteTrack (``trackers.ByteTrackTracker``), fed timestamps so gaps are predicted over."""

    def __init__(self, settings: TrackingSettings) -> None:
        self._settings = settings
        self._tracker: Any = None
        self._classes: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Forget every track; ids start again from the beginning."""
        try:
            import trackers
        except ImportError as exc:
            raise DetectorError("tracking needs the 'trackers' package (pip install trackers)") from exc
        s = self._settings
        self._tracker = trackers.ByteTrackTracker(
            lost_track_buffer=max(1, round(s.lost_track_s * _BUFFER_RATE)),
            track_activation_threshold=s.activation_confidence,
            minimum_consecutive_frames=s.min_frames,
            minimum_iou_threshold=s.min_iou,
            high_conf_det_threshold=s.high_confidence,
        )

    def update(self, detections: Sequence[Detection], timestamp: float) -> list[TrackedDetection]:
        """Each detection with its track id (``None`` while its track is unconfirmed), in input order."""
        import supervision as sv

        if detections:
            found = sv.Detections(
                xyxy=np.array([d.bbox for d in detections], dtype=float),
                confidence=np.array([d.confidence for d in detections], dtype=float),
                class_id=np.array([self._class_id(d.cls) for d in detections], dtype=int),
                data={"index": np.arange(len(detections))},
            )
        else:
            found = sv.Detections.empty()
        tracked = self._tracker.update(found, timestamp=timestamp)
        ids: dict[int, int | None] = {}
        if len(tracked):
            for index, track_id in zip(tracked.data["index"], tracked.tracker_id, strict=True):
                ids[int(index)] = int(track_id) if track_id is not None and track_id >= 0 else None
        return [TrackedDetection(d, ids.get(i)) for i, d in enumerate(detections)]

    def _class_id(self, name: str) -> int:
        """A stable small integer per class name (carried through; ByteTrack matches by position alone)."""
        return self._classes.setdefault(name, len(self._classes))
