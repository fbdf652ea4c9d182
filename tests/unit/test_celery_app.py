"""The Celery app factory: configuration from settings, and nothing read at import time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from beat_schedule import SCHEDULE
from infra import celery_names
from traffic.settings import Settings
from workers.celery_app import create_celery_app

ROOT = Path(__file__).resolve().parents[2]


def test_the_factory_configures_the_app_from_the_settings_it_is_given() -> None:
    app = create_celery_app(Settings(redis_url="redis://127.0.0.1:6390/4"))
    assert app.conf.broker_url == app.conf.result_backend == "redis://127.0.0.1:6390/4"
    assert [q.name for q in app.conf.task_queues] == list(celery_names.QUEUES)
    assert app.conf.task_routes[celery_names.DETECT_FRAME] == {"queue": celery_names.GPU_QUEUE}
    assert app.conf.task_routes[celery_names.ASSESS_GROUP] == {"queue": celery_names.LLM_QUEUE}
    assert app.conf.task_routes[celery_names.TASK_PATTERN] == {"queue": celery_names.DEFAULT_QUEUE}
    assert app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]
    assert app.conf.beat_schedule == SCHEDULE


def test_every_scheduled_and_routed_task_is_registered() -> None:
    app = create_celery_app(Settings(redis_url="redis://127.0.0.1:6390/4"))
    app.loader.import_default_modules()
    names = {entry["task"] for entry in SCHEDULE.values()}
    names |= {celery_names.DETECT_FRAME, celery_names.ASSESS_GROUP, celery_names.AGGREGATE_FRAME}
    names.add(celery_names.REPLAY_DEAD_LETTER)
    assert names <= set(app.tasks)


def test_importing_the_app_and_its_config_reads_no_environment() -> None:
    # A broken setting fails only when Celery first asks for its configuration, not at import.
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:6391/2", "TRAFFIC_VISIBILITY_TIMEOUT": "soon"}
    code = (
        "import celeryconfig, beat_schedule, workers\n"
        "print('imported')\n"
        "try:\n"
        "    workers.app.conf.broker_url\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "imported"
    assert lines[1].startswith("ConfigError TRAFFIC_VISIBILITY_TIMEOUT")


def test_the_app_reads_the_environment_when_first_configured() -> None:
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:6391/2"}
    code = "import workers\nprint(workers.app.conf.broker_url)\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "redis://127.0.0.1:6391/2"
