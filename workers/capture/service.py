"""The capture service: claims its share of the cameras, runs their readers, samples frames into the pipeline.

Threads: a control loop (registry changes via pub/sub plus a periodic re-read, lease renewal), one
sampler (each camera at its own detection rate, ``1 / detectFps``, else every ``capture.frame_interval_s``,
on a drift-free schedule; under overload a sample moves earlier, to just before the camera's detector
turn) and one reader per claimed camera that overwrites a single latest-frame slot, so frames are never
queued in memory. A camera whose detection rate alone changes keeps its connection and takes the new
rate from its next sample.
Several capture processes share the cameras through expiring Redis leases (``workers.capture.leases``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

import redis

from infra import celery_names
from infra.camera_registry import CameraRegistry
from infra.frame_store import CapturedFrame, FrameStore, Offer
from infra.host_resolver import resolve_host
from traffic.cameras import Camera
from traffic.errors import CameraError
from traffic.evidence import FrameRing
from traffic.imaging import encode_jpeg, image_size, preview_jpeg
from traffic.settings import Settings
from traffic.turn_timing import TurnForecast, turn_sample_time
from traffic.url_policy import check_camera_url, policy_of
from workers.capture.clips import ClipCutter
from workers.capture.leases import Leases, default_owner_id, fair_share
from workers.capture.reader import CameraReader, EventSink, Frame, StatusReporter, clip_ring, store_status
from workers.capture.timings import CaptureTimings

log = logging.getLogger(__name__)

CLIP_POLL_S = 1.0
"""How often the clip requests of the owned cameras are looked at."""
FPS_SMOOTHING = 0.3
"""Weight of the newest interval in a camera's smoothed frames-per-second figure."""


class SendTask(Protocol):
    """``Celery.send_task``, or a stand-in with the same call shape."""

    def __call__(self, name: str, *, args: list[Any], **options: Any) -> object:
        """Publish task ``name`` with ``args``."""
        ...


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
        self._frames = FrameStore(redis_client)
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
        loops = [("capture-control", self._control_loop), ("capture-sampler", self._sample_loop)]
        if clip_ring(self.settings) is not None:
            loops.append(("capture-clips", self._clip_loop))
        for name, target in loops:
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
                pubsub = self._registry.changes()
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
            elif camera != reader.camera and camera == replace(reader.camera, detect_fps=camera.detect_fps):
                reader.retime(camera)  # only its detection rate changed: no reconnect
            elif camera != reader.camera:
                log.info("camera %s changed; restarting its capture", camera_id)
                self._stop_camera(camera_id, "changed", announce=False, release=False)
                self._try_claim(camera)
        for camera_id in set(self._rejected) - set(desired):
            del self._rejected[camera_id]
        enabled = [camera for camera in desired.values() if camera.enabled]
        self._balance(enabled, quota=fair_share(len(enabled), self._live_owners))

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

    def _check_url(self, url: str) -> str:
        """``url`` if the camera URL policy lets this service open it now; raises ``CameraError``."""
        return check_camera_url(url, policy_of(self.settings.capture), resolve_host)

    def _try_claim(self, camera: Camera) -> bool:
        """Start capturing ``camera`` if its URL is usable here and its lease is free; True if started."""
        try:
            self._check_url(camera.url)
        except CameraError as exc:
            self._reject(camera, exc)
            return False
        self._rejected.pop(camera.camera_id, None)
        if not self._leases.acquire(camera.camera_id):
            return False
        reader = CameraReader(
            camera,
            StatusReporter(camera, self._registry, self._sink),
            settings=self.settings,
            timings=self._timings,
            rng=self._rng,
            guard=self._check_url,
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
        StatusReporter(camera, self._registry, self._sink).offline(str(exc))

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
            self._guard(lambda: self._registry.clear_status(camera.camera_id))
        else:
            store_status(self._registry, camera.camera_id, {"status": 0, "message": f"stream stopped ({reason})"})
        self._sink.to_camera(camera.camera_id, "stream_stopped", {"cameraId": camera.wire_id, "reason": reason})

    def _reap(self) -> None:
        """Forget retired readers whose threads have ended."""
        with self._lock:
            self._retiring = [r for r in self._retiring if not r.join(0.0)]

    # ----------------------------------------------------------------- clips

    def _clip_loop(self) -> None:
        """Cut the incident clips of the owned cameras once they are due (about every second)."""
        cutter = ClipCutter(self.settings, self._redis, self._rings)
        while not self._stop.wait(CLIP_POLL_S):
            try:
                cutter.run_once(time.time())
            except redis.RedisError as exc:
                log.warning("clips not cut this time: %s", exc)
            except Exception:  # a bug in one clip must not end the loop for every camera
                log.exception("cutting clips failed")

    def _rings(self) -> dict[str, FrameRing]:
        """The ring buffers of the cameras read now."""
        return {camera_id: r.ring for camera_id, r in self._running().items() if r.ring is not None}

    # ----------------------------------------------------------------- sampling

    def _sample_loop(self) -> None:
        """Sample every running camera on its own drift-free schedule, at its own rate (timed to its detector
        turns under overload)."""
        while not self._stop.is_set():
            now = time.monotonic()
            readers = self._running().values()
            for reader in readers:
                if reader.next_sample <= now:
                    if reader.timed:
                        if self._postponed(reader):
                            continue
                        reader.note_late(time.monotonic() - reader.origin)
                    at, pace = self._sample_guarded(reader, now)
                    reader.advance(time.monotonic(), at, pace)
            upcoming = min((r.next_sample for r in self._running().values()), default=now + 0.25)
            self._stop.wait(min(max(upcoming - time.monotonic(), 0.0), 0.25))

    def _sample_guarded(self, reader: CameraReader, now: float) -> tuple[float | None, float]:
        """Sample one camera (see ``_sample``); a failure is logged and never stops the other cameras."""
        try:
            return self._sample(reader, now)
        except Exception:  # one camera's failure (Redis, broker, encoder) must not stop the sampler
            log.exception("camera %s: sampling failed", reader.camera.camera_id)
            return None, 0.0

    def _sample(self, reader: CameraReader, now: float) -> tuple[float | None, float]:
        """Submit the camera's latest frame if it is new; report the camera offline if frames stopped.

        Returns when to take the next sample (``time.monotonic()``) if it should be timed to the camera's
        detector turn rather than to the regular schedule (``capture.turn_timing``), with the time between
        turns (the turn is looked at again that long before its sample): under overload the
        queued turns are taken in order at a steady pace whatever the cameras' sampling phase, so the turn
        clock tells when the camera's turn is due (``Offer.turn``), and a sample just before it reaches the
        detector fresh instead of up to one interval old. Samples only move earlier than the regular
        schedule: no gap between two samples exceeds the interval.
        """
        frame = reader.slot.newer_than(reader.last_sampled)
        if frame is None:
            self._check_stale(reader, now)
            return None, 0.0
        reader.last_sampled = frame.seq
        started = time.monotonic()
        offer = self._submit_frame(reader.camera, frame, reader.interval, timed=reader.timed)
        done = time.monotonic()
        if offer is None:
            return None, 0.0
        reader.note_submit(done - started)
        if offer.outcome != "waiting" or offer.turn is None or not self.settings.capture.turn_timing:
            return None, 0.0
        return self._turn_sample_time(reader, offer.turn, done), offer.turn.pace

    def _postponed(self, reader: CameraReader) -> bool:
        """A sample timed to the camera's turn (or its check) is due: whether the turn, forecast again now
        (fewer turns ahead, so closer), wants it later (then it is rescheduled) or is gone (the regular
        schedule)."""
        try:
            turn = self._frames.turn(reader.camera.camera_id)
        except Exception as exc:  # Redis down, or a clock it cannot read: the sample is taken now
            log.warning("camera %s: could not read its detector turn: %s", reader.camera.camera_id, exc)
            return False
        if turn is None:
            return reader.postpone(time.monotonic(), None)
        at = self._turn_sample_time(reader, turn, reader.last_sample_at)
        return reader.postpone(time.monotonic(), at, turn.pace)

    def _turn_sample_time(self, reader: CameraReader, turn: TurnForecast, last_sample: float) -> float | None:
        """When to sample for ``turn`` (``time.monotonic()``), or None for the regular schedule."""
        now, wall = time.monotonic(), time.time()
        turn_at = now + (turn.sample_at(wall, reader.submit_s + reader.late_s) - wall)
        return turn_sample_time(last_sample, reader.interval, turn_at)

    def _check_stale(self, reader: CameraReader, now: float) -> None:
        """Report an online camera offline when its reader has delivered nothing for too long."""
        stale_after = self._timings.stale_after_s or max(10.0, 3 * reader.interval)
        last = reader.slot.last_received()
        if reader.reporter.is_online and last is not None and now - last > stale_after:
            reader.reporter.offline(f"no frames for {stale_after:.0f} s")

    def _submit_frame(self, camera: Camera, frame: Frame, interval_s: float, *, timed: bool = False) -> Offer | None:
        """Store the frame and offer it to the detector; the offer, or None if dropped (too many in flight).
        ``timed``: the sample was timed to the camera's detector turn (counted as ``samples_timed``).

        A camera keeps at most one detector task waiting: while it waits, each newer frame takes the waiting
        frame's place (``FrameStore.offer``), so under overload every camera gets its turn and the frame a
        worker starts on is the camera's newest.
        """
        cfg = self.settings.capture
        camera_id = camera.camera_id
        if not self._frames.has_room(camera_id, cfg.max_in_flight, cfg.frame_deadline_s):
            self._frames.count(camera_id, "dropped_inflight")
            return None
        width, height = image_size(frame.image)
        captured = CapturedFrame(
            frame_id=f"{camera_id}-{uuid.uuid4().hex[:12]}",
            camera_id=camera_id,
            wire_id=camera.wire_id,
            captured_at=frame.captured_at,
            deadline=frame.captured_at + cfg.frame_deadline_s,
            width=width,
            height=height,
            jpeg=encode_jpeg(frame.image, cfg.jpeg_quality),
            # At the frame's own quality: the detector decodes the preview instead of the frame where it is
            # large enough (traffic.frame_image), in half the time.
            preview=b"" if self.settings.privacy.blur else preview_jpeg(frame.image, cfg.jpeg_quality),
        )
        self._frames.admit(captured, ttl_s=cfg.frame_ttl_s, fps=self._fps(camera_id, frame.captured_at), timed=timed)
        lost_after_s = self._task_lost_after_s(interval_s)
        offer = self._frames.offer(captured, max_in_flight=cfg.max_in_flight, task_lost_after_s=lost_after_s)
        if offer.outcome == "dropped_inflight":
            return None
        if offer.outcome == "send":
            if offer.shed is not None:
                log.warning("camera %s: its waiting detector task never started; sending another", camera_id)
            self._send_detect(captured)
        return offer

    def _task_lost_after_s(self, interval_s: float) -> float:
        """A waiting detector task not started after this long is taken as lost: past Redis's redelivery time
        plus one of the camera's sampling intervals."""
        return self.settings.pipeline.visibility_timeout_s + interval_s

    def _send_detect(self, captured: CapturedFrame) -> None:
        """Send the detector task that will take the camera's waiting frame."""
        try:
            self._send_task(
                celery_names.DETECT_FRAME,
                args=[captured.camera_id, captured.frame_id, captured.captured_at],
                queue=celery_names.GPU_QUEUE,
                expires=datetime.fromtimestamp(captured.deadline, UTC),
                ignore_result=True,
            )
        except BaseException:
            self._frames.withdraw(captured.camera_id, captured.frame_id)  # the slot is not taken after all
            raise

    def _fps(self, camera_id: str, captured_at: float) -> float:
        """Frames per second sent to the detector for the camera, smoothed over the last few frames."""
        last, fps = self._sent_at.get(camera_id, (None, 0.0))
        if last is not None and captured_at > last:
            rate = 1.0 / (captured_at - last)
            fps = rate if fps == 0.0 else fps + FPS_SMOOTHING * (rate - fps)
        self._sent_at[camera_id] = (captured_at, fps)
        return round(fps, 4)
