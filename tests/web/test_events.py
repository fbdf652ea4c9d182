"""Every Socket.IO event and every error path, in-process (``socketio.test_client``) on a real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from infra.camera_registry import CameraRegistry
from infra.traffic_stats import TrafficStats
from tests import offline_dns
from traffic import redis_keys
from traffic.config import load_settings
from web import create_app, socketio

TOKEN = "test-token-123456"


def make_app(redis_url: str, **env: str) -> Flask:
    settings = load_settings({"REDIS_URL": redis_url, **env})
    app = create_app(settings, message_queue=False, resolver=offline_dns.resolve)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def app(redis_url: str, tmp_path: Path) -> Flask:
    # Clients may name files in the test's directory and cameras on loopback (the tests' only hosts).
    return make_app(
        redis_url,
        TRAFFIC_ALLOW_FILE_SOURCES="true",
        TRAFFIC_CLIENT_FILE_SOURCES="true",
        TRAFFIC_MEDIA_DIR=str(tmp_path),
        TRAFFIC_CAMERA_ALLOWED_HOSTS="127.0.0.1",
    )


@pytest.fixture
def client(app: Flask) -> Iterator[Any]:
    test_client = socketio.test_client(app)
    yield test_client
    if test_client.is_connected():
        test_client.disconnect()


def events(client: Any, name: str) -> list[Any]:
    return [e["args"][0] for e in client.get_received() if e["name"] == name]


def error_codes(client: Any) -> list[str]:
    return [e["code"] for e in events(client, "error")]


def test_connect_is_acknowledged(app: Flask) -> None:
    client = socketio.test_client(app)
    (ack,) = events(client, "connection_ack")
    assert ack["message"] == "WS connected (pipeline ready)"


def test_a_configured_token_is_required(redis_url: str) -> None:
    app = make_app(redis_url, TRAFFIC_AUTH_TOKEN=TOKEN)
    assert not socketio.test_client(app).is_connected()
    assert not socketio.test_client(app, auth={"token": "wrong-token-000"}).is_connected()
    good = socketio.test_client(app, auth={"token": TOKEN})
    assert good.is_connected() and events(good, "connection_ack")
    assert socketio.test_client(app, query_string=f"token={TOKEN}").is_connected()


def test_ping_answers_pong(client: Any) -> None:
    client.get_received()
    ack = client.emit("ping", {}, callback=True)
    assert "timestamp" in ack and events(client, "pong")


@pytest.mark.parametrize(
    ("event", "data", "code"),
    [
        ("subscribe", "not an object", "invalid_payload"),
        ("subscribe", {"cameraIds": "cam-1"}, "invalid_payload"),
        ("subscribe", {"cameraIds": []}, "invalid_payload"),
        ("subscribe", {"cameraIds": list(range(300))}, "invalid_payload"),
        ("subscribe", {"cameraIds": ["bad id with spaces"]}, "invalid_camera_id"),
        ("subscribe", {"cameraIds": [-1]}, "invalid_camera_id"),
        ("subscribe", {"alerts": "yes"}, "invalid_payload"),
        ("subscribe", {}, "invalid_payload"),
        ("unsubscribe", None, "invalid_payload"),
        ("start_stream", {"cameraId": 1}, "invalid_url"),
        ("start_stream", {"cameraId": 1, "rtspUrl": "ftp://example.org/x"}, "scheme_not_allowed"),
        ("start_stream", {"cameraId": 1, "rtspUrl": "rtsp://"}, "invalid_url"),
        ("start_stream", {"cameraId": {"x": 1}, "rtspUrl": "rtsp://127.0.0.1/a"}, "invalid_camera_id"),
        ("start_stream", {"cameraId": 1, "rtspUrl": "rtsp://127.0.0.1/a", "name": 5}, "invalid_payload"),
        ("start_stream", {"cameraId": 1, "rtspUrl": "rtsp://127.0.0.1/a", "detectFps": True}, "invalid_payload"),
        ("start_stream", {"cameraId": 1, "rtspUrl": "rtsp://127.0.0.1/a", "detectFps": "5"}, "invalid_payload"),
        ("start_stream", {"cameraId": 1, "rtspUrl": "rtsp://127.0.0.1/a", "detectFps": 0}, "invalid_payload"),
        ("start_stream", {"cameraId": 1, "rtspUrl": "rtsp://127.0.0.1/a", "detectFps": 31}, "invalid_payload"),
        ("start_stream", {"cameraId": 1, "rtspUrl": "/definitely/not/here.mp4"}, "file_not_found"),
        ("stop_stream", {"cameraId": "never-started"}, "camera_not_found"),
        ("stop_stream", [], "invalid_payload"),
        ("check_camera", {"cameraId": 1, "rtspUrl": 12}, "invalid_url"),
        ("no_such_event", {}, "unknown_event"),
    ],
)
def test_malformed_events_get_a_clear_error_and_the_connection_survives(
    client: Any, event: str, data: Any, code: str
) -> None:
    client.get_received()
    assert not client.emit(event, data, callback=True), "no acknowledgement value for a refused event"
    errors = events(client, "error")
    assert [e["code"] for e in errors] == [code]
    assert errors[0]["message"] and errors[0]["event"] == event
    assert client.is_connected()
    assert client.emit("ping", {}, callback=True)


def test_start_stream_sets_the_camera_detection_rate(client: Any, redis_client: Any) -> None:
    url = "rtsp://127.0.0.1:8554/cam"
    assert client.emit("start_stream", {"cameraId": 6, "rtspUrl": url, "detectFps": 8}, callback=True)
    camera = CameraRegistry(redis_client).get("6")
    assert camera is not None and camera.detect_fps == 8.0
    assert client.emit("start_stream", {"cameraId": 6, "rtspUrl": url}, callback=True)
    camera = CameraRegistry(redis_client).get("6")
    assert camera is not None and camera.detect_fps is None  # started again without it: the global rate


def test_file_sources_are_refused_unless_enabled(redis_url: str, tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    clip.write_bytes(b"x")
    client = socketio.test_client(make_app(redis_url))
    client.emit("start_stream", {"cameraId": 3, "rtspUrl": str(clip)}, callback=True)
    assert error_codes(client) == ["file_sources_disabled"]


def test_start_and_stop_stream_change_the_server_side_camera_set(client: Any, redis_client: Any) -> None:
    ack = client.emit("start_stream", {"cameraId": 5, "rtspUrl": "rtsp://user:pw@127.0.0.1:8554/cam"}, callback=True)
    assert ack == {"cameraId": 5, "started": True}
    camera = CameraRegistry(redis_client).get("5")
    assert camera is not None and camera.wire_id == 5 and camera.url.startswith("rtsp://")
    client.disconnect()
    assert CameraRegistry(redis_client).get("5") is not None, "streams belong to the server, not the tab"
    other = socketio.test_client(client.app)
    assert other.emit("stop_stream", {"cameraId": 5}, callback=True) == {"cameraId": 5, "stopped": True}
    assert CameraRegistry(redis_client).get("5") is None


def test_subscribe_joins_rooms_and_replays_the_latest_result(client: Any, redis_client: Any) -> None:
    latest = {"cameraId": "cam-a", "frameId": "f0", "assessment": "complete"}
    redis_client.set(redis_keys.camera_latest("cam-a"), json.dumps(latest))
    client.get_received()
    ack = client.emit("subscribe", {"cameraIds": ["cam-a", "cam-b"]}, callback=True)
    assert ack == {"subscribed": ["cam-a", "cam-b"]}
    assert events(client, "detection_result") == [latest]

    socketio.emit("detection_result", {"frameId": "f1"}, to=redis_keys.camera_room("cam-b"))
    socketio.emit("detection_result", {"frameId": "not-mine"}, to=redis_keys.camera_room("cam-c"))
    assert [r["frameId"] for r in events(client, "detection_result")] == ["f1"]

    client.emit("unsubscribe", {"cameraIds": ["cam-b"]}, callback=True)
    socketio.emit("detection_result", {"frameId": "f2"}, to=redis_keys.camera_room("cam-b"))
    assert events(client, "detection_result") == []


def test_subscribe_replays_the_latest_traffic_stats(client: Any, redis_client: Any) -> None:
    snapshot = {"cameraId": "cam-a", "timestamp": "2026-12-05T12:00:00.000Z", "lines": [], "zones": [], "tracks": []}
    TrafficStats(redis_client).record("cam-a", snapshot, (), 1_800_000_000.0)
    client.get_received()
    client.emit("subscribe", {"cameraIds": ["cam-a", "cam-b"]}, callback=True)
    (replayed,) = events(client, "traffic_stats")
    assert replayed["cameraId"] == "cam-a" and replayed["events"] == [] and "_at" not in replayed


def test_subscribing_to_alerts_joins_the_all_alerts_room(client: Any) -> None:
    client.get_received()
    assert client.emit("subscribe", {"alerts": True}, callback=True) == {"subscribed": [], "alerts": True}
    socketio.emit("key_alert", {"keyId": "k1", "action": "disabled"}, to=redis_keys.ALERTS_ROOM)
    assert events(client, "key_alert") == [{"keyId": "k1", "action": "disabled"}]
    assert client.emit("unsubscribe", {"alerts": True}, callback=True) == {"unsubscribed": [], "alerts": False}
    socketio.emit("key_alert", {"keyId": "k2"}, to=redis_keys.ALERTS_ROOM)
    assert events(client, "key_alert") == []


def test_check_camera_probes_once_and_reports_status(client: Any, tmp_path: Path) -> None:
    from stack.demo import make_demo_clip

    clip = make_demo_clip(tmp_path / "demo.avi")
    ok = client.emit("check_camera", {"cameraId": 9, "rtspUrl": str(clip)}, callback=True)
    assert ok["status"] == 1 and ok["cameraId"] == 9 and ok["latencyMs"] >= 0
    from stack.redis_server import free_port

    dead = client.emit(
        "check_camera", {"cameraId": 9, "rtspUrl": f"http://127.0.0.1:{free_port()}/snap.jpg"}, callback=True
    )
    assert dead["status"] == 0 and dead["message"].startswith("unreachable")
    assert [s["status"] for s in events(client, "camera_status")] == [1, 0]


def test_a_redis_outage_is_an_error_event_not_a_dropped_connection(redis_url: str) -> None:
    from stack.redis_server import free_port

    app = make_app(redis_url)
    app.extensions["traffic_redis"] = __import__("redis").Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    client = socketio.test_client(app)
    client.get_received()
    client.emit("subscribe", {"cameraIds": ["x"]}, callback=True)
    assert error_codes(client) == ["unavailable"]
    assert client.is_connected()
