"""Every REST endpoint and every error path, through Flask's test client, on a real Redis."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from werkzeug.test import TestResponse

from infra import key_pool
from infra.camera_registry import CameraRegistry
from tests.web.conftest import MakeApp, MakeSettings
from traffic import redis_keys
from traffic.alerts import Alert, AlertEvent, AlertKind, alert_to_json
from traffic.models import RiskLevel
from web import openapi
from web.validation import MAX_BODY_BYTES

TOKEN = "s3cret-token-1234"
SECRET = "sk-live-abcdefghijklmnop1234"
CAM_URL = "rtsp://admin:hunter22@10.0.0.5:554/stream1?token=tk123&channel=1"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\xff\xd9"


def ok(response: TestResponse, code: int = 200) -> Any:
    """The ``data`` of a successful enveloped response."""
    assert response.status_code == code, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == code and body["msg"]
    return body["data"]


def refused(response: TestResponse, status: int, error: str, field: str | None = None) -> dict[str, Any]:
    """The envelope of an error response, checked."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == status and isinstance(body["msg"], str) and body["msg"]
    assert body["data"]["error"] == error, body
    if field is not None:
        assert body["data"]["field"] == field, body
    return dict(body)


def post(client: FlaskClient, body: Any, path: str = "/api/cameras") -> TestResponse:
    return client.post(path, json=body)


def alert(
    camera: str,
    level: RiskLevel,
    last_seen: float,
    kind: AlertKind = AlertKind.NEW,
    alert_id: str | None = None,
) -> dict[str, Any]:
    return alert_to_json(
        AlertEvent(
            kind,
            Alert(
                alert_id=alert_id or f"{camera}:near_miss:1x1",
                camera_id=camera,
                level=level,
                risk_types=("near_miss",),
                description="close call",
                first_seen=last_seen - 5,
                last_seen=last_seen,
                frame_id=f"f-{last_seen}",
                bbox=(10.0, 20.0, 110.0, 220.0),
                count=3,
            ),
        )
    )


def log_alerts(redis_client: redis.Redis, events: list[dict[str, Any]]) -> None:
    """Store ``events`` (oldest first) as the workers do: newest first."""
    for event in events:
        redis_client.lpush(redis_keys.ALERT_LOG, json.dumps(event))


# --------------------------------------------------------------------------- health, OpenAPI


def test_health_check_reports_up_and_the_version(client: FlaskClient) -> None:
    data = ok(client.get("/api/health/health_check"))
    assert data["status"] == "UP" and data["service"] == "traffic" and data["version"]


def test_health_check_reports_degraded_when_redis_is_down(
    make_settings: MakeSettings, make_app: MakeApp, dead_redis_url: str
) -> None:
    app = make_app(make_settings({"REDIS_URL": dead_redis_url}))
    assert ok(app.test_client().get("/api/health/health_check"))["status"] == "DEGRADED"


def test_the_openapi_document_is_valid_openapi_3_1(client: FlaskClient) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    validate(document)


def _template(path: str) -> str:
    """A path with its parameters blanked: Flask ``<x>`` and OpenAPI ``{x}`` alike."""
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path)


def test_every_api_route_is_documented_and_every_documented_operation_is_routed(app: Flask) -> None:
    routed = {
        (_template(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    documented = {
        (_template(path), method)
        for path, item in openapi.document()["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert routed and routed == documented


def test_every_documented_error_code_is_known(client: FlaskClient) -> None:
    text = client.get("/api/openapi.json").get_data(as_text=True)
    for code in ("invalid_camera_id", "unknown_field", "file_sources_disabled", "unavailable", "no_frame"):
        assert code in text


# --------------------------------------------------------------------------- cameras


def test_a_camera_is_created_replaced_read_changed_and_deleted(client: FlaskClient, redis_client: redis.Redis) -> None:
    assert ok(client.get("/api/cameras")) == []
    created = ok(post(client, {"cameraId": 1, "url": CAM_URL, "name": "gate"}), 201)
    assert created == {
        "cameraId": "1",
        "wireId": 1,
        "url": "rtsp://admin:***@10.0.0.5:554/stream1?token=***&channel=1",
        "name": "gate",
        "enabled": True,
        "status": None,
        "stats": {},
    }
    replaced = ok(post(client, {"cameraId": 1, "url": CAM_URL, "enabled": False}))
    assert replaced["name"] == "" and replaced["enabled"] is False

    redis_client.hset(
        redis_keys.camera_status("1"), mapping={"status": "1", "message": "ok", "since": "12.5", "latencyMs": "7"}
    )
    redis_client.hset(
        redis_keys.camera_stats("1"), mapping={"captured": "4", "detected": "3", redis_keys.CAMERA_FPS_FIELD: "0.55"}
    )
    listed = ok(client.get("/api/cameras"))
    assert [c["cameraId"] for c in listed] == ["1"]
    assert listed[0]["status"] == {"status": 1, "message": "ok", "since": 12.5, "latencyMs": 7}
    assert listed[0]["stats"] == {"captured": 4, "detected": 3}
    assert ok(client.get("/api/cameras/1")) == listed[0]

    patched = ok(client.patch("/api/cameras/1", json={"name": "north gate", "enabled": True}))
    assert patched["name"] == "north gate" and patched["enabled"] is True and patched["wireId"] == 1
    stored = CameraRegistry(redis_client).get("1")
    assert stored is not None and stored.url == CAM_URL

    deleted = ok(client.delete("/api/cameras/1"))
    assert deleted == {"cameraId": 1, "deleted": True}
    refused(client.delete("/api/cameras/1"), 404, "camera_not_found", "cameraId")
    refused(client.get("/api/cameras/1"), 404, "camera_not_found")
    refused(client.patch("/api/cameras/1", json={"name": "x"}), 404, "camera_not_found")


def test_a_camera_gets_its_own_detection_rate_over_rest(client: FlaskClient, redis_client: redis.Redis) -> None:
    created = ok(post(client, {"cameraId": "gpu-1", "url": "rtsp://10.0.0.5/s", "detectFps": 8}), 201)
    assert created["detectFps"] == 8.0
    stored = CameraRegistry(redis_client).get("gpu-1")
    assert stored is not None and stored.detect_fps == 8.0
    assert json.loads(redis_client.hget(redis_keys.CAMERAS, "gpu-1") or "{}")["detectFps"] == 8.0
    assert ok(client.get("/api/cameras/gpu-1"))["detectFps"] == 8.0
    assert ok(client.get("/api/cameras"))[0]["detectFps"] == 8.0

    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(redis_keys.CAMERAS_CHANGED)
    pubsub.get_message(timeout=1)
    patched = ok(client.patch("/api/cameras/gpu-1", json={"detectFps": 0.5}))
    assert patched["detectFps"] == 0.5 and patched["url"] == "rtsp://10.0.0.5/s"
    message = pubsub.get_message(timeout=2)  # the capture service hears of it and retimes the camera
    assert message is not None and message["data"] == b"gpu-1"
    pubsub.close()
    assert ok(client.patch("/api/cameras/gpu-1", json={"name": "kept"}))["detectFps"] == 0.5  # other fields keep it
    stored = CameraRegistry(redis_client).get("gpu-1")
    assert stored is not None and stored.detect_fps == 0.5 and stored.name == "kept"
    cleared = ok(client.patch("/api/cameras/gpu-1", json={"detectFps": None}))  # null: back to the default
    assert "detectFps" not in cleared and cleared["name"] == "kept"
    stored = CameraRegistry(redis_client).get("gpu-1")
    assert stored is not None and stored.detect_fps is None
    ok(client.patch("/api/cameras/gpu-1", json={"detectFps": 0.5}))

    replaced = ok(post(client, {"cameraId": "gpu-1", "url": "rtsp://10.0.0.5/s"}))  # replacing clears it
    assert "detectFps" not in replaced
    stored = CameraRegistry(redis_client).get("gpu-1")
    assert stored is not None and stored.detect_fps is None
    assert (
        ok(post(client, {"cameraId": "slow", "url": "rtsp://10.0.0.6/s", "detectFps": 0.05}), 201)["detectFps"] == 0.05
    )
    assert ok(post(client, {"cameraId": "fast", "url": "rtsp://10.0.0.7/s", "detectFps": 30}), 201)["detectFps"] == 30


def test_a_bad_detection_rate_says_what_is_allowed(client: FlaskClient) -> None:
    body = refused(post(client, {**GOOD, "detectFps": 45}), 400, "invalid_value", "detectFps")
    assert body["msg"] == "detectFps must be between 0.05 and 30 frames per second, got 45"
    body = refused(post(client, {**GOOD, "detectFps": True}), 400, "invalid_type", "detectFps")
    assert body["msg"] == "detectFps must be a number of frames per second, got boolean"
    assert ok(client.get("/api/cameras")) == []


def test_camera_changes_are_announced_to_the_capture_service(client: FlaskClient, redis_client: redis.Redis) -> None:
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(redis_keys.CAMERAS_CHANGED)
    pubsub.get_message(timeout=1)
    ok(post(client, {"cameraId": "cam-a", "url": "http://cam.local/feed"}), 201)
    message = pubsub.get_message(timeout=2)
    assert message is not None and message["data"] == b"cam-a"
    pubsub.close()


def test_url_credentials_are_never_shown(client: FlaskClient) -> None:
    for response in (
        post(client, {"cameraId": "x", "url": CAM_URL}),
        client.get("/api/cameras"),
        client.get("/api/cameras/x"),
        client.patch("/api/cameras/x", json={"name": "n"}),
    ):
        assert response.status_code in (200, 201)
        text = response.get_data(as_text=True)
        assert "hunter22" not in text and "tk123" not in text and "***" in text


def test_sending_back_the_masked_url_keeps_the_credentials(client: FlaskClient, redis_client: redis.Redis) -> None:
    masked = ok(post(client, {"cameraId": "x", "url": CAM_URL}), 201)["url"]
    ok(client.patch("/api/cameras/x", json={"url": masked, "name": "renamed"}))
    ok(post(client, {"cameraId": "x", "url": masked}))
    stored = CameraRegistry(redis_client).get("x")
    assert stored is not None and stored.url == CAM_URL
    ok(client.patch("/api/cameras/x", json={"url": "rtsp://10.0.0.6/other"}))
    stored = CameraRegistry(redis_client).get("x")
    assert stored is not None and stored.url == "rtsp://10.0.0.6/other"


def test_string_and_integer_ids_name_the_same_camera(client: FlaskClient) -> None:
    ok(post(client, {"cameraId": 7, "url": "rtsp://h/s"}), 201)
    assert ok(post(client, {"cameraId": "7", "url": "rtsp://h/s"}))["wireId"] == "7"


GOOD = {"cameraId": "cam-1", "url": "rtsp://10.0.0.5/stream"}


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        ([GOOD], "invalid_body", None),
        ("cam", "invalid_body", None),
        (None, "invalid_body", None),
        ({**GOOD, "rtspUrl": "rtsp://x/y"}, "unknown_field", "rtspUrl"),
        ({**GOOD, "status": None}, "unknown_field", "status"),
        ({"url": GOOD["url"]}, "missing_field", "cameraId"),
        ({"cameraId": "cam-1"}, "missing_field", "url"),
        ({**GOOD, "cameraId": None}, "invalid_camera_id", "cameraId"),
        ({**GOOD, "cameraId": True}, "invalid_camera_id", "cameraId"),
        ({**GOOD, "cameraId": 1.5}, "invalid_camera_id", "cameraId"),
        ({**GOOD, "cameraId": -1}, "invalid_camera_id", "cameraId"),
        ({**GOOD, "cameraId": 2**53}, "invalid_camera_id", "cameraId"),
        ({**GOOD, "cameraId": "bad id"}, "invalid_camera_id", "cameraId"),
        ({**GOOD, "cameraId": "x" * 65}, "invalid_camera_id", "cameraId"),
        ({**GOOD, "cameraId": ""}, "invalid_camera_id", "cameraId"),
        ({**GOOD, "cameraId": [1]}, "invalid_camera_id", "cameraId"),
        ({**GOOD, "url": ""}, "invalid_url", "url"),
        ({**GOOD, "url": 5}, "invalid_url", "url"),
        ({**GOOD, "url": None}, "invalid_url", "url"),
        ({**GOOD, "url": "rtsp://"}, "invalid_url", "url"),
        ({**GOOD, "url": "rtsp://host:99999/x"}, "invalid_url", "url"),
        ({**GOOD, "url": "rtsp://host/a b"}, "invalid_url", "url"),
        ({**GOOD, "url": "rtsp://host/" + "a" * 2100}, "invalid_url", "url"),
        ({**GOOD, "url": "rtsp://host/\ud800"}, "invalid_value", "url"),
        ({**GOOD, "url": "gopher://host/x"}, "scheme_not_allowed", "url"),
        ({**GOOD, "url": "/etc/hostname"}, "file_sources_disabled", "url"),
        ({**GOOD, "url": "file:///etc/hostname"}, "file_sources_disabled", "url"),
        ({**GOOD, "name": 5}, "invalid_type", "name"),
        ({**GOOD, "name": None}, "invalid_type", "name"),
        ({**GOOD, "name": "n" * 129}, "invalid_length", "name"),
        ({**GOOD, "name": "\udc00"}, "invalid_value", "name"),
        ({**GOOD, "enabled": "yes"}, "invalid_type", "enabled"),
        ({**GOOD, "enabled": 1}, "invalid_type", "enabled"),
        ({**GOOD, "enabled": None}, "invalid_type", "enabled"),
        ({**GOOD, "detectFps": True}, "invalid_type", "detectFps"),
        ({**GOOD, "detectFps": "5"}, "invalid_type", "detectFps"),
        ({**GOOD, "detectFps": None}, "invalid_type", "detectFps"),
        ({**GOOD, "detectFps": [5]}, "invalid_type", "detectFps"),
        ({**GOOD, "detectFps": 0}, "invalid_value", "detectFps"),
        ({**GOOD, "detectFps": 0.04}, "invalid_value", "detectFps"),
        ({**GOOD, "detectFps": -5}, "invalid_value", "detectFps"),
        ({**GOOD, "detectFps": 30.5}, "invalid_value", "detectFps"),
        ({**GOOD, "detectFps": 10**30}, "invalid_value", "detectFps"),
    ],
)
def test_bad_camera_bodies_are_refused_with_the_reason(
    client: FlaskClient, body: Any, error: str, field: str | None
) -> None:
    refused(client.post("/api/cameras", data=json.dumps(body), content_type="application/json"), 400, error, field)
    assert ok(client.get("/api/cameras")) == []


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (b"{'cameraId': 1}", "invalid_json"),
        (b'{"cameraId": NaN, "url": "rtsp://h/s"}', "invalid_json"),
        (b'{"cameraId": Infinity, "url": "rtsp://h/s"}', "invalid_json"),
        (b'{"cameraId": 1, "cameraId": 2, "url": "rtsp://h/s"}', "duplicate_field"),
        (b"\xff\xfe{\x00}\x00", "invalid_json"),
        (b'{"name": "\xc3\x28"}', "invalid_json"),
        (b"[" * 100_000, "invalid_json"),
        (b"[" * 20_000 + b"]" * 20_000, "invalid_json"),
    ],
)
def test_malformed_json_is_refused(client: FlaskClient, raw: bytes, error: str) -> None:
    response = client.post("/api/cameras", data=raw, content_type="application/json")
    if len(raw) > MAX_BODY_BYTES:
        refused(response, 413, "body_too_large")
    else:
        refused(response, 400, error)


def test_a_body_must_be_json_and_small(client: FlaskClient) -> None:
    refused(client.post("/api/cameras", data=json.dumps(GOOD)), 415, "unsupported_media_type")
    refused(
        client.post("/api/cameras", data=json.dumps(GOOD), content_type="text/plain"), 415, "unsupported_media_type"
    )
    huge = {**GOOD, "name": "n" * (MAX_BODY_BYTES + 1)}
    refused(post(client, huge), 413, "body_too_large")
    chunked = client.post(  # no Content-Length: the limit holds while reading
        "/api/cameras",
        input_stream=io.BytesIO(json.dumps(huge).encode()),
        content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
    )
    refused(chunked, 413, "body_too_large")


def test_file_sources_need_the_setting_and_an_existing_file(
    make_settings: MakeSettings, make_app: MakeApp, tmp_path: Path
) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00" * 16)
    env = {
        "TRAFFIC_ALLOW_FILE_SOURCES": "true",
        "TRAFFIC_CLIENT_FILE_SOURCES": "true",
        "TRAFFIC_MEDIA_DIR": str(tmp_path),
    }
    client = make_app(make_settings(env)).test_client()
    assert ok(post(client, {"cameraId": "f", "url": str(video)}), 201)["url"] == str(video)
    assert ok(post(client, {"cameraId": "g", "url": video.as_uri()}), 201)["url"] == video.as_uri()
    refused(post(client, {"cameraId": "h", "url": str(tmp_path / "none.mp4")}), 400, "file_not_found", "url")
    refused(post(client, {"cameraId": "h", "url": "file://remote/x.mp4"}), 400, "invalid_url", "url")
    refused(client.patch("/api/cameras/f", json={"url": str(tmp_path)}), 400, "file_not_found", "url")


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        ({"cameraId": "cam-1"}, "unknown_field", "cameraId"),
        ({"wireId": 1}, "unknown_field", "wireId"),
        ({"url": "ftp://h/x"}, "scheme_not_allowed", "url"),
        ({"url": None}, "invalid_url", "url"),
        ({"name": ["x"]}, "invalid_type", "name"),
        ({"name": "n" * 129}, "invalid_length", "name"),
        ({"enabled": "false"}, "invalid_type", "enabled"),
        ({"detectFps": False}, "invalid_type", "detectFps"),
        ({"detectFps": 0.01}, "invalid_value", "detectFps"),
        ({"detectFps": 60}, "invalid_value", "detectFps"),
        ([], "invalid_body", None),
    ],
)
def test_bad_patches_are_refused_and_change_nothing(
    client: FlaskClient, body: Any, error: str, field: str | None
) -> None:
    before = ok(post(client, GOOD), 201)
    refused(client.patch("/api/cameras/cam-1", json=body), 400, error, field)
    assert ok(client.get("/api/cameras/cam-1")) == before


def test_an_empty_patch_changes_nothing(client: FlaskClient) -> None:
    before = ok(post(client, GOOD), 201)
    assert ok(client.patch("/api/cameras/cam-1", json={})) == before


@pytest.mark.parametrize("path_id", ["bad%20id", "x" * 65, "caf%C3%A9", "%00"])
@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_malformed_camera_ids_in_paths_are_refused(client: FlaskClient, method: str, path_id: str) -> None:
    kwargs: dict[str, Any] = {"json": {"name": "x"}} if method == "patch" else {}
    response = getattr(client, method)(f"/api/cameras/{path_id}", **kwargs)
    refused(response, 400, "invalid_camera_id", "cameraId")
    for sub in ("latest", "frame.jpg", "stats"):
        refused(client.get(f"/api/cameras/{path_id}/{sub}"), 400, "invalid_camera_id", "cameraId")


# --------------------------------------------------------------------------- latest result, frame


def test_latest_result_is_served_once_there_is_one(client: FlaskClient, redis_client: redis.Redis) -> None:
    refused(client.get("/api/cameras/1/latest"), 404, "no_result", "cameraId")
    result = {"cameraId": 1, "frameId": "f1", "assessment": "complete", "maxRiskLevel": "low"}
    redis_client.set(redis_keys.camera_latest("1"), json.dumps(result))
    assert ok(client.get("/api/cameras/1/latest")) == result


def test_latest_frame_is_the_jpeg_never_cached(client: FlaskClient, redis_client: redis.Redis) -> None:
    missing = client.get("/api/cameras/1/frame.jpg")
    refused(missing, 404, "no_frame", "cameraId")
    assert missing.headers["Cache-Control"] == "no-store"
    redis_client.set(redis_keys.camera_latest_frame("1"), JPEG)
    response = client.get("/api/cameras/1/frame.jpg")
    assert response.status_code == 200 and response.data == JPEG
    assert response.mimetype == "image/jpeg" and response.headers["Cache-Control"] == "no-store"


# --------------------------------------------------------------------------- alerts


def test_alerts_are_listed_newest_first_and_filtered(client: FlaskClient, redis_client: redis.Redis) -> None:
    t0 = 1_700_000_000.0
    events = [
        alert("1", RiskLevel.MEDIUM, t0),
        alert("2", RiskLevel.HIGH, t0 + 10),
        alert("1", RiskLevel.HIGH, t0 + 20, AlertKind.UPDATE),
        alert("1", RiskLevel.LOW, t0 + 30, AlertKind.END),
    ]
    log_alerts(redis_client, events)
    redis_client.lpush(redis_keys.ALERT_LOG, "not json", json.dumps({"kind": "new"}))

    assert ok(client.get("/api/alerts")) == events[::-1]
    assert ok(client.get("/api/alerts?cameraId=1")) == [events[3], events[2], events[0]]
    assert ok(client.get("/api/alerts?level=high")) == [events[2], events[1]]
    assert ok(client.get("/api/alerts?level=medium&cameraId=1")) == [events[2], events[0]]
    assert ok(client.get(f"/api/alerts?since={t0 + 10:.0f}")) == [events[3], events[2], events[1]]
    assert ok(client.get("/api/alerts?since=2023-11-14T22:13:30Z")) == [events[3], events[2], events[1]]
    assert ok(client.get("/api/alerts?since=2023-11-15T06:13:30.000%2B08:00")) == [events[3], events[2], events[1]]
    assert ok(client.get("/api/alerts?limit=2")) == [events[3], events[2]]
    assert ok(client.get("/api/alerts?cameraId=9")) == []
    assert ok(client.get("/api/alerts?token=ignored&_=123")) == events[::-1]


def test_alerts_default_to_the_latest_hundred(client: FlaskClient, redis_client: redis.Redis) -> None:
    log_alerts(redis_client, [alert("1", RiskLevel.HIGH, 1_700_000_000.0 + i) for i in range(150)])
    listed = ok(client.get("/api/alerts"))
    assert len(listed) == 100 and listed[0]["lastSeen"] > listed[-1]["lastSeen"]
    assert len(ok(client.get("/api/alerts?limit=500"))) == 150


@pytest.mark.parametrize(
    ("query", "field", "error"),
    [
        ("level=none", "level", "invalid_value"),
        ("level=HIGH", "level", "invalid_value"),
        ("level=", "level", "invalid_value"),
        ("limit=0", "limit", "invalid_value"),
        ("limit=501", "limit", "invalid_value"),
        ("limit=-1", "limit", "invalid_value"),
        ("limit=1.5", "limit", "invalid_value"),
        ("limit=%2B5", "limit", "invalid_value"),
        ("limit=%D9%A5", "limit", "invalid_value"),
        ("limit=99999999999999999999", "limit", "invalid_value"),
        ("since=yesterday", "since", "invalid_value"),
        ("since=-5", "since", "invalid_value"),
        ("since=1e9", "since", "invalid_value"),
        ("since=nan", "since", "invalid_value"),
        ("since=2024-05-01", "since", "invalid_value"),
        ("since=2024-05-01T08:00:00", "since", "invalid_value"),
        ("since=2024-13-01T08:00:00Z", "since", "invalid_value"),
        ("since=2024-05-01T08:00:00%2B24:00", "since", "invalid_value"),
        ("since=0001-01-01T00:00:00%2B01:00", "since", "invalid_value"),
        ("since=" + "1" * 80, "since", "invalid_length"),
        ("cameraId=bad%20id", "cameraId", "invalid_camera_id"),
        ("cameraId=", "cameraId", "invalid_camera_id"),
        ("limit=5&limit=6", "limit", "duplicate_parameter"),
    ],
)
def test_bad_alert_queries_are_refused(client: FlaskClient, query: str, field: str, error: str) -> None:
    refused(client.get(f"/api/alerts?{query}"), 400, error, field)


def test_active_alerts_come_from_the_cameras_hashes(client: FlaskClient, redis_client: redis.Redis) -> None:
    for camera in ("1", "2"):
        ok(post(client, {"cameraId": camera, "url": "rtsp://h/s"}), 201)
    a = alert("1", RiskLevel.HIGH, 1_700_000_000.0, AlertKind.UPDATE, "1:near_miss:1x1")
    b = alert("1", RiskLevel.MEDIUM, 1_700_000_001.0, AlertKind.UPDATE, "1:near_miss:0x0")
    c = alert("2", RiskLevel.LOW, 1_700_000_002.0, AlertKind.UPDATE, "2:near_miss:3x3")
    orphan = alert("9", RiskLevel.LOW, 1_700_000_003.0, AlertKind.UPDATE, "9:near_miss:3x3")
    for event in (a, b, c, orphan):
        redis_client.hset(redis_keys.camera_alerts(event["cameraId"]), event["alertId"], json.dumps(event))
    redis_client.hset(redis_keys.camera_alerts("2"), "corrupt", "{")

    def without_kind(event: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in event.items() if k != "kind"}

    assert ok(client.get("/api/alerts/active")) == [without_kind(b), without_kind(a), without_kind(c)]
    assert ok(client.get("/api/alerts/active?cameraId=2")) == [without_kind(c)]
    assert ok(client.get("/api/alerts/active?cameraId=9")) == [without_kind(orphan)]
    assert ok(client.get("/api/alerts/active?cameraId=5")) == []
    refused(client.get("/api/alerts/active?cameraId=a%20b"), 400, "invalid_camera_id", "cameraId")
    refused(client.get("/api/alerts/active?cameraId=1&cameraId=2"), 400, "duplicate_parameter", "cameraId")


# --------------------------------------------------------------------------- key pool, queues


@pytest.fixture
def keyed_settings(make_settings: MakeSettings, tmp_path: Path) -> Any:
    keys_file = tmp_path / "api_keys.yaml"
    keys_file.write_text(
        "strategy: priority\n"
        "accounts:\n  - id: main\n    rpm_limit: 1200\n"
        "keys:\n"
        f"  - key_id: key-1\n    api_key: {SECRET}\n    account: main\n    qps_limit: 5\n    rpm_limit: 300\n"
        "  - key_id: key-2\n    api_key: sk-other-0000000000009876\n    enabled: false\n    priority: 2\n"
    )
    return make_settings(api_keys=keys_file)


def test_key_pool_falls_back_to_settings_without_secrets(
    keyed_settings: Any, make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(key_pool, "pool_status", raising=False)
    response = make_app(keyed_settings).test_client().get("/api/keys")
    data = ok(response)
    assert data == {
        "source": "settings",
        "strategy": "priority",
        "keys": [
            {
                "keyId": "key-1",
                "masked": "…1234",
                "enabled": True,
                "account": "main",
                "priority": 1,
                "state": "unknown",
                "limits": {"qps": 5.0, "rpm": 300, "maxConcurrency": None},
            },
            {
                "keyId": "key-2",
                "masked": "…9876",
                "enabled": False,
                "account": None,
                "priority": 2,
                "state": "off",
                "limits": {"qps": None, "rpm": None, "maxConcurrency": None},
            },
        ],
        "accounts": [{"accountId": "main", "keys": ["key-1"], "limits": {"rpm": 1200, "tpm": None}}],
    }
    text = response.get_data(as_text=True)
    assert SECRET not in text and "sk-other" not in text


def test_key_pool_falls_back_when_the_module_cannot_be_imported(
    keyed_settings: Any, make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "infra.key_pool", None)
    data = ok(make_app(keyed_settings).test_client().get("/api/keys"))
    assert data["source"] == "settings" and [k["keyId"] for k in data["keys"]] == ["key-1", "key-2"]


def test_key_pool_serves_the_live_status_but_never_a_secret(
    keyed_settings: Any, make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = {"strategy": "priority", "keys": [{"keyId": "key-1", "state": "cooling"}], "accounts": []}
    calls: list[Any] = []

    def pool_status(redis_client: Any, settings: Any) -> dict[str, Any]:
        calls.append((redis_client, settings))
        return live

    monkeypatch.setattr(key_pool, "pool_status", pool_status, raising=False)
    client = make_app(keyed_settings).test_client()
    assert ok(client.get("/api/keys")) == {"source": "live", **live} and calls[0][1] is keyed_settings

    live["keys"][0]["oops"] = SECRET
    response = client.get("/api/keys")
    assert ok(response)["source"] == "settings" and SECRET not in response.get_data(as_text=True)


@pytest.mark.skipif(not hasattr(key_pool, "pool_status"), reason="infra.key_pool has no pool_status yet")
def test_the_real_live_key_pool_status_shows_no_secret(keyed_settings: Any, make_app: MakeApp) -> None:
    response = make_app(keyed_settings).test_client().get("/api/keys")
    data = ok(response)
    assert data["source"] == "live" and [k["keyId"] for k in data["keys"]] == ["key-1", "key-2"]
    assert SECRET not in response.get_data(as_text=True) and "sk-other" not in response.get_data(as_text=True)


def test_key_pool_without_keys_is_empty(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(key_pool, "pool_status", raising=False)
    assert ok(client.get("/api/keys"))["keys"] == []


def test_queue_depths_count_tasks_pending_frames_and_dead_letters(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    assert ok(client.get("/api/queues")) == {
        "queues": {"gpu": 0, "llm": 0, "default": 0},
        "framesPending": 0,
        "deadLetters": 0,
    }
    redis_client.lpush("gpu", "a", "b")
    redis_client.lpush("llm", "c")
    redis_client.zadd(redis_keys.FRAMES_PENDING, {"f1": 1.0, "f2": 2.0, "f3": 3.0})
    redis_client.lpush(redis_keys.DLQ, "{}")
    assert ok(client.get("/api/queues")) == {
        "queues": {"gpu": 2, "llm": 1, "default": 0},
        "framesPending": 3,
        "deadLetters": 1,
    }


# --------------------------------------------------------------------------- auth, CORS


PROTECTED = [
    "/api/cameras",
    "/api/cameras/1",
    "/api/cameras/1/stats",
    "/api/alerts",
    "/api/alerts/active",
    "/api/keys",
    "/api/queues",
]


def test_a_configured_token_is_required_except_for_health_and_openapi(
    make_settings: MakeSettings, make_app: MakeApp
) -> None:
    client = make_app(make_settings({"TRAFFIC_AUTH_TOKEN": TOKEN})).test_client()
    for path in PROTECTED:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0000"}, {"X-Auth-Token": "nope"}):
            response = client.get(path, headers=headers)
            assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
            body = response.get_json()
            assert body["code"] == 401 and body["msg"]
        assert client.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code in (200, 404)
        assert client.get(path, headers={"X-Auth-Token": TOKEN}).status_code in (200, 404)
        assert client.get(f"{path}?token={TOKEN}").status_code in (200, 404)
    assert client.post("/api/cameras", json=GOOD).status_code == 401
    assert client.post("/api/cameras", json=GOOD, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 201
    assert client.get("/api/health/health_check").status_code == 200
    assert client.get("/api/openapi.json").status_code == 200


def test_cors_headers_go_to_allowlisted_origins_only(make_settings: MakeSettings, make_app: MakeApp) -> None:
    client = make_app(make_settings({"TRAFFIC_CORS_ORIGINS": "https://ops.example"})).test_client()
    allowed = client.get("/api/cameras", headers={"Origin": "https://ops.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://ops.example"
    preflight = client.options(
        "/api/cameras", headers={"Origin": "https://ops.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://ops.example"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    other = client.get("/api/cameras", headers={"Origin": "https://evil.example"})
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers
    assert "Access-Control-Allow-Origin" not in client.get("/api/cameras").headers


# --------------------------------------------------------------------------- failures


def test_a_redis_outage_is_a_503_with_a_clear_message(
    make_settings: MakeSettings, make_app: MakeApp, dead_redis_url: str
) -> None:
    client = make_app(make_settings({"REDIS_URL": dead_redis_url})).test_client()
    requests = [
        client.get("/api/cameras"),
        client.post("/api/cameras", json=GOOD),
        client.get("/api/cameras/1"),
        client.patch("/api/cameras/1", json={"name": "x"}),
        client.delete("/api/cameras/1"),
        client.get("/api/cameras/1/latest"),
        client.get("/api/cameras/1/frame.jpg"),
        client.get("/api/cameras/1/stats"),
        client.get("/api/alerts"),
        client.get("/api/alerts/active"),
        client.get("/api/queues"),
    ]
    for response in requests:
        body = refused(response, 503, "unavailable")
        assert "Redis" in body["msg"] and response.headers["Retry-After"] == "5"
    refused(client.post("/api/cameras", json={"cameraId": "bad id"}), 400, "missing_field")
    assert client.get("/api/openapi.json").status_code == 200


def test_unknown_paths_and_methods_answer_in_the_envelope(client: FlaskClient) -> None:
    refused(client.get("/api/nope"), 404, "not_found")
    refused(client.get("/api/cameras/1/2/3"), 404, "not_found")
    refused(client.get("/api"), 404, "not_found")
    response = client.put("/api/cameras", json=GOOD)
    refused(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    refused(client.post("/api/queues"), 405, "method_not_allowed")
    outside = client.get("/definitely-not-here")
    assert outside.status_code == 404 and not outside.is_json


def test_a_bug_is_a_logged_500_in_the_envelope(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(CameraRegistry, "list", broken)
    refused(client.get("/api/cameras"), 500, "internal_error")
    assert any("GET /api/cameras failed" in r.getMessage() and r.exc_info for r in caplog.records)
    assert client.get("/api/queues").status_code == 200
