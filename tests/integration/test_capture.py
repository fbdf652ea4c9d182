"""The capture service against a real redis-server: leases, sampling, the in-flight cap, reconnects, removal.

No Celery worker runs: ``detect_frame`` messages land on the real broker (this Redis) and stay on the
``gpu`` list, where the tests read them.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import redis
from celery import Celery

from celeryconfig import celery_options
from infra.camera_registry import CameraRegistry
from infra.emitter import Emitter
from infra.frame_store import FrameStore
from infra.socketio_packets import read_emit
from stack.demo import make_demo_clip
from stack.redis_server import free_port
from traffic import redis_keys
from traffic.cameras import Camera, make_camera
from traffic.settings import Settings
from workers.capture import CaptureService, CaptureTimings

pytestmark = pytest.mark.integration

INTERVAL = 0.2
FAST = CaptureTimings(lease_s=2.0, renew_s=0.4, reconcile_s=0.3, backoff_base_s=0.25)
ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- helpers


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


MEDIA_DIR = str(Path(tempfile.gettempdir()).resolve())
"""Where pytest's temporary files (the test clips and images) live."""


def make_settings(redis_url: str, **capture: Any) -> Settings:
    """Settings with a short frame interval, file sources allowed in pytest's temporary directories and the
    loopback snapshot camera allowed past the URL policy, plus ``capture`` overrides."""
    base = Settings(redis_url=redis_url)
    fields = {
        "frame_interval_s": INTERVAL,
        "allow_file_sources": True,
        "media_dir": MEDIA_DIR,
        "allowed_hosts": ("127.0.0.1",),
        **capture,
    }
    return dataclasses.replace(base, capture=dataclasses.replace(base.capture, **fields))


class SocketEvents:
    """Events published on the Socket.IO Redis channel, as the web servers would receive them."""

    def __init__(self, client: redis.Redis) -> None:
        self._pubsub = client.pubsub()
        self._pubsub.subscribe(redis_keys.SOCKETIO_CHANNEL)
        wait_until(lambda: self._pubsub.get_message(timeout=0.1), 5, "the subscription")
        self.events: list[tuple[str, dict[str, Any], str]] = []

    def poll(self) -> list[tuple[str, dict[str, Any], str]]:
        """Every event received so far as (event, data, room)."""
        while (message := self._pubsub.get_message(timeout=0.0)) is not None:
            packet = read_emit(message["data"]) if message["type"] == "message" else None
            if packet is not None:
                self.events.append((packet.event, packet.data, packet.room or ""))
        return self.events

    def named(self, event: str) -> list[dict[str, Any]]:
        """Data of every ``event`` so far."""
        return [data for name, data, _ in self.poll() if name == event]

    def close(self) -> None:
        """Unsubscribe."""
        self._pubsub.close()


class SnapshotCamera:
    """A local HTTP camera answering JPEG snapshots; stop/start simulate it going away and coming back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits = 0
        """Requests served (HEAD and GET)."""
        image = np.full((120, 160, 3), 80, dtype=np.uint8)
        cv2.putText(image, "cam", (20, 70), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        self.jpeg = cv2.imencode(".jpg", image)[1].tobytes()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The snapshot URL (with credentials, which must never show up in events)."""
        return f"http://viewer:hunter22@127.0.0.1:{self.port}/snapshot.jpg"

    def start(self) -> None:
        """Serve on the camera's port."""
        jpeg = self.jpeg
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def _headers(self) -> None:
                camera.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(jpeg)))
                self.end_headers()

            def do_HEAD(self) -> None:
                self._headers()

            def do_GET(self) -> None:
                self._headers()
                self.wfile.write(jpeg)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="snapshot-camera", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving; connections are refused from now on."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(5)
            self._server = None


def gpu_messages(client: redis.Redis) -> list[dict[str, Any]]:
    """The kombu messages waiting on the ``gpu`` queue (oldest first)."""
    return [json.loads(raw) for raw in reversed(client.lrange("gpu", 0, -1))]


def capture_threads() -> list[str]:
    """Names of live capture threads."""
    return [t.name for t in threading.enumerate() if t.name.startswith("capture")]


@pytest.fixture(scope="module")
def demo_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo clip (MJPEG AVI, 10 fps)."""
    return make_demo_clip(tmp_path_factory.mktemp("clip") / "demo.avi")


@pytest.fixture
def still_image(tmp_path: Path) -> Path:
    """A small still image: a cheap file camera."""
    path = tmp_path / "still.png"
    cv2.imwrite(str(path), np.full((96, 128, 3), 60, dtype=np.uint8))
    return path


@pytest.fixture
def broker(redis_url: str) -> Iterator[Celery]:
    """A Celery app configured like production, on the test Redis (no worker consumes it)."""
    app = Celery("capture-test", set_as_current=False)
    app.config_from_object(celery_options(make_settings(redis_url)))
    yield app
    app.close()


@pytest.fixture
def events(redis_client: redis.Redis) -> Iterator[SocketEvents]:
    """The Socket.IO events published from now on."""
    listener = SocketEvents(redis_client)
    yield listener
    listener.close()


@pytest.fixture
def services(redis_url: str, broker: Celery) -> Iterator[Callable[..., CaptureService]]:
    """A factory of started capture services, all closed (and checked for leftover threads) at the end."""
    started: list[CaptureService] = []

    def start(owner_id: str = "capture-a", timings: CaptureTimings = FAST, **capture: Any) -> CaptureService:
        client = redis.Redis.from_url(redis_url)
        service = CaptureService(
            make_settings(redis_url, **capture),
            client,
            Emitter(redis_url),
            send_task=broker.send_task,
            owner_id=owner_id,
            timings=timings,
        )
        service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.close()
    assert capture_threads() == []


# --------------------------------------------------------------------------- tests


def test_file_camera_is_claimed_sampled_and_queued(
    redis_client: redis.Redis, demo_clip: Path, events: SocketEvents, services: Callable[..., CaptureService]
) -> None:
    registry = CameraRegistry(redis_client)
    assert registry.add(make_camera(1, str(demo_clip), allow_files=True, name="demo"))
    service = services(max_in_flight=50)

    wait_until(lambda: registry.stats("1").get("captured", 0) >= 2, 10, "2 captured frames")
    t0, c0 = time.monotonic(), registry.stats("1")["captured"]
    wait_until(lambda: registry.stats("1").get("captured", 0) >= c0 + 8, 10, "8 more captured frames")
    t1, c1 = time.monotonic(), registry.stats("1")["captured"]
    assert 0.15 <= (t1 - t0) / (c1 - c0) <= 0.3, "frames are sampled every 0.2 s"
    assert service.owned() == {"1"}
    assert redis_client.get(redis_keys.camera_lease("1")) == b"capture-a"

    # No detector runs: the camera's one detector task waits on the gpu queue, and each newer frame
    # replaced the waiting one (which is shed and counted) instead of queueing behind it.
    messages = gpu_messages(redis_client)
    assert len(messages) == 1
    message = messages[0]
    assert message["headers"]["task"] == "workers.tasks.detect_frame"
    assert message["headers"]["expires"]
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    camera_id, first_id, _ = args
    assert camera_id == "1" and first_id.startswith("1-") and kwargs == {}
    stats = registry.stats("1")
    assert stats["dropped_superseded"] >= stats["captured"] - 2  # the newest frame waits, one may be in transit
    assert redis_client.get(redis_keys.frame_image(first_id)) is None, "a shed frame's image is deleted"
    waiting = {k.decode(): v.decode() for k, v in redis_client.hgetall(redis_keys.camera_waiting("1")).items()}
    assert waiting["origin"] == first_id and waiting["frame"] != first_id
    frame_id = waiting["frame"]
    assert redis_client.zrange(redis_keys.camera_inflight("1"), 0, -1) == [frame_id.encode()]
    assert 0 < redis_client.pttl(redis_keys.frame_image(frame_id)) <= 30_000
    meta = {k.decode(): v.decode() for k, v in redis_client.hgetall(redis_keys.frame_meta(frame_id)).items()}
    assert meta["camera_id"] == "1" and json.loads(meta["wire_id"]) == 1
    captured_at = float(meta["captured_at"])
    assert time.time() - 1.0 < captured_at <= time.time()
    assert float(meta["deadline"]) == pytest.approx(captured_at + 45.0)
    assert (meta["width"], meta["height"]) == ("1280", "720")
    assert 45 < redis_client.ttl(redis_keys.frame_meta(frame_id)) <= 105
    assert redis_client.ttl(redis_keys.camera_latest_frame("1")) > 0

    online = wait_until(lambda: [d for d in events.named("camera_status") if d["status"] == 1], 5, "online")
    assert online[0]["cameraId"] == 1 and online[0]["latencyMs"] >= 0
    assert ("camera_status", online[0], "camera:1") in events.poll()
    status = registry.status("1")
    assert status is not None and status["status"] == 1 and status["message"] == "connected" and "latencyMs" in status

    service.close()
    assert capture_threads() == []
    assert redis_client.get(redis_keys.camera_lease("1")) is None


def test_each_camera_is_sampled_at_its_own_detection_rate(
    redis_client: redis.Redis, demo_clip: Path, services: Callable[..., CaptureService]
) -> None:
    registry = CameraRegistry(redis_client)
    registry.add(make_camera("fast", str(demo_clip), allow_files=True, detect_fps=5))
    registry.add(make_camera("slow", str(demo_clip), allow_files=True, detect_fps=0.5))
    registry.add(make_camera("plain", str(demo_clip), allow_files=True))  # the global interval: 1 s here
    services(frame_interval_s=1.0, max_in_flight=50)

    def captured(camera_id: str) -> int:
        return registry.stats(camera_id).get("captured", 0)

    wait_until(lambda: captured("fast") >= 1, 15, "the fast camera's first frame")
    started, fast0, slow0, plain0 = time.monotonic(), captured("fast"), captured("slow"), captured("plain")
    wait_until(lambda: captured("fast") >= fast0 + 20, 40, "20 frames of the 5-fps camera")
    window = time.monotonic() - started
    fast, slow, plain = captured("fast") - fast0, captured("slow") - slow0, captured("plain") - plain0
    # The schedule never samples early, so the slower cameras stay within their rates whatever the load.
    assert slow <= 0.5 * window + 2, (slow, window)
    assert plain <= 1.0 * window + 2, (plain, window)
    assert slow < fast and plain < fast, (slow, plain, fast)


def test_a_detection_rate_changed_in_the_registry_applies_without_a_reconnect(
    redis_client: redis.Redis, demo_clip: Path, services: Callable[..., CaptureService]
) -> None:
    registry = CameraRegistry(redis_client)
    camera = make_camera("cam", str(demo_clip), allow_files=True, detect_fps=0.1)  # a frame every 10 s
    registry.add(camera)
    service = services(max_in_flight=50, timings=dataclasses.replace(FAST, reconcile_s=30.0))  # pub/sub must do it
    wait_until(lambda: (registry.status("cam") or {}).get("status") == 1, 10, "the camera online")
    attempts = service.connect_attempts("cam")
    before = registry.stats("cam").get("captured", 0)

    registry.add(dataclasses.replace(camera, detect_fps=8.0))
    wait_until(lambda: registry.stats("cam").get("captured", 0) >= before + 8, 10, "frames at the new rate")
    assert service.connect_attempts("cam") == attempts, "the same reader and connection"
    assert service.owned() == {"cam"}


def test_a_snapshot_camera_is_polled_at_its_new_rate(
    redis_client: redis.Redis, services: Callable[..., CaptureService]
) -> None:
    camera = SnapshotCamera()
    camera.start()
    try:
        registry = CameraRegistry(redis_client)
        slow = make_camera("snap", camera.url, allow_files=False, detect_fps=0.1)  # polled every 5 s
        registry.add(slow)
        service = services(timings=dataclasses.replace(FAST, reconcile_s=30.0))
        wait_until(lambda: (registry.status("snap") or {}).get("status") == 1, 10, "the camera online")
        attempts, hits = service.connect_attempts("snap"), camera.hits

        registry.add(dataclasses.replace(slow, detect_fps=10.0))  # polled every 0.05 s from its next poll
        wait_until(lambda: camera.hits >= hits + 20, 15, "20 more snapshot requests")
        wait_until(lambda: registry.stats("snap").get("captured", 0) >= 5, 10, "frames at the new rate")
        assert service.connect_attempts("snap") == attempts
    finally:
        camera.stop()


def test_a_started_detector_task_takes_the_newest_frame_and_the_in_flight_cap_holds(
    redis_client: redis.Redis, still_image: Path, services: Callable[..., CaptureService]
) -> None:
    registry = CameraRegistry(redis_client)
    registry.add(make_camera("cap", str(still_image), allow_files=True))
    services(max_in_flight=2)
    store = FrameStore(redis_client)

    def start_task() -> str:
        """What a detector worker does first with the oldest message: take the camera's waiting frame."""
        message = wait_until(lambda: redis_client.rpop("gpu"), 5, "a detect_frame message")
        _, sent_for, _ = json.loads(base64.b64decode(json.loads(message)["body"]))[0]
        waiting = redis_keys.camera_waiting("cap")
        wait_until(lambda: redis_client.hget(waiting, "frame") not in (None, sent_for.encode()), 5, "a newer frame")
        taken = store.take("cap", sent_for, keep_s=45, queue="gpu", next_turn="unused")
        assert taken.how == "waiting" and taken.frame_id != sent_for, "the newest frame, not the one it was sent for"
        again = store.take("cap", sent_for, keep_s=45, queue="gpu", next_turn="unused")
        assert again == dataclasses.replace(taken, how="redelivered")
        return taken.frame_id

    first = start_task()
    second = start_task()  # the next sample sent a new task (one in detection, one waiting)
    # Two frames in detection now: the cap leaves no room for a waiting one.
    wait_until(lambda: registry.stats("cap").get("dropped_inflight", 0) >= 3, 10, "frames dropped at the cap")
    assert redis_client.llen("gpu") == 0 and not redis_client.exists(redis_keys.camera_waiting("cap"))
    assert {m.decode() for m in redis_client.zrange(redis_keys.camera_inflight("cap"), 0, -1)} == {first, second}

    store.done_inflight("cap", first)  # the detector finished one frame: a new task is sent
    wait_until(lambda: redis_client.llen("gpu") == 1, 5, "a new detect_frame message")
    time.sleep(3 * INTERVAL)  # newer frames replace its frame; nothing more is queued
    assert redis_client.llen("gpu") == 1
    assert redis_client.zcard(redis_keys.camera_inflight("cap")) == 2


def test_under_overload_samples_are_timed_to_just_before_the_cameras_detector_turn(
    redis_client: redis.Redis, tmp_path: Path, services: Callable[..., CaptureService]
) -> None:
    # The test plays a detector serving this camera and two others in turn, one turn every 0.3 s: this
    # camera's turn comes every 0.9 s, whatever its 0.6-s sampling phase. On the regular schedule the
    # frame a turn takes is up to 0.6 s old (under 0.15 s for one turn in four); timed to the turns, it
    # is a few tens of ms old.
    interval, pace, fresh_s = 0.6, 0.3, 0.15
    clip = make_demo_clip(tmp_path / "fast.avi", fps=30)  # the reader's newest frame is at most 33 ms old
    registry = CameraRegistry(redis_client)
    registry.add(make_camera("paced", str(clip), allow_files=True))
    services(max_in_flight=2, frame_interval_s=interval)
    store = FrameStore(redis_client)
    message = wait_until(lambda: redis_client.rpop("gpu"), 10, "the camera's first detect_frame message")
    turn = json.loads(base64.b64decode(json.loads(message)["body"]))[0][1]
    redis_client.rpush("gpu", "other camera's turn", "another camera's turn")  # ahead of this camera's next
    ages: list[float] = []
    next_turn_at = time.monotonic()
    for i in range(36):
        next_turn_at += pace
        time.sleep(max(0.0, next_turn_at - time.monotonic()))
        if i % 3:
            store.take(f"other-{i % 3}", f"other-{i}", keep_s=45, queue="gpu", next_turn="unused")
            continue
        taken = store.take("paced", turn, keep_s=45, queue="gpu", next_turn=f"turn-{i}")
        assert taken.how == "waiting" and taken.frame_id and taken.next_turn, taken  # a sample at least every 0.6 s
        meta = store.meta(taken.frame_id)
        assert meta is not None
        ages.append(time.time() - meta.captured_at)
        store.done_inflight("paced", taken.frame_id)  # detected at once
        turn = taken.next_turn
    assert redis_client.llen("gpu") == 2, "each turn was queued by its predecessor: the capture sent none"
    timed = registry.stats("paced").get("samples_timed", 0)
    assert timed >= 6, f"only {timed} samples timed to a turn; frame ages at the turns: {ages}"
    # The first turns teach the queue's turn clock its pace; the capture times samples from then on.
    late = ages[6:]
    assert sum(age < fresh_s for age in late) >= 4, f"frame ages at the last turns: {late}"


def test_a_camera_the_url_policy_denies_is_reported_and_never_contacted(
    redis_client: redis.Redis, events: SocketEvents, services: Callable[..., CaptureService]
) -> None:
    camera = SnapshotCamera()
    camera.start()
    try:
        CameraRegistry(redis_client).add(make_camera("deny", camera.url, allow_files=False))
        service = services(allowed_hosts=())  # loopback is not listed: denied
        refused = wait_until(
            lambda: [d for d in events.named("camera_status") if d["cameraId"] == "deny" and d["status"] == 0],
            5,
            "the refusal",
        )
        assert refused[0]["message"].startswith("the camera's host is a loopback address")
        assert "hunter22" not in json.dumps(events.poll()) and str(camera.port) not in refused[0]["message"]
        time.sleep(3 * INTERVAL)
        assert camera.hits == 0 and "deny" not in service.owned()
    finally:
        camera.stop()


def test_camera_going_away_reconnects_with_growing_backoff(
    redis_client: redis.Redis, events: SocketEvents, services: Callable[..., CaptureService]
) -> None:
    camera = SnapshotCamera()
    camera.start()
    try:
        CameraRegistry(redis_client).add(make_camera("snap", camera.url, allow_files=False))
        service = services()
        wait_until(lambda: [d for d in events.named("camera_status") if d["status"] == 1], 10, "online")
        attempts_before = len(service.connect_attempts("snap"))

        camera.stop()
        offline = wait_until(lambda: [d for d in events.named("camera_status") if d["status"] == 0], 5, "offline")
        assert offline[0]["cameraId"] == "snap" and offline[0]["message"].startswith("read failed")
        wait_until(lambda: len(service.connect_attempts("snap")) >= attempts_before + 3, 10, "3 reconnects")
        retries = service.connect_attempts("snap")[attempts_before:]
        gaps = [b - a for a, b in zip(retries, retries[1:], strict=False)]
        assert 0.5 * 0.8 <= gaps[0] <= 0.5 * 1.2 + 0.2, gaps
        assert 1.0 * 0.8 <= gaps[1] <= 1.0 * 1.2 + 0.2, gaps
        assert CameraRegistry(redis_client).status("snap")["status"] == 0  # type: ignore[index]
        assert any(d["message"].startswith("cannot open stream") for d in events.named("camera_status"))

        camera.start()
        wait_until(lambda: events.named("camera_status")[-1]["status"] == 1, 5, "online again")
        assert CameraRegistry(redis_client).status("snap")["status"] == 1  # type: ignore[index]
        assert "hunter22" not in json.dumps(events.poll())
    finally:
        camera.stop()


def test_two_services_share_cameras_and_take_over(
    redis_client: redis.Redis, still_image: Path, services: Callable[..., CaptureService]
) -> None:
    registry = CameraRegistry(redis_client)
    ids = [f"c{n}" for n in range(4)]
    for camera_id in ids:
        registry.add(make_camera(camera_id, str(still_image), allow_files=True))
    first, second = services("capture-a"), services("capture-b")

    def split_evenly() -> bool:
        a, b = first.owned(), second.owned()
        assert not a & b, (a, b)
        return a | b == set(ids) and len(a) == len(b) == 2

    wait_until(split_evenly, 5, "the cameras split between the services")
    assert redis_client.zcard(redis_keys.CAPTURE_OWNERS) == 2
    for camera_id in ids:
        owner = (redis_client.get(redis_keys.camera_lease(camera_id)) or b"").decode()
        assert camera_id in (first if owner == "capture-a" else second).owned()

    first.close()
    started = time.monotonic()
    wait_until(lambda: second.owned() == set(ids), FAST.lease_s, "the takeover")
    assert time.monotonic() - started < FAST.lease_s
    assert redis_client.zrange(redis_keys.CAPTURE_OWNERS, 0, -1) == [b"capture-b"]

    # A crashed owner never releases: its camera is taken over once the lease expires. The lease lasts
    # well past the check that nobody takes it meanwhile (a slow machine must not let it lapse early);
    # then it is cut short, and runs out as a dead owner's lease does.
    redis_client.set(redis_keys.camera_lease("ghost"), "dead-process", px=30_000)
    registry.add(make_camera("ghost", str(still_image), allow_files=True))
    time.sleep(1.0)
    assert "ghost" not in second.owned()
    assert redis_client.get(redis_keys.camera_lease("ghost")) == b"dead-process"
    redis_client.pexpire(redis_keys.camera_lease("ghost"), 500)
    wait_until(lambda: "ghost" in second.owned(), 2.0, "the expired lease to be taken over")


def test_removed_and_disabled_cameras_stop(
    redis_client: redis.Redis, still_image: Path, events: SocketEvents, services: Callable[..., CaptureService]
) -> None:
    registry = CameraRegistry(redis_client)
    gone, paused = (
        make_camera(5, str(still_image), allow_files=True),
        make_camera("p", str(still_image), allow_files=True),
    )
    registry.add(gone)
    registry.add(paused)
    service = services(timings=dataclasses.replace(FAST, reconcile_s=30.0))  # pub/sub must do it
    wait_until(lambda: service.owned() == {"5", "p"}, 5, "both cameras")
    wait_until(lambda: registry.status("5") and registry.status("p"), 5, "both statuses")

    assert registry.remove("5")
    stopped = wait_until(lambda: events.named("stream_stopped"), 3, "stream_stopped")
    assert stopped == [{"cameraId": 5, "reason": "removed"}]
    assert service.owned() == {"p"}
    assert redis_client.get(redis_keys.camera_lease("5")) is None
    assert registry.status("5") is None

    registry.add(dataclasses.replace(paused, enabled=False))
    wait_until(lambda: len(events.named("stream_stopped")) == 2, 3, "the second stream_stopped")
    assert events.named("stream_stopped")[1] == {"cameraId": "p", "reason": "disabled"}
    assert service.owned() == set()
    assert registry.status("p")["status"] == 0  # type: ignore[index]
    wait_until(lambda: sorted(capture_threads()) == ["capture-control", "capture-sampler"], 3, "readers to end")


def test_file_cameras_are_refused_when_file_sources_are_disabled(
    redis_client: redis.Redis, still_image: Path, events: SocketEvents, services: Callable[..., CaptureService]
) -> None:
    registry = CameraRegistry(redis_client)
    registry.add(Camera("f", str(still_image)))
    service = services(allow_file_sources=False)
    status = wait_until(lambda: events.named("camera_status"), 3, "a status")
    assert status == [{"cameraId": "f", "status": 0, "message": status[0]["message"]}]
    assert "disabled" in status[0]["message"]
    time.sleep(3 * FAST.reconcile_s)
    assert service.owned() == set() and len(events.named("camera_status")) == 1


def test_process_exits_cleanly_on_sigterm(redis_url: str, redis_client: redis.Redis, still_image: Path) -> None:
    CameraRegistry(redis_client).add(make_camera("proc", str(still_image), allow_files=True))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TRAFFIC_", "ALGO_"))},
        "REDIS_URL": redis_url,
        "TRAFFIC_ALLOW_FILE_SOURCES": "true",
        "TRAFFIC_MEDIA_DIR": MEDIA_DIR,
        "TRAFFIC_FRAME_INTERVAL": str(INTERVAL),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.capture", "--owner-id", "proc-owner"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: CameraRegistry(redis_client).stats("proc").get("captured", 0) >= 2, 20, "frames")
        assert redis_client.get(redis_keys.camera_lease("proc")) == b"proc-owner"
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=10)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert redis_client.get(redis_keys.camera_lease("proc")) is None
    assert redis_client.llen("gpu") == 1  # the camera's one waiting task (newer frames replaced its frame)
