"""``/metrics``: Prometheus exposition of the pipeline's state as Redis holds it, the key pool, and
the worker processes' own metrics when they run on this host.

The cluster state is read from Redis at scrape time (queues, pending frames, dead letters,
per-camera counters, fps and status, the key pool), so any web process answers for the whole
cluster. With a multiprocess directory configured (``traffic run`` sets one), the samples that the
worker processes of this host record (``workers.metrics``) are merged in too; on other hosts each
worker node serves its own. Task metrics are Flower's to export; they are not repeated here.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import redis
from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from infra.celery_names import QUEUES
from infra.evidence_store import EvidenceStore
from traffic import redis_keys
from traffic.settings import Settings

log = logging.getLogger(__name__)

blueprint = Blueprint("metrics", __name__)

CAMERA_COUNTERS = {
    "captured": "Frames captured and sent to the detector",
    "dropped_inflight": "Frames dropped because the camera had too many in flight",
    "dropped_age": "Frames dropped by the detector as past their deadline",
    "dropped_superseded": "Frames shed while waiting for the detector: a newer frame of the camera replaced them",
    "detected": "Frames through the detector",
    "assessed_groups": "Groups sent to assessment",
    "detect_errors": "Frames the detector could not process",
    "send_failed": "Frames the capture service could not enqueue",
    "samples_timed": "Samples moved earlier, to just before the camera's queued detector turn (overload only)",
}
FINAL_STATES = ("complete", "partial", "skipped", "unavailable")
SHED_REASONS = {"superseded": "dropped_superseded", "in_flight_cap": "dropped_inflight", "past_deadline": "dropped_age"}
"""``traffic_camera_frames_shed_total``'s reasons, each the camera counter it reads."""


class PipelineCollector(Collector):
    """Queue depths, frames awaiting a verdict, dead letters, per-camera counters and status."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def collect(self) -> Iterator[Any]:
        """One consistent read of Redis per scrape."""
        up = GaugeMetricFamily("traffic_redis_up", "1 when the web process could read Redis")
        try:
            families = list(self._families())
        except redis.RedisError as exc:
            log.warning("metrics: Redis unavailable: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from families

    def _families(self) -> Iterator[Any]:
        r = self._redis
        depth = GaugeMetricFamily("task_queue_size", "Messages waiting in a Celery queue", labels=["queue"])
        for queue in QUEUES:
            depth.add_metric([queue], float(r.llen(queue)))
        yield depth
        yield _gauge(
            "traffic_frames_pending", "Frames in assessment, not yet final", r.zcard(redis_keys.FRAMES_PENDING)
        )
        yield _gauge("traffic_dead_letters", "Group assessments in the dead-letter list", r.llen(redis_keys.DLQ))
        yield _gauge(
            "traffic_incidents_pending",
            "Alert events waiting in Redis to be written to the incident database (grows while it is down)",
            r.llen(redis_keys.INCIDENTS_PENDING),
        )
        cameras = [c.decode() if isinstance(c, bytes) else str(c) for c in r.hkeys(redis_keys.CAMERAS)]
        yield _gauge("traffic_cameras", "Cameras in the desired camera set", len(cameras))
        yield from self._camera_families(cameras)

    def _camera_families(self, cameras: list[str]) -> Iterator[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for camera in cameras:
            pipe.hgetall(redis_keys.camera_stats(camera))
            pipe.hget(redis_keys.camera_status(camera), "status")
        replies = pipe.execute()
        counters = {
            name: CounterMetricFamily(f"traffic_camera_{name}", help_text, labels=["camera"])
            for name, help_text in CAMERA_COUNTERS.items()
        }
        finals = CounterMetricFamily(
            "traffic_camera_frames_final", "Frames finalised, by assessment state", labels=["camera", "assessment"]
        )
        shed = CounterMetricFamily(
            "traffic_camera_frames_shed",
            "Frames never detected, by reason (superseded, in_flight_cap, past_deadline)",
            labels=["camera", "reason"],
        )
        online = GaugeMetricFamily("traffic_camera_online", "1 while the camera delivers frames", labels=["camera"])
        fps = GaugeMetricFamily("traffic_camera_fps", "Frames per second sent to the detector", labels=["camera"])
        active = 0
        for index, camera in enumerate(cameras):
            stats = {_text(k): float(_text(v)) for k, v in (replies[2 * index] or {}).items()}
            for name, family in counters.items():
                family.add_metric([camera], stats.get(name, 0.0))
            for state in FINAL_STATES:
                finals.add_metric([camera, state], stats.get(f"final_{state}", 0.0))
            for reason, counter in SHED_REASONS.items():
                shed.add_metric([camera, reason], stats.get(counter, 0.0))
            fps.add_metric([camera], stats.get(redis_keys.CAMERA_FPS_FIELD, 0.0))
            status = replies[2 * index + 1]
            is_online = status is not None and _text(status) == "1"
            active += is_online
            online.add_metric([camera], 1.0 if is_online else 0.0)
        yield from counters.values()
        yield finals
        yield shed
        yield online
        yield fps
        yield _gauge("active_cameras", "Cameras delivering frames", active)


class WorkerFilesCollector(Collector):
    """The samples that this host's worker processes wrote under the multiprocess directory, merged."""

    def __init__(self, base: str) -> None:
        self._base = base

    def collect(self) -> Iterator[Any]:
        """Every node folder's files (and any written at the top) at once: counters add up across processes."""
        from prometheus_client.multiprocess import MultiProcessCollector

        files = sorted(glob.glob(os.path.join(self._base, "**", "*.db"), recursive=True))
        try:
            yield from MultiProcessCollector.merge(files, accumulate=True)
        except (OSError, ValueError) as exc:  # a file being written or removed as we read
            log.warning("metrics: worker files unreadable: %s", exc)


class EvidenceCollector(Collector):
    """Disk used by incident evidence (snapshots and clips), measured at most once a minute: a scrape must
    not walk a large directory every few seconds."""

    MEASURE_EVERY_S = 60.0

    def __init__(self, directory: str) -> None:
        self._store = EvidenceStore(directory)
        self._measured: tuple[float, int, int] | None = None

    def collect(self) -> Iterator[Any]:
        """``traffic_evidence_bytes`` and ``traffic_evidence_files``."""
        now = time.monotonic()
        if self._measured is None or now - self._measured[0] >= self.MEASURE_EVERY_S:
            size, files = self._store.usage()
            self._measured = (now, size, files)
        _, size, files = self._measured
        yield _gauge("traffic_evidence_bytes", "Bytes of incident snapshots and clips on disk", size)
        yield _gauge("traffic_evidence_files", "Incident snapshot and clip files on disk", files)


def _text(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else value


def _gauge(name: str, help_text: str, value: Any) -> GaugeMetricFamily:
    """A label-less gauge."""
    family = GaugeMetricFamily(name, help_text)
    family.add_metric([], float(value))
    return family


def build_registry(client: redis.Redis, settings: Settings) -> CollectorRegistry:
    """A registry of this app's collectors (not the global one: several apps may live in one process)."""
    from infra.key_pool_metrics import KeyPoolCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(client))
    registry.register(KeyPoolCollector(client, settings))
    if settings.metrics.dir:
        registry.register(WorkerFilesCollector(settings.metrics.dir))
    if settings.evidence.dir:
        registry.register(EvidenceCollector(settings.evidence.dir))
    return registry


@blueprint.get("/metrics")
def metrics() -> Response:
    """The Prometheus text exposition (protected by the API token when one is configured)."""
    registry: CollectorRegistry | None = current_app.extensions.get("traffic_metrics")
    if registry is None:
        settings: Settings = current_app.config["TRAFFIC_SETTINGS"]
        client = redis.Redis.from_url(settings.redis_url or "", socket_timeout=2)
        registry = build_registry(client, settings)
        current_app.extensions["traffic_metrics"] = registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
