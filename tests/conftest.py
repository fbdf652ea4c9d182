"""Shared fixtures: one real redis-server per test session, flushed around each test that uses it; one
real PostgreSQL server per session for the tests that need it, its incident tables emptied for each."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import Engine

from infra.incident_db import database_engine, migrate
from stack.postgres_server import LocalPostgres
from stack.redis_server import LocalRedis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """A real ``redis-server`` on a free loopback port for the whole session."""
    server = LocalRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """A private PostgreSQL cluster (Debian's server) on a free loopback port, started on first use."""
    with LocalPostgres() as server:
        yield server


@pytest.fixture
def postgres_engine(postgres_server: LocalPostgres) -> Iterator[Engine]:
    """An engine on the session's PostgreSQL, its schema migrated and its incident tables empty."""
    engine = database_engine(postgres_server.url)
    migrate(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("TRUNCATE incident_actions, incidents RESTART IDENTITY")
    yield engine
    engine.dispose()


@pytest.fixture
def redis_url(redis_server: LocalRedis) -> Iterator[str]:
    """URL of the session's Redis, emptied before and after the test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    client.flushall()
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the session's (empty) Redis."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


ServeApp = Callable[[Flask], str]


@pytest.fixture
def serve_app() -> Iterator[ServeApp]:
    """Serve Flask apps on free loopback ports in threads (as ``python -m web`` does); ``host:port`` of each.

    Every server is shut down after the test.
    """
    from werkzeug.serving import make_server

    from web.__main__ import NoDelayRequestHandler

    servers: list[Any] = []

    def serve(app: Flask) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=NoDelayRequestHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"127.0.0.1:{server.server_port}"

    yield serve
    for server in servers:
        server.shutdown()
