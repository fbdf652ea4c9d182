"""Write-only Socket.IO emitter: workers publish events through the Redis message queue."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from flask_socketio import SocketIO

from traffic import redis_keys

log = logging.getLogger(__name__)


class Emitter:
    """Publishes events to the web servers' Socket.IO rooms; never imports the web app."""

    def __init__(self, redis_url: str, *, on_broadcast: Callable[[str, float], None] | None = None) -> None:
        """``on_broadcast(stage, age_s)`` hears of every ``detection_result`` sent (``fast`` or ``final``)."""
        self._on_broadcast = on_broadcast
        # No Flask app: Flask-SocketIO runs in write-only mode and only publishes to the queue.
        self._sio = SocketIO(message_queue=redis_url, channel=redis_keys.SOCKETIO_CHANNEL, async_mode="threading")

    def emit(self, event: str, data: dict[str, Any], *, room: str) -> None:
        """Send ``event`` to everyone in ``room``; a Redis hiccup is logged, never raised into a task."""
        try:
            self._sio.emit(event, data, to=room, namespace="/")
        except Exception as exc:  # noqa: BLE001 - the result is stored in Redis either way
            log.warning("emit %s to %s failed: %s", event, room, exc)

    def to_camera(self, camera_id: str, event: str, data: dict[str, Any]) -> None:
        """Send ``event`` to the camera's room."""
        self.emit(event, data, room=redis_keys.camera_room(camera_id))

    def detection_result(self, camera_id: str, data: dict[str, Any], *, captured_at: float) -> None:
        """Send a ``detection_result`` to the camera's room; its frame's age at broadcast is measured."""
        self.to_camera(camera_id, "detection_result", data)
        if self._on_broadcast is not None:
            stage = "fast" if data.get("assessment") == "pending" else "final"
            self._on_broadcast(stage, time.time() - captured_at)

    def alert(self, camera_id: str, data: dict[str, Any]) -> None:
        """Send an ``alert`` event to the camera's room and to the all-alerts room."""
        self.to_camera(camera_id, "alert", data)
        self.emit("alert", data, room=redis_keys.ALERTS_ROOM)

    def incident(self, camera_id: str, event: str, data: dict[str, Any]) -> None:
        """Send ``incident`` (new) or ``incident_updated`` to the camera's room and the all-alerts room."""
        self.to_camera(camera_id, event, data)
        self.emit(event, data, room=redis_keys.ALERTS_ROOM)
