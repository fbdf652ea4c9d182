"""Frames the model judged, finalised on a real Redis: the detector runs faster than the model answers, so
frames detected after a judged frame are often final before it; its verdicts still raise the alert, and
are remembered as old as the frame the model saw."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import pytest

from infra.frame_store import FrameStore
from traffic import redis_keys
from traffic.analysis import analyse_detections
from traffic.config import load_settings
from traffic.frame_record import FrameRecord
from traffic.gate import group_signature
from traffic.models import Detection, GroupVerdict, RiskLevel, VerdictStatus
from traffic.settings import GroupingSettings
from workers.context import WorkerContext
from workers.finalize import finalise

pytestmark = pytest.mark.integration

CAMERA = "cam-ooo"
PAIR = [Detection("person", 0.8, (100, 400, 190, 600)), Detection("person", 0.8, (160, 420, 250, 620))]


@pytest.fixture
def ctx(redis_url: str) -> Iterator[WorkerContext]:
    context = WorkerContext(load_settings({"REDIS_URL": redis_url}))
    yield context
    context.redis.close()


def _frame(
    ctx: WorkerContext, frame_id: str, captured_at: float, *, judged: bool, reused: tuple[GroupVerdict, ...] = ()
) -> FrameRecord:
    """Store a one-group frame as the detector does: sent to the model (``judged``) or skipped by the gate."""
    analysis = analyse_detections(PAIR, (1280, 720), GroupingSettings())
    (group,) = analysis.groups
    record = FrameRecord(
        frame_id, CAMERA, CAMERA, captured_at, time.time() + 60, analysis, "t", ("person",), 0.05,
        assess=(group.index,) if judged else (), expected=() if judged else (group.index,),
        skipped=None if judged else "cooldown", signatures={group.index: group_signature(analysis.context(group))},
    )  # fmt: skip
    FrameStore(ctx.redis).save(record, {}, reused, pending=judged)
    return record


def test_a_judged_frame_final_after_newer_skipped_frames_still_raises_its_alert(ctx: WorkerContext) -> None:
    now = time.time()
    judged = _frame(ctx, "f-judged", now, judged=True)
    for k in range(1, 4):  # detected 0.2 s apart while the model thinks: skipped (cooldown), final at once
        _frame(ctx, f"f-skip-{k}", now + 0.2 * k, judged=False)
        assert finalise(ctx, f"f-skip-{k}", by="detector") is not None
    high = GroupVerdict(judged.assess[0], VerdictStatus.OK, RiskLevel.HIGH, 0.9, ("jaywalking",), "d", model="m")
    FrameStore(ctx.redis).save_verdict("f-judged", high, judged.deadline)
    verdict = finalise(ctx, "f-judged", by="chord")
    assert verdict is not None and verdict.max_risk_level is RiskLevel.HIGH
    # Not the camera's latest result (a newer frame's is), but its alert is raised and logged.
    latest = json.loads(ctx.redis.get(redis_keys.camera_latest(CAMERA)) or "{}")
    assert latest["frameId"] == "f-skip-3"
    (alert,) = [json.loads(v) for v in ctx.redis.hgetall(redis_keys.camera_alerts(CAMERA)).values()]
    assert alert["level"] == "high" and alert["frameId"] == "f-judged" and alert["llmModel"] == "m"
    (logged,) = [json.loads(v) for v in ctx.redis.lrange(redis_keys.ALERT_LOG, 0, -1)]
    assert logged["kind"] == "new" and logged["alertId"] == alert["alertId"]


def test_an_older_frame_without_fresh_verdicts_does_not_speak_for_the_camera(ctx: WorkerContext) -> None:
    now = time.time()
    reused = GroupVerdict(1, VerdictStatus.OK, RiskLevel.HIGH, 0.9, ("jaywalking",), "d", model="m")
    _frame(ctx, "f-new", now + 1, judged=False, reused=(reused,))
    _frame(ctx, "f-old", now, judged=False, reused=(reused,))
    finalise(ctx, "f-new", by="detector")
    finalise(ctx, "f-old", by="detector")  # final after a newer frame, with a remembered verdict only
    latest = json.loads(ctx.redis.get(redis_keys.camera_latest(CAMERA)) or "{}")
    assert latest["frameId"] == "f-new"
    (alert,) = [json.loads(v) for v in ctx.redis.hgetall(redis_keys.camera_alerts(CAMERA)).values()]
    assert alert["frameId"] == "f-new" and alert["count"] == 1


def test_a_judged_verdict_is_as_old_as_the_frame_the_model_saw(ctx: WorkerContext) -> None:
    captured = time.time() - 4.0  # the model took 4 s to answer
    judged = _frame(ctx, "f-aged", captured, judged=True)
    verdict = GroupVerdict(judged.assess[0], VerdictStatus.OK, RiskLevel.LOW, 0.9, ("x",), "d", model="m")
    FrameStore(ctx.redis).save_verdict("f-aged", verdict, judged.deadline)
    finalise(ctx, "f-aged", by="chord")
    (remembered,) = [json.loads(v) for v in ctx.redis.hgetall(redis_keys.camera_recent_verdicts(CAMERA)).values()]
    assert remembered["assessedAt"] == captured  # reuse ends dedupe_window_s after the frame, not the answer


def test_a_frame_that_changes_no_alert_neither_waits_for_nor_writes_the_cameras_alerts(
    ctx: WorkerContext, caplog: pytest.LogCaptureFixture
) -> None:
    # Another process holds the camera's alerts (say, a judged frame raising one). A frame that raises
    # nothing and finds no alert to update folds in at its read: no wait for the lock, nothing written.
    ctx.redis.set(redis_keys.camera_alerts_lock(CAMERA), "someone-else", px=60_000)
    _frame(ctx, "f-quiet", time.time(), judged=False)
    with caplog.at_level(logging.WARNING, logger="workers.finalize"):
        verdict = finalise(ctx, "f-quiet", by="detector")
    assert verdict is not None and verdict.max_risk_level is RiskLevel.NONE
    assert "alerts busy" not in caplog.text
    assert not ctx.redis.exists(redis_keys.camera_alerts(CAMERA))
    assert json.loads(ctx.redis.get(redis_keys.camera_latest(CAMERA)) or "{}")["frameId"] == "f-quiet"


def test_a_frame_that_raises_an_alert_takes_the_cameras_alerts_lock(
    ctx: WorkerContext, caplog: pytest.LogCaptureFixture
) -> None:
    # The same lock held: a frame that changes the alerts waits for it (and, past ALERTS_WAIT_S, goes on
    # without it, logged): its change is made on a fresh read under the lock, never on a stale one.
    ctx.redis.set(redis_keys.camera_alerts_lock(CAMERA), "someone-else", px=60_000)
    reused = GroupVerdict(1, VerdictStatus.OK, RiskLevel.HIGH, 0.9, ("jaywalking",), "d", model="m")
    _frame(ctx, "f-risky", time.time(), judged=False, reused=(reused,))
    with caplog.at_level(logging.WARNING, logger="workers.finalize"):
        verdict = finalise(ctx, "f-risky", by="detector")
    assert verdict is not None and verdict.max_risk_level is RiskLevel.HIGH
    assert "alerts busy" in caplog.text
    (alert,) = [json.loads(v) for v in ctx.redis.hgetall(redis_keys.camera_alerts(CAMERA)).values()]
    assert alert["frameId"] == "f-risky"


def test_a_frame_the_detector_finalises_is_stored_stamped_and_claimed_at_once(ctx: WorkerContext) -> None:
    # FrameStore.save_detected: the record, the detected stamp and counter, off the in-flight cap, and the
    # claim; a redelivered frame finds the claim taken and is not finalised twice.
    store = FrameStore(ctx.redis)
    analysis = analyse_detections(PAIR, (1280, 720), GroupingSettings())
    (group,) = analysis.groups
    record = FrameRecord(
        "f-det", CAMERA, CAMERA, time.time(), time.time() + 60, analysis, "t", ("person",), 0.05,
        expected=(group.index,), skipped="cooldown",
    )  # fmt: skip
    ctx.redis.zadd(redis_keys.camera_inflight(CAMERA), {"f-det": time.time()})
    reused = GroupVerdict(group.index, VerdictStatus.OK, RiskLevel.LOW, 0.9, ("x",), "d", model="m")
    claimed = store.save_detected(record, [reused], {"decode_s": 0.001, "analyse_s": 0.02})
    assert claimed == [reused]
    assert store.record("f-det") == record
    assert {"detected", "decode_s", "analyse_s"} <= store.timings("f-det").keys()
    assert ctx.redis.hget(redis_keys.camera_stats(CAMERA), "detected") == b"1"
    assert not ctx.redis.zscore(redis_keys.camera_inflight(CAMERA), "f-det")
    assert not ctx.redis.zscore(redis_keys.FRAMES_PENDING, "f-det")  # nothing pending: the detector finalises it
    verdict = finalise(ctx, "f-det", by="detector", record=record, claimed=claimed)
    assert verdict is not None and verdict.max_risk_level is RiskLevel.LOW
    assert store.save_detected(record, [reused], {"decode_s": 0.001}) is None  # a redelivery: claimed already
    assert finalise(ctx, "f-det", by="detector") is None


def test_a_final_frame_put_back_in_the_pending_set_leaves_it_at_the_next_finaliser(ctx: WorkerContext) -> None:
    # A detector task delivered again after its frame was final (its worker lost the broker before the
    # acknowledgement) saves the frame as pending again; the chord or sweeper that then finds it final
    # removes it, instead of leaving it pending until its record expires.
    store = FrameStore(ctx.redis)
    record = _frame(ctx, "f-again", time.time(), judged=True)
    assert finalise(ctx, "f-again", by="chord") is not None
    assert ctx.redis.zscore(redis_keys.FRAMES_PENDING, "f-again") is None
    FrameStore(ctx.redis).save(record, {}, (), pending=True)  # what the second delivery would write
    assert ctx.redis.zscore(redis_keys.FRAMES_PENDING, "f-again") is not None
    assert finalise(ctx, "f-again", by="deadline") is None  # final already: not published twice
    assert ctx.redis.zscore(redis_keys.FRAMES_PENDING, "f-again") is None
    # A frame merely claimed (its finaliser at work) stays pending: the claim may lapse.
    _frame(ctx, "f-claimed", time.time(), judged=True)
    assert store.claim_final_with_verdicts("f-claimed") == []
    assert finalise(ctx, "f-claimed", by="deadline") is None
    assert ctx.redis.zscore(redis_keys.FRAMES_PENDING, "f-claimed") is not None
