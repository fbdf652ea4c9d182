"""The capture service (``python -m workers.capture``): claims cameras, keeps their latest frame, samples it.

Threads: a control loop (registry changes via pub/sub plus a periodic re-read, lease renewal), one
sampler (each camera every ``capture.frame_interval_s`` on a drift-free schedule) and one reader per
claimed camera that overwrites a single latest-frame slot, so frames are never queued in memory.
Several capture processes share the cameras through expiring Redis leases (``keys.camera_lease``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Protocol

import redis
from redis.typing import EncodableT, FieldT

from stack.runtime import bootstrap
from traffic import keys
from traffic.cameras import Camera, mask_url, next_tick, reconnect_delay, validate_camera_url
from traffic.errors import CameraError
from traffic.imaging import Image, encode_jpeg, image_size, resize
from traffic.settings import Settings
from workers import app
from workers.camera_registry import CameraRegistry
from workers.emitter import Emitter
from workers.sources import SourceError, open_source, quiet_native_logs

log = logging.getLogger(__name__)

DETECT_TASK = "workers.tasks.detect_frame"
DETECT_QUEUE = "gpu"
LATEST_FRAME_TTL_S = 60
PREVIEW_WIDTH = 640
"""Dashboard tiles get this width: a camera wall never shows a 1280-wide tile, so events stay small."""
PREVIEW_QUALITY = 70
META_GRACE_S = 60.0
FPS_SMOOTHING = 0.3
"""Weight of the newest interval in a camera's smoothed frames-per-second figure."""
"""Frame metadata outlives the frame's deadline by this much (for late finalisation)."""

_RENEW_LUA = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE_LUA = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
# Heartbeat on the Redis clock (no skew between hosts); drops owners silent for a lease; returns live owners.
_HEARTBEAT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[2]) * 3000))
return redis.call('ZCARD', KEYS[1])
"""


class SendTask(Protocol):
    """``Celery.send_task``, or a stand-in with the same call shape."""

    def __call__(self, name: str, *, args: list[Any], **options: Any) -> object:
        """Publish task ``name`` with ``args``."""
        ...


class EventSink(Protocol):
    """``workers.emitter.Emitter``, or a stand-in."""

    def to_camera(self, camera_id: str, event: str, data: dict[str, Any]) -> None:
        """Send ``event`` to the camera's room."""
        ...


@dataclass(frozen=True)
class CaptureTimings:
    """Lease, reconcile and reconnect timings (the defaults suit production; tests shorten them)."""

    lease_s: float = 10.0
    renew_s: float = 3.0
    reconcile_s: float = 2.0
    """Fallback re-read of the registry, in case a pub/sub message was missed."""
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 30.0
    stale_after_s: float | None = None
    """An online camera with no new frame for this long is reported offline (default max(10 s, 3 intervals))."""


def default_owner_id() -> str:
    """A lease owner id unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


# --------------------------------------------------------------------------- building blocks


@dataclass(frozen=True)
class Frame:
    """One frame read from a camera."""

    seq: int
    image: Image
    captured_at: float
    """Epoch seconds when the reader received it."""
    received: float
    """``time.monotonic()`` when the reader received it."""


class FrameSlot:
    """Holds only the latest frame of a camera; the reader overwrites it, the sampler peeks at it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: Frame | None = None

    def put(self, image: Image) -> None:
        """Replace the held frame with ``image``."""
        with self._lock:
            seq = self._frame.seq + 1 if self._frame else 1
            self._frame = Frame(seq, image, time.time(), time.monotonic())

    def newer_than(self, seq: int) -> Frame | None:
        """The held frame if it is newer than ``seq``."""
        with self._lock:
            return self._frame if self._frame and self._frame.seq > seq else None

    def last_received(self) -> float | None:
        """Monotonic time of the held frame, if any."""
        with self._lock:
            return self._frame.received if self._frame else None


class Leases:
    """Expiring camera leases: ``SET NX PX`` to claim, compare-and-pexpire to renew, compare-and-delete to release.

    Each owner also heartbeats into ``keys.CAPTURE_OWNERS`` so that owners can split the cameras fairly.
    """

    def __init__(self, redis_client: redis.Redis, owner_id: str, lease_s: float) -> None:
        self._redis = redis_client
        self.owner_id = owner_id
        self._lease_s = lease_s
        self._lease_ms = int(lease_s * 1000)
        self._renew = redis_client.register_script(_RENEW_LUA)
        self._release = redis_client.register_script(_RELEASE_LUA)
        self._heartbeat = redis_client.register_script(_HEARTBEAT_LUA)

    def heartbeat(self) -> int:
        """Mark this owner alive; the number of live owners (this one included)."""
        return int(self._heartbeat(keys=[keys.CAPTURE_OWNERS], args=[self.owner_id, self._lease_s]))

    def leave(self) -> None:
        """Remove this owner from the live set (on a clean stop)."""
        self._redis.zrem(keys.CAPTURE_OWNERS, self.owner_id)

    def acquire(self, camera_id: str) -> bool:
        """Claim the camera if nobody holds it (or we already do)."""
        key = keys.camera_lease(camera_id)
        if self._redis.set(key, self.owner_id, nx=True, px=self._lease_ms):
            return True
        return self.renew(camera_id)

    def renew(self, camera_id: str) -> bool:
        """Extend our lease; False if we no longer hold it."""
        return bool(self._renew(keys=[keys.camera_lease(camera_id)], args=[self.owner_id, self._lease_ms]))

    def release(self, camera_id: str) -> bool:
        """Give the camera up if we hold it."""
        return bool(self._release(keys=[keys.camera_lease(camera_id)], args=[self.owner_id]))


class StatusReporter:
    """Stores a camera's connection status in Redis and emits ``camera_status`` whenever it changes."""

    def __init__(self, camera: Camera, redis_client: redis.Redis, sink: EventSink) -> None:
        self._camera = camera
        self._redis = redis_client
        self._sink = sink
        self._lock = threading.Lock()
        self._last: tuple[int, str] | None = None
        self._closed = False

    @property
    def is_online(self) -> bool:
        """Whether the last report was online."""
        return self._last is not None and self._last[0] == 1

    def online(self, latency_ms: int | None = None) -> None:
        """Report the camera online (``latency_ms``: open plus first read)."""
        self._report(1, "connected", latency_ms)

    def offline(self, message: str) -> None:
        """Report the camera offline with a reason."""
        self._report(0, message, None)

    def close(self) -> None:
        """Report nothing more (the reader is being stopped)."""
        with self._lock:
            self._closed = True

    def _report(self, status: int, message: str, latency_ms: int | None) -> None:
        """Store and emit the status unless it equals the last one."""
        with self._lock:
            if self._closed or self._last == (status, message):
                return
            self._last = (status, message)
            payload: dict[str, Any] = {"cameraId": self._camera.wire_id, "status": status, "message": message}
            if latency_ms is not None:
                payload["latencyMs"] = latency_ms
            store_status(self._redis, self._camera.camera_id, payload)
            self._sink.to_camera(self._camera.camera_id, "camera_status", payload)


def store_status(redis_client: redis.Redis, camera_id: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` (status, message, latencyMs?) with ``since`` into the camera's status hash."""
    fields: dict[FieldT, EncodableT] = {
        "status": payload["status"],
        "message": payload["message"],
        "since": time.time(),
    }
    if "latencyMs" in payload:
        fields["latencyMs"] = payload["latencyMs"]
    try:
        pipe = redis_client.pipeline(transaction=True)
        pipe.delete(keys.camera_status(camera_id))
        pipe.hset(keys.camera_status(camera_id), mapping=fields)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("cannot store status of camera %s: %s", camera_id, exc)


# --------------------------------------------------------------------------- one camera


class CameraReader:
    """Reads one camera in its own thread, reconnecting with backoff; keeps only the latest frame."""

    def __init__(
        self,
        camera: Camera,
        reporter: StatusReporter,
        *,
        settings: Settings,
        timings: CaptureTimings,
        rng: random.Random,
    ) -> None:
        self.camera = camera
        self.reporter = reporter
        self.slot = FrameSlot()
        self.attempts: deque[float] = deque(maxlen=100)
        """Monotonic times of connection attempts (observable for tests and diagnostics)."""
        self.last_sampled = 0
        self.origin = time.monotonic()
        self.next_sample = self.origin + settings.capture.frame_interval_s
        self._interval = settings.capture.frame_interval_s
        self._timings = timings
        self._rng = rng
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{camera.camera_id}", daemon=True)

    def start(self) -> None:
        """Start reading."""
        log.info("camera %s: capturing %s", self.camera.camera_id, mask_url(self.camera.url))
        self._thread.start()

    def stop(self) -> None:
        """Ask the reader to stop (returns at once); no status is reported after this."""
        self.reporter.close()
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; True if it did."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        """Connect, read until failure, wait a growing backoff, repeat until stopped."""
        attempt = 0
        while not self._stop.is_set():
            try:
                if self._connect_and_read():
                    attempt = 0
            except Exception:  # a bug must not end the camera silently: log it and reconnect
                log.exception("camera %s: unexpected capture error", self.camera.camera_id)
                self.reporter.offline("capture error")
            if self._stop.is_set():
                break
            delay = reconnect_delay(
                attempt, base_s=self._timings.backoff_base_s, cap_s=self._timings.backoff_cap_s, rng=self._rng
            )
            log.info("camera %s: reconnecting in %.1f s", self.camera.camera_id, delay)
            if self._stop.wait(delay):
                break
            attempt += 1

    def _connect_and_read(self) -> bool:
        """One connection: open, read frames into the slot until an error; True if any frame arrived."""
        started = time.monotonic()
        self.attempts.append(started)
        try:
            source = open_source(self.camera.url, poll_interval_s=self._interval / 2, stop=self._stop)
        except SourceError as exc:
            self._failed(exc.reason)
            return False
        got_frame = False
        try:
            while not self._stop.is_set():
                self.slot.put(source.read())
                if not got_frame:
                    got_frame = True
                    self.reporter.online(int((time.monotonic() - started) * 1000))
                elif not self.reporter.is_online:
                    self.reporter.online()  # frames again after a "no frames" report
        except SourceError as exc:
            self._failed(exc.reason)
        finally:
            source.close()
        return got_frame

    def _failed(self, reason: str) -> None:
        """Report the camera offline, unless we are stopping."""
        if not self._stop.is_set():
            log.warning("camera %s offline: %s", self.camera.camera_id, reason)
            self.reporter.offline(reason)


# --------------------------------------------------------------------------- the service


class CaptureService:
    """Claims cameras from the registry with leases, reads them and feeds sampled frames to ``detect_frame``."""

    def __init__(
        self,
        settings: Settings,
        redis_client: redis.Redis,
        emitter: EventSink,
        *,
        send_task: SendTask,
        owner_id: str | None = None,
        timings: CaptureTimings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.owner_id = owner_id or default_owner_id()
        self._redis = redis_client
        self._sink = emitter
        self._send_task = send_task
        self._timings = timings or CaptureTimings()
        self._rng = rng or random.Random()
        self._registry = CameraRegistry(redis_client)
        self._leases = Leases(redis_client, self.owner_id, self._timings.lease_s)
        self._lock = threading.Lock()
        self._readers: dict[str, CameraReader] = {}
        self._retiring: list[CameraReader] = []
        self._lease_valid_until: dict[str, float] = {}
        self._rejected: dict[str, tuple[str, str]] = {}
        self._sent_at: dict[str, tuple[float, float]] = {}
        """Per camera: when its last frame was sent, and the smoothed frames per second sent."""
        self._live_owners = 1
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the control loop and the sampler."""
        log.info("capture service %s starting", self.owner_id)
        for name, target in (("capture-control", self._control_loop), ("capture-sampler", self._sample_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def request_stop(self) -> None:
        """Ask the service to stop (safe from a signal handler)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a stop is requested; True if it was."""
        return self._stop.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop everything, release every lease and join every thread (within about ``timeout``)."""
        self._stop.set()
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        for camera_id in self.owned():
            self._stop_camera(camera_id, "capture service stopped", announce=False)
        self._guard(self._leases.leave)
        with self._lock:
            readers, self._retiring = self._retiring, []
        stuck = [r.camera.camera_id for r in readers if not r.join(max(0.0, end - time.monotonic()))]
        if stuck:
            log.warning("readers of cameras %s did not stop in time", ", ".join(stuck))
        log.info("capture service %s stopped", self.owner_id)

    def __enter__(self) -> CaptureService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- observable state

    def owned(self) -> set[str]:
        """Ids of the cameras this service captures now."""
        with self._lock:
            return set(self._readers)

    def connect_attempts(self, camera_id: str) -> list[float]:
        """Monotonic times of the recent connection attempts to the camera (empty if not owned)."""
        with self._lock:
            reader = self._readers.get(camera_id)
        return list(reader.attempts) if reader else []

    # ----------------------------------------------------------------- control loop

    def _control_loop(self) -> None:
        """React to registry changes, re-read the registry periodically and renew leases."""
        pubsub: Any = None
        next_reconcile = next_renew = time.monotonic()
        while not self._stop.is_set():
            pubsub, changed = self._poll_changes(pubsub)
            now = time.monotonic()
            if now >= next_renew:
                self._guard(self._heartbeat)
                self._guard(self._renew_leases)
                next_renew = now + self._timings.renew_s
            if changed or now >= next_reconcile:
                self._guard(self._reconcile)
                next_reconcile = now + self._timings.reconcile_s
        if pubsub is not None:
            self._guard(pubsub.close)

    def _poll_changes(self, pubsub: Any) -> tuple[Any, bool]:
        """Wait briefly for ``CAMERAS_CHANGED``; (the pub/sub to use next time, whether anything changed)."""
        try:
            if pubsub is None:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(keys.CAMERAS_CHANGED)
            changed = False
            message = pubsub.get_message(timeout=0.25)
            while message is not None:
                changed = changed or message.get("type") == "message"
                message = pubsub.get_message(timeout=0.0)
            return pubsub, changed
        except (redis.RedisError, OSError) as exc:
            log.warning("registry change feed failed (%s); re-subscribing", exc)
            if pubsub is not None:
                self._guard(pubsub.close)
            self._stop.wait(1.0)
            return None, True

    def _guard(self, step: Callable[[], object]) -> None:
        """Run one control step; a Redis outage is logged and retried on the next tick."""
        try:
            step()
        except (redis.RedisError, OSError) as exc:
            log.warning("capture control step %s failed: %s", getattr(step, "__name__", step), exc)

    def _heartbeat(self) -> None:
        """Announce this service as live and learn how many capture services share the cameras."""
        self._live_owners = max(1, self._leases.heartbeat())

    def _reconcile(self) -> None:
        """Bring the running cameras in line with the registry and this service's fair share of them."""
        desired = {camera.camera_id: camera for camera in self._registry.list()}
        for camera_id, reader in self._running().items():
            camera = desired.get(camera_id)
            if camera is None or not camera.enabled:
                self._stop_camera(camera_id, "removed" if camera is None else "disabled", announce=True)
            elif camera != reader.camera:
                log.info("camera %s changed; restarting its capture", camera_id)
                self._stop_camera(camera_id, "changed", announce=False, release=False)
                self._try_claim(camera)
        for camera_id in set(self._rejected) - set(desired):
            del self._rejected[camera_id]
        enabled = [camera for camera in desired.values() if camera.enabled]
        self._balance(enabled, quota=math.ceil(len(enabled) / self._live_owners))

    def _balance(self, enabled: list[Camera], quota: int) -> None:
        """Claim free cameras up to ``quota``; above it, hand one camera back so another service can take it."""
        running = self._running()
        if len(running) > quota:
            self._stop_camera(max(running), "rebalanced", announce=False)
            return
        for camera in enabled:
            if len(running) >= quota or self._stop.is_set():
                return
            if camera.camera_id not in running and self._try_claim(camera):
                running = self._running()

    def _running(self) -> dict[str, CameraReader]:
        """A snapshot of the running readers."""
        with self._lock:
            return dict(self._readers)

    def _try_claim(self, camera: Camera) -> bool:
        """Start capturing ``camera`` if its URL is usable here and its lease is free; True if started."""
        try:
            validate_camera_url(camera.url, allow_files=self.settings.capture.allow_file_sources)
        except CameraError as exc:
            self._reject(camera, exc)
            return False
        self._rejected.pop(camera.camera_id, None)
        if not self._leases.acquire(camera.camera_id):
            return False
        reader = CameraReader(
            camera,
            StatusReporter(camera, self._redis, self._sink),
            settings=self.settings,
            timings=self._timings,
            rng=self._rng,
        )
        with self._lock:
            self._readers[camera.camera_id] = reader
            self._lease_valid_until[camera.camera_id] = time.monotonic() + self._timings.lease_s
        reader.start()
        return True

    def _reject(self, camera: Camera, exc: CameraError) -> None:
        """Report (once per URL and reason) a camera whose URL this service will not open."""
        if self._rejected.get(camera.camera_id) == (camera.url, exc.code):
            return
        self._rejected[camera.camera_id] = (camera.url, exc.code)
        log.warning("camera %s not captured: %s", camera.camera_id, exc)
        StatusReporter(camera, self._redis, self._sink).offline(str(exc))

    def _renew_leases(self) -> None:
        """Renew every held lease; stop cameras whose lease was lost or ran out while Redis was away."""
        for camera_id in self.owned():
            sent_at = time.monotonic()
            try:
                held = self._leases.renew(camera_id)
            except (redis.RedisError, OSError) as exc:
                held = sent_at < self._lease_valid_until.get(camera_id, 0.0)
                log.warning("cannot renew lease of camera %s: %s", camera_id, exc)
            else:
                if held:
                    self._lease_valid_until[camera_id] = sent_at + self._timings.lease_s
            if not held:
                log.warning("camera %s: lease lost; another capture process may take it", camera_id)
                self._stop_camera(camera_id, "lease lost", announce=False, release=False)

    def _stop_camera(self, camera_id: str, reason: str, *, announce: bool, release: bool = True) -> None:
        """Stop the camera's reader (joined later), release its lease and, if ``announce``, tell clients."""
        with self._lock:
            reader = self._readers.pop(camera_id, None)
            self._lease_valid_until.pop(camera_id, None)
            if reader is not None:
                self._retiring.append(reader)
        if reader is None:
            return
        reader.stop()
        log.info("camera %s: capture stopped (%s)", camera_id, reason)
        if release:
            self._guard(lambda: self._leases.release(camera_id))
        if announce:
            self._announce_stop(reader.camera, reason)
        self._reap()

    def _announce_stop(self, camera: Camera, reason: str) -> None:
        """Emit ``stream_stopped``; a removed camera's status is deleted, a disabled one's set offline."""
        if reason == "removed":
            self._guard(lambda: self._redis.delete(keys.camera_status(camera.camera_id)))
        else:
            store_status(self._redis, camera.camera_id, {"status": 0, "message": f"stream stopped ({reason})"})
        self._sink.to_camera(camera.camera_id, "stream_stopped", {"cameraId": camera.wire_id, "reason": reason})

    def _reap(self) -> None:
        """Forget retired readers whose threads have ended."""
        with self._lock:
            self._retiring = [r for r in self._retiring if not r.join(0.0)]

    # ----------------------------------------------------------------- sampling

    def _sample_loop(self) -> None:
        """Sample every running camera on its own drift-free schedule."""
        interval = self.settings.capture.frame_interval_s
        while not self._stop.is_set():
            now = time.monotonic()
            readers = self._running().values()
            for reader in readers:
                if reader.next_sample <= now:
                    self._sample_guarded(reader, now)
                    reader.next_sample = next_tick(reader.origin, interval, time.monotonic())
            upcoming = min((r.next_sample for r in self._running().values()), default=now + 0.25)
            self._stop.wait(min(max(upcoming - time.monotonic(), 0.0), 0.25))

    def _sample_guarded(self, reader: CameraReader, now: float) -> None:
        """Sample one camera; a failure is logged and never stops the other cameras."""
        try:
            self._sample(reader, now)
        except Exception:  # one camera's failure (Redis, broker, encoder) must not stop the sampler
            log.exception("camera %s: sampling failed", reader.camera.camera_id)

    def _sample(self, reader: CameraReader, now: float) -> None:
        """Submit the camera's latest frame if it is new; report the camera offline if frames stopped."""
        frame = reader.slot.newer_than(reader.last_sampled)
        if frame is None:
            self._check_stale(reader, now)
            return
        reader.last_sampled = frame.seq
        self._submit_frame(reader.camera, frame)

    def _check_stale(self, reader: CameraReader, now: float) -> None:
        """Report an online camera offline when its reader has delivered nothing for too long."""
        stale_after = self._timings.stale_after_s or max(10.0, 3 * self.settings.capture.frame_interval_s)
        last = reader.slot.last_received()
        if reader.reporter.is_online and last is not None and now - last > stale_after:
            reader.reporter.offline(f"no frames for {stale_after:.0f} s")

    def _submit_frame(self, camera: Camera, frame: Frame) -> str | None:
        """Store the frame and enqueue ``detect_frame``; the frame id, or None if dropped (too many in flight)."""
        cfg = self.settings.capture
        camera_id = camera.camera_id
        if self._inflight_count(camera_id) >= cfg.max_in_flight:
            self._redis.hincrby(keys.camera_stats(camera_id), "dropped_inflight", 1)
            return None
        jpeg = encode_jpeg(frame.image, cfg.jpeg_quality)
        preview = preview_jpeg(frame.image)
        frame_id = f"{camera_id}-{uuid.uuid4().hex[:12]}"
        deadline = frame.captured_at + cfg.frame_deadline_s
        self._store_frame(camera, frame_id, frame, jpeg, preview, deadline)
        try:
            self._send_task(
                DETECT_TASK,
                args=[camera_id, frame_id, frame.captured_at],
                queue=DETECT_QUEUE,
                expires=datetime.fromtimestamp(deadline, UTC),
                ignore_result=True,
            )
        except BaseException:
            self._redis.zrem(keys.camera_inflight(camera_id), frame_id)  # the slot is not taken after all
            self._redis.hincrby(keys.camera_stats(camera_id), "send_failed", 1)
            raise
        return frame_id

    def _inflight_count(self, camera_id: str) -> int:
        """Frames of the camera still in flight, after dropping those past their deadline."""
        inflight = keys.camera_inflight(camera_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.zremrangebyscore(inflight, "-inf", time.time() - self.settings.capture.frame_deadline_s)
        pipe.zcard(inflight)
        return int(pipe.execute()[1])

    def _store_frame(
        self, camera: Camera, frame_id: str, frame: Frame, jpeg: bytes, preview: bytes, deadline: float
    ) -> None:
        """Write the frame's JPEG, metadata, the camera's latest frame, in-flight entry and counter at once."""
        cfg = self.settings.capture
        camera_id = camera.camera_id
        width, height = image_size(frame.image)
        meta: dict[FieldT, EncodableT] = {
            "camera_id": camera_id,
            "wire_id": json.dumps(camera.wire_id),
            "captured_at": repr(frame.captured_at),
            "deadline": repr(deadline),
            "width": width,
            "height": height,
        }
        inflight = keys.camera_inflight(camera_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(keys.frame_image(frame_id), jpeg, px=int(cfg.frame_ttl_s * 1000))
        pipe.set(keys.frame_preview(frame_id), preview, px=int(cfg.frame_ttl_s * 1000))
        pipe.hset(keys.frame_meta(frame_id), mapping=meta)
        pipe.pexpireat(keys.frame_meta(frame_id), int((deadline + META_GRACE_S) * 1000))
        pipe.set(keys.camera_latest_frame(camera_id), jpeg, ex=LATEST_FRAME_TTL_S)
        pipe.zadd(inflight, {frame_id: time.time()})
        pipe.expire(inflight, int(cfg.frame_deadline_s + META_GRACE_S))
        pipe.hincrby(keys.camera_stats(camera_id), "captured", 1)
        pipe.hset(keys.camera_stats(camera_id), keys.CAMERA_FPS_FIELD, repr(self._fps(camera_id, frame.captured_at)))
        pipe.execute()

    def _fps(self, camera_id: str, captured_at: float) -> float:
        """Frames per second sent to the detector for the camera, smoothed over the last few frames."""
        last, fps = self._sent_at.get(camera_id, (None, 0.0))
        if last is not None and captured_at > last:
            rate = 1.0 / (captured_at - last)
            fps = rate if fps == 0.0 else fps + FPS_SMOOTHING * (rate - fps)
        self._sent_at[camera_id] = (captured_at, fps)
        return round(fps, 4)


def preview_jpeg(image: Image) -> bytes:
    """A small JPEG of the frame for dashboard tiles (at most ``PREVIEW_WIDTH`` wide)."""
    width, height = image_size(image)
    if width > PREVIEW_WIDTH:
        image = resize(image, PREVIEW_WIDTH, max(1, round(height * PREVIEW_WIDTH / width)))
    return encode_jpeg(image, PREVIEW_QUALITY)


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m workers.capture``."""
    parser = argparse.ArgumentParser(prog="python -m workers.capture", description=__doc__.splitlines()[0])
    parser.add_argument("--owner-id", help="lease owner id (default: host:pid:random)")
    parser.add_argument("--once-for", type=float, metavar="SECONDS", help="run this long, then stop cleanly")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the capture service until SIGTERM/SIGINT (or ``--once-for`` seconds)."""
    args = build_parser().parse_args(argv)
    settings = bootstrap()
    quiet_native_logs()
    redis_url = settings.redis_url or str(app.conf.broker_url)  # the broker is this Redis too
    client = redis.Redis.from_url(redis_url, socket_timeout=10, health_check_interval=10)
    service = CaptureService(settings, client, Emitter(redis_url), send_task=app.send_task, owner_id=args.owner_id)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        service.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start()
    deadline = None if args.once_for is None else time.monotonic() + args.once_for
    while not service.wait(0.5):
        if deadline is not None and time.monotonic() >= deadline:
            break
    service.close()
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
