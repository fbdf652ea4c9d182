"""The Celery pipeline end to end: real redis-server, real worker processes, the provider simulator."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from infra import celery_names
from infra.dead_letters import DeadLetters
from infra.socketio_packets import read_emit
from stack.demo import make_demo_clip
from stack.harness import API_KEY, EventClient, Stack, bus_jpeg, result_for, running_stack
from stack.provider_sim import ProviderSimulator, SimConfig, SimKey
from traffic import redis_keys
from traffic.imaging import decode_jpeg, encode_jpeg

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OLD_FIELDS = {
    "cameraId", "timestamp", "imageWidth", "imageHeight", "detectedObjects", "trafficGroups",
    "dangerousDrivingResults", "hasDangerousDriving", "maxRiskLevel", "processTime", "llmLatency",
    "llmModel", "modelType", "supportedClasses", "trackingEnabled",
}  # fmt: skip
LEVELS = {"none", "low", "medium", "high"}


@pytest.fixture(scope="module")
def sim() -> Iterator[ProviderSimulator]:
    with ProviderSimulator(SimConfig(keys={API_KEY: SimKey(key_id="k1")})) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sim: ProviderSimulator) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("pipeline"), sim, "web", "gpu", "llm", "default", "capture") as running:
        yield running


def wait_until_idle(stack: Stack, timeout: float = 60.0) -> None:
    """Block until no task is queued or unacknowledged and no frame is pending; fail after ``timeout`` s.

    Tasks are acknowledged late, after they returned and after their ``task_postrun`` signal: once no
    message is queued or unacknowledged, every task sent so far has finished, its Redis writes and
    metrics included (a final result is emitted before its finaliser's last writes and counters).
    """
    r = stack.redis

    def idle() -> bool:
        queued = sum(int(r.llen(queue)) for queue in celery_names.QUEUES)
        return queued == 0 and r.hlen("unacked") == 0 and r.zcard(redis_keys.FRAMES_PENDING) == 0

    deadline = time.monotonic() + timeout
    while not idle():
        if time.monotonic() > deadline:
            queues = {queue: r.llen(queue) for queue in celery_names.QUEUES}
            unacked, pending = r.hlen("unacked"), r.zcard(redis_keys.FRAMES_PENDING)
            raise AssertionError(f"pipeline not idle within {timeout} s: {queues=} {unacked=} {pending=}")
        time.sleep(0.1)


@pytest.fixture
def client(stack: Stack) -> Iterator[EventClient]:
    events = EventClient(stack.web_url)
    yield events
    events.close()


def test_a_file_camera_yields_a_pending_then_a_final_result(
    stack: Stack, client: EventClient, sim: ProviderSimulator, tmp_path: Path
) -> None:
    sim.reset()
    clip = make_demo_clip(tmp_path / "demo.avi")
    ack = client.call("start_stream", {"cameraId": 7, "rtspUrl": str(clip)})
    assert ack == {"cameraId": 7, "started": True}
    _, online = client.wait_for(lambda e, d: e == "camera_status" and d.get("status") == 1, timeout=60)
    assert online["cameraId"] == 7
    _, pending = client.wait_for(lambda e, d: e == "detection_result" and d.get("assessment") == "pending", 90)
    _, final = client.wait_for(result_for(pending["frameId"], "complete", "partial", "unavailable"), 60)
    client.call("stop_stream", {"cameraId": 7})
    # Frames the capture sent before the stop are still in the pipeline: let them finish, so the
    # next tests' simulator scripts and metric deltas see only their own frames.
    deadline = time.monotonic() + 30
    while stack.redis.exists(redis_keys.camera_lease("7")):
        assert time.monotonic() < deadline, "the capture service did not stop camera 7 within 30 s"
        time.sleep(0.1)
    wait_until_idle(stack)

    assert OLD_FIELDS <= pending.keys() and OLD_FIELDS <= final.keys()
    assert final["assessment"] == "complete"
    assert final["cameraId"] == 7 and final["frameId"] == pending["frameId"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", final["timestamp"])
    assert (final["imageWidth"], final["imageHeight"]) == (1280, 720)
    assert final["trafficGroups"] and all(g["riskLevel"] in LEVELS for g in final["trafficGroups"])
    assert final["maxRiskLevel"] in LEVELS and final["llmModel"] == "qwen-vl-plus"
    # The old fields unchanged; tracking adds each object's track (null until confirmed) and the epoch.
    assert final["detectedObjects"][0].keys() == {"class", "confidence", "bbox", "trackId"}
    assert final["trackingEnabled"] is True and isinstance(final["trackingEpoch"], int)
    for result in final["dangerousDrivingResults"]:
        assert {"groupIndex", "riskLevel", "confidence", "riskTypes", "description", "dangerObjectCount",
                "triggerObjectIds"} <= result.keys()  # fmt: skip
    assert "frame" not in final, "frames travel by reference, not inside every event"
    assert sim.stats()["accepted"] >= 1
    assert stack.redis.get(redis_keys.camera_latest("7")) is not None


def test_failed_assessment_is_labelled_dead_lettered_and_replays(
    stack: Stack, client: EventClient, sim: ProviderSimulator
) -> None:
    wait_until_idle(stack)  # no earlier frame may take a scripted reply
    sim.reset()
    sim.script(500, 500, 500, 500, 500, 500)
    client.call("subscribe", {"cameraIds": ["dlq-cam"]})
    frame_id = stack.inject_frame("dlq-cam", bus_jpeg())
    _, final = client.wait_for(result_for(frame_id, "unavailable", "partial", "complete"), 60)
    assert final["assessment"] == "unavailable"
    assert final["maxRiskLevel"] == "none" and final["hasDangerousDriving"] is False
    letters = [e for e in DeadLetters(stack.redis).list() if e.frame_id == frame_id]
    assert [e.reason for e in letters] == ["provider_unavailable"]
    assert sim.stats()["by_status"].get("500", 0) == 3, "the first try and two retries"

    sim.script()
    replay = subprocess.run(
        [sys.executable, "-m", "stack.cli", "dlq", "replay", "--all"],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replay.returncode == 0, replay.stderr
    replay_done = result_for(frame_id, "complete")
    _, replayed = client.wait_for(lambda e, d: replay_done(e, d) and d.get("finalisedBy") == "replay")
    assert replayed["llmModel"] == "qwen-vl-plus"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(e.frame_id == frame_id for e in DeadLetters(stack.redis).list()):
        time.sleep(0.2)
    assert not [e for e in DeadLetters(stack.redis).list() if e.frame_id == frame_id]


def test_a_rate_limited_key_still_gives_a_verdict_after_its_cooldown(
    stack: Stack, client: EventClient, sim: ProviderSimulator
) -> None:
    wait_until_idle(stack)  # no earlier frame may take the scripted reply
    sim.reset()
    sim.script(429)
    client.call("subscribe", {"cameraIds": ["rl-cam"]})
    frame_id = stack.inject_frame("rl-cam", bus_jpeg())
    _, final = client.wait_for(result_for(frame_id, "complete", "partial", "unavailable"), 60)
    assert final["assessment"] == "complete"
    assert sim.stats()["by_status"].get("429") == 1


def test_frames_without_groups_are_final_at_once(stack: Stack, client: EventClient) -> None:
    import numpy as np

    from traffic.imaging import encode_jpeg

    client.call("subscribe", {"cameraIds": ["empty-cam"]})
    frame_id = stack.inject_frame("empty-cam", encode_jpeg(np.zeros((360, 640, 3), dtype=np.uint8)))
    _, final = client.wait_for(result_for(frame_id, "skipped", "complete"), 60)
    assert final["assessment"] == "skipped" and final["trafficGroups"] == []


def test_the_detector_reads_the_capture_preview_and_gives_boxes_in_the_frames_coordinates(
    stack: Stack, client: EventClient
) -> None:
    # The capture service stores a 640-wide preview beside each frame, and the detector decodes it instead of
    # the frame where it is no larger than the frame's own scaled decode. Here the two differ on purpose: the
    # frame is blank, its preview the photo with people, so what is found shows which one was read.
    bus = decode_jpeg(bus_jpeg())
    height, width = bus.shape[:2]
    blank = encode_jpeg(np.zeros((2 * height, 2 * width, 3), dtype=np.uint8))
    client.call("subscribe", {"cameraIds": ["preview-cam"]})
    with_preview = stack.inject_frame("preview-cam", blank, preview=encode_jpeg(bus, 85))
    _, first = client.wait_for(lambda e, d: e == "detection_result" and d.get("frameId") == with_preview, 60)
    people = [o for o in first["detectedObjects"] if o["class"] == "person"]
    assert len(people) >= 2, first["detectedObjects"]
    assert (first["imageWidth"], first["imageHeight"]) == (2 * width, 2 * height)
    assert max(o["bbox"][2] for o in people) > width  # scaled from the preview to the frame's coordinates
    assert all(0 <= o["bbox"][0] < o["bbox"][2] <= 2 * width for o in people)
    client.wait_for(result_for(with_preview, "complete", "partial", "unavailable", "skipped"), 60)
    without = stack.inject_frame("preview-cam", blank)  # no preview (privacy blur on): the frame itself
    _, final = client.wait_for(result_for(without, "skipped", "complete"), 60)
    assert final["detectedObjects"] == [] and (final["imageWidth"], final["imageHeight"]) == (2 * width, 2 * height)


def test_a_result_is_stored_by_the_time_it_is_heard(stack: Stack) -> None:
    # Each detection_result is published in the round trip that stores what it announces: a listener that
    # reads Redis the moment it hears one finds the frame's record (pending: registered with the deadline
    # sweeper) or the camera's latest result (final).
    wait_until_idle(stack)
    pubsub = stack.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(redis_keys.SOCKETIO_CHANNEL)
    try:
        people = stack.inject_frame("heard-cam", bus_jpeg())
        empty = stack.inject_frame("heard-empty", encode_jpeg(np.zeros((360, 640, 3), dtype=np.uint8)))
        seen: dict[tuple[str, str], tuple[bool, ...]] = {}
        deadline = time.monotonic() + 90
        while len(seen) < 3 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            packet = read_emit(message["data"]) if message else None
            if packet is None or packet.event != "detection_result" or packet.data["frameId"] not in (people, empty):
                continue
            frame_id, stage = packet.data["frameId"], packet.data["assessment"]
            latest = stack.redis.get(redis_keys.camera_latest(packet.data["cameraId"]))
            seen[(frame_id, stage)] = (
                bool(stack.redis.exists(redis_keys.frame_analysis(frame_id))),
                stack.redis.zscore(redis_keys.FRAMES_PENDING, frame_id) is not None,
                latest is not None and json.loads(latest)["frameId"] == frame_id,
            )
    finally:
        pubsub.close()
    stages = {key[1] for key in seen if key[0] == people}
    assert "pending" in stages and stages - {"pending"}, f"results heard: {sorted(seen)}"
    final = next(stage for stage in stages if stage != "pending")
    assert seen[(people, "pending")][:2] == (True, True)
    assert seen[(people, final)][2] is True
    assert seen[(empty, "skipped")] == (True, False, True)


def test_a_detect_task_delivered_again_after_its_frame_is_final_changes_nothing(
    stack: Stack, client: EventClient
) -> None:
    import numpy as np

    from traffic.imaging import encode_jpeg

    wait_until_idle(stack)
    client.call("subscribe", {"cameraIds": ["again-cam"]})
    at = time.time()
    frame_id = stack.inject_frame("again-cam", bus_jpeg(), captured_at=at)
    client.wait_for(result_for(frame_id, "complete", "partial", "unavailable"), 60)
    wait_until_idle(stack)
    shown = [d for _, e, d in list(client.events) if e == "detection_result" and d.get("frameId") == frame_id]
    detected = int(stack.redis.hget(redis_keys.camera_stats("again-cam"), "detected") or 0)
    # The broker hands the task out again, as after a worker lost it before acknowledging it; a frame
    # sent after it is detected after it (or beside it, in one batch).
    stack.celery.send_task(celery_names.DETECT_FRAME, args=["again-cam", frame_id, at], queue=celery_names.GPU_QUEUE)
    later = stack.inject_frame("again-cam", encode_jpeg(np.zeros((360, 640, 3), dtype=np.uint8)))
    client.wait_for(result_for(later, "skipped"), 60)
    wait_until_idle(stack)
    again = [d for _, e, d in list(client.events) if e == "detection_result" and d.get("frameId") == frame_id]
    assert again == shown, "the final frame was shown again"
    assert int(stack.redis.hget(redis_keys.camera_stats("again-cam"), "detected") or 0) == detected + 1


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a ``/metrics`` page, by name and sorted labels."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{url}/metrics", timeout=10).text
    assert API_KEY not in text and API_KEY[-6:] not in text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def test_worker_metrics_reach_the_web_servers_metrics(
    stack: Stack, client: EventClient, sim: ProviderSimulator
) -> None:
    # Earlier tests' last counters (recorded after their final results went out) land before the baseline.
    wait_until_idle(stack)
    sim.reset()
    sim.update(levels={"high": 1.0})  # every group high: a new alert too
    before = scrape(stack.web_url)
    client.call("subscribe", {"cameraIds": ["metrics-cam"]})
    frames = [stack.inject_frame("metrics-cam", bus_jpeg()) for _ in range(3)]
    for frame_id in frames:
        _, final = client.wait_for(result_for(frame_id, "complete", "partial", "unavailable"), 90)
        assert final["assessment"] == "complete"
    sim.reset()
    # A final result goes out before its finaliser counts it (final, broadcast age, alerts) and before the
    # detector's and the assessments' task_postrun signals record theirs: wait until every task is done.
    wait_until_idle(stack)
    after = scrape(stack.web_url)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("detection_total", camera_id="metrics-cam", status="detected") == 3
    assert delta("detection_latency_seconds_count") >= 3
    assert delta("detected_objects_total", class_name="person") >= 3 * 3, "bus.jpg has several people"
    groups = delta("traffic_groups_total")
    assert groups >= 3 and delta("tasks_generated_total") == groups == delta("tasks_processed_total", status="ok")
    assert delta("llm_requests_total", model="qwen-vl-plus", key_id="k1", status="ok") == groups
    assert delta("llm_latency_seconds_count", model="qwen-vl-plus") == groups
    assert delta("llm_token_usage_total", type="prompt") > 0 and delta("llm_token_usage_total", type="completion") > 0
    assert delta("risk_types_detected_total") >= groups
    assert delta("risk_alerts_total", risk_level="high") >= 1
    assert delta("traffic_frames_finalised_total", by="chord", assessment="complete") == 3
    assert delta("traffic_frame_age_at_broadcast_seconds_count", stage="fast") == 3
    assert delta("traffic_frame_age_at_broadcast_seconds_count", stage="final") == 3
    assert total(after, "api_key_pool_size") == 1 and total(after, "api_key_status", key_id="k1") == 1
    assert ("task_queue_size", (("queue", "llm"),)) in after
