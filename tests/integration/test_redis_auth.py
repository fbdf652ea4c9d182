"""A Redis with a password, end to end: the embedded server, every process of the stack, the logs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stack.harness import API_KEY, EventClient, bus_jpeg, result_for, stack_on
from stack.provider_sim import ProviderSimulator, SimConfig, SimKey
from stack.redis_server import LocalRedis, resolve_redis

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "redis-pass-d41d8cd98f00b204"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalRedis]:
    with LocalRedis(tmp_path / "redis", password=PASSWORD) as local:
        yield local


def test_the_embedded_server_requires_the_password_and_keeps_it_off_command_lines(server: LocalRedis) -> None:
    assert server.url == f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    assert redis.Redis.from_url(server.url).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=server.port).ping()
    assert server.pid is not None
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode(errors="replace")
    assert PASSWORD not in cmdline, "ps shows command lines to every user"
    assert (server.directory / "redis-auth.conf").stat().st_mode & 0o077 == 0, "the config file is owner-only"


def test_resolve_starts_the_local_server_with_the_password(tmp_path: Path) -> None:
    url, local = resolve_redis(None, tmp_path / "r", password=PASSWORD)
    try:
        assert local is not None and PASSWORD in url and redis.Redis.from_url(url).ping()
    finally:
        assert local is not None
        local.stop()


def test_every_process_of_the_stack_works_through_the_password(server: LocalRedis, tmp_path: Path) -> None:
    with ProviderSimulator(SimConfig(keys={API_KEY: SimKey(key_id="k1")})) as sim:
        with stack_on(server.url, tmp_path, sim, "web", "gpu", "llm", "default") as stack:
            client = EventClient(stack.web_url)
            client.call("subscribe", {"cameraIds": ["auth-cam"]})
            frame_id = stack.inject_frame("auth-cam", bus_jpeg())
            _, final = client.wait_for(result_for(frame_id, "complete", "partial", "unavailable"), 120)
            client.close()
            assert final["assessment"] == "complete" and final["finalisedBy"] == "chord"
            logs = "".join(path.read_text(errors="replace") for path in (tmp_path / "logs").glob("*.log"))
    assert "celery@" in logs or "ready" in logs, "the process logs were read"
    assert PASSWORD not in logs, "the password is masked wherever a URL is logged"
