"""Flask-SocketIO server: camera rooms, the old event protocol, REST API, dashboard."""

from __future__ import annotations

import logging
from typing import Any

import redis
import socketio as socketio_server
from flask import Flask
from flask_socketio import SocketIO

from infra.host_resolver import resolve_host
from traffic import redis_keys
from traffic.settings import Settings
from traffic.url_policy import Resolver
from web.auth import origin_allowed
from web.message_queue import ReconnectingRedisManager
from web.realtime.probe_limits import ProbeLimiter
from web.realtime.protocol import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

ASYNC_MODE = "threading"
"""Explicit: Flask-SocketIO would otherwise pick eventlet whenever it is installed."""

socketio = SocketIO()


def create_app(
    settings: Settings | None = None, *, message_queue: bool = True, resolver: Resolver | None = None
) -> Flask:
    """The Flask app with Socket.IO attached; settings default to the environment's.

    ``message_queue=False`` serves only this process's clients (Flask-SocketIO's in-process test
    client needs that); workers' emits then do not reach it. ``resolver`` answers host names for the
    camera URL policy (default: the system's resolver; tests give one that never leaves the machine).
    """
    if settings is None:
        from infra.runtime import bootstrap

        settings = bootstrap(configure_log=False)
    if not settings.redis_url:
        raise RuntimeError("the web server needs REDIS_URL (traffic run sets it)")
    app = Flask(__name__)
    app.config["TRAFFIC_SETTINGS"] = settings
    app.extensions["traffic_redis"] = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    app.extensions["traffic_resolver"] = resolver or resolve_host
    app.extensions["traffic_probes"] = ProbeLimiter(settings.server.max_probes, settings.server.max_probes_per_client)
    configured = settings.server.cors_origins

    def cors(origin: str | None, environ: dict[str, Any]) -> bool:
        return origin_allowed(origin, environ, configured)

    # The manager is always named: ``socketio`` outlives one app, and Flask-SocketIO would otherwise
    # keep the message-queue manager of an earlier ``init_app`` call.
    manager: Any = socketio_server.Manager()  # this process's clients only (Flask-SocketIO's test client)
    if message_queue:
        manager = ReconnectingRedisManager(settings.redis_url, channel=redis_keys.SOCKETIO_CHANNEL)
    socketio.init_app(
        app,
        async_mode=ASYNC_MODE,
        cors_allowed_origins=cors,  # same origin, plus the configured ones
        json=None,
        client_manager=manager,
        max_http_buffer_size=MAX_MESSAGE_BYTES,  # as /ws: client events are small
    )
    from web import api, auth, dashboard, incidents_api, metrics
    from web.realtime import socketio_binding, websocket_binding

    auth.install(app)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(incidents_api.blueprint)
    app.register_blueprint(dashboard.blueprint)
    app.register_blueprint(websocket_binding.blueprint)
    app.register_blueprint(metrics.blueprint)
    socketio_binding.register(socketio)
    return app
