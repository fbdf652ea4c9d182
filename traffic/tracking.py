"""Identity over time: the tracker interface and what it returns (the library lives in ``traffic.bytetrack``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from traffic.models import Detection, TrafficGroup


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


def keyed_groups(
    groups: Sequence[TrafficGroup], detections: Sequence[Detection], epoch: int
) -> tuple[TrafficGroup, ...]:
    """Each group with its members' track ids and its key: the epoch and the oldest (lowest) member track id.

    Track ids only grow within an epoch, so the key stays while the group's oldest member stays in it,
    whatever its index in the frame; a group with no confirmed member has no key.
    """
    keyed = []
    for group in groups:
        tracks = tuple(sorted({t for i in group.member_indices if (t := detections[i].track_id) is not None}))
        key = f"e{epoch}t{tracks[0]}" if tracks else None
        keyed.append(replace(group, tracks=tracks, key=key))
    return tuple(keyed)
