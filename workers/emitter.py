"""Write-only Socket.IO emitter: workers publish events through the Redis message queue."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask_socketio import SocketIO

from traffic import keys
from workers.metrics import record

log = logging.getLogger(__name__)


class Emitter:
    """Publishes events to the web servers' Socket.IO rooms; never imports the web app."""

    def __init__(self, redis_url: str) -> None:
        # No Flask app: Flask-SocketIO runs in write-only mode and only publishes to the queue.
        self._sio = SocketIO(message_queue=redis_url, channel=keys.SOCKETIO_CHANNEL, async_mode="threading")

    def emit(self, event: str, data: dict[str, Any], *, room: str) -> None:
        """Send ``event`` to everyone in ``room``; a Redis hiccup is logged, never raised into a task."""
        try:
            self._sio.emit(event, data, to=room, namespace="/")
        except Exception as exc:  # noqa: BLE001 - the result is stored in Redis either way
            log.warning("emit %s to %s failed: %s", event, room, exc)

    def to_camera(self, camera_id: str, event: str, data: dict[str, Any]) -> None:
        """Send ``event`` to the camera's room."""
        self.emit(event, data, room=keys.camera_room(camera_id))

    def detection_result(self, camera_id: str, data: dict[str, Any], *, captured_at: float) -> None:
        """Send a ``detection_result`` to the camera's room; its frame's age at broadcast is measured."""
        self.to_camera(camera_id, "detection_result", data)
        stage = "fast" if data.get("assessment") == "pending" else "final"
        record("broadcast", stage, time.time() - captured_at)

    def alert(self, camera_id: str, data: dict[str, Any]) -> None:
        """Send an ``alert`` event to the camera's room and to the all-alerts room."""
        self.to_camera(camera_id, "alert", data)
        self.emit("alert", data, room=keys.ALERTS_ROOM)
