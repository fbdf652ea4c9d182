"""The Celery app of the pipeline, built by a factory as the web app is."""

from __future__ import annotations

import os

from celery import Celery

from celeryconfig import celery_options
from traffic.config import load_settings
from traffic.settings import Settings
from workers import signals
from workers.batching import BatchSizing


def create_celery_app(settings: Settings | None = None) -> Celery:
    """A Celery app configured for ``settings``; without them, from the environment when first needed.

    Building the app reads nothing: the configuration is a promise Celery keeps the first time a
    process asks for it (``celery -A workers worker`` does at start-up).
    """
    app = Celery("traffic", include=["workers.tasks"])
    if settings is not None:
        app.conf.update(celery_options(settings))
    else:
        app.add_defaults(lambda: celery_options(load_settings(os.environ)))
    app.steps["worker"].add(BatchSizing)
    signals.connect()
    return app
