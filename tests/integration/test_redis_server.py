"""The embedded Redis: found, version-checked, started on loopback, stopped cleanly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from stack.redis_server import (
    MIN_VERSION,
    LocalRedis,
    RedisUnavailable,
    find_redis_server,
    parse_version,
    resolve_redis,
    server_version,
)

pytestmark = pytest.mark.integration


def test_version_parsing() -> None:
    assert parse_version("Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc") == (7, 0, 15)
    assert parse_version("redis_version:6.2.14") == (6, 2, 14)
    with pytest.raises(RedisUnavailable):
        parse_version("nothing here")


def test_a_new_enough_binary_is_found() -> None:
    assert find_redis_server().version >= MIN_VERSION


def test_local_server_starts_answers_and_stops_without_leftovers(tmp_path: Path) -> None:
    server = LocalRedis(tmp_path / "r")
    with server:
        pid = server.pid
        assert pid is not None
        client = redis.Redis.from_url(server.url)
        assert client.ping() and client.set("k", "v")
        assert (tmp_path / "r" / "redis.pid").read_text().strip() == str(pid)
        assert server.url.startswith("redis://127.0.0.1:")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert server_version(server.url) is None


def test_resolve_prefers_an_answering_url(redis_url: str) -> None:
    url, local = resolve_redis(redis_url)
    assert (url, local) == (redis_url, None)


def test_resolve_starts_a_local_server_when_the_url_is_dead(tmp_path: Path) -> None:
    url, local = resolve_redis("redis://127.0.0.1:1/0", tmp_path)
    try:
        assert local is not None and url == local.url
        assert server_version(url) is not None
    finally:
        assert local is not None
        local.stop()
