"""The desired camera set in Redis, shared by the web API, the CLI and the capture service."""

from __future__ import annotations

import builtins
import json
import logging
import time
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from traffic import redis_keys
from traffic.cameras import Camera
from traffic.errors import CameraError

log = logging.getLogger(__name__)


_ADD_LUA = """
local exists = redis.call('HEXISTS', KEYS[1], ARGV[1])
local limit = tonumber(ARGV[3])
if exists == 0 and limit >= 0 and redis.call('HLEN', KEYS[1]) >= limit then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1 - exists
"""


class CameraLimitReached(CameraError):
    """Adding a camera would exceed the configured number of cameras."""

    def __init__(self, limit: int) -> None:
        super().__init__("camera_limit", f"this server runs at most {limit} cameras (TRAFFIC_MAX_CAMERAS)")
        self.limit = limit


def _text(value: bytes | str) -> str:
    """``value`` as text, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else value


class CameraRegistry:
    """Cameras by id in the hash ``redis_keys.CAMERAS``; every change is announced on ``redis_keys.CAMERAS_CHANGED``."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self._redis = redis_client
        self._add = redis_client.register_script(_ADD_LUA)

    def add(self, camera: Camera, *, limit: int | None = None) -> bool:
        """Store (or replace) ``camera``; True if its id was new. With ``limit``, a new camera beyond that many
        raises ``CameraLimitReached`` (checked and stored in one step, so concurrent adds cannot overshoot)."""
        result = self._add(
            keys=[redis_keys.CAMERAS, redis_keys.CAMERAS_CHANGED],
            args=[camera.camera_id, json.dumps(camera.to_json()), -1 if limit is None else limit],
        )
        if int(result) < 0:
            raise CameraLimitReached(limit or 0)
        return bool(int(result))

    def remove(self, camera_id: str) -> bool:
        """Forget the camera; True if it existed."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(redis_keys.CAMERAS, camera_id)
        pipe.publish(redis_keys.CAMERAS_CHANGED, camera_id)
        removed, _ = pipe.execute()
        return bool(removed)

    def changes(self) -> Any:
        """A pub/sub subscribed to camera changes (messages carry the changed camera's id)."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(redis_keys.CAMERAS_CHANGED)
        return pubsub

    def get(self, camera_id: str) -> Camera | None:
        """The camera with this id, or None."""
        raw = self._redis.hget(redis_keys.CAMERAS, camera_id)
        return None if raw is None else self._parse(camera_id, raw)

    def list(self) -> list[Camera]:
        """Every stored camera, by id; malformed entries are logged and skipped."""
        entries: dict[Any, Any] = self._redis.hgetall(redis_keys.CAMERAS)
        cameras = (self._parse(_text(cid), raw) for cid, raw in entries.items())
        return sorted((c for c in cameras if c is not None), key=lambda c: c.camera_id)

    def status(self, camera_id: str) -> dict[str, Any] | None:
        """The camera's connection status {status, message, since, latencyMs?}, or None if never reported."""
        raw: dict[Any, Any] = self._redis.hgetall(redis_keys.camera_status(camera_id))
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

    def set_status(self, camera_id: str, payload: dict[str, Any]) -> None:
        """Replace the camera's status with ``payload`` (status, message, latencyMs?) and ``since`` = now."""
        fields: dict[FieldT, EncodableT] = {
            "status": payload["status"],
            "message": payload["message"],
            "since": time.time(),
        }
        if "latencyMs" in payload:
            fields["latencyMs"] = payload["latencyMs"]
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(redis_keys.camera_status(camera_id))
        pipe.hset(redis_keys.camera_status(camera_id), mapping=fields)
        pipe.execute()

    def clear_status(self, camera_id: str) -> None:
        """Forget the camera's status (it was removed)."""
        self._redis.delete(redis_keys.camera_status(camera_id))

    def mark_offline(self, camera_id: str, message: str) -> bool:
        """Report the camera offline with ``message`` unless its status already says offline; True if changed."""
        status = self._redis.hget(redis_keys.camera_status(camera_id), "status")
        if status is not None and _text(status) == "0":
            return False
        fields: dict[FieldT, EncodableT] = {"status": "0", "message": message, "since": str(time.time())}
        self._redis.hset(redis_keys.camera_status(camera_id), mapping=fields)
        return True

    def ids(self) -> builtins.list[str]:
        """The id of every stored camera entry, well-formed or not."""
        return [_text(cid) for cid in self._redis.hkeys(redis_keys.CAMERAS)]

    def raw_entry(self, camera_id: str) -> bytes | str | None:
        """The camera's stored JSON as it is (None if absent)."""
        raw: bytes | str | None = self._redis.hget(redis_keys.CAMERAS, camera_id)
        return raw

    def stats(self, camera_id: str) -> dict[str, int]:
        """The camera's counters (captured, dropped_inflight, …); its fps figure is Prometheus's."""
        raw: dict[Any, Any] = self._redis.hgetall(redis_keys.camera_stats(camera_id))
        return {_text(k): int(_text(v)) for k, v in raw.items() if _text(k) != redis_keys.CAMERA_FPS_FIELD}

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
