"""WSGI entry point for production servers: ``gunicorn -w 1 --threads 100 web.wsgi:app``.

Gunicorn sets TCP_NODELAY on its listening sockets, so small Socket.IO frames are not delayed.
"""

from __future__ import annotations

from infra.runtime import bootstrap
from web import create_app

app = create_app(bootstrap())
