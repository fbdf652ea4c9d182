"""The client protocol, independent of transport: validate a client event, act, return the reply.

Socket.IO (``socketio_binding``) and the plain-WebSocket gateway (``websocket_binding``) both call these; a
handler raises ``EventError`` (code + message) for anything it cannot serve, and the transport turns
it into an ``error`` event while the connection stays open.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from infra.camera_registry import CameraRegistry
from infra.host_resolver import resolve_host
from infra.traffic_stats import TrafficStats
from traffic import redis_keys
from traffic.cameras import Camera, WireId, mask_url, normalise_camera_id, parse_detect_fps
from traffic.errors import CameraError
from traffic.settings import Settings
from traffic.url_policy import Resolver
from web.camera_urls import check_client_url
from web.realtime.probe_limits import ProbeLimiter, ProbesBusy

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 256
MAX_NAME_LENGTH = 128
CHECK_TIMEOUT_S = 5.0
MAX_MESSAGE_BYTES = 64 * 1024
"""The largest client message either transport accepts (Socket.IO's ``max_http_buffer_size``, ``/ws`` frames)."""
UNREAD_MESSAGE_BYTES = 16 * MAX_MESSAGE_BYTES
"""``/ws``: a message larger than this is not read to its end (memory stays bounded): the socket closes with
1009 at once. Between ``MAX_MESSAGE_BYTES`` and this, the client first gets ``error`` ``message_too_large``."""
CLOSE_MESSAGE_TOO_BIG = 1009
"""The WebSocket close code for a message over the limit (RFC 6455)."""

CLIENT_EVENTS = ("ping", "start_stream", "stop_stream", "check_camera", "subscribe", "unsubscribe")


class EventError(Exception):
    """A client event that cannot be served; becomes an ``error`` event, the connection stays."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Reply:
    """What a handler wants sent: events to the caller, rooms to join or leave, and an ack value."""

    ack: Any = None
    events: tuple[tuple[str, dict[str, Any]], ...] = ()
    join: tuple[str, ...] = ()
    leave: tuple[str, ...] = ()


@dataclass(frozen=True)
class Context:
    """What handlers need from the server."""

    settings: Settings
    redis: redis.Redis
    resolve: Resolver = resolve_host
    """Host names to addresses, for the camera URL policy."""
    probes: ProbeLimiter = field(default_factory=lambda: ProbeLimiter(1, 1))
    """This process's ``check_camera`` slots (shared by every connection)."""
    client: str = "local"
    """The client's address, for per-client limits."""

    @property
    def registry(self) -> CameraRegistry:
        """The camera set."""
        return CameraRegistry(self.redis)


def error_payload(code: str, message: str, event: str | None = None) -> dict[str, Any]:
    """The ``error`` event's data."""
    payload: dict[str, Any] = {"code": code, "message": message}
    if event:
        payload["event"] = event[:64]
    return payload


def too_large_payload() -> dict[str, Any]:
    """The ``error`` a client gets for a message over ``MAX_MESSAGE_BYTES``, before its connection closes."""
    payload = error_payload(
        "message_too_large", f"messages may be at most {MAX_MESSAGE_BYTES} bytes; closing the connection"
    )
    return {**payload, "limit": MAX_MESSAGE_BYTES}


def _object(data: Any, event: str) -> dict[str, Any]:
    """``data`` as a JSON object, or an EventError."""
    if not isinstance(data, dict):
        raise EventError("invalid_payload", f"{event} expects a JSON object, got {type(data).__name__}")
    return data


def _camera_id(value: Any) -> tuple[str, str | int]:
    """The normalised (key, wire) camera id."""
    try:
        return normalise_camera_id(value)
    except CameraError as exc:
        raise EventError(exc.code, str(exc)) from None


def _camera_ids(data: dict[str, Any], event: str, *, allow_empty: bool) -> list[tuple[str, str | int]]:
    """The ``cameraIds`` list of ``data``, each normalised."""
    ids = data.get("cameraIds")
    if not isinstance(ids, list) or (not ids and not allow_empty) or len(ids) > MAX_SUBSCRIPTIONS:
        raise EventError("invalid_payload", f"{event}: cameraIds must be a list of 1..{MAX_SUBSCRIPTIONS} ids")
    return [_camera_id(raw) for raw in ids]


def _url(ctx: Context, value: Any) -> str:
    """A validated camera URL."""
    try:
        return check_client_url(ctx.settings, value, ctx.resolve)
    except CameraError as exc:
        raise EventError(exc.code, str(exc)) from None


def on_ping(ctx: Context, data: Any) -> Reply:
    """Heartbeat."""
    return Reply(ack={"timestamp": time.time()}, events=(("pong", {"timestamp": time.time()}),))


def _alerts_flag(data: dict[str, Any], event: str) -> bool:
    """The optional ``alerts`` flag: the all-alerts room (every ``alert`` and ``key_alert``)."""
    alerts = data.get("alerts", False)
    if not isinstance(alerts, bool):
        raise EventError("invalid_payload", f"{event}: alerts must be true or false")
    return alerts


def on_subscribe(ctx: Context, data: Any) -> Reply:
    """Join the cameras' rooms (with ``alerts: true`` also the all-alerts room); replay each camera's latest
    ``detection_result`` and ``traffic_stats``."""
    payload = _object(data, "subscribe")
    alerts = _alerts_flag(payload, "subscribe")
    ids = [] if alerts and "cameraIds" not in payload else _camera_ids(payload, "subscribe", allow_empty=alerts)
    pipe = ctx.redis.pipeline(transaction=False)
    for key, _ in ids:
        pipe.get(redis_keys.camera_latest(key))
    latest = [json.loads(raw) for raw in pipe.execute() if raw]
    stats = TrafficStats(ctx.redis)
    measured = [found for key, _ in ids if (found := stats.live(key)) is not None]
    ack: dict[str, Any] = {"subscribed": [wire for _, wire in ids]}
    if alerts:
        ack["alerts"] = True
    return Reply(
        ack=ack,
        events=tuple(("detection_result", payload) for payload in latest)
        + tuple(("traffic_stats", found) for found in measured),
        join=tuple(redis_keys.camera_room(key) for key, _ in ids) + ((redis_keys.ALERTS_ROOM,) if alerts else ()),
    )


def on_unsubscribe(ctx: Context, data: Any) -> Reply:
    """Leave the cameras' rooms (with ``alerts: true`` also the all-alerts room)."""
    payload = _object(data, "unsubscribe")
    alerts = _alerts_flag(payload, "unsubscribe")
    ids = [] if alerts and "cameraIds" not in payload else _camera_ids(payload, "unsubscribe", allow_empty=True)
    ack: dict[str, Any] = {"unsubscribed": [wire for _, wire in ids]}
    if alerts:
        ack["alerts"] = False
    rooms = tuple(redis_keys.camera_room(k) for k, _ in ids) + ((redis_keys.ALERTS_ROOM,) if alerts else ())
    return Reply(ack=ack, leave=rooms)


def on_start_stream(ctx: Context, data: Any) -> Reply:
    """Add (or restart) a camera in the server-side camera set and join its room."""
    payload = _object(data, "start_stream")
    key, wire = _camera_id(payload.get("cameraId"))
    url = _url(ctx, payload.get("rtspUrl"))
    name = payload.get("name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH:
        raise EventError("invalid_payload", f"name must be a string of at most {MAX_NAME_LENGTH} characters")
    try:
        detect_fps = parse_detect_fps(payload.get("detectFps"))
    except CameraError as exc:
        raise EventError("invalid_payload", str(exc)) from None
    try:
        camera = Camera(camera_id=key, url=url, name=name, wire_id=wire, detect_fps=detect_fps)
        ctx.registry.add(camera, limit=ctx.settings.capture.max_cameras)
    except CameraError as exc:
        raise EventError(exc.code, str(exc)) from None
    log.info("camera %s started by a client (%s)", key, mask_url(url))
    return Reply(ack={"cameraId": wire, "started": True}, join=(redis_keys.camera_room(key),))


def on_stop_stream(ctx: Context, data: Any) -> Reply:
    """Remove a camera from the server-side camera set (the capture service stops it)."""
    key, wire = _camera_id(_object(data, "stop_stream").get("cameraId"))
    if not ctx.registry.remove(key):
        raise EventError("camera_not_found", f"camera {wire!r} is not running")
    return Reply(ack={"cameraId": wire, "stopped": True})


def on_check_camera(ctx: Context, data: Any) -> Reply:
    """Probe a camera URL once (connect and read one frame) and report it as ``camera_status``."""
    payload = _object(data, "check_camera")
    _, wire = _camera_id(payload.get("cameraId"))
    url = _url(ctx, payload.get("rtspUrl"))
    try:
        with ctx.probes.slot(ctx.client):
            status = _probe(ctx, wire, url)
    except ProbesBusy as busy:
        who = "you have" if busy.scope == "client" else "the server has"
        raise EventError("too_many_probes", f"{who} {busy.limit} camera checks running; try again shortly") from None
    return Reply(ack=status, events=(("camera_status", status),))


def _probe(ctx: Context, wire: WireId, url: str) -> dict[str, Any]:
    """Connect to ``url`` once and read one frame; the ``camera_status`` payload."""
    from infra.camera_sources import SourceError, open_source

    started = time.perf_counter()
    try:
        source = open_source(
            url, timeout_s=CHECK_TIMEOUT_S, guard=lambda hop: check_client_url(ctx.settings, hop, ctx.resolve)
        )
        try:
            source.read()
        finally:
            source.close()
    except SourceError as exc:
        status = {"cameraId": wire, "status": 0, "message": f"unreachable: {exc.reason}"}
    else:
        latency = round((time.perf_counter() - started) * 1000)
        status = {"cameraId": wire, "status": 1, "message": "reachable", "latencyMs": latency}
    return status


HANDLERS: dict[str, Callable[[Context, Any], Reply]] = {
    "ping": on_ping,
    "subscribe": on_subscribe,
    "unsubscribe": on_unsubscribe,
    "start_stream": on_start_stream,
    "stop_stream": on_stop_stream,
    "check_camera": on_check_camera,
}


def handle(ctx: Context, event: str, data: Any) -> Reply:
    """Dispatch one client event; unknown events and handler bugs are EventErrors too."""
    handler = HANDLERS.get(event)
    if handler is None:
        raise EventError("unknown_event", f"unknown event {event[:64]!r}; known: {', '.join(CLIENT_EVENTS)}")
    try:
        return handler(ctx, data)
    except EventError:
        raise
    except redis.RedisError as exc:
        log.warning("event %s: Redis unavailable: %s", event, exc)
        raise EventError("unavailable", "the server's store is unavailable; try again shortly") from None
    except Exception:  # noqa: BLE001 - a handler bug must not drop the connection
        log.exception("event %s failed", event)
        raise EventError("internal_error", "the server could not handle this event") from None
