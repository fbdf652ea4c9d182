"""Socket.IO transport of the client protocol (``web.realtime.protocol``): rooms per camera, errors as events."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import current_app, request
from flask_socketio import Namespace, SocketIO, emit, join_room, leave_room

from web.auth import authorised
from web.realtime.protocol import Context, EventError, Reply, error_payload, handle

log = logging.getLogger(__name__)


def _context() -> Context:
    """The protocol context of the current app."""
    return Context(
        current_app.config["TRAFFIC_SETTINGS"],
        current_app.extensions["traffic_redis"],
        current_app.extensions["traffic_resolver"],
        current_app.extensions["traffic_probes"],
        request.remote_addr or "unknown",
    )


def on_connect(auth: Any = None) -> bool:
    """Acknowledge a connection; refuse it when a token is configured and not given."""
    expected = _context().settings.server.auth_token
    if not authorised(request, expected, auth):
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


class ProtocolNamespace(Namespace):  # type: ignore[misc]
    """The default namespace: every client event goes through :func:`dispatch`.

    A class-based namespace rather than a ``"*"`` function handler: python-socketio hands an event
    literally named ``"*"`` to such a handler with its arguments shifted, which failed inside
    Flask-SocketIO before any of our code ran.
    """

    def on_connect(self, auth: Any = None) -> bool:
        """A client connects."""
        return on_connect(auth)

    def on_disconnect(self, reason: Any = None) -> None:
        """A client left; its cameras keep running (they belong to the server)."""

    def trigger_event(self, event: str, *args: Any) -> Any:
        """Route ``connect``/``disconnect`` to their methods and every other event to the protocol."""
        if event in ("connect", "disconnect"):
            return super().trigger_event(event, *args)
        sid, *data = args
        return self.socketio._handle_event(dispatch, event, self.namespace, sid, str(event), *data[:1])


def register(socketio: SocketIO) -> None:
    """Attach the protocol namespace and an error fallback."""
    socketio.on_namespace(ProtocolNamespace("/"))

    @socketio.on_error_default
    def on_error(exc: BaseException) -> None:
        log.exception("Socket.IO handler failed", exc_info=exc)
        emit("error", error_payload("internal_error", "the server could not handle this event"))
