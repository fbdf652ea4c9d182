"""The detector stage of one frame: detect, group, gate, emit the fast result, hand groups to assessment."""

from __future__ import annotations

import functools
import json
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, replace
from typing import Any

from infra import celery_names
from infra.frame_store import DetectionInputs, FrameStore, Taken, as_text
from traffic import redis_keys
from traffic.analysis import FrameAnalysis, analyse_frames
from traffic.analytics import MotionUpdate
from traffic.codec import recent_verdict_from_json
from traffic.errors import DetectorError, ImageError
from traffic.frame_image import FrameImage
from traffic.frame_record import FrameRecord
from traffic.gate import GateDecision, RecentVerdict, decide, group_signature
from traffic.imaging import crop_jpeg
from traffic.models import Assessment, GroupContext
from traffic.tracking import keyed_groups
from traffic.wire import frame_result
from workers.context import WorkerContext
from workers.evidence import EVIDENCE_GRACE_S, evidence_store
from workers.finalize import finalise
from workers.metrics import FrameOutcome
from workers.motion import motion_counts, publish_motion, urgent_groups
from workers.privacy import keep_privacy_boxes, publish_private_frame

log = logging.getLogger(__name__)

StartAssessment = Callable[[str, str, tuple[int, ...], float], None]
"""(camera id, frame id, group indexes, deadline) → starts the group assessments and the aggregation."""
SendTurn = Callable[[str, str, float], None]
"""(camera id, turn id, expiry) → sends the detector task of the camera's next turn."""


@dataclass(frozen=True)
class FrameTask:
    """One ``detect_frame`` message: the camera, the frame (or turn) it was sent for, and when."""

    camera_id: str
    frame_id: str
    captured_at: float


@dataclass(frozen=True)
class _Loaded:
    """A taken frame whose inputs are in hand and whose deadline has not passed."""

    index: int
    camera_id: str
    frame_id: str
    captured_at: float
    deadline: float
    received: float
    jpeg: bytes


def detect_and_route(
    ctx: WorkerContext,
    store: FrameStore,
    tasks: Sequence[FrameTask],
    *,
    start_assessment: StartAssessment,
    send_turn: SendTurn,
    on_predict: Callable[[], None] | None = None,
) -> list[FrameOutcome]:
    """Run the detector stage on a batch of tasks, one outcome each, in order.

    The tasks are cut into predicts of up to ``detector.batch`` frames, run one after the other on the
    worker's inference thread (``WorkerContext.inference``). When a predict ends, this thread takes, loads
    and decodes the next predict's frames (each task takes its camera's newest waiting frame, or the frame
    it names: taken when the model is free for them, so no frame ages while another predict runs) and
    hands them over; then, while that predict runs, it tracks, gates, stores, emits and routes the ended
    predict's frames, each on its own, in the order of the tasks (a camera's frames stay in capture order).
    ``on_predict`` is called each time a predict has been handed over (the task's events go out then).
    """
    outcomes: list[FrameOutcome | None] = [None] * len(tasks)
    held: set[tuple[str, str]] = set()
    contended = len({task.camera_id for task in tasks}) > 1
    size = max(1, ctx.predict_batch)
    running: _Predict | None = None
    try:
        for first in range(0, len(tasks), size):
            if running is not None:  # frames are taken when the model is free for them, not while they'd wait
                wait([running.future])
            frames = _prepare(ctx, store, tasks, range(first, min(first + size, len(tasks))), send_turn, contended)
            for index, outcome in frames.outcomes.items():
                outcomes[index] = outcome
            held.update(frames.held)
            previous, running = running, _submit(ctx, frames.decoded)
            if running is not None and on_predict is not None:
                on_predict()
            if previous is not None:
                _finish(ctx, store, previous, start_assessment, outcomes, held)
        if running is not None:
            predict, running = running, None
            _finish(ctx, store, predict, start_assessment, outcomes, held)
    finally:
        if running is not None:  # routing failed: let the predict end before the next batch needs the thread
            wait([running.future])
        for camera_id, frame_id in held:
            store.done_inflight(camera_id, frame_id)
    unhandled = [FrameOutcome(t.camera_id, "error", error="unhandled") for t in tasks]
    return [o if o is not None else u for o, u in zip(outcomes, unhandled, strict=True)]


@dataclass(frozen=True)
class _Decoded:
    """A loaded frame decoded for the detector, and the seconds its decode took."""

    frame: _Loaded
    image: FrameImage
    decode_s: float


@dataclass(frozen=True)
class _Prepared:
    """One predict's frames: those ready to detect, the outcomes of those that are not, those taken."""

    decoded: list[_Decoded]
    outcomes: dict[int, FrameOutcome]
    held: list[tuple[str, str]]


@dataclass(frozen=True)
class _Predict:
    """A predict handed to the inference thread: its frames, and the future of (analyses, seconds)."""

    decoded: list[_Decoded]
    future: Future[tuple[list[FrameAnalysis], float]]


def _prepare(
    ctx: WorkerContext,
    store: FrameStore,
    tasks: Sequence[FrameTask],
    indexes: range,
    send_turn: SendTurn,
    contended: bool,
) -> _Prepared:
    """Take, load and decode the frames of one predict; idle turns, dropped frames and bad JPEGs end here."""
    outcomes: dict[int, FrameOutcome] = {}
    held: list[tuple[str, str]] = []
    longest_side = ctx.settings.detector.imgsz if _scaled_decode(ctx) else 0
    taken = _take(ctx, store, [tasks[i] for i in indexes], send_turn, contended)
    found = [(index, t) for index, t in zip(indexes, taken, strict=True) if t.frame_id is not None]
    loaded = store.load_many_for_detection([t.frame_id or "" for _, t in found])
    for index, t in zip(indexes, taken, strict=True):
        if t.frame_id is None:
            outcomes[index] = FrameOutcome(tasks[index].camera_id, "idle")
    ready: list[_Loaded] = []
    for (index, t), inputs in zip(found, loaded, strict=True):
        task = tasks[index]
        held.append((task.camera_id, t.frame_id or ""))
        frame = _load(ctx, store, index, task, t, inputs)
        if isinstance(frame, FrameOutcome):
            outcomes[index] = frame
        else:
            ready.append(frame)
    # Several frames decode side by side on the decode threads (the JPEG decoder lets go of the GIL); a lone
    # frame decodes here.
    decode = functools.partial(_decode, longest_side=longest_side)
    results = ctx.decoding.map(decode, ready) if len(ready) > 1 else map(decode, ready)
    decoded: list[_Decoded] = []
    for frame, result in zip(ready, results, strict=True):
        if isinstance(result, ImageError):
            outcomes[frame.index] = _detect_error(store, frame, result)
        else:
            decoded.append(result)
    return _Prepared(decoded, outcomes, held)


def _decode(frame: _Loaded, longest_side: int) -> _Decoded | ImageError:
    """The frame decoded for the detector (``longest_side`` 0: whole), or why it could not be."""
    started = time.perf_counter()
    try:
        image = FrameImage.decode(frame.jpeg, longest_side)
    except ImageError as exc:
        return exc
    return _Decoded(frame, image, time.perf_counter() - started)


def _submit(ctx: WorkerContext, decoded: list[_Decoded]) -> _Predict | None:
    """Hand one predict to the inference thread (None when none of its frames is left to detect)."""
    if not decoded:
        return None
    images = [d.image.for_detection for d in decoded]
    sizes = [d.image.size for d in decoded]
    grouping = ctx.settings.grouping

    def predict() -> tuple[list[FrameAnalysis], float]:
        started = time.perf_counter()
        analyses = analyse_frames(images, ctx.detector, grouping, sizes)
        return analyses, time.perf_counter() - started

    return _Predict(decoded, ctx.inference.submit(predict))


def _finish(
    ctx: WorkerContext,
    store: FrameStore,
    predict: _Predict,
    start_assessment: StartAssessment,
    outcomes: list[FrameOutcome | None],
    held: set[tuple[str, str]],
) -> None:
    """Wait for one predict, then track and route each of its frames; errors stay with their frames."""
    try:
        analyses, analyse_s = predict.future.result()
    except DetectorError as exc:
        for d in predict.decoded:
            outcomes[d.frame.index] = _detect_error(store, d.frame, exc)
        return
    for d, analysis in zip(predict.decoded, analyses, strict=True):
        frame = d.frame
        tracked, reset, motion, track_s = _track(ctx, frame, analysis)
        timing = _Timing(d.decode_s, analyse_s, len(predict.decoded), track_s)
        outcome = _route(ctx, store, frame, d.image, tracked, timing, start_assessment, motion)
        outcomes[frame.index] = replace(outcome, tracker_reset=reset)
        held.discard((frame.camera_id, frame.frame_id))  # routed: off the camera's in-flight cap


def _take(
    ctx: WorkerContext, store: FrameStore, tasks: Sequence[FrameTask], send_turn: SendTurn, contended: bool
) -> list[Taken]:
    """The frame each task works on (None: nothing newer was waiting), in one round trip; queues the cameras'
    next turns.

    ``contended``: the batch holds several cameras' tasks, which left the queue when the worker buffered
    them; the next turn is queued as it would be were they still waiting there.
    """
    deadline_s = ctx.settings.capture.frame_deadline_s
    turns = [(t.camera_id, t.frame_id, f"{t.camera_id}-{uuid.uuid4().hex[:12]}") for t in tasks]
    taken = store.take_many(turns, keep_s=deadline_s, queue=celery_names.GPU_QUEUE, contended=contended)
    for task, t in zip(tasks, taken, strict=True):
        if t.next_turn is None:
            continue
        try:
            send_turn(task.camera_id, t.next_turn, time.time() + deadline_s)
        except Exception:  # the broker is away: the capture service sends the camera's next task itself
            log.warning("camera %s: could not queue its next turn", task.camera_id, exc_info=True)
            store.withdraw(task.camera_id, t.next_turn)
    return taken


def _load(
    ctx: WorkerContext,
    store: FrameStore,
    index: int,
    task: FrameTask,
    taken: Taken,
    inputs: DetectionInputs,
) -> _Loaded | FrameOutcome:
    """The frame's inputs as loaded; frames replaced, expired or past their deadline are dropped and counted;
    a frame final already (its task delivered again: a worker lost the broker before acknowledging it) is
    left alone, so it is neither shown pending again nor assessed twice."""
    camera_id, frame_id = task.camera_id, taken.frame_id or ""
    meta, jpeg = inputs.meta, inputs.jpeg
    if inputs.final:
        log.info("frame %s of camera %s is final already: its task was delivered again; skipped", frame_id, camera_id)
        return FrameOutcome(camera_id, "duplicate")
    now = time.time()
    if taken.how == "own" and meta is None and now < task.captured_at + ctx.settings.capture.frame_deadline_s:
        # A task whose frame was shed (counted then) after a newer task replaced it: nothing left to do.
        log.info("frame %s was replaced by a newer frame of camera %s before this task started", frame_id, camera_id)
        return FrameOutcome(camera_id, "superseded")
    captured_at = meta.captured_at if meta else task.captured_at
    deadline = meta.deadline if meta else captured_at + ctx.settings.capture.frame_deadline_s
    if meta is None or jpeg is None or now >= deadline:
        store.count(camera_id, "dropped_age")
        log.info("frame %s dropped: %s", frame_id, "expired" if meta is None or jpeg is None else "past its deadline")
        return FrameOutcome(camera_id, "dropped_age")
    return _Loaded(index, camera_id, frame_id, captured_at, deadline, now, jpeg)


def _scaled_decode(ctx: WorkerContext) -> bool:
    """Whether frames are decoded at the scale the detector needs (privacy blur needs every frame whole)."""
    return ctx.settings.detector.scaled_decode and not ctx.settings.privacy.blur


@dataclass(frozen=True)
class _Timing:
    """Where a frame's detector time went: its own decode, and its batch's detect + group."""

    decode_s: float
    analyse_s: float
    batch: int
    track_s: float = 0.0


def _track(
    ctx: WorkerContext, frame: _Loaded, analysis: FrameAnalysis
) -> tuple[FrameAnalysis, str | None, MotionUpdate | None, float]:
    """The frame's detections with their camera's track ids (frames are applied in capture order), why the
    camera's tracking started again if it did, the analytics' update, and the seconds it took."""
    if not ctx.settings.tracking.enabled:
        return analysis, None, None, 0.0
    started = time.perf_counter()
    camera_id = frame.camera_id
    tracked = ctx.tracker_states.track(
        camera_id, frame.captured_at, analysis.detections, lambda: ctx.new_motion(camera_id), analysis.image_size
    )
    if tracked.reset is not None and tracked.reset != "new":
        log.warning("camera %s: tracking started again (%s)", frame.camera_id, tracked.reset)
    groups = analysis.groups
    if tracked.epoch is not None:
        groups = keyed_groups(groups, tracked.detections, tracked.epoch)
    analysis = replace(analysis, detections=tracked.detections, groups=groups, tracking_epoch=tracked.epoch)
    return analysis, tracked.reset, tracked.motion, time.perf_counter() - started


def _detect_error(store: FrameStore, frame: _Loaded, exc: Exception) -> FrameOutcome:
    """A frame that could not be decoded or detected: counted, logged, an error outcome."""
    store.count(frame.camera_id, "detect_errors")
    log.error("frame %s: %s", frame.frame_id, exc)
    return FrameOutcome(frame.camera_id, "error", error=type(exc).__name__)


def _route(
    ctx: WorkerContext,
    store: FrameStore,
    frame: _Loaded,
    image: FrameImage,
    analysis: FrameAnalysis,
    timing: _Timing,
    start_assessment: StartAssessment,
    motion: MotionUpdate | None = None,
) -> FrameOutcome:
    """Gate, store, emit and hand one detected frame's groups to assessment (or finalise it)."""
    camera_id, frame_id, deadline = frame.camera_id, frame.frame_id, frame.deadline
    process_time = timing.decode_s + timing.analyse_s
    contexts = [analysis.context(g) for g in analysis.groups]
    decision, wire_id = gate_groups(ctx, camera_id, contexts, frame.received, urgent_groups(analysis, motion))
    keep_privacy_boxes(ctx, camera_id, analysis, frame.captured_at)
    publish_private_frame(ctx, store, frame_id, camera_id, image, analysis)
    record = _record(ctx, frame_id, camera_id, wire_id, frame.captured_at, deadline, analysis, process_time, decision)
    reused = [v for _, v in decision.reuse]
    durations = {"decode_s": timing.decode_s, "analyse_s": timing.analyse_s, "batch": float(timing.batch)}
    durations["track_s"] = timing.track_s
    if decision.assess:
        # Stored and registered with the deadline sweeper before browsers hear "pending", so a frame
        # announced as pending gets a final result even if Redis fails right after.
        store.save(record, {}, reused, pending=True)
        if evidence_store(ctx) is not None:
            store.keep_image_until(frame_id, deadline + EVIDENCE_GRACE_S)  # the snapshot of an alert it may raise
        # Then the fast path: browsers see boxes and groups while the crops are cut and judged.
        payload = frame_result(record, None, Assessment.PENDING)
        ctx.emitter.detection_result(camera_id, payload, captured_at=frame.captured_at)
        groups = {g.index: g for g in analysis.groups}
        quality = ctx.settings.grouping.crop_jpeg_quality
        crops = {i: crop_jpeg(image.full, groups[i].bbox, quality) for i in decision.assess}
        store.save_crops(frame_id, crops, deadline)
        store.detected(camera_id, frame_id, deadline, durations)  # off the camera's in-flight cap at once
        start_assessment(camera_id, frame_id, decision.assess, deadline)
        store.count(camera_id, "assessed_groups", len(decision.assess))
    else:
        # Nothing to assess: stored, stamped and claimed for finalising in one transaction.
        claimed = store.save_detected(record, reused, durations)
        if claimed is None:
            log.info("frame %s was final already (a redelivery); not finalised again", frame_id)
        else:
            finalise(ctx, frame_id, by="detector", record=record, claimed=claimed)
    if motion is not None and analysis.tracking_epoch is not None:
        # After the frame's result is out: counts, rule-based alerts and traffic_stats hold no verdict back.
        publish_motion(ctx, camera_id, wire_id, frame_id, frame.captured_at, analysis, motion)
    objects = Counter(d.cls for d in analysis.detections)
    return FrameOutcome(
        camera_id,
        "detected",
        process_time,
        objects,
        len(analysis.groups),
        len(decision.assess),
        batch=timing.batch,
        motion=motion_counts(motion),
    )


def _record(
    ctx: WorkerContext,
    frame_id: str,
    camera_id: str,
    wire_id: str | int,
    captured_at: float,
    deadline: float,
    analysis: FrameAnalysis,
    process_time: float,
    decision: GateDecision,
) -> FrameRecord:
    """Everything later stages need about the frame."""
    return FrameRecord(
        frame_id=frame_id,
        camera_id=camera_id,
        wire_id=wire_id,
        captured_at=captured_at,
        deadline=deadline,
        analysis=analysis,
        model_type=ctx.detector.model_type,
        supported_classes=ctx.detector.supported_classes,
        process_time_s=process_time,
        assess=decision.assess,
        expected=decision.expected,
        dropped=decision.dropped,
        skipped=decision.skipped_reason.value if decision.skipped_reason else None,
        signatures={g.index: group_signature(analysis.context(g)) for g in analysis.groups},
    )


def gate_groups(
    ctx: WorkerContext, camera_id: str, contexts: Sequence[GroupContext], now: float, urgent: frozenset[int]
) -> tuple[GateDecision, str | int]:
    """Cooldown, unchanged-scene reuse and per-minute budget; also the camera's wire id (same round trip)."""
    settings = ctx.settings
    minute = int(now // 60)
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.exists(redis_keys.camera_cooldown(camera_id))
    pipe.get(redis_keys.camera_budget(camera_id, minute))
    pipe.hgetall(redis_keys.camera_recent_verdicts(camera_id))
    pipe.hget(redis_keys.CAMERAS, camera_id)
    pipe.hgetall(redis_keys.camera_unserved_changes(camera_id))
    cooling, used, recent_raw, camera_raw, unserved_raw = pipe.execute()
    # Cooldown and budget ration calls to the paid model; the offline rules assessor needs neither.
    rationed = ctx.llm is not None
    recent = _recent(recent_raw)
    decision = decide(
        contexts,
        now=now,
        cooldown_active=bool(cooling) and rationed,
        recent=recent,
        budget_left=max(0, settings.pipeline.budget_per_minute - int(used or 0)) if rationed else len(contexts),
        max_groups=max(1, settings.grouping.max_groups),
        dedupe_window_s=settings.pipeline.dedupe_window_s,
        recheck_s=settings.pipeline.dedupe_recheck_s,
        distance_tolerance=settings.pipeline.dedupe_distance_tolerance,
        urgent=urgent,
        unserved=_unserved(unserved_raw),
    )
    # Every call remembers a new signature: forget the ones no rule will reuse, and corrupt entries.
    forget = [*decision.forget, *({as_text(field) for field in recent_raw} - recent.keys())]
    pipe = ctx.redis.pipeline(transaction=False)
    if forget:
        pipe.hdel(redis_keys.camera_recent_verdicts(camera_id), *forget)
    unserved_name = redis_keys.camera_unserved_changes(camera_id)
    stale = [*decision.forget_unserved, *({as_text(k) for k in unserved_raw} - _unserved(unserved_raw).keys())]
    if stale:
        pipe.hdel(unserved_name, *stale)
    if decision.unserved:
        pipe.hset(unserved_name, mapping=dict.fromkeys(decision.unserved, repr(now)))
        pipe.expire(unserved_name, int(settings.pipeline.dedupe_window_s * 2) + 1)
    if decision.assess and rationed:
        if settings.llm.cooldown_s > 0:
            pipe.set(redis_keys.camera_cooldown(camera_id), "1", px=int(settings.llm.cooldown_s * 1000))
        pipe.incrby(redis_keys.camera_budget(camera_id, minute), len(decision.assess))
        pipe.expire(redis_keys.camera_budget(camera_id, minute), 120)
    if len(pipe):
        pipe.execute()
    return decision, wire_id_of(camera_id, camera_raw)


def _recent(raw: dict[Any, Any]) -> dict[str, RecentVerdict]:
    """Decode the camera's recent verdicts by signature, skipping corrupt entries."""
    recent: dict[str, RecentVerdict] = {}
    for signature, value in raw.items():
        try:
            recent[as_text(signature)] = recent_verdict_from_json(json.loads(value))
        except ValueError:
            continue
    return recent


def _unserved(raw: dict[Any, Any]) -> dict[str, float]:
    """Decode the camera's unserved changes (scene key → when), skipping corrupt entries."""
    unserved: dict[str, float] = {}
    for key, value in raw.items():
        try:
            at = float(as_text(value))
        except ValueError:
            continue
        if math.isfinite(at):
            unserved[as_text(key)] = at
    return unserved


def wire_id_of(camera_id: str, camera_raw: bytes | str | None) -> str | int:
    """The id as clients know it (old clients use integers), from the camera's registry entry."""
    if camera_raw:
        try:
            wire = json.loads(camera_raw).get("wireId", camera_id)
            if isinstance(wire, int | str) and not isinstance(wire, bool):
                return wire
        except (ValueError, AttributeError):
            pass
    return camera_id
