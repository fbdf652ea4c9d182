"""REST API (grows in the web issue): health check, cameras, latest verdicts."""

from __future__ import annotations

import json
from typing import Any

import redis
from flask import Blueprint, current_app, jsonify

import traffic
from traffic import keys

blueprint = Blueprint("api", __name__, url_prefix="/api")


def envelope(data: Any, code: int = 200, msg: str = "OK") -> Any:
    """The old system's response shape ``{code, msg, data}``."""
    response = jsonify({"code": code, "msg": msg, "data": data})
    response.status_code = code
    return response


def store() -> redis.Redis:
    """The app's Redis client (str responses)."""
    client: redis.Redis = current_app.extensions["traffic_redis"]
    return client


@blueprint.get("/health/health_check")
def health_check() -> Any:
    """Liveness plus Redis reachability."""
    try:
        store().ping()
        status = "UP"
    except redis.RedisError:
        status = "DEGRADED"
    return envelope({"status": status, "service": "traffic", "version": traffic.__version__})


@blueprint.get("/cameras/<camera_id>/latest")
def latest(camera_id: str) -> Any:
    """The camera's latest final detection_result."""
    raw = store().get(keys.camera_latest(camera_id))
    if raw is None:
        return envelope(None, 404, "no result yet")
    return envelope(json.loads(raw))
