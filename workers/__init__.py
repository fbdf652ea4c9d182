"""Celery tasks of the pipeline; ``celery -A workers worker -Q gpu|llm|default`` runs them."""

from __future__ import annotations

from workers.celery_app import create_celery_app

app = create_celery_app()
"""The app ``celery -A workers`` finds; its configuration is read from the environment on first use."""

__all__ = ["app", "create_celery_app"]
