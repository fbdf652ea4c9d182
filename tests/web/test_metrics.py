"""``/metrics``: the pipeline's Redis-held state and the key pool in Prometheus text, secrets never."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from traffic import redis_keys
from traffic.config import load_settings
from web import create_app

SECRET = "sk-metrics-secret-000111222"


def client_for(redis_url: str, tmp_path: Path, **env: str) -> Any:
    keys_file = tmp_path / "api_keys.yaml"
    keys_file.write_text(f"keys:\n  - key_id: k1\n    api_key: {SECRET}\n    rpm_limit: 60\n")
    settings = load_settings({"REDIS_URL": redis_url, "TRAFFIC_API_KEYS_FILE": str(keys_file), **env})
    return create_app(settings, message_queue=False).test_client()


def test_metrics_expose_queues_cameras_and_keys(redis_url: str, redis_client: Any, tmp_path: Path) -> None:
    redis_client.rpush("gpu", "a", "b")
    redis_client.zadd(redis_keys.FRAMES_PENDING, {"f1": 1.0})
    redis_client.rpush(redis_keys.INCIDENTS_PENDING, "{}", "{}", "{}")
    redis_client.hset(redis_keys.CAMERAS, "cam-1", "{}")
    redis_client.hset(
        redis_keys.camera_stats("cam-1"),
        mapping={"captured": 7, "dropped_inflight": 3, "dropped_superseded": 4, "final_partial": 1},
    )
    redis_client.hset(redis_keys.camera_stats("cam-1"), redis_keys.CAMERA_FPS_FIELD, "0.5523")
    redis_client.hset(redis_keys.camera_status("cam-1"), "status", "1")
    redis_client.hset(redis_keys.CAMERAS, "cam-2", "{}")
    response = client_for(redis_url, tmp_path).get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert "traffic_redis_up 1.0" in text
    assert 'task_queue_size{queue="gpu"} 2.0' in text
    assert "traffic_frames_pending 1.0" in text
    assert "traffic_incidents_pending 3.0" in text
    assert 'traffic_camera_captured_total{camera="cam-1"} 7.0' in text
    assert 'traffic_camera_dropped_inflight_total{camera="cam-1"} 3.0' in text
    assert 'traffic_camera_frames_final_total{assessment="partial",camera="cam-1"} 1.0' in text
    assert 'traffic_camera_dropped_superseded_total{camera="cam-1"} 4.0' in text
    assert 'traffic_camera_frames_shed_total{camera="cam-1",reason="superseded"} 4.0' in text
    assert 'traffic_camera_frames_shed_total{camera="cam-1",reason="in_flight_cap"} 3.0' in text
    assert 'traffic_camera_frames_shed_total{camera="cam-1",reason="past_deadline"} 0.0' in text
    assert 'traffic_camera_online{camera="cam-1"} 1.0' in text
    assert 'traffic_camera_online{camera="cam-2"} 0.0' in text
    assert 'traffic_camera_fps{camera="cam-1"} 0.5523' in text
    assert "active_cameras 1.0" in text
    assert "api_key_pool_size 1.0" in text and 'api_key_status{key_id="k1"} 1.0' in text
    assert 'key_id="k1"' in text
    assert SECRET not in text and SECRET[-4:] not in text


def test_metrics_need_the_token_when_one_is_configured(redis_url: str, tmp_path: Path) -> None:
    client = client_for(redis_url, tmp_path, TRAFFIC_AUTH_TOKEN="metrics-token-123")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer metrics-token-123"}).status_code == 200


def test_a_redis_outage_is_reported_not_raised(tmp_path: Path) -> None:
    from stack.redis_server import free_port

    response = client_for(f"redis://127.0.0.1:{free_port()}/0", tmp_path).get("/metrics")
    assert response.status_code == 200
    assert "traffic_redis_up 0.0" in response.get_data(as_text=True)


def test_metrics_count_the_evidence_on_disk(redis_url: str, tmp_path: Path) -> None:
    evidence = tmp_path / "evidence"
    (evidence / "cam-1").mkdir(parents=True)
    (evidence / "cam-1" / "a.jpg").write_bytes(b"x" * 1000)
    (evidence / "cam-1" / "a.webm").write_bytes(b"y" * 5000)
    (evidence / "cam-1" / ".tmp-abc.webm").write_bytes(b"z" * 700)  # a clip being written: not counted yet
    text = client_for(redis_url, tmp_path, TRAFFIC_EVIDENCE_DIR=str(evidence)).get("/metrics").get_data(as_text=True)
    assert "traffic_evidence_bytes 6000.0" in text and "traffic_evidence_files 2.0" in text
    assert "traffic_evidence_bytes" not in client_for(redis_url, tmp_path).get("/metrics").get_data(as_text=True)
