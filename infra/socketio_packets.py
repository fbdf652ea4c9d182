"""Reading the packets Flask-SocketIO publishes on its Redis message queue: the one place that knows their shape.

Emitters (``infra.emitter``, every web process) publish through python-socketio's ``RedisManager``,
which sends each emit as a JSON object ``{"method": "emit", "event", "data": [payload], "namespace",
"room", …}`` on the channel ``redis_keys.SOCKETIO_CHANNEL``. That shape is python-socketio's internal
format, not a public API: ``tests/web/test_socketio_packets.py`` checks it against the installed
version (pinned in requirements.txt) with a real emitter, so an upgrade that changes it fails there.
``emit_message`` writes the same shape, for an emit queued on a Redis pipeline beside the writes it
announces (``infra.emitter.Broadcast``); the same tests compare it with the library's own packet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EmitPacket:
    """One emit as the web servers receive it from the message queue."""

    event: str
    data: Any
    """The first (usually only) argument of the emit; None when it had none."""
    room: str | None
    namespace: str = "/"


def emit_message(event: str, data: Any, *, room: str, host_id: str, namespace: str = "/") -> dict[str, Any]:
    """The message python-socketio's ``PubSubManager.emit`` publishes for an emit of one JSON argument to a room
    (no callback, no binary attachment), before its manager serialises it."""
    return {
        "method": "emit",
        "event": event,
        "data": [data],
        "binary": False,
        "namespace": namespace,
        "room": room,
        "skip_sid": None,
        "callback": None,
        "host_id": host_id,
    }


def read_emit(raw: bytes | str | None) -> EmitPacket | None:
    """The emit in one message-queue packet, or None for anything else (other methods, malformed data)."""
    if raw is None:
        return None
    try:
        packet = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if not isinstance(packet, dict) or packet.get("method") != "emit":
        return None
    event, room, args = packet.get("event"), packet.get("room"), packet.get("data")
    if not isinstance(event, str):
        return None
    namespace = packet.get("namespace") or "/"
    first = args[0] if isinstance(args, list | tuple) and args else None
    return EmitPacket(event, first, room if isinstance(room, str) else None, str(namespace))
