"""``python -m web``: the development server (production: see README, gunicorn with threads)."""

from __future__ import annotations

import logging

from stack.runtime import bootstrap
from web import create_app, socketio

log = logging.getLogger(__name__)


def main() -> None:
    """Serve until interrupted."""
    settings = bootstrap()
    app = create_app(settings)
    host, port = settings.server.host, settings.server.port
    log.info("web server on http://%s:%d", host, port)
    socketio.run(app, host=host, port=port, allow_unsafe_werkzeug=True, log_output=False)


if __name__ == "__main__":
    main()
