"""Fixtures of the web tests: settings, the Flask app and its test client, on the session's real Redis."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import offline_dns
from traffic.config import load_settings
from traffic.settings import Settings
from web import create_app

MakeSettings = Callable[..., Settings]
MakeApp = Callable[[Settings], Flask]


@pytest.fixture
def make_settings(redis_url: str) -> MakeSettings:
    """Settings from ``REDIS_URL`` plus the given environment (and optional API-keys file).

    Cameras on ``10.0.0.0/8`` are allowed past the URL policy, as an operator with a camera LAN sets it.
    """

    def make(env: Mapping[str, str] | None = None, *, api_keys: Path | None = None) -> Settings:
        base = {"REDIS_URL": redis_url, "TRAFFIC_CAMERA_ALLOWED_HOSTS": "10.0.0.0/8"}
        return load_settings({**base, **(env or {})}, api_keys=api_keys)

    return make


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    """Default settings on the test Redis: no token, no CORS origins, no file sources."""
    return make_settings()


@pytest.fixture
def make_app() -> Iterator[MakeApp]:
    """Build test apps (Socket.IO without a message queue); their Redis clients are closed afterwards."""
    apps: list[Flask] = []

    def make(settings: Settings) -> Flask:
        app = create_app(settings, message_queue=False, resolver=offline_dns.resolve)
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["traffic_redis"].close()


@pytest.fixture
def app(settings: Settings, make_app: MakeApp) -> Flask:
    """The app on the test Redis."""
    return make_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Flask's test client of ``app``."""
    return app.test_client()


@pytest.fixture
def dead_redis_url() -> str:
    """A Redis URL on a loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"
