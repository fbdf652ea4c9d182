"""The desired camera set in Redis, shared by the web API, the CLI and the capture service."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from traffic import keys
from traffic.cameras import Camera
from traffic.errors import CameraError

log = logging.getLogger(__name__)


def _text(value: bytes | str) -> str:
    """``value`` as text, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else value


class CameraRegistry:
    """Cameras by id in the hash ``keys.CAMERAS``; every change is announced on ``keys.CAMERAS_CHANGED``."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self._redis = redis_client

    def add(self, camera: Camera) -> bool:
        """Store (or replace) ``camera``; True if its id was new."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(keys.CAMERAS, camera.camera_id, json.dumps(camera.to_json()))
        pipe.publish(keys.CAMERAS_CHANGED, camera.camera_id)
        created, _ = pipe.execute()
        return bool(created)

    def remove(self, camera_id: str) -> bool:
        """Forget the camera; True if it existed."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(keys.CAMERAS, camera_id)
        pipe.publish(keys.CAMERAS_CHANGED, camera_id)
        removed, _ = pipe.execute()
        return bool(removed)

    def get(self, camera_id: str) -> Camera | None:
        """The camera with this id, or None."""
        raw = self._redis.hget(keys.CAMERAS, camera_id)
        return None if raw is None else self._parse(camera_id, raw)

    def list(self) -> list[Camera]:
        """Every stored camera, by id; malformed entries are logged and skipped."""
        entries: dict[Any, Any] = self._redis.hgetall(keys.CAMERAS)
        cameras = (self._parse(_text(cid), raw) for cid, raw in entries.items())
        return sorted((c for c in cameras if c is not None), key=lambda c: c.camera_id)

    def status(self, camera_id: str) -> dict[str, Any] | None:
        """The camera's connection status {status, message, since, latencyMs?}, or None if never reported."""
        raw: dict[Any, Any] = self._redis.hgetall(keys.camera_status(camera_id))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        status: dict[str, Any] = {
            "status": int(fields.get("status", "0")),
            "message": fields.get("message", ""),
            "since": float(fields.get("since", "0")),
        }
        if "latencyMs" in fields:
            status["latencyMs"] = int(fields["latencyMs"])
        return status

    def stats(self, camera_id: str) -> dict[str, int]:
        """The camera's counters (captured, dropped_inflight, …); its fps figure is Prometheus's."""
        raw: dict[Any, Any] = self._redis.hgetall(keys.camera_stats(camera_id))
        return {_text(k): int(_text(v)) for k, v in raw.items() if _text(k) != keys.CAMERA_FPS_FIELD}

    @staticmethod
    def _parse(camera_id: str, raw: bytes | str) -> Camera | None:
        """The camera stored as ``raw``, or None (logged) if it is malformed."""
        try:
            camera = Camera.from_json(json.loads(raw))
        except (ValueError, CameraError, AttributeError) as exc:
            log.warning("skipping malformed camera entry %s: %s", camera_id, exc)
            return None
        if camera.camera_id != camera_id:
            log.warning("skipping camera entry %s: it names camera %s", camera_id, camera.camera_id)
            return None
        return camera
