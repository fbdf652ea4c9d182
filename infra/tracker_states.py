"""Each camera's tracker state in Redis, so any detector worker can continue any camera's tracks.

A frame is applied to its camera's tracker under a per-camera lock: load the state, update it with the
frame's detections, store it with the frame's capture time. A detector worker takes the lock while the
frame is still being detected (``hold``), and stores the state after the frame's first result is out
(``track(defer=True)``, then ``commit``), so neither round trip delays the result. A frame older than
the last one applied (two workers finishing one camera's frames out of order) is not applied: its
objects get no ids, and the tracker never goes back in time. A state that is missing (the camera's first
frame, an idle camera whose state expired, Redis restarted) or unreadable starts a new tracker under a
new epoch, which the frame carries to the wire, so clients see that ids started again. Docs:
docs/DESIGN.md, "Why tracker state in Redis".
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
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
    pending: _Pending | None = field(default=None, repr=False, compare=False)
    """The state still to store, and the lock still held, when the caller deferred them (``commit``)."""


@dataclass(frozen=True)
class Hold:
    """A camera's tracker lock taken ahead of its frame, and the stamps read with it (``TrackerStates.hold``)."""

    camera_id: str
    token: str
    seen: tuple[Any, Any, Any]
    """The state's ``at`` and ``writer`` and the epoch, as read when the lock was taken."""
    since: float
    """``time.monotonic()`` when the lock was taken."""


@dataclass(frozen=True)
class _Pending:
    """A tracker's state to store under a lock still held: written by ``TrackerStates.commit``."""

    camera_id: str
    token: str
    tracker: CameraMotion
    at: float
    epoch: int


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
        *,
        hold: Hold | None = None,
        defer: bool = False,
    ) -> Tracked:
        """Apply one frame (captured at ``captured_at``, ``image_size`` pixels) to the camera's tracker and
        analytics; ids in input order.

        Two round trips when this process wrote the camera's state last: take the lock and read the
        stamps together; write the state, the epoch and release the lock together. With ``hold`` (the lock
        taken ahead by :meth:`hold`) the first is done already, unless it was held for over half its lapse
        time; with ``defer`` the second is left to :meth:`commit` (``Tracked.pending``), unless the epoch
        must be numbered again, which the frame's ids need now.
        """
        seen: tuple[Any, Any, Any] | None
        if hold is not None and hold.camera_id == camera_id and time.monotonic() - hold.since < self._lock_s / 2:
            token, seen = hold.token, hold.seen
        else:
            if hold is not None:  # held too long to be sure it has not lapsed: take it again
                self.release(hold)
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
            found = tuple(replace(t.detection, track_id=t.track_id) for t in step.tracked)
            renumber = reset is not None or epoch is None  # a counter lost while a state survived is numbered again
            if defer and not renumber:
                self._local.pop(camera_id, None)  # until the state is stored, it is not known to be this one
                released = True
                pending = _Pending(camera_id, token, tracker, captured_at, int(epoch))
                return Tracked(found, int(epoch), reset, step.analytics, pending)
            epoch = self._store(camera_id, token, tracker, captured_at, epoch, renumber=renumber)
            released = True
            return Tracked(found, epoch, reset, step.analytics)
        finally:
            if not released:
                self._release(keys=[redis_keys.camera_tracker_lock(camera_id)], args=[token])

    def commit(self, tracked: Tracked) -> None:
        """Store a deferred frame's tracker state and release the camera's lock (nothing when none is due)."""
        pending = tracked.pending
        if pending is not None:
            self._store(pending.camera_id, pending.token, pending.tracker, pending.at, pending.epoch, renumber=False)

    def hold(self, pipe: Any, camera_id: str) -> Callable[[Sequence[Any]], Hold | None]:
        """Queue on ``pipe`` the commands that take the camera's lock and read its stamps (three replies),
        for a frame still being detected; the function returned makes the hold from their replies (None:
        another process has the lock, ``track`` waits for it then). A hold not given to ``track`` is
        ``release``d."""
        token = uuid.uuid4().hex
        self._queue_lock(pipe, camera_id, token)

        def held(replies: Sequence[Any]) -> Hold | None:
            locked, (at, writer), epoch = replies
            return Hold(camera_id, token, (at, writer, epoch), time.monotonic()) if locked else None

        return held

    def release(self, hold: Hold) -> None:
        """Let go of a hold that no frame used."""
        self._release(keys=[redis_keys.camera_tracker_lock(hold.camera_id)], args=[hold.token])

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
        self, camera_id: str, token: str, tracker: CameraMotion, at: float, epoch: Any, *, renumber: bool
    ) -> int:
        """Write the state and its stamps, number the epoch again if asked, release the lock; remembers the
        state as this process's."""
        name, epoch_name = redis_keys.camera_tracker(camera_id), redis_keys.camera_tracker_epoch(camera_id)
        written = uuid.uuid4().hex
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(name, mapping={"state": tracker.state(), "at": repr(at), "writer": written})
        pipe.pexpire(name, self._keep_ms)
        if renumber:
            pipe.incr(epoch_name)
        pipe.expire(epoch_name, EPOCH_TTL_S)
        # EVAL, not the registered script: in a pipeline, redis-py asks SCRIPT EXISTS first (a round trip).
        pipe.eval(RELEASE, 1, redis_keys.camera_tracker_lock(camera_id), token)
        replies = pipe.execute()
        self._local[camera_id] = (written, tracker)
        return int(replies[2]) if renumber else int(epoch)

    def _queue_lock(self, pipe: Any, camera_id: str, token: str) -> None:
        """Queue taking the camera's lock and reading the state's ``at`` and ``writer`` and the epoch."""
        pipe.set(redis_keys.camera_tracker_lock(camera_id), token, nx=True, px=int(self._lock_s * 1000))
        pipe.hmget(redis_keys.camera_tracker(camera_id), ["at", "writer"])
        pipe.get(redis_keys.camera_tracker_epoch(camera_id))

    def _lock(self, camera_id: str, token: str) -> tuple[Any, Any, Any] | None:
        """Take the camera's tracker lock (waiting up to ``lock_s``; it lapses if its holder dies) and read
        the state's ``at`` and ``writer`` and the epoch in the same round trip; None if not had in time."""
        deadline = time.monotonic() + self._lock_s
        while True:
            pipe = self._r.pipeline(transaction=False)
            self._queue_lock(pipe, camera_id, token)
            locked, (at, writer), epoch = pipe.execute()
            if locked:
                return at, writer, epoch
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)
