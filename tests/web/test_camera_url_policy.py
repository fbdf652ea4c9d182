"""Clients cannot make the server contact loopback, private or metadata addresses, nor read local files.

Every target here is on loopback (127.0.0.1 and 127.0.0.2): denied by default, opened only when listed.
Each local server counts its requests, so "nothing was contacted" is measured, not assumed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from flask import Flask

from tests import offline_dns
from traffic.config import load_settings
from web import create_app, socketio

pytestmark = pytest.mark.integration


class CountingCamera:
    """A loopback HTTP snapshot camera that counts requests; optionally redirects every request."""

    def __init__(self, host: str = "127.0.0.1", redirect_to: str | None = None) -> None:
        self.hits = 0
        jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 90, dtype=np.uint8))[1].tobytes()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                camera.hits += 1
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(jpeg)))
                self.end_headers()
                self.wfile.write(jpeg)

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_port}/snap.jpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def camera() -> Iterator[CountingCamera]:
    served = CountingCamera()
    yield served
    served.close()


def make_client(redis_url: str, **env: str) -> Any:
    app: Flask = create_app(
        load_settings({"REDIS_URL": redis_url, **env}), message_queue=False, resolver=offline_dns.resolve
    )
    app.config["TESTING"] = True
    client = socketio.test_client(app)
    client.get_received()
    return client


def errors(client: Any) -> list[dict[str, Any]]:
    return [e["args"][0] for e in client.get_received() if e["name"] == "error"]


@pytest.mark.parametrize("event", ["start_stream", "check_camera"])
@pytest.mark.parametrize("spelling", ["127.0.0.1", "2130706433", "0x7f.1", "[::ffff:127.0.0.1]", "localhost."])
def test_loopback_cameras_are_denied_by_default_and_never_contacted(
    redis_url: str, camera: CountingCamera, event: str, spelling: str
) -> None:
    client = make_client(redis_url)
    url = camera.url.replace("127.0.0.1", spelling)
    client.emit(event, {"cameraId": 1, "rtspUrl": url}, callback=True)
    (error,) = errors(client)
    assert error["code"] == "url_denied" and "loopback" in error["message"] and error["event"] == event
    assert str(camera.server.server_port) not in error["message"]
    assert camera.hits == 0
    assert client.is_connected()


def test_the_metadata_address_and_private_ranges_are_denied(redis_url: str) -> None:
    client = make_client(redis_url)
    for url, rule in [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("rtsp://192.168.1.20:554/live", "private"),
        ("http://100.64.1.1/", "carrier-grade NAT"),
    ]:
        client.emit("check_camera", {"cameraId": 1, "rtspUrl": url}, callback=True)
        (error,) = errors(client)
        assert error["code"] == "url_denied" and rule in error["message"]


def test_listed_hosts_are_allowed(redis_url: str, camera: CountingCamera) -> None:
    client = make_client(redis_url, TRAFFIC_CAMERA_ALLOWED_HOSTS="127.0.0.1")
    status = client.emit("check_camera", {"cameraId": 1, "rtspUrl": camera.url}, callback=True)
    assert status["status"] == 1 and camera.hits >= 1


def test_a_redirect_to_a_denied_address_is_not_followed(redis_url: str) -> None:
    target = CountingCamera("127.0.0.2")
    hop = CountingCamera("127.0.0.1", redirect_to=target.url)
    try:
        client = make_client(redis_url, TRAFFIC_CAMERA_ALLOWED_HOSTS="127.0.0.1")
        status = client.emit("check_camera", {"cameraId": 1, "rtspUrl": hop.url}, callback=True)
        assert status["status"] == 0 and "not allowed" in status["message"] and "loopback" in status["message"]
        assert hop.hits >= 1 and target.hits == 0
        listed = make_client(redis_url, TRAFFIC_CAMERA_ALLOWED_HOSTS="127.0.0.1,127.0.0.2")
        assert listed.emit("check_camera", {"cameraId": 1, "rtspUrl": hop.url}, callback=True)["status"] == 1
        assert target.hits >= 1
    finally:
        hop.close()
        target.close()


def test_clients_cannot_name_files_even_where_capture_may(redis_url: str, tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    image, outside = media / "clip.jpg", tmp_path / "outside.jpg"
    for path in (image, outside):
        cv2.imwrite(str(path), np.zeros((8, 8, 3), dtype=np.uint8))
    env = {"TRAFFIC_ALLOW_FILE_SOURCES": "true", "TRAFFIC_MEDIA_DIR": str(media)}
    client = make_client(redis_url, **env)
    answers = []
    for path in (str(image), str(media / "missing.jpg")):
        client.emit("check_camera", {"cameraId": 1, "rtspUrl": path}, callback=True)
        answers.append(errors(client))
    assert answers[0] == answers[1], "whether a path exists is not told"
    assert answers[0][0]["code"] == "file_sources_disabled"
    allowed = make_client(redis_url, **env, TRAFFIC_CLIENT_FILE_SOURCES="true")
    assert allowed.emit("check_camera", {"cameraId": 1, "rtspUrl": str(image)}, callback=True)["status"] == 1
    allowed.emit("check_camera", {"cameraId": 1, "rtspUrl": str(outside)}, callback=True)
    (error,) = errors(allowed)
    assert error["code"] == "url_denied" and "media directory" in error["message"]


def test_rest_refuses_denied_urls_with_the_rule(redis_url: str) -> None:
    app = create_app(load_settings({"REDIS_URL": redis_url}), message_queue=False, resolver=offline_dns.resolve)
    response = app.test_client().post("/api/cameras", json={"cameraId": "m", "url": "http://169.254.169.254/"})
    assert response.status_code == 400
    body = response.get_json()
    assert body["data"]["error"] == "url_denied" and "link-local" in body["msg"]
