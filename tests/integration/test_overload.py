"""Overload: frames offered faster than the detector runs are dropped, never queued without bound."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.camera_registry import CameraRegistry
from stack.demo import make_demo_clip
from stack.harness import Stack, bus_jpeg, running_stack
from traffic import redis_keys
from traffic.cameras import Camera

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_IN_FLIGHT = 2


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("overload")
    env = {"TRAFFIC_FRAME_INTERVAL": "0.04", "TRAFFIC_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT), "TRAFFIC_FRAME_DEADLINE": "5"}
    # The slowest detector there is (PyTorch on one thread, ~4 frames/s here): OpenVINO keeps up with
    # what one capture process offers on this machine (~9 frames/s), and the test needs an overload.
    env |= {"TRAFFIC_DETECTOR_BACKEND": "torch", "TRAFFIC_DETECTOR_THREADS": "1"}
    with running_stack(tmp, None, "gpu", "llm", "default", **env) as running:
        # Load the model first: frames waiting out a cold start pass their deadline, leave the in-flight
        # count (correctly), and would make the queue-depth figure about start-up instead of overload.
        running.inject_frame("warm-up", bus_jpeg(), deadline_s=120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not running.redis.hget(redis_keys.camera_stats("warm-up"), "detected"):
            time.sleep(0.1)
        yield running


def test_frames_beyond_the_in_flight_cap_are_dropped_and_counted(stack: Stack, tmp_path: Path) -> None:
    clip = make_demo_clip(tmp_path / "demo.avi")
    registry = CameraRegistry(stack.redis)
    registry.add(Camera(camera_id="busy", url=str(clip), wire_id="busy"))
    stack.start("capture")
    depths = []
    end = time.monotonic() + 12
    while time.monotonic() < end:
        depths.append(int(stack.redis.llen("gpu")))
        time.sleep(0.02)
    stats = registry.stats("busy")
    stack.group.stop("capture")
    assert max(depths) <= MAX_IN_FLIGHT, f"gpu queue grew to {max(depths)}"
    assert stats.get("dropped_inflight", 0) > 0, stats
    assert stats.get("detected", 0) > 0, stats
    offered = stats["captured"] + stats["dropped_inflight"]
    assert offered > 1.3 * stats["detected"], f"the detector was not overloaded: {stats}"


def test_a_frame_past_its_deadline_is_dropped_by_the_detector(stack: Stack) -> None:
    frame_id = stack.inject_frame("late-cam", bus_jpeg(), deadline_s=-1.0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not stack.redis.hget(redis_keys.camera_stats("late-cam"), "dropped_age"):
        time.sleep(0.1)
    assert stack.redis.hget(redis_keys.camera_stats("late-cam"), "dropped_age") == b"1"
    assert stack.redis.get(redis_keys.frame_analysis(frame_id)) is None, "no detection was stored for it"
