"""Prometheus metrics recorded by the worker processes: defined here, fed by ``workers.signals`` and three choke points.

prometheus-client runs in multiprocess mode: every process writes its samples to files in the
directory named by ``PROMETHEUS_MULTIPROC_DIR``, prefork children included, and a reader merges the
files at scrape time (the node's own exporter, or the web server of a one-host stack). The library
picks that mode when it is first imported, so nothing here imports it before :func:`prepare_node`
has pointed the variable at the node's folder. Gauges of cluster state (queues, cameras, the key
pool) are not recorded here: the web process reads them from Redis at scrape time. Task counts and
runtimes are Flower's to export.

Names of the old system's families are kept, so its dashboards and queries still work.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traffic.settings import MetricsSettings

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LLM_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0)
AGE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 15.0, 30.0, 60.0)
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
"""Frames per batched predict: the sizes operators set (``detector.batch``)."""


@dataclass(frozen=True)
class FrameOutcome:
    """What the detector stage did with one frame (``detect_frame``'s return value)."""

    camera_id: str
    status: str
    """``detected``, ``dropped_age``, ``error``, ``superseded`` (its frame was replaced by a newer one),
    ``idle`` (the camera's turn came and no newer frame was waiting) or ``duplicate`` (its frame was final
    already: the task was delivered again)."""
    latency_s: float = 0.0
    objects: Mapping[str, int] = field(default_factory=dict)
    groups: int = 0
    assessed: int = 0
    error: str | None = None
    batch: int = 1
    """Frames detected with this one in the same predict call."""
    tracker_reset: str | None = None
    """Why the camera's tracking started again with this frame (``new``, ``unreadable``), if it did."""
    motion: Mapping[tuple[str, ...], int] = field(default_factory=dict)
    """Motion events of the frame by labels: (``line_crossing``, line, direction, class) or (kind, measure)."""


class WorkerMetrics:
    """The metric objects of one process."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Histogram

        reg = registry if registry is not None else REGISTRY

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
            return Counter(name, doc, labels, registry=reg)

        def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Any:
            return Histogram(name, doc, labels, buckets=buckets, registry=reg)

        self.detections = counter("detection_total", "Frames through the detector, by outcome", ("camera_id", "status"))
        self.detection_latency = histogram(
            "detection_latency_seconds", "Decode, detect and group time of one frame", (), LATENCY_BUCKETS
        )
        self.batches = histogram(
            "detector_batch_frames", "Frames detected by one batched predict call", (), BATCH_BUCKETS
        )
        self.tracker_resets = counter(
            "traffic_tracker_resets_total", "Times a camera's tracking started again, by why", ("camera_id", "reason")
        )
        self.line_crossings = counter(
            "traffic_line_crossings_total",
            "Road users counted crossing a counting line, by camera, line, direction and class",
            ("camera_id", "line", "direction", "class_name"),
        )
        self.motion_events = counter(
            "traffic_motion_events_total",
            "Rule-based motion events (dwell, wrong_way, near_miss by ttc/pet), by camera",
            ("camera_id", "kind", "measure"),
        )
        self.objects = counter("detected_objects_total", "Objects found by the detector", ("class_name",))
        self.groups = counter("traffic_groups_total", "Traffic groups found")
        self.generated = counter("tasks_generated_total", "Group assessments sent to the llm queue")
        self.processed = counter("tasks_processed_total", "Group assessments answered, by outcome", ("status",))
        self.llm_requests = counter(
            "llm_requests_total", "Calls to the vision model, by outcome", ("model", "key_id", "status")
        )
        self.llm_latency = histogram("llm_latency_seconds", "Vision-model call latency", ("model",), LLM_BUCKETS)
        self.tokens = counter("llm_token_usage_total", "Tokens used by the vision model", ("model", "type"))
        self.alerts = counter("risk_alerts_total", "Risk alerts raised", ("risk_level", "risk_type"))
        self.risk_types = counter("risk_types_detected_total", "Risk types in group verdicts", ("risk_type",))
        self.errors = counter("pipeline_errors_total", "Failures in the pipeline, by stage", ("stage", "error"))
        self.finalised = counter(
            "traffic_frames_finalised_total", "Frames finalised, by who finalised them and state", ("by", "assessment")
        )
        self.webhooks = counter(
            "traffic_webhook_deliveries_total",
            "Webhook delivery tries, by subscription and outcome (delivered, retried, dead_lettered)",
            ("subscription", "outcome"),
        )
        self.broadcast_age = histogram(
            "traffic_frame_age_at_broadcast_seconds",
            "Capture to Socket.IO broadcast of a detection_result",
            ("stage",),
            AGE_BUCKETS,
        )

    def frame(self, outcome: FrameOutcome) -> None:
        """One frame through the detector stage."""
        self.detections.labels(outcome.camera_id, outcome.status).inc()
        if outcome.status == "error":
            self.errors.labels("detect", outcome.error or "error").inc()
            return
        if outcome.status != "detected":
            return
        if outcome.tracker_reset:
            self.tracker_resets.labels(outcome.camera_id, outcome.tracker_reset).inc()
        for labels, count in outcome.motion.items():
            if labels[0] == "line_crossing":
                self.line_crossings.labels(outcome.camera_id, *labels[1:4]).inc(count)
            else:
                self.motion_events.labels(outcome.camera_id, labels[0], labels[1] if len(labels) > 1 else "").inc(count)
        self.detection_latency.observe(outcome.latency_s)
        for cls, count in outcome.objects.items():
            self.objects.labels(cls).inc(count)
        if outcome.groups:
            self.groups.inc(outcome.groups)
        if outcome.assessed:
            self.generated.inc(outcome.assessed)

    def batch(self, frames: int) -> None:
        """One batched predict call over ``frames`` frames."""
        self.batches.observe(frames)

    def verdict(self, data: Mapping[str, Any]) -> None:
        """One group verdict (``verdict_to_json``) returned by ``assess_group``."""
        error = data.get("error")
        status = "ok" if not error else ("fallback" if str(error).startswith("fallback:") else "error")
        self.processed.labels(status).inc()
        if status == "error":
            self.errors.labels("assess", str(error).split(":")[0]).inc()
        for risk_type in data.get("riskTypes") or ():
            self.risk_types.labels(str(risk_type)).inc()
        usage = data.get("usage") or {}
        model = str(data.get("model") or "")
        for kind in ("prompt", "completion"):
            if usage.get(kind):
                self.tokens.labels(model, kind).inc(int(usage[kind]))

    def llm_call(self, model: str, key_id: str, status: str, latency_s: float | None) -> None:
        """One provider call that ended with ``status`` (an ``Outcome`` value)."""
        self.llm_requests.labels(model, key_id, status).inc()
        if latency_s is not None:
            self.llm_latency.labels(model).observe(latency_s)

    def final(self, by: str, assessment: str) -> None:
        """A frame finalised by the chord, the deadline sweeper or the detector."""
        self.finalised.labels(by, assessment).inc()

    def alert(self, level: str, risk_types: tuple[str, ...] | list[str]) -> None:
        """A new risk alert."""
        for risk_type in risk_types or ("unspecified",):
            self.alerts.labels(level, risk_type).inc()

    def webhook(self, subscription: str, outcome: str) -> None:
        """One try of a webhook delivery ended: ``delivered``, ``retried`` or ``dead_lettered``."""
        self.webhooks.labels(subscription, outcome).inc()

    def broadcast(self, stage: str, age_s: float) -> None:
        """A ``detection_result`` sent ``age_s`` after its frame was captured."""
        self.broadcast_age.labels(stage).observe(max(0.0, age_s))


_metrics: WorkerMetrics | None = None
_pid: int | None = None
_lock = threading.Lock()


def metrics() -> WorkerMetrics:
    """This process's metrics, created on first use (after the multiprocess directory is set)."""
    global _metrics, _pid
    if _metrics is None or _pid != os.getpid():
        with _lock:
            if _metrics is None or _pid != os.getpid():
                _metrics = WorkerMetrics()
                _pid = os.getpid()
    return _metrics


def record(what: str, *args: Any) -> None:
    """Call ``metrics().<what>(*args)``; a metrics failure is logged and never fails a task."""
    try:
        getattr(metrics(), what)(*args)
    except Exception as exc:  # noqa: BLE001 - observability must not take the pipeline down
        log.warning("metric %s not recorded: %s", what, exc)


def node_dir(base: str | Path, nodename: str) -> Path:
    """The folder of one worker node inside the multiprocess directory."""
    return Path(base) / re.sub(r"[^A-Za-z0-9_.-]", "_", nodename)


def prepare_node(settings: MetricsSettings, nodename: str, environ: Any = os.environ) -> Path | None:
    """Empty the node's metrics folder and point prometheus-client at it (before the pool forks)."""
    if settings.dir is None and settings.port == 0:
        return None
    if settings.dir is None:
        import tempfile

        base = Path(tempfile.mkdtemp(prefix="traffic-metrics-"))
    else:
        base = Path(settings.dir)
    folder = node_dir(base, nodename)
    folder.mkdir(parents=True, exist_ok=True)
    clear_metric_files(folder)
    environ[MULTIPROC_ENV] = str(folder)
    _pick_value_class()
    return folder


def _pick_value_class() -> None:
    """Have prometheus-client re-read its mode if something imported it before the directory was set."""
    values: Any = sys.modules.get("prometheus_client.values")
    if values is not None:  # e.g. Celery's CLI loads Flower's command plugin, which imports it
        values.ValueClass = values.get_value_class()


def clear_metric_files(folder: str | Path) -> int:
    """Remove prometheus-client's sample files under ``folder`` (nothing else); returns how many."""
    removed = 0
    for path in Path(folder).rglob("*.db"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def serve_node(settings: MetricsSettings, folder: Path) -> Any:
    """Serve the node's merged metrics on ``settings.port`` from this (the main) process."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    server, _thread = start_http_server(settings.port, addr=settings.host, registry=registry)
    log.info("metrics of this node on http://%s:%d/metrics", settings.host, settings.port)
    return server
