"""Each camera's tracker state in Redis, so any detector worker can continue any camera's tracks.

A frame is applied to its camera's tracker under a per-camera lock: load the state, update it with the
frame's detections, store it with the frame's capture time. A frame older than the last one applied
(two workers finishing one camera's frames out of order) is not applied: its objects get no ids, and
the tracker never goes back in time. A state that is missing (the camera's first frame, an idle
camera whose state expired, Redis restarted) or unreadable starts a new tracker under a new epoch,
which the frame carries to the wire, so clients see that ids started again. Docs: docs/DESIGN.md,
"Why tracker state in Redis".
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from infra.redis_lock import RELEASE
from traffic import redis_keys
from traffic.analytics import MotionUpdate
from traffic.errors import TrackerStateError
from traffic.models import Detection
from traffic.motion import CameraMotion

log = logging.getLogger(__name__)

EPOCH_TTL_S = 7 * 24 * 3600
"""The epoch counter outlives any state: a camera idle for a week starts again at epoch 1."""


@dataclass(frozen=True)
class Tracked:
    """A frame's detections with their track ids, the epoch the ids belong to, and why tracking restarted."""

    detections: tuple[Detection, ...]
    epoch: int | None
    """None: the frame was not applied (out of order, or the lock was not had in time)."""
    reset: str | None = None
    """``new`` (no state: first frame, expired, Redis lost it), ``unreadable``; None when it went on."""
    motion: MotionUpdate | None = None
    """The analytics' update for the frame (None: analytics off, or the frame was not applied)."""


class TrackerStates:
    """Applies frames to each camera's tracker, keeping the state between frames in Redis."""

    def __init__(self, client: Any, *, keep_s: float, lock_s: float = 5.0) -> None:
        self._r = client
        self._keep_ms = max(1000, int(keep_s * 1000))
        self._lock_s = lock_s
        self._release = client.register_script(RELEASE)
        self._local: dict[str, tuple[str, CameraMotion]] = {}
        """camera → (the token this process last wrote with, its tracker): skips reloading its own state."""

    def track(
        self,
        camera_id: str,
        captured_at: float,
        detections: Sequence[Detection],
        make: Callable[[], CameraMotion],
        image_size: tuple[int, int],
    ) -> Tracked:
        """Apply one frame (captured at ``captured_at``, ``image_size`` pixels) to the camera's tracker and
        analytics; ids in input order.

        Two round trips when this process wrote the camera's state last: take the lock and read the
        stamps together; write the state, the epoch and release the lock together.
        """
        token = uuid.uuid4().hex
        seen = self._lock(camera_id, token)
        if seen is None:
            log.warning("camera %s: tracker busy for %.1f s; frame not tracked", camera_id, self._lock_s)
            return Tracked(tuple(detections), None)
        released = False
        try:
            at, writer, epoch = seen
            if at is not None and float(at) >= captured_at:
                log.info("camera %s: a frame captured before the last one tracked; not tracked", camera_id)
                return Tracked(tuple(detections), None)
            mine = self._local.get(camera_id)
            reset: str | None = None
            if mine is not None and writer is not None and mine[0] == writer.decode():
                tracker = mine[1]
            else:
                tracker, reset = self._restored(camera_id, make)
            step = tracker.update(detections, captured_at, image_size)
            written = uuid.uuid4().hex
            epoch = self._store(camera_id, token, tracker.state(), captured_at, written, epoch, bump=reset is not None)
            released = True
            self._local[camera_id] = (written, tracker)
            found = tuple(replace(t.detection, track_id=t.track_id) for t in step.tracked)
            return Tracked(found, epoch, reset, step.analytics)
        finally:
            if not released:
                self._release(keys=[redis_keys.camera_tracker_lock(camera_id)], args=[token])

    def forget(self, camera_id: str) -> None:
        """Drop the camera's tracker state (its next frame starts a new epoch)."""
        self._r.delete(redis_keys.camera_tracker(camera_id))
        self._local.pop(camera_id, None)

    def _restored(self, camera_id: str, make: Callable[[], CameraMotion]) -> tuple[CameraMotion, str | None]:
        """The camera's tracker from its stored state, or a new one and why."""
        tracker = make()
        state = self._r.hget(redis_keys.camera_tracker(camera_id), "state")
        if state is None:
            return tracker, "new"
        try:
            tracker.restore(bytes(state))
        except TrackerStateError as exc:
            log.warning("camera %s: %s; tracking starts again", camera_id, exc)
            return make(), "unreadable"
        return tracker, None

    def _store(
        self, camera_id: str, token: str, state: bytes, at: float, written: str, epoch: Any, *, bump: bool
    ) -> int:
        """Write the state and its stamps, raise the epoch if the tracker started again, release the lock."""
        name, epoch_name = redis_keys.camera_tracker(camera_id), redis_keys.camera_tracker_epoch(camera_id)
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(name, mapping={"state": state, "at": repr(at), "writer": written})
        pipe.pexpire(name, self._keep_ms)
        renumber = bump or epoch is None  # a counter lost while a state survived is numbered again
        if renumber:
            pipe.incr(epoch_name)
        pipe.expire(epoch_name, EPOCH_TTL_S)
        # EVAL, not the registered script: in a pipeline, redis-py asks SCRIPT EXISTS first (a round trip).
        pipe.eval(RELEASE, 1, redis_keys.camera_tracker_lock(camera_id), token)
        replies = pipe.execute()
        return int(replies[2]) if renumber else int(epoch)

    def _lock(self, camera_id: str, token: str) -> tuple[Any, Any, Any] | None:
        """Take the camera's tracker lock (waiting up to ``lock_s``; it lapses if its holder dies) and read
        the state's ``at`` and ``writer`` and the epoch in the same round trip; None if not had in time."""
        lock = redis_keys.camera_tracker_lock(camera_id)
        deadline = time.monotonic() + self._lock_s
        while True:
            pipe = self._r.pipeline(transaction=False)
            pipe.set(lock, token, nx=True, px=int(self._lock_s * 1000))
            pipe.hmget(redis_keys.camera_tracker(camera_id), ["at", "writer"])
            pipe.get(redis_keys.camera_tracker_epoch(camera_id))
            locked, (at, writer), epoch = pipe.execute()
            if locked:
                return at, writer, epoch
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)
