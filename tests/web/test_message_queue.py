"""Broadcasts reach browsers again soon after a long Redis outage, and the /ws relay survives bad messages."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import socketio
import websocket

from infra.emitter import Emitter
from stack.harness import wait_until
from stack.redis_server import LocalRedis
from tests.conftest import ServeApp
from traffic import redis_keys
from traffic.config import load_settings
from web import create_app
from web.realtime.websocket_binding import RoomRelay

pytestmark = pytest.mark.integration

OUTAGE_S = 64.0
"""A minute without Redis, ending just after python-socketio's own listener made its 6th retry (at 63 s)."""
RESUME_WITHIN_S = 10.0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    with LocalRedis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def web_host(own_redis: LocalRedis, serve_app: ServeApp) -> str:
    return serve_app(create_app(load_settings({"REDIS_URL": own_redis.url})))


def _first_arrival(emitter: Emitter, received: Callable[[], bool], timeout: float) -> float:
    """Emit a probe every 0.1 s until ``received()``; seconds it took (AssertionError after ``timeout``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        emitter.to_camera("mq-cam", "detection_result", {"cameraId": "mq-cam", "frameId": "probe"})
        if wait_or_false(received, 0.1):
            return time.monotonic() - started
    raise AssertionError(f"no broadcast arrived within {timeout} s")


def wait_or_false(predicate: Callable[[], bool], timeout: float) -> bool:
    """Whether ``predicate`` turns true within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.slow
def test_broadcasts_resume_within_seconds_after_a_minute_without_redis(own_redis: LocalRedis, web_host: str) -> None:
    results: list[dict[str, Any]] = []
    client = socketio.Client(reconnection=True)
    client.on("detection_result", results.append)
    client.connect(f"http://{web_host}", transports=["websocket"], wait_timeout=10)
    client.call("subscribe", {"cameraIds": ["mq-cam"]}, timeout=10)
    ws = websocket.create_connection(f"ws://{web_host}/ws", timeout=10)
    assert json.loads(ws.recv())["type"] == "connection_ack"
    ws.send(json.dumps({"type": "subscribe", "data": {"cameraIds": ["mq-cam"]}}))
    ws_results: list[dict[str, Any]] = []
    reader = threading.Thread(target=_read_ws, args=(ws, ws_results), daemon=True)
    reader.start()
    emitter = Emitter(own_redis.url)
    _first_arrival(emitter, lambda: bool(results) and bool(ws_results), 15)

    own_redis.kill(signal.SIGKILL)
    time.sleep(OUTAGE_S)
    results.clear()
    ws_results.clear()
    own_redis.start()
    emitter = Emitter(own_redis.url)
    socketio_s = _first_arrival(emitter, lambda: bool(results), RESUME_WITHIN_S + 20)
    ws_s = _first_arrival(emitter, lambda: bool(ws_results), RESUME_WITHIN_S + 20)
    client.disconnect()
    ws.close()
    assert socketio_s < RESUME_WITHIN_S, f"Socket.IO broadcasts resumed {socketio_s:.1f} s after Redis returned"
    assert ws_s < RESUME_WITHIN_S, f"/ws broadcasts resumed {ws_s:.1f} s after Redis returned"


def _read_ws(ws: websocket.WebSocket, into: list[dict[str, Any]]) -> None:
    """Collect the ``detection_result`` data arriving on a ``/ws`` connection until it closes."""
    ws.settimeout(None)
    while True:
        try:
            message = json.loads(ws.recv())
        except (websocket.WebSocketException, OSError, ValueError):
            return
        if message.get("type") == "detection_result":
            into.append(message["data"])


class RecordingConnection:
    """A gateway connection that records what it is sent (or fails, as a broken socket would)."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.sent: list[tuple[str, Any]] = []
        self._fail_with = fail_with

    def send(self, kind: str, data: Any) -> bool:
        """Record the message, or raise the configured error."""
        if self._fail_with is not None:
            raise self._fail_with
        self.sent.append((kind, data))
        return True


def test_the_relay_skips_bad_messages_and_keeps_forwarding(redis_client: redis.Redis, redis_url: str) -> None:
    relay = RoomRelay(redis_url)
    good, broken = RecordingConnection(), RecordingConnection(fail_with=RuntimeError("boom"))
    relay.join(good, "camera:r1")  # type: ignore[arg-type]
    relay.join(broken, "camera:r2")  # type: ignore[arg-type]
    wait_until(relay.listening.is_set, 10, "the relay to subscribe")
    for raw in (b"not json", b"[1, 2]", b'{"method": "emit"}', b"\xff\xfe"):
        redis_client.publish(redis_keys.SOCKETIO_CHANNEL, raw)
    Emitter(redis_url).to_camera("r2", "detection_result", {"frameId": "to-the-broken-one"})
    Emitter(redis_url).to_camera("r1", "detection_result", {"frameId": "after"})
    wait_until(lambda: good.sent, 10, "the message after the bad ones")
    assert good.sent == [("detection_result", {"frameId": "after"})]
    assert relay.stop() and not relay.listening.is_set()


def test_a_stopped_relay_ends_its_thread_and_starts_no_other(redis_url: str) -> None:
    relay = RoomRelay(redis_url)
    relay.join(RecordingConnection(), "camera:s1")  # type: ignore[arg-type]
    wait_until(relay.listening.is_set, 10, "the relay to subscribe")
    before = sum(t.name == "ws-relay" for t in threading.enumerate())
    assert relay.stop(timeout=5)
    assert sum(t.name == "ws-relay" for t in threading.enumerate()) == before - 1
    relay.join(RecordingConnection(), "camera:s2")  # type: ignore[arg-type]
    assert not relay.listening.wait(1.0), "a stopped relay stays stopped"
    assert sum(t.name == "ws-relay" for t in threading.enumerate()) == before - 1
