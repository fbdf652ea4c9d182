"""A camera's tracker lock taken ahead of its frame, its state stored after the frame's result (real redis-server).

A detector worker takes the lock while the frame is still being detected (``TrackerStates.hold``) and stores
the state once the frame's first result is out (``track(defer=True)`` then ``commit``). Until then no other
process applies a frame of that camera; a lock held too long to be sure of is taken again; a hold no frame
used is released.
"""

from __future__ import annotations

import time

import pytest
import redis

from infra.tracker_states import Hold, TrackerStates
from stack.harness import wait_until
from traffic import redis_keys
from traffic.bytetrack import ByteTracker
from traffic.models import Detection
from traffic.motion import CameraMotion
from traffic.settings import TrackingSettings

pytestmark = pytest.mark.integration

CAMERA = "cam"
SIZE = (1280, 720)
LOCK_S = 0.3


def new_motion() -> CameraMotion:
    return CameraMotion(ByteTracker(TrackingSettings()))


def people(t: float) -> list[Detection]:
    """Two people walking right, as a detector would see them at time ``t`` (s)."""
    x = 100 + 50 * t
    return [
        Detection("person", 0.9, (x, 200.0, x + 60, 380.0)),
        Detection("person", 0.9, (x + 300, 220.0, x + 360, 400.0)),
    ]


def hold(states: TrackerStates, client: redis.Redis) -> Hold | None:
    """Take the camera's lock ahead, as a worker does while its frame is detected."""
    pipe = client.pipeline(transaction=False)
    held = states.hold(pipe, CAMERA)
    return held(pipe.execute())


def stored_at(client: redis.Redis) -> float | None:
    at = client.hget(redis_keys.camera_tracker(CAMERA), "at")
    return float(at) if at is not None else None


def locked(client: redis.Redis) -> bool:
    return bool(client.exists(redis_keys.camera_tracker_lock(CAMERA)))


def test_a_frame_tracked_under_a_hold_keeps_the_lock_until_its_state_is_committed(redis_client: redis.Redis) -> None:
    # The other process waits at most 0.1 s for a lock, well within the 2 s the worker's lock lasts.
    worker, other = (
        TrackerStates(redis_client, keep_s=60, lock_s=2.0),
        TrackerStates(redis_client, keep_s=60, lock_s=0.1),
    )
    first = worker.track(CAMERA, 1000.0, people(0), new_motion, SIZE, defer=True)
    # The camera's first frame numbers a new epoch: stored at once, even when deferring.
    assert first.reset == "new" and first.epoch == 1 and first.pending is None
    assert stored_at(redis_client) == 1000.0 and not locked(redis_client)

    ahead = hold(worker, redis_client)
    assert ahead is not None and locked(redis_client)
    assert hold(other, redis_client) is None  # taken: another process's frame waits for it
    tracked = worker.track(CAMERA, 1000.2, people(0.2), new_motion, SIZE, hold=ahead, defer=True)
    assert tracked.epoch == 1 and tracked.pending is not None
    assert all(d.track_id is not None for d in tracked.detections)
    assert stored_at(redis_client) == 1000.0 and locked(redis_client)  # not stored yet, still held
    # Another process's frame of the camera cannot be applied meanwhile: it waits for the lock, in vain.
    busy = other.track(CAMERA, 1000.4, people(0.4), new_motion, SIZE)
    assert busy.epoch is None and busy.detections == tuple(people(0.4))

    worker.commit(tracked)
    assert stored_at(redis_client) == 1000.2 and not locked(redis_client)
    # The other process now goes on from the stored state: the same people keep their ids.
    after = other.track(CAMERA, 1000.4, people(0.4), new_motion, SIZE)
    assert after.epoch == 1 and after.reset is None
    assert [d.track_id for d in after.detections] == [d.track_id for d in tracked.detections]
    worker.commit(first)  # nothing was pending: nothing happens
    assert stored_at(redis_client) == 1000.4


def test_a_hold_held_too_long_is_taken_again_and_an_unused_one_is_released(redis_client: redis.Redis) -> None:
    states = TrackerStates(redis_client, keep_s=60, lock_s=LOCK_S)
    states.track(CAMERA, 1000.0, people(0), new_motion, SIZE)
    ahead = hold(states, redis_client)
    assert ahead is not None
    # Held past its lapse time: the frame must not count on it. Redis lapses the lock at a millisecond's
    # precision, so a read exactly ``LOCK_S`` later may still find it: wait for the lapse itself.
    time.sleep(LOCK_S)
    wait_until(lambda: not locked(redis_client), 5.0, "the held lock to lapse")
    tracked = states.track(CAMERA, 1000.2, people(0.2), new_motion, SIZE, hold=ahead, defer=True)
    assert tracked.epoch == 1 and tracked.pending is not None and locked(redis_client)
    assert redis_client.get(redis_keys.camera_tracker_lock(CAMERA)) != ahead.token.encode()  # a lock of its own
    states.commit(tracked)
    assert stored_at(redis_client) == 1000.2 and not locked(redis_client)

    unused = hold(states, redis_client)
    assert unused is not None and locked(redis_client)
    states.release(unused)  # its frame failed: the next frame need not wait for the lock to lapse
    assert not locked(redis_client)


def test_a_frame_older_than_the_last_one_tracked_releases_the_hold(redis_client: redis.Redis) -> None:
    states = TrackerStates(redis_client, keep_s=60, lock_s=LOCK_S)
    states.track(CAMERA, 1000.4, people(0.4), new_motion, SIZE)
    ahead = hold(states, redis_client)
    late = states.track(CAMERA, 1000.2, people(0.2), new_motion, SIZE, hold=ahead, defer=True)
    assert late.epoch is None and late.pending is None
    assert not locked(redis_client) and stored_at(redis_client) == 1000.4
