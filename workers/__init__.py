"""Celery tasks of the pipeline; ``celery -A workers worker -Q gpu|llm|default`` runs them."""

from __future__ import annotations

from celery import Celery

app = Celery("traffic", include=["workers.tasks"])
app.config_from_object("celeryconfig")

__all__ = ["app"]
