"""``/ws``: the old system's plain-WebSocket protocol (``{type, data}`` messages) for existing clients.

Client messages go through the same protocol handlers as Socket.IO. Room broadcasts reach gateway
clients through one Redis subscription per web process (the Socket.IO message queue), fanned out to
the connections that joined each room.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from typing import Any

import redis
from flask import Blueprint, Response, current_app, request
from simple_websocket import ConnectionClosed, Server

from infra.socketio_packets import read_emit
from traffic import redis_keys
from web.auth import authorised, origin_allowed
from web.realtime.protocol import (
    CLOSE_MESSAGE_TOO_BIG,
    MAX_MESSAGE_BYTES,
    UNREAD_MESSAGE_BYTES,
    Context,
    EventError,
    error_payload,
    handle,
    too_large_payload,
)

log = logging.getLogger(__name__)

blueprint = Blueprint("ws_gateway", __name__)


class Connection:
    """One gateway client: a WebSocket and a lock so relay and handler threads never interleave frames."""

    def __init__(self, ws: Server) -> None:
        self.ws = ws
        self._lock = threading.Lock()

    def send(self, kind: str, data: Any) -> bool:
        """Send ``{type, data}``; False when the connection is gone."""
        try:
            text = json.dumps({"type": kind, "data": data}, ensure_ascii=False)
            with self._lock:
                self.ws.send(text)
            return True
        except (ConnectionClosed, OSError):
            return False


class RoomRelay:
    """Forwards room broadcasts from the Socket.IO message queue to gateway connections.

    One thread per web process listens on Redis; it survives Redis outages (retrying every
    ``RETRY_S``), handles each message on its own (a bad one is logged and skipped), and stops
    on :meth:`stop`.
    """

    RETRY_S = 1.0
    POLL_S = 0.5

    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._rooms: dict[str, set[Connection]] = defaultdict(set)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.listening = threading.Event()
        """Set while subscribed to the message queue (observable for tests and health checks)."""

    def join(self, conn: Connection, room: str) -> None:
        """Deliver ``room``'s events to ``conn``."""
        with self._lock:
            self._rooms[room].add(conn)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="ws-relay", daemon=True)
                self._thread.start()

    def leave(self, conn: Connection, room: str | None = None) -> None:
        """Stop delivering ``room`` (or every room) to ``conn``."""
        with self._lock:
            rooms = [room] if room else list(self._rooms)
            for name in rooms:
                self._rooms.get(name, set()).discard(conn)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop listening; True once the thread has ended (or never started)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def _run(self) -> None:
        """Listen until stopped, reconnecting after Redis outages."""
        while not self._stop.is_set():
            try:
                self._listen()
            except (redis.RedisError, OSError) as exc:
                log.warning("ws relay lost Redis (%s); reconnecting in %.0f s", exc, self.RETRY_S)
            except Exception:  # a bug must not end the relay for good: log it and listen again
                log.exception("ws relay failed; restarting it")
            self.listening.clear()
            self._stop.wait(self.RETRY_S)

    def _listen(self) -> None:
        """One subscription: forward messages until the connection fails or a stop is asked."""
        client = redis.Redis.from_url(self._redis_url)  # bytes: undecodable data must not break the read
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(redis_keys.SOCKETIO_CHANNEL)
            self.listening.set()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=self.POLL_S)
                if message is not None:
                    self._forward_safely(message.get("data"))
        finally:
            pubsub.close()
            client.close()

    def _forward_safely(self, raw: Any) -> None:
        """Forward one message; whatever goes wrong with it is logged and the next one is served."""
        try:
            self._forward(raw)
        except Exception:  # one message must not stop the others
            log.exception("ws relay could not forward a message; skipped it")

    def _forward(self, raw: Any) -> None:
        """Send one queued emit to the connections in its room."""
        packet = read_emit(raw)
        if packet is None or packet.namespace != "/" or packet.room is None:
            return
        with self._lock:
            targets = list(self._rooms.get(packet.room, ()))
        for conn in targets:
            if not conn.send(packet.event, packet.data):
                self.leave(conn)


def _relay() -> RoomRelay:
    """The process's relay, created on first use."""
    relay: RoomRelay | None = current_app.extensions.get("traffic_ws_relay")
    if relay is None:
        relay = RoomRelay(current_app.config["TRAFFIC_SETTINGS"].redis_url)
        current_app.extensions["traffic_ws_relay"] = relay
    return relay


@blueprint.route("/ws", websocket=True)
def gateway() -> Response:
    """Serve one old-protocol client until it disconnects."""
    ctx = Context(
        current_app.config["TRAFFIC_SETTINGS"],
        current_app.extensions["traffic_redis"],
        current_app.extensions["traffic_resolver"],
        current_app.extensions["traffic_probes"],
        request.remote_addr or "unknown",
    )
    if not origin_allowed(request.headers.get("Origin"), request.environ, ctx.settings.server.cors_origins):
        log.info("/ws connection refused: origin %r is not allowed", request.headers.get("Origin"))
        return Response("origin not allowed", status=403)
    if not authorised(request, ctx.settings.server.auth_token):
        return Response("missing or wrong token", status=401)
    ws = Server(request.environ, max_message_size=UNREAD_MESSAGE_BYTES)
    conn, relay = Connection(ws), _relay()
    conn.send("connection_ack", {"message": "WS connected (pipeline ready)", "serverTime": time.time()})
    try:
        while True:
            raw = ws.receive()
            if raw is None:
                continue
            if _size(raw) > MAX_MESSAGE_BYTES:
                log.info("/ws client %s sent a message over %d bytes; closing", ctx.client, MAX_MESSAGE_BYTES)
                conn.send("error", too_large_payload())
                ws.close(reason=CLOSE_MESSAGE_TOO_BIG, message="message too large")
                break
            _serve(ctx, conn, relay, raw)
    except ConnectionClosed:
        pass
    finally:
        relay.leave(conn)
    return Response()


def _size(raw: str | bytes) -> int:
    """A message's size in bytes (text as UTF-8)."""
    return len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))


def _serve(ctx: Context, conn: Connection, relay: RoomRelay, raw: str | bytes) -> None:
    """Handle one client message."""
    try:
        message = json.loads(raw)
    except (TypeError, ValueError):
        conn.send("error", error_payload("invalid_json", "messages must be JSON objects {type, data}"))
        return
    kind = message.get("type") if isinstance(message, dict) else None
    if not isinstance(kind, str) or not kind:
        conn.send("error", error_payload("invalid_message", "a message needs a string 'type' and optional 'data'"))
        return
    try:
        reply = handle(ctx, kind, message.get("data"))
    except EventError as exc:
        conn.send("error", error_payload(exc.code, str(exc), kind))
        return
    for room in reply.join:
        relay.join(conn, room)
    for room in reply.leave:
        relay.leave(conn, room)
    for name, payload in reply.events:
        conn.send(name, payload)
