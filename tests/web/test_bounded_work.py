"""One client cannot make the server do unbounded work: camera count, concurrent probes, message size."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
import socketio as socketio_client

from infra.camera_registry import CameraLimitReached, CameraRegistry
from tests import offline_dns
from tests.conftest import ServeApp
from traffic.cameras import Camera
from traffic.config import load_settings
from web import create_app, socketio
from web.realtime.probe_limits import ProbeLimiter, ProbesBusy
from web.realtime.protocol import MAX_MESSAGE_BYTES, Context, EventError, handle

pytestmark = pytest.mark.integration


def test_the_camera_limit_holds_under_concurrent_adds(redis_client: redis.Redis) -> None:
    registry = CameraRegistry(redis_client)

    def add(i: int) -> bool:
        try:
            return registry.add(Camera(f"c{i}", "rtsp://93.184.216.34/s"), limit=5)
        except CameraLimitReached:
            return False

    with ThreadPoolExecutor(8) as pool:
        added = list(pool.map(add, range(20)))
    assert sum(added) == 5 and len(registry.list()) == 5
    kept = registry.list()[0]
    assert registry.add(Camera(kept.camera_id, "rtsp://93.184.216.34/other"), limit=5) is False, "replacing is fine"
    with pytest.raises(CameraLimitReached) as refused:
        registry.add(Camera("one-more", "rtsp://93.184.216.34/s"), limit=5)
    assert refused.value.code == "camera_limit" and "TRAFFIC_MAX_CAMERAS" in str(refused.value)


def test_clients_get_a_clear_error_at_the_camera_limit(redis_url: str) -> None:
    app = create_app(
        load_settings({"REDIS_URL": redis_url, "TRAFFIC_MAX_CAMERAS": "1"}),
        message_queue=False,
        resolver=offline_dns.resolve,
    )
    client = socketio.test_client(app)
    client.get_received()
    assert client.emit("start_stream", {"cameraId": 1, "rtspUrl": "rtsp://cam.example/a"}, callback=True)["started"]
    client.emit("start_stream", {"cameraId": 2, "rtspUrl": "rtsp://cam.example/b"}, callback=True)
    (error,) = [e["args"][0] for e in client.get_received() if e["name"] == "error"]
    assert error["code"] == "camera_limit" and error["event"] == "start_stream"
    response = app.test_client().post("/api/cameras", json={"cameraId": "3", "url": "rtsp://cam.example/c"})
    assert response.status_code == 409 and response.get_json()["data"]["error"] == "camera_limit"
    assert (
        app.test_client().post("/api/cameras", json={"cameraId": 1, "url": "rtsp://cam.example/z"}).status_code == 200
    )


class SlowCamera:
    """A loopback snapshot camera that takes ``delay_s`` to answer (a probe holds a slot meanwhile)."""

    def __init__(self, delay_s: float) -> None:
        started = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                started.set()
                time.sleep(delay_s)
                self.send_response(404)
                self.end_headers()

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.started = started
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/snap.jpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def slow_camera() -> Iterator[SlowCamera]:
    camera = SlowCamera(1.5)
    yield camera
    camera.server.shutdown()


@pytest.mark.parametrize(
    ("total", "per_client", "second_client", "scope"), [(4, 1, "a", "you have"), (1, 1, "b", "the server has")]
)
def test_probes_beyond_the_limits_are_refused_not_queued(
    redis_url: str, slow_camera: SlowCamera, total: int, per_client: int, second_client: str, scope: str
) -> None:
    settings = load_settings({"REDIS_URL": redis_url, "TRAFFIC_CAMERA_ALLOWED_HOSTS": "127.0.0.1"})
    probes = ProbeLimiter(total, per_client)
    redis_client = redis.Redis.from_url(redis_url)
    first = Context(settings, redis_client, offline_dns.resolve, probes, "a")
    second = Context(settings, redis_client, offline_dns.resolve, probes, second_client)
    request = {"cameraId": 1, "rtspUrl": slow_camera.url}
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(handle, first, "check_camera", request)
        assert slow_camera.started.wait(5)
        started = time.monotonic()
        with pytest.raises(EventError) as refused:
            handle(second, "check_camera", request)
        assert time.monotonic() - started < 0.5, "refused at once, not after waiting"
        assert refused.value.code == "too_many_probes" and str(refused.value).startswith(scope)
        assert running.result(10).ack["status"] == 0
    assert handle(second, "check_camera", request).ack["status"] == 0, "the slot is free again"
    redis_client.close()


def test_the_probe_limiter_counts_per_client_and_in_total() -> None:
    limiter = ProbeLimiter(total=2, per_client=1)
    with limiter.slot("a"), limiter.slot("b"):
        for client, scope in (("a", "client"), ("c", "server")):
            with pytest.raises(ProbesBusy) as busy:
                with limiter.slot(client):
                    pass
            assert busy.value.scope == scope
    with limiter.slot("a"), limiter.slot("a2"):
        pass


def test_socketio_refuses_messages_over_the_limit(redis_url: str, serve_app: ServeApp) -> None:
    host = serve_app(create_app(load_settings({"REDIS_URL": redis_url}), resolver=offline_dns.resolve))
    client = socketio_client.Client(reconnection=False)
    try:
        client.connect(f"http://{host}", transports=["websocket"], wait_timeout=10)
        assert client.call("ping", {"pad": "x" * (MAX_MESSAGE_BYTES // 2)}, timeout=5)
        client.emit("ping", {"pad": "x" * (MAX_MESSAGE_BYTES + 1024)})
        deadline = time.monotonic() + 5
        while client.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not client.connected, "an oversized message closes the connection"
    finally:
        client.disconnect()
