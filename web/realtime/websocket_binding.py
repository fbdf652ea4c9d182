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
from web.auth import socket_token, token_matches
from web.realtime.protocol import Context, EventError, error_payload, handle

log = logging.getLogger(__name__)

blueprint = Blueprint("ws_gateway", __name__)

MAX_MESSAGE_BYTES = 64 * 1024


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
    """Forwards room broadcasts from the Socket.IO message queue to gateway connections."""

    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._rooms: dict[str, set[Connection]] = defaultdict(set)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def join(self, conn: Connection, room: str) -> None:
        """Deliver ``room``'s events to ``conn``."""
        with self._lock:
            self._rooms[room].add(conn)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ws-relay", daemon=True)
                self._thread.start()

    def leave(self, conn: Connection, room: str | None = None) -> None:
        """Stop delivering ``room`` (or every room) to ``conn``."""
        with self._lock:
            rooms = [room] if room else list(self._rooms)
            for name in rooms:
                self._rooms.get(name, set()).discard(conn)

    def _run(self) -> None:
        """Listen forever, reconnecting after Redis outages."""
        while True:
            try:
                client = redis.Redis.from_url(self._redis_url, decode_responses=True)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(redis_keys.SOCKETIO_CHANNEL)
                for message in pubsub.listen():
                    self._forward(message.get("data"))
            except redis.RedisError as exc:
                log.warning("ws relay lost Redis (%s); reconnecting", exc)
                time.sleep(1.0)

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
    ctx = Context(current_app.config["TRAFFIC_SETTINGS"], current_app.extensions["traffic_redis"])
    if not token_matches(socket_token(None, request), ctx.settings.server.auth_token):
        return Response("missing or wrong token", status=401)
    ws = Server(request.environ, max_message_size=MAX_MESSAGE_BYTES)
    conn, relay = Connection(ws), _relay()
    conn.send("connection_ack", {"message": "WS connected (pipeline ready)", "serverTime": time.time()})
    try:
        while True:
            raw = ws.receive()
            if raw is None:
                continue
            _serve(ctx, conn, relay, raw)
    except ConnectionClosed:
        pass
    finally:
        relay.leave(conn)
    return Response()


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
