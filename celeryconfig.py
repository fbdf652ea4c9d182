"""Celery settings of every traffic process, derived from the traffic settings.

Importing this module reads nothing and changes nothing: ``workers.celery_app.create_celery_app``
calls :func:`celery_options` with the settings an entry point loaded.

Why these values:
- JSON only: messages carry ids and Redis keys; never pickle, never images.
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a task whose worker dies is redelivered,
  not lost; ``workers.redelivery`` bounds how often (a poison task cannot loop forever).
- ``visibility_timeout`` (default 25 s): Redis redelivers an unacknowledged task this long after
  delivery. It must exceed the longest task run plus retry countdown, or a *live* slow task runs
  twice; every ``assess_group`` is hard-limited to 15 s and retries count down at most 4 s, so 25 s
  is safe. It must also be short enough that a dead worker's task comes back before the frame's
  deadline (45 s): 25 s plus a ≤ 2 s restore scan plus a typical 2–3 s call fits. Celery's default
  of 1 h would leave such a frame to the deadline sweeper.
- Prefetch 1: the gpu worker takes one frame at a time, so frames never wait behind a busy GPU in
  one worker's buffer while another is idle.
- ``worker_consumer``: Celery's consumer, except that losing Redis while a task is unacknowledged
  does not end the worker, and a lost broker is retried every 2 s at most, not every 30 s (see
  ``workers/consumer.py``).
"""

from __future__ import annotations

from typing import Any

from kombu import Queue

from infra import celery_names
from infra.celery_names import QUEUES
from traffic.settings import Settings

__all__ = ["QUEUES", "celery_options"]


def celery_options(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for ``settings`` (broker and backend on the same Redis)."""
    url = settings.redis_url or "redis://127.0.0.1:6379/0"
    transport = {
        "visibility_timeout": settings.pipeline.visibility_timeout_s,
        # Scan for a dead worker's tasks every 2 s (kombu's default scans every 10th 10 s tick: 100 s).
        "unacked_restore_interval": 2.0,
        "unacked_restore_throttle": 1,
        "socket_keepalive": True,
        # No ``retry_on_timeout``: it gave every kombu connection one retry on a connection error, and on the
        # pub/sub connection (control broadcasts) that retry reconnected and subscribed again inside kombu's
        # read, on a socket the worker's event loop does not watch, then waited there for a broadcast: after
        # a Redis restart an llm worker answered no ping for 40 s (tests/integration/test_consumer.py). Now
        # the read fails and Celery's consumer reconnects as for any lost broker.
        "health_check_interval": 10,
    }
    return {
        "broker_url": url,
        "result_backend": url,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"retry_policy": {"timeout": 5.0}, "health_check_interval": 10},
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_queues": tuple(Queue(name) for name in QUEUES),
        "task_default_queue": celery_names.DEFAULT_QUEUE,
        "task_routes": {name: {"queue": queue} for name, queue in celery_names.ROUTES.items()},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_consumer": "workers.consumer:ReconnectingConsumer",
        "result_expires": 3600,
        "result_extended": False,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "task_track_started": False,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": _beat_schedule(),
    }


def _beat_schedule() -> dict[str, Any]:
    """The beat schedule (see ``beat_schedule.py``)."""
    from beat_schedule import SCHEDULE

    return dict(SCHEDULE)
