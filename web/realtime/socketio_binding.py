"""Socket.IO transport of the client protocol (``web.realtime.protocol``): rooms per camera, errors as events."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import current_app, request
from flask_socketio import SocketIO, emit, join_room, leave_room

from web.auth import socket_token, token_matches
from web.realtime.protocol import Context, EventError, Reply, error_payload, handle

log = logging.getLogger(__name__)


def _context() -> Context:
    """The protocol context of the current app."""
    return Context(current_app.config["TRAFFIC_SETTINGS"], current_app.extensions["traffic_redis"])


def on_connect(auth: Any = None) -> bool:
    """Acknowledge a connection; refuse it when a token is configured and not given."""
    expected = _context().settings.server.auth_token
    if not token_matches(socket_token(auth, request), expected):
        log.info("Socket.IO connection refused: missing or wrong token")
        return False
    emit("connection_ack", {"message": "WS connected (pipeline ready)", "serverTime": time.time()})
    return True


def dispatch(event: str, data: Any = None) -> Any:
    """Run one client event through the protocol and apply its reply to this connection."""
    try:
        reply: Reply = handle(_context(), event, data)
    except EventError as exc:
        emit("error", error_payload(exc.code, str(exc), event))
        return None
    for room in reply.join:
        join_room(room)
    for room in reply.leave:
        leave_room(room)
    for name, payload in reply.events:
        emit(name, payload)
    return reply.ack


def register(socketio: SocketIO) -> None:
    """Attach the handlers: known events, a catch-all for the rest, and an error fallback."""
    socketio.on_event("connect", on_connect)

    @socketio.on("*")
    def any_event(event: Any, data: Any = None) -> Any:
        return dispatch(str(event), data)

    @socketio.on_error_default
    def on_error(exc: BaseException) -> None:
        log.exception("Socket.IO handler failed", exc_info=exc)
        emit("error", error_payload("internal_error", "the server could not handle this event"))
