"""Shared fixtures: one real redis-server per test session, flushed around each test that uses it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from stack.redis_server import LocalRedis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """A real ``redis-server`` on a free loopback port for the whole session."""
    server = LocalRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


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
