"""gunicorn's settings for ``gunicorn … web.wsgi:app`` (read from the working directory, as gunicorn does).

One rule: the web server does not start on a non-loopback address without ``TRAFFIC_AUTH_TOKEN``
unless ``TRAFFIC_TRUSTED_NETWORK=true`` (see ``web.auth.exposure_error``).
"""

from __future__ import annotations

import os
from typing import Any


def bind_host(bind: str) -> str | None:
    """The host of one gunicorn bind (``HOST:PORT``, ``[::]:PORT``, ``HOST``); None for ``unix:`` and ``fd://``."""
    if bind.startswith(("unix:", "fd://")):
        return None
    if bind.startswith("["):
        return bind[1 : bind.index("]")]
    return bind.rsplit(":", 1)[0] if bind.count(":") == 1 else bind


def on_starting(server: Any) -> None:
    """Refuse to serve an exposed address without a token (before any worker starts)."""
    from traffic.config import load_settings
    from web.auth import exposure_error

    hosts = [host for host in (bind_host(bind) for bind in server.cfg.bind) if host is not None]
    refusal = exposure_error(hosts, load_settings(os.environ))
    if refusal:
        server.log.error(refusal)
        raise SystemExit(2)
