"""Names of the Celery queues and tasks, in one place (no Celery import: the web process reads them too)."""

from __future__ import annotations

GPU_QUEUE = "gpu"
"""Detector tasks: served by one worker per GPU (``-P solo -c 1``)."""
LLM_QUEUE = "llm"
"""Group assessments: many vision-model calls in flight per worker (``-P threads``)."""
DEFAULT_QUEUE = "default"
"""Aggregation, the deadline sweeper and the other periodic jobs."""
QUEUES = (GPU_QUEUE, LLM_QUEUE, DEFAULT_QUEUE)
"""Every queue, in pipeline order (also the Redis list names the queue gauges read)."""

_TASKS = "workers.tasks."
DETECT_FRAME = _TASKS + "detect_frame"
ASSESS_GROUP = _TASKS + "assess_group"
AGGREGATE_FRAME = _TASKS + "aggregate_frame"
SWEEP_DEADLINES = _TASKS + "sweep_deadlines"
CAMERA_WATCHDOG = _TASKS + "camera_watchdog"
RECORD_GAUGES = _TASKS + "record_gauges"
FLUSH_INCIDENTS = _TASKS + "flush_incidents"
EXPIRE_INCIDENTS = _TASKS + "expire_incidents"
SEND_OWED_STATS = _TASKS + "send_owed_stats"
PUBLISH_MQTT = _TASKS + "publish_mqtt"
DISPATCH_WEBHOOKS = _TASKS + "dispatch_webhooks"
DELIVER_WEBHOOK = _TASKS + "deliver_webhook"
REPLAY_DEAD_LETTER = _TASKS + "replay_dead_letter"
TASK_PATTERN = _TASKS + "*"
"""Every task of the pipeline (routing: what no other rule names goes to ``DEFAULT_QUEUE``)."""

ROUTES = {
    DETECT_FRAME: GPU_QUEUE,
    ASSESS_GROUP: LLM_QUEUE,
    TASK_PATTERN: DEFAULT_QUEUE,
}
"""Task name (or pattern) → queue."""
