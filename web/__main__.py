"""``python -m web``: the development server (production: see README, gunicorn with threads)."""

from __future__ import annotations

import logging
import socket

from werkzeug.serving import WSGIRequestHandler

from infra.runtime import bootstrap
from web import create_app, socketio
from web.auth import exposure_error

log = logging.getLogger(__name__)


class NoDelayRequestHandler(WSGIRequestHandler):
    """Disables Nagle on each client socket: small Socket.IO frames otherwise wait for the peer's ACK."""

    def setup(self) -> None:
        """Set TCP_NODELAY once the connection is accepted."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def main() -> None:
    """Serve until interrupted."""
    settings = bootstrap()
    host, port = settings.server.host, settings.server.port
    refusal = exposure_error([host], settings)
    if refusal:
        log.error("%s", refusal)
        raise SystemExit(2)
    app = create_app(settings)
    log.info("web server on http://%s:%d", host, port)
    socketio.run(
        app, host=host, port=port, allow_unsafe_werkzeug=True, log_output=False, request_handler=NoDelayRequestHandler
    )


if __name__ == "__main__":
    main()
