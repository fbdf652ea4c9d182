"""Tracking across detector workers: a camera's tracker state lives in Redis, so identities outlive a worker.

A real ``gpu`` worker (packaged person model) detects the same photo frame after frame, so the same
people stand still: their tracks are confirmed on the second frame and keep their ids. The frames'
capture times are 0.2 s apart, as a camera at 5 detected frames/s would give, however long the test
takes between frames (the tracker goes by capture time). The worker is
then killed and a new one started; the camera's tracks go on with the same ids and epoch. When the
state is lost (as after a Redis restart), the next frame starts a new epoch, visible on the wire.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from infra.frame_store import FrameStore
from stack.harness import Stack, bus_jpeg, running_stack, wait_until
from traffic import redis_keys
from traffic.frame_record import FrameRecord

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # A camera's tracker state is kept 5 lost-track times (10 s by default) after its last frame; restarting
    # the gpu worker (start-up and model load) can take longer than that on a busy machine, which would
    # rightly start a new epoch. Tracks here are lost after 12 s (state kept 60 s): frames are 0.2 s apart.
    env = {"TRAFFIC_TRACK_LOST_S": "12"}
    with running_stack(tmp_path_factory.mktemp("tracking"), None, "gpu", "llm", "default", **env) as running:
        yield running


FRAME_GAP_S = 0.2
"""Capture times 0.2 s apart (5 detected frames/s), whatever the time a test takes between frames."""
_clock: dict[str, float] = {}


def detected(stack: Stack, camera_id: str, timeout: float = 120.0) -> FrameRecord:
    """Send the bus photo as the camera's next frame; its record once the detector stored it."""
    store = FrameStore(stack.redis)
    at = _clock[camera_id] = _clock.get(camera_id, time.time()) + FRAME_GAP_S
    frame_id = stack.inject_frame(camera_id, bus_jpeg(), captured_at=at, deadline_s=300.0)
    wait_until(lambda: "final" in store.timings(frame_id), timeout, f"frame {frame_id} to be final")
    record = store.record(frame_id)
    assert record is not None
    return record


def ids(record: FrameRecord) -> list[int | None]:
    return [d.track_id for d in record.analysis.detections]


def test_identities_outlive_the_worker_and_a_lost_state_starts_a_new_epoch(stack: Stack) -> None:
    first = detected(stack, "cam-t")
    assert first.analysis.tracking_epoch == 1 and first.analysis.detections
    assert set(ids(first)) == {None}  # a track needs two frames before it gets an id
    second = detected(stack, "cam-t")
    confirmed = ids(second)
    assert None not in confirmed and len(set(confirmed)) == len(confirmed)
    # The worker takes the camera's tracker lock while a frame is detected and lets go once its result is
    # out (its state stored): none is left held between frames (a lost one would lapse only after 5 s).
    lock = redis_keys.camera_tracker_lock("cam-t")
    wait_until(lambda: not stack.redis.exists(lock), 2, "the camera's tracker lock to be released")
    assert float(stack.redis.hget(redis_keys.camera_tracker("cam-t"), "at") or 0) == second.captured_at

    stack.group.kill("gpu")
    stack.start("gpu")
    third = detected(stack, "cam-t")
    assert third.analysis.tracking_epoch == 1
    assert sorted(ids(third)) == sorted(confirmed)  # the same people, the same ids, on another worker
    keys = [g.key for g in third.analysis.groups]
    assert keys and None not in keys and keys == [g.key for g in second.analysis.groups]
    assert all(k.startswith("e1t") for k in keys)

    stack.redis.delete(redis_keys.camera_tracker("cam-t"))  # as a Redis restart would lose it
    fourth = detected(stack, "cam-t")
    assert fourth.analysis.tracking_epoch == 2
    assert set(ids(fourth)) == {None}


def test_cameras_keep_trackers_of_their_own(stack: Stack) -> None:
    for _ in range(2):
        a = detected(stack, "cam-a")
    b = detected(stack, "cam-b")
    assert None not in ids(a) and set(ids(b)) == {None}
    assert a.analysis.tracking_epoch == b.analysis.tracking_epoch == 1
