"""Worker lifecycle hooks: traffic's logging, a fresh context per pool child, metrics from task results."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import setup_logging, task_postrun, worker_init, worker_process_init

from infra import celery_names
from infra.runtime import configure_logging
from workers.context import worker_context
from workers.metrics import FrameOutcome, prepare_node, record, serve_node

log = logging.getLogger(__name__)


def connect() -> None:
    """Connect the hooks (idempotent: each is connected once per process)."""
    setup_logging.connect(_configure_logging, weak=False, dispatch_uid="traffic.setup_logging")
    worker_process_init.connect(_fresh_context, weak=False, dispatch_uid="traffic.worker_process_init")
    worker_init.connect(_node_started, weak=False, dispatch_uid="traffic.worker_init")
    task_postrun.connect(_task_done, weak=False, dispatch_uid="traffic.task_postrun")


def _configure_logging(**_: Any) -> None:
    """Use traffic's logging (with secret redaction) instead of Celery's."""
    configure_logging(worker_context().settings)


def _fresh_context(**_: Any) -> None:
    """A forked pool child builds its own resources on first use."""
    worker_context()


def _node_started(sender: Any = None, **_: Any) -> None:
    """A worker node starts: a clean metrics folder of its own, and its exporter when a port is set."""
    settings = worker_context().settings.metrics
    nodename = str(getattr(sender, "hostname", None) or f"worker-{os.getpid()}")
    try:
        folder = prepare_node(settings, nodename)
        if folder is not None and settings.port:
            serve_node(settings, folder)
    except OSError as exc:
        log.error("metrics exporter not started: %s", exc)


def _task_done(sender: Any = None, retval: Any = None, state: str | None = None, **_: Any) -> None:
    """Record from the return values of the detector and assessment tasks."""
    name = getattr(sender, "name", "")
    if name == celery_names.DETECT_FRAME and isinstance(retval, list):
        outcomes = [o for o in retval if isinstance(o, FrameOutcome)]
        for outcome in outcomes:
            record("frame", outcome)
        detected = [o.batch for o in outcomes if o.status == "detected"]
        if detected:
            record("batch", max(detected))
    elif name == celery_names.ASSESS_GROUP and state == "SUCCESS" and isinstance(retval, dict):
        record("verdict", retval)
