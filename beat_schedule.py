"""Periodic jobs run by ``celery -A workers beat``; all on the ``default`` queue, all idempotent."""

from __future__ import annotations

from typing import Any

SCHEDULE: dict[str, dict[str, Any]] = {
    # Finalise every frame whose deadline passed without a verdict (partial/unavailable).
    "sweep-deadlines": {"task": "workers.tasks.sweep_deadlines", "schedule": 1.0, "options": {"expires": 5}},
    # Cameras without a live capture lease are reported offline; stale alerts end.
    "camera-watchdog": {"task": "workers.tasks.camera_watchdog", "schedule": 5.0, "options": {"expires": 10}},
    # Queue depths, key-pool state and in-flight counts for the dashboard and Prometheus.
    "queue-gauges": {"task": "workers.tasks.record_gauges", "schedule": 5.0, "options": {"expires": 10}},
}
