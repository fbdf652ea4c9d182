"""One camera's reader thread: connect, keep only the latest frame, reconnect with backoff, report status."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from infra.camera_registry import CameraRegistry
from infra.camera_sources import Guard, SourceError, open_source
from traffic.cameras import Camera, mask_url, next_tick, reconnect_delay
from traffic.errors import ImageError
from traffic.evidence import RING_JPEG_QUALITY, FrameRing, evidence_frame
from traffic.imaging import Image, encode_jpeg
from traffic.settings import Settings
from workers.capture.timings import CaptureTimings

log = logging.getLogger(__name__)

SUBMIT_SMOOTHING = 0.2
"""Weight of the newest sample's submit time in ``CameraReader.submit_s``."""
POSTPONE_MIN_S = 0.01
"""A sample timed to a turn is taken when due unless the turn moved it at least this much later."""


class EventSink(Protocol):
    """``infra.emitter.Emitter``, or a stand-in."""

    def to_camera(self, camera_id: str, event: str, data: dict[str, Any]) -> None:
        """Send ``event`` to the camera's room."""
        ...


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


class StatusReporter:
    """Stores a camera's connection status in Redis and emits ``camera_status`` whenever it changes."""

    def __init__(self, camera: Camera, registry: CameraRegistry, sink: EventSink) -> None:
        self._camera = camera
        self._registry = registry
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
            store_status(self._registry, self._camera.camera_id, payload)
            self._sink.to_camera(self._camera.camera_id, "camera_status", payload)


def store_status(registry: CameraRegistry, camera_id: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` (status, message, latencyMs?) as the camera's status; a Redis outage is logged."""
    try:
        registry.set_status(camera_id, payload)
    except redis.RedisError as exc:
        log.warning("cannot store status of camera %s: %s", camera_id, exc)


CLIP_SLACK_S = 5.0
"""The ring spans a clip plus the frame deadline plus this: an alert can come as late as its frame's
deadline (the model's answer, or the sweeper's), and its clip is cut right after."""


def clip_ring(settings: Settings) -> FrameRing | None:
    """A camera's ring buffer for clips, when evidence is kept."""
    config = settings.evidence
    if not config.dir:
        return None
    span_s = config.clip_before_s + config.clip_after_s + settings.capture.frame_deadline_s + CLIP_SLACK_S
    return FrameRing(fps=config.clip_fps, span_s=span_s, max_bytes=int(config.ring_max_mb * 1024 * 1024))


def keep_for_clips(ring: FrameRing, image: Image, at: float) -> None:
    """Add the frame to the ring if it is due there (scaled down and JPEG-encoded only then)."""
    if ring.wants(at):
        try:
            ring.add(at, encode_jpeg(evidence_frame(image), RING_JPEG_QUALITY))
        except ImageError as exc:
            log.warning("frame not kept for clips: %s", exc)


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
        guard: Guard,
    ) -> None:
        self.camera = camera
        self.reporter = reporter
        self.slot = FrameSlot()
        self.attempts: deque[float] = deque(maxlen=100)
        """Monotonic times of connection attempts (observable for tests and diagnostics)."""
        self.last_sampled = 0
        self.submit_s = 0.0
        """Smoothed seconds a sample takes to reach the detector's slot (encode, store, offer)."""
        self.late_s = 0.0
        """Smoothed seconds a sample timed to a turn is taken after its time (the sampler was busy)."""
        self.last_sample_at = 0.0
        """``time.monotonic()`` of the last sample."""
        self.timed = False
        """Whether ``next_sample`` is timed to the camera's detector turn (checked again when it is due)."""
        self._default_interval_s = settings.capture.frame_interval_s
        self._schedule = threading.Lock()
        self.interval = camera.detect_interval_s(self._default_interval_s)
        """Seconds between sampled frames: the camera's ``detectFps``, else ``capture.frame_interval_s``."""
        self.origin = time.monotonic()
        self.next_sample = self.origin + self.interval
        """``time.monotonic()`` of the next sample; the sampler's drift-free schedule from ``origin``."""
        self._timings = timings
        self._rng = rng
        self._guard = guard
        """The camera URL policy, asked again at every (re)connect and redirect: DNS answers change."""
        self.ring = clip_ring(settings)
        """The camera's recent frames for incident clips (None when no evidence is kept)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{camera.camera_id}", daemon=True)

    def start(self) -> None:
        """Start reading."""
        log.info(
            "camera %s: capturing %s, detecting %.3g frames/s",
            self.camera.camera_id,
            mask_url(self.camera.url),
            1.0 / self.interval,
        )
        self._thread.start()

    def advance(self, now: float, at: float | None = None, pace: float = 0.0) -> None:
        """Schedule the sample after one taken at about ``now``: the next tick of the schedule, missed ones
        skipped; or ``at`` (timed to the camera's detector turn, within one interval), from which the
        schedule then runs, looked at again one ``pace`` (the time between turns) before it."""
        with self._schedule:
            self.last_sample_at = now
            self.timed = at is not None and now < at <= now + self.interval
            if at is not None and self.timed:
                self._wake_for(now, at, pace)
            else:
                self.next_sample = next_tick(self.origin, self.interval, now)

    def postpone(self, now: float, at: float | None, pace: float = 0.0) -> bool:
        """A sample timed to a turn is due (or its check), and the turn, forecast again, wants its sample at
        ``at`` (None: the regular schedule, one interval after the last sample): True if that is later, and
        rescheduled; False if the sample should be taken now."""
        with self._schedule:
            target = at if at is not None else self.last_sample_at + self.interval
            self.timed = at is not None
            if target <= now + POSTPONE_MIN_S:
                return False
            if self.timed:
                self._wake_for(now, target, pace)
            else:
                self.origin = self.next_sample = target
            return True

    def _wake_for(self, now: float, at: float, pace: float) -> None:
        """Sample at ``at``, but look at the turn again one ``pace`` before, when that is still to come: the
        forecast is closer then (one turn fewer ahead), and the sample may move."""
        self.origin = at
        check = at - pace
        self.next_sample = check if check > now + POSTPONE_MIN_S else at

    def note_late(self, seconds: float) -> None:
        """Fold how late a sample timed to a turn was taken (the sampler busy with other cameras) into ``late_s``."""
        self.late_s += SUBMIT_SMOOTHING * (max(seconds, 0.0) - self.late_s)

    def note_submit(self, seconds: float) -> None:
        """Fold the time one sample took from the reader's frame to the detector's slot into ``submit_s``."""
        if self.submit_s == 0.0:
            self.submit_s = seconds
        else:
            self.submit_s += SUBMIT_SMOOTHING * (seconds - self.submit_s)

    def retime(self, camera: Camera) -> None:
        """Take ``camera`` (the same source; only its detection rate changed) without reconnecting: a new
        schedule from now, its first sample no later than one new interval from now."""
        with self._schedule:
            now = time.monotonic()
            self.camera = camera
            self.interval = camera.detect_interval_s(self._default_interval_s)
            self.origin = now
            self.next_sample = min(self.next_sample, now + self.interval)
        log.info("camera %s: now detecting %.3g frames/s", camera.camera_id, 1.0 / self.interval)

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
            source = open_source(
                self.camera.url, poll_interval_s=self._poll_interval_s, stop=self._stop, guard=self._guard
            )
        except SourceError as exc:
            self._failed(exc.reason)
            return False
        got_frame = False
        try:
            while not self._stop.is_set():
                image = source.read()
                self.slot.put(image)
                if self.ring is not None:
                    keep_for_clips(self.ring, image, time.time())
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

    def _poll_interval_s(self) -> float:
        """How often a snapshot camera is asked for an image: twice per sample, at the current rate."""
        return self.interval / 2

    def _failed(self, reason: str) -> None:
        """Report the camera offline, unless we are stopping."""
        if not self._stop.is_set():
            log.warning("camera %s offline: %s", self.camera.camera_id, reason)
            self.reporter.offline(reason)
