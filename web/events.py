"""Socket.IO events: the old protocol (ping, start/stop_stream, check_camera) plus subscribe/unsubscribe."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import current_app, request
from flask_socketio import SocketIO, emit, join_room, leave_room

from traffic import keys
from traffic.cameras import Camera, normalise_camera_id, validate_camera_url
from traffic.errors import CameraError
from traffic.settings import Settings
from workers.camera_registry import CameraRegistry

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 256


class EventError(Exception):
    """A client event that cannot be served; becomes an ``error`` event, the connection stays."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _settings() -> Settings:
    """The app's settings."""
    settings: Settings = current_app.config["TRAFFIC_SETTINGS"]
    return settings


def _registry() -> CameraRegistry:
    """The camera registry on the app's Redis."""
    return CameraRegistry(current_app.extensions["traffic_redis"])


def _object(data: Any, event: str) -> dict[str, Any]:
    """``data`` as a JSON object, or an EventError."""
    if not isinstance(data, dict):
        raise EventError("invalid_payload", f"{event} expects a JSON object")
    return data


def _camera_id(data: dict[str, Any]) -> tuple[str, str | int]:
    """The normalised (key, wire) camera id of ``data['cameraId']``."""
    try:
        return normalise_camera_id(data.get("cameraId"))
    except CameraError as exc:
        raise EventError(exc.code, str(exc)) from None


def _error(code: str, message: str, event: str | None) -> None:
    """Send an ``error`` event to the caller."""
    payload: dict[str, Any] = {"code": code, "message": message}
    if event:
        payload["event"] = event
    emit("error", payload)


def on_connect(auth: Any = None) -> bool:
    """Acknowledge a connection (refuse it when a token is configured and not given)."""
    token = _settings().server.auth_token
    if token:
        given = (auth or {}).get("token") if isinstance(auth, dict) else None
        given = given or request.args.get("token")
        if given != token:
            log.info("connection refused: bad or missing token")
            return False
    emit("connection_ack", {"message": "WS connected (pipeline ready)", "serverTime": time.time()})
    return True


def on_ping(data: Any = None) -> None:
    """Heartbeat."""
    emit("pong", {"timestamp": time.time()})


def on_subscribe(data: Any) -> dict[str, Any]:
    """Join the rooms of ``cameraIds`` and send each camera's latest result."""
    ids = _object(data, "subscribe").get("cameraIds")
    if not isinstance(ids, list) or not ids or len(ids) > MAX_SUBSCRIPTIONS:
        raise EventError("invalid_payload", f"cameraIds must be a list of 1..{MAX_SUBSCRIPTIONS} ids")
    joined = []
    for raw in ids:
        key, wire = _camera_id({"cameraId": raw})
        join_room(keys.camera_room(key))
        joined.append(wire)
        latest = current_app.extensions["traffic_redis"].get(keys.camera_latest(key))
        if latest:
            emit("detection_result", json.loads(latest))
    return {"subscribed": joined}


def on_unsubscribe(data: Any) -> dict[str, Any]:
    """Leave the rooms of ``cameraIds``."""
    ids = _object(data, "unsubscribe").get("cameraIds")
    if not isinstance(ids, list) or len(ids) > MAX_SUBSCRIPTIONS:
        raise EventError("invalid_payload", "cameraIds must be a list")
    left = []
    for raw in ids:
        key, wire = _camera_id({"cameraId": raw})
        leave_room(keys.camera_room(key))
        left.append(wire)
    return {"unsubscribed": left}


def on_start_stream(data: Any) -> dict[str, Any]:
    """Add (or restart) a camera in the server-side camera set and join its room."""
    payload = _object(data, "start_stream")
    key, wire = _camera_id(payload)
    try:
        url = validate_camera_url(payload.get("rtspUrl"), allow_files=_settings().capture.allow_file_sources)
    except CameraError as exc:
        raise EventError(exc.code, str(exc)) from None
    name = payload.get("name", "")
    camera = Camera(camera_id=key, url=url, name=name if isinstance(name, str) else "", wire_id=wire)
    _registry().add(camera)
    join_room(keys.camera_room(key))
    return {"cameraId": wire, "started": True}


def on_stop_stream(data: Any) -> dict[str, Any]:
    """Remove a camera from the server-side camera set."""
    key, wire = _camera_id(_object(data, "stop_stream"))
    if not _registry().remove(key):
        raise EventError("camera_not_found", f"camera {wire!r} is not running")
    return {"cameraId": wire, "stopped": True}


def register(socketio: SocketIO) -> None:
    """Attach every handler; errors become ``error`` events and the connection survives."""
    socketio.on_event("connect", on_connect)
    handlers = {
        "ping": on_ping,
        "subscribe": on_subscribe,
        "unsubscribe": on_unsubscribe,
        "start_stream": on_start_stream,
        "stop_stream": on_stop_stream,
    }
    for name, handler in handlers.items():
        socketio.on_event(name, _guarded(name, handler))

    @socketio.on("*")
    def unknown(event: str, data: Any = None) -> None:
        _error("unknown_event", f"unknown event {str(event)[:64]!r}", str(event)[:64])


def _guarded(name: str, handler: Any) -> Any:
    """``handler`` with EventError and unexpected failures turned into ``error`` events."""

    def wrapper(data: Any = None) -> Any:
        try:
            return handler(data)
        except EventError as exc:
            _error(exc.code, str(exc), name)
        except Exception:  # noqa: BLE001 - the connection must survive any handler bug
            log.exception("handler %s failed", name)
            _error("internal_error", "the server could not handle this event", name)
        return None

    wrapper.__name__ = f"on_{name}"
    return wrapper
