"""Identity over time: the tracker interface and what it returns (the library lives in ``traffic.bytetrack``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from traffic.models import Detection


@dataclass(frozen=True)
class TrackedDetection:
    """A detection of one frame and the track it belongs to (``None`` until the track is confirmed)."""

    detection: Detection
    track_id: int | None


class Tracker(Protocol):
    """One camera's tracker: fed that camera's detections in capture order."""

    def update(self, detections: Sequence[Detection], timestamp: float) -> list[TrackedDetection]:
        """Match ``detections`` (of the frame captured at ``timestamp``, seconds) to tracks, in input order."""
        ...

    def reset(self) -> None:
        """Forget every track (identities start again)."""
        ...

    def state(self) -> bytes:
        """Everything the tracker knows, to continue on another worker with ``restore``."""
        ...

    def restore(self, data: bytes) -> None:
        """Continue from ``state()``'s output; ``TrackerStateError`` when it cannot."""
        ...
