"""Periodic jobs run by ``celery -A workers beat``; all on the ``default`` queue, all idempotent."""

from __future__ import annotations

from typing import Any

from infra import celery_names

SCHEDULE: dict[str, dict[str, Any]] = {
    # Finalise every frame whose deadline passed without a verdict (partial/unavailable).
    "sweep-deadlines": {"task": celery_names.SWEEP_DEADLINES, "schedule": 1.0, "options": {"expires": 5}},
    # The last traffic_stats of a burst (a camera's frames within a second of its last event) goes out.
    "send-owed-stats": {"task": celery_names.SEND_OWED_STATS, "schedule": 1.0, "options": {"expires": 5}},
    # Cameras without a live capture lease are reported offline; stale alerts end.
    "camera-watchdog": {"task": celery_names.CAMERA_WATCHDOG, "schedule": 5.0, "options": {"expires": 10}},
    # Queue depths, key-pool state and in-flight counts for the dashboard and Prometheus.
    "queue-gauges": {"task": celery_names.RECORD_GAUGES, "schedule": 5.0, "options": {"expires": 10}},
    # Alert events into the incident database (waiting in Redis while it is down).
    "flush-incidents": {"task": celery_names.FLUSH_INCIDENTS, "schedule": 2.0, "options": {"expires": 5}},
    # Incident events waiting for the MQTT broker are published (they wait in Redis while it is down).
    "publish-mqtt": {"task": celery_names.PUBLISH_MQTT, "schedule": 1.0, "options": {"expires": 5}},
    # Incident events fanned out to webhook subscriptions; deliveries whose (re)try is due sent to deliver_webhook.
    "dispatch-webhooks": {"task": celery_names.DISPATCH_WEBHOOKS, "schedule": 1.0, "options": {"expires": 5}},
    # Incidents past their retention go, with their audit logs.
    "expire-incidents": {"task": celery_names.EXPIRE_INCIDENTS, "schedule": 3600.0, "options": {"expires": 600}},
}
