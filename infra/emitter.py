"""Write-only Socket.IO emitter: workers publish events through the Redis message queue."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask_socketio import SocketIO

from infra.socketio_packets import emit_message
from traffic import redis_keys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Broadcast:
    """An emit to be queued on a Redis pipeline, so it goes out in the same round trip (or transaction) as
    the writes it announces: a browser that hears of a result can read it back at once, and an emit costs no
    round trip of its own."""

    channel: str
    packet: str
    """The message-queue packet, as python-socketio's manager publishes it."""
    on_sent: Callable[[], None] | None = None

    def queue(self, pipe: Any) -> None:
        """Queue the publish on ``pipe``."""
        pipe.publish(self.channel, self.packet)

    def sent(self) -> None:
        """Tell the emitter the pipeline ran (the broadcast metric is recorded then)."""
        if self.on_sent is not None:
            self.on_sent()


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

    def detection_result_broadcast(self, camera_id: str, data: dict[str, Any], *, captured_at: float) -> Broadcast:
        """A ``detection_result`` to the camera's room, to queue beside the writes of the result it carries
        (``Broadcast.queue``, then ``Broadcast.sent`` once the pipeline ran: the frame-age metric)."""
        manager = self._sio.server.manager
        message = emit_message(
            "detection_result", data, room=redis_keys.camera_room(camera_id), host_id=manager.host_id
        )
        return Broadcast(
            manager.channel,
            manager.json.dumps(message),
            lambda: self._broadcast_done(data, captured_at),
        )

    def _broadcast_done(self, data: dict[str, Any], captured_at: float) -> None:
        """A ``detection_result`` went out: its frame's age at broadcast, by stage."""
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
