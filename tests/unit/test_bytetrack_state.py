"""The tracker's state carried between frames (and workers): restored exactly, and nothing else unpickled."""

from __future__ import annotations

import os
import pickle
from dataclasses import replace

import pytest

from stack.scenes import crossroads
from traffic.bytetrack import ByteTracker
from traffic.errors import TrackerStateError
from traffic.settings import TrackingSettings


def test_a_tracker_restored_after_every_frame_gives_the_ids_of_one_that_ran_through() -> None:
    frames = list(crossroads(4, duration=20.0).frames(5))
    through = ByteTracker(TrackingSettings())
    carried = ByteTracker(TrackingSettings()).state()
    for frame in frames:
        expected = [t.track_id for t in through.update(frame.detections, frame.t)]
        worker = ByteTracker(TrackingSettings())  # a fresh worker each frame
        worker.restore(carried)
        assert [t.track_id for t in worker.update(frame.detections, frame.t)] == expected
        carried = worker.state()
        for ours, theirs in zip(worker._tracker.tracks, through._tracker.tracks, strict=True):
            assert ours.tracker_id == theirs.tracker_id
            assert ours.get_state_bbox() == pytest.approx(theirs.get_state_bbox())
    assert any(t is not None for t in expected)


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_a_state_naming_any_other_callable_is_refused() -> None:
    tracker = ByteTracker(TrackingSettings())
    with pytest.raises(TrackerStateError, match="not part of a tracker state"):
        tracker.restore(pickle.dumps(_Boom()))


@pytest.mark.parametrize("data", [b"", b"garbage", pickle.dumps(("not", "a", "state"))])
def test_a_corrupt_state_is_refused(data: bytes) -> None:
    with pytest.raises(TrackerStateError):
        ByteTracker(TrackingSettings()).restore(data)


def test_a_state_made_with_other_settings_is_refused() -> None:
    state = ByteTracker(TrackingSettings()).state()
    with pytest.raises(TrackerStateError, match="other settings"):
        ByteTracker(replace(TrackingSettings(), min_iou=0.3)).restore(state)
