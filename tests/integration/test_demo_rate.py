"""The demo camera's measured detection rate (``stack.demo_rate``) on a real Redis: the rule's first
guess is replaced by what the detector's results say it takes, once, and never over a user's change."""

from __future__ import annotations

import dataclasses
import json

import pytest
import redis

from infra.camera_registry import CameraRegistry
from stack.demo_rate import SAMPLES, WARM_UP_FRAMES, DemoRateTuner, sustained_fps
from traffic import redis_keys
from traffic.cameras import Camera

pytestmark = pytest.mark.integration


def test_the_sustained_rate_is_the_share_of_the_median_frame_time_within_bounds() -> None:
    assert sustained_fps([0.1, 0.1, 0.5], share=0.5, ceiling=5.0, floor=0.5) == 5.0  # 0.5 / 0.1, the median
    assert sustained_fps([0.25], share=0.5, ceiling=5.0, floor=0.5) == 2.0
    assert sustained_fps([4.0], share=0.5, ceiling=5.0, floor=0.5) == 0.5  # never below the global rate
    assert sustained_fps([0.001], share=0.5, ceiling=10.0, floor=0.5) == 10.0
    with pytest.raises(ValueError, match="no frame times"):
        sustained_fps([], share=0.5, ceiling=5.0, floor=0.5)


def _result(client: redis.Redis, frame: int, process_s: float) -> None:
    """What the finaliser caches as the camera's latest result (the fields the tuner reads)."""
    result = {"cameraId": "demo", "frameId": f"f{frame}", "processTime": process_s, "objects": []}
    client.set(redis_keys.camera_latest("demo"), json.dumps(result))


def _tuner(client: redis.Redis, initial: float) -> DemoRateTuner:
    return DemoRateTuner(client, "demo", initial, share=0.5, ceiling=5.0, floor=1 / 1.8)


@pytest.fixture
def registry(redis_client: redis.Redis) -> CameraRegistry:
    registry = CameraRegistry(redis_client)
    registry.add(Camera(camera_id="demo", url="/tmp/demo.mp4", name="Demo", wire_id="demo", detect_fps=5.0))
    return registry


def test_the_measured_rate_replaces_the_first_guess_once(redis_client: redis.Redis, registry: CameraRegistry) -> None:
    tuner = _tuner(redis_client, 5.0)
    assert tuner.poll() is None  # no result yet
    for frame in range(WARM_UP_FRAMES):
        _result(redis_client, frame, 3.0)  # the first frames also load the model: not measured
        assert tuner.poll() is None
    for frame in range(WARM_UP_FRAMES, WARM_UP_FRAMES + SAMPLES):
        _result(redis_client, frame, 0.25)
        said = tuner.poll()
        assert tuner.poll() is None  # the same frame twice counts once
        if frame < WARM_UP_FRAMES + SAMPLES - 1:
            assert said is None
    assert said == "demo camera: detector measured at 250 ms a frame; now 2 frames/s (was 5)"
    camera = registry.get("demo")
    assert camera is not None and camera.detect_fps == 2.0
    _result(redis_client, 99, 0.01)
    assert tuner.poll() is None and registry.get("demo") == camera  # decided once


def test_a_close_measurement_keeps_the_rate(redis_client: redis.Redis, registry: CameraRegistry) -> None:
    tuner = _tuner(redis_client, 5.0)
    said = None
    for frame in range(WARM_UP_FRAMES + SAMPLES):
        _result(redis_client, frame, 0.11)
        said = tuner.poll() or said
    assert said == "demo camera: detector measured at 110 ms a frame; keeping 5 frames/s"
    camera = registry.get("demo")
    assert camera is not None and camera.detect_fps == 5.0


def test_a_rate_someone_changed_meanwhile_is_left_alone(redis_client: redis.Redis, registry: CameraRegistry) -> None:
    camera = registry.get("demo")
    assert camera is not None
    registry.add(dataclasses.replace(camera, detect_fps=1.0))  # e.g. PATCH /api/cameras/demo
    tuner = _tuner(redis_client, 5.0)
    for frame in range(WARM_UP_FRAMES + SAMPLES):
        _result(redis_client, frame, 0.5)
        assert tuner.poll() is None
    changed = registry.get("demo")
    assert changed is not None and changed.detect_fps == 1.0


def test_unreadable_results_are_skipped_not_fatal(redis_client: redis.Redis, registry: CameraRegistry) -> None:
    tuner = _tuner(redis_client, 5.0)
    redis_client.set(redis_keys.camera_latest("demo"), b"{not json")
    assert tuner.poll() is None
    redis_client.set(redis_keys.camera_latest("demo"), json.dumps({"frameId": "x"}))
    assert tuner.poll() is None and not tuner.seen
