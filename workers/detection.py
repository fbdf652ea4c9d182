"""The detector stage of one frame: detect, group, gate, emit the fast result, hand groups to assessment."""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from infra import celery_names
from infra.frame_store import DetectionInputs, FrameStore, Taken, as_text
from infra.tracker_states import Hold, Tracked
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
PREDICT_START_WAIT_S = 0.05
"""How long a handed-over predict is waited for to start (it starts within a millisecond; the bound only
keeps a stuck inference thread from stopping the routing)."""


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
    preview: bytes | None = None


def detect_and_route(
    ctx: WorkerContext,
    store: FrameStore,
    tasks: Sequence[FrameTask],
    *,
    start_assessment: StartAssessment,
    send_turn: SendTurn,
) -> list[FrameOutcome]:
    """Run the detector stage on a batch of tasks, one outcome each, in order.

    The tasks are cut into predicts of up to ``detector.batch`` frames, run one after the other on the
    worker's inference thread (``WorkerContext.inference``). When a predict ends, this thread takes, loads
    and decodes the next predict's frames (each task takes its camera's newest waiting frame, or the frame
    it names: taken when the model is free for them, so no frame ages while another predict runs) and
    hands them over; then, while that predict runs, it tracks, gates, stores, emits and routes the ended
    predict's frames, each on its own, in the order of the tasks (a camera's frames stay in capture order).
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
    ready: list[_Loaded] = []
    for index, (t, inputs) in zip(indexes, taken, strict=True):
        task = tasks[index]
        if t.frame_id is None or inputs is None:
            outcomes[index] = FrameOutcome(task.camera_id, "idle")
            continue
        held.append((task.camera_id, t.frame_id))
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
        image = FrameImage.decode(frame.jpeg, longest_side, frame.preview)
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

    running = threading.Event()

    def predict() -> tuple[list[FrameAnalysis], float]:
        running.set()
        started = time.perf_counter()
        analyses = analyse_frames(images, ctx.detector, grouping, sizes)
        return analyses, time.perf_counter() - started

    future = ctx.inference.submit(predict)
    # Let the predict start before this thread goes on to the read-ahead: its Python held the GIL the woken
    # inference thread needed, and the predict started 0.9-1.0 ms after its submit (0.1 ms when waited for).
    # The inference thread is idle here (the previous predict has ended).
    running.wait(PREDICT_START_WAIT_S)
    return _Predict(decoded, future)


def _finish(
    ctx: WorkerContext,
    store: FrameStore,
    predict: _Predict,
    start_assessment: StartAssessment,
    outcomes: list[FrameOutcome | None],
    held: set[tuple[str, str]],
) -> None:
    """Wait for one predict, then track and route each of its frames; errors stay with their frames.

    While the predict runs, what its frames will need from Redis is read (``_read_ahead``); after, each
    frame's tracker state is stored once its first result is out."""
    ahead = _read_ahead(ctx, store, predict)
    try:
        try:
            analyses, analyse_s = predict.future.result()
        except DetectorError as exc:
            for d in predict.decoded:
                outcomes[d.frame.index] = _detect_error(store, d.frame, exc)
            return
        for d, analysis in zip(predict.decoded, analyses, strict=True):
            frame = d.frame
            step = _track(ctx, frame, analysis, ahead.holds.pop(frame.index, None))
            commit = (
                _Once(functools.partial(ctx.tracker_states.commit, step.tracked)) if step.tracked is not None else None
            )
            try:
                timing = _Timing(d.decode_s, analyse_s, len(predict.decoded), step.seconds)
                outcome = _route(
                    ctx,
                    store,
                    frame,
                    d.image,
                    step.analysis,
                    timing,
                    start_assessment,
                    step.motion,
                    gate_reads=ahead.gate.get(frame.index),
                    shown=commit,
                )
            finally:
                if commit is not None:
                    commit()
            outcomes[frame.index] = replace(outcome, tracker_reset=step.reset)
            held.discard((frame.camera_id, frame.frame_id))  # routed: off the camera's in-flight cap
    finally:
        for hold in ahead.holds.values():  # frames that failed, or were never tracked
            ctx.tracker_states.release(hold)


class _Once:
    """Calls a function the first time it is called, then never again."""

    def __init__(self, call: Callable[[], None]) -> None:
        self._call: Callable[[], None] | None = call

    def __call__(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            call()


@dataclass(frozen=True)
class _Ahead:
    """What was read for a predict's frames while it ran, by frame index (a camera's first frame in it only:
    a later one needs the state the first leaves): the camera's tracker lock, and the gate's state."""

    holds: dict[int, Hold]
    gate: dict[int, GateReads]


def _read_ahead(ctx: WorkerContext, store: FrameStore, predict: _Predict) -> _Ahead:
    """One round trip while the predict runs: its frames' ``received`` stamps, and for each camera's first
    frame its tracker lock (tracking on) and the gate's state; none of it waits for the detections."""
    firsts: dict[str, _Loaded] = {}
    for d in predict.decoded:
        firsts.setdefault(d.frame.camera_id, d.frame)
    pipe = ctx.redis.pipeline(transaction=False)
    store.stamp_received(pipe, {d.frame.frame_id: d.frame.received for d in predict.decoded})
    stamps = len(pipe)
    tracking = ctx.settings.tracking.enabled
    holding = {f.index: ctx.tracker_states.hold(pipe, f.camera_id) for f in firsts.values()} if tracking else {}
    for frame in firsts.values():
        queue_gate_reads(pipe, frame.camera_id, frame.received)
    replies = pipe.execute()[stamps:]
    holds: dict[int, Hold] = {}
    for n, (i, held) in enumerate(holding.items()):
        hold = held(replies[3 * n : 3 * n + 3])
        if hold is not None:
            holds[i] = hold
    replies = replies[3 * len(holding) :]
    gate = {f.index: GateReads(*replies[GATE_READS * n : GATE_READS * (n + 1)]) for n, f in enumerate(firsts.values())}
    return _Ahead(holds, gate)


def _take(
    ctx: WorkerContext, store: FrameStore, tasks: Sequence[FrameTask], send_turn: SendTurn, contended: bool
) -> list[tuple[Taken, DetectionInputs | None]]:
    """The frame each task works on (None: nothing newer was waiting) and its inputs, in one round trip when
    each task takes the frame it names; queues the cameras' next turns.

    ``contended``: the batch holds several cameras' tasks, which left the queue when the worker buffered
    them; the next turn is queued as it would be were they still waiting there.
    """
    deadline_s = ctx.settings.capture.frame_deadline_s
    turns = [(t.camera_id, t.frame_id, f"{t.camera_id}-{uuid.uuid4().hex[:12]}") for t in tasks]
    taken = store.take_and_load(turns, keep_s=deadline_s, queue=celery_names.GPU_QUEUE, contended=contended)
    for task, (t, _) in zip(tasks, taken, strict=True):
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
    return _Loaded(index, camera_id, frame_id, captured_at, deadline, now, jpeg, inputs.preview)


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


@dataclass(frozen=True)
class _TrackStep:
    """A frame's detections with their camera's track ids, and what tracking it did."""

    analysis: FrameAnalysis
    reset: str | None
    """Why the camera's tracking started again, if it did."""
    motion: MotionUpdate | None
    seconds: float
    tracked: Tracked | None
    """The tracker's step, whose state ``TrackerStates.commit`` stores (None: tracking is off)."""


def _track(ctx: WorkerContext, frame: _Loaded, analysis: FrameAnalysis, hold: Hold | None) -> _TrackStep:
    """The frame's detections with their camera's track ids (frames are applied in capture order), under
    the camera's lock (``hold``: taken already); the state is stored later (``TrackerStates.commit``)."""
    if not ctx.settings.tracking.enabled:
        return _TrackStep(analysis, None, None, 0.0, None)
    started = time.perf_counter()
    camera_id = frame.camera_id
    tracked = ctx.tracker_states.track(
        camera_id,
        frame.captured_at,
        analysis.detections,
        lambda: ctx.new_motion(camera_id),
        analysis.image_size,
        hold=hold,
        defer=True,
    )
    if tracked.reset is not None and tracked.reset != "new":
        log.warning("camera %s: tracking started again (%s)", frame.camera_id, tracked.reset)
    groups = analysis.groups
    if tracked.epoch is not None:
        groups = keyed_groups(groups, tracked.detections, tracked.epoch)
    analysis = replace(analysis, detections=tracked.detections, groups=groups, tracking_epoch=tracked.epoch)
    return _TrackStep(analysis, tracked.reset, tracked.motion, time.perf_counter() - started, tracked)


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
    *,
    gate_reads: GateReads | None = None,
    shown: Callable[[], None] | None = None,
) -> FrameOutcome:
    """Gate, store, emit and hand one detected frame's groups to assessment (or finalise it); ``shown`` is
    called once the frame's first result is out (``gate_reads``: the gate's state, read already)."""
    camera_id, frame_id, deadline = frame.camera_id, frame.frame_id, frame.deadline
    process_time = timing.decode_s + timing.analyse_s
    contexts = [analysis.context(g) for g in analysis.groups]
    urgent = urgent_groups(analysis, motion)
    decision, wire_id, gate_writes = gate(ctx, camera_id, contexts, frame.received, urgent, reads=gate_reads)
    keep_privacy_boxes(ctx, camera_id, analysis, frame.captured_at)
    publish_private_frame(ctx, store, frame_id, camera_id, image, analysis)
    record = _record(ctx, frame_id, camera_id, wire_id, frame.captured_at, deadline, analysis, process_time, decision)
    reused = [v for _, v in decision.reuse]
    durations = {"decode_s": timing.decode_s, "analyse_s": timing.analyse_s, "batch": float(timing.batch)}
    durations["track_s"] = timing.track_s
    if decision.assess:
        # The fast path: browsers see boxes and groups while the crops are cut and judged. "Pending" goes
        # out in the transaction that stores the frame and registers it with the deadline sweeper, so a
        # frame announced as pending gets a final result even if Redis fails right after.
        pending = ctx.emitter.detection_result_broadcast(
            camera_id, frame_result(record, None, Assessment.PENDING), captured_at=frame.captured_at
        )
        writes = [gate_writes, pending.queue]
        if evidence_store(ctx) is not None:  # the frame is the snapshot of an alert it may raise
            kept_until = deadline + EVIDENCE_GRACE_S
            writes.append(functools.partial(store.queue_keep_image, frame_id=frame_id, until=kept_until))
        store.save(record, {}, reused, pending=True, also=_queued(*writes))
        pending.sent()
        if shown is not None:
            shown()
        groups = {g.index: g for g in analysis.groups}
        quality = ctx.settings.grouping.crop_jpeg_quality
        crops = {i: crop_jpeg(image.full, groups[i].bbox, quality) for i in decision.assess}
        store.save_crops(frame_id, crops, deadline)
        store.detected(camera_id, frame_id, deadline, durations)  # off the camera's in-flight cap at once
        start_assessment(camera_id, frame_id, decision.assess, deadline)
        store.count(camera_id, "assessed_groups", len(decision.assess))
    else:
        # Nothing to assess: stored, stamped and claimed for finalising in one transaction.
        claimed = store.save_detected(record, reused, durations, also=gate_writes)
        if claimed is None:
            log.info("frame %s was final already (a redelivery); not finalised again", frame_id)
        else:
            finalise(ctx, frame_id, by="detector", record=record, claimed=claimed)
        if shown is not None:
            shown()
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


def _queued(*writes: Callable[[Any], None]) -> Callable[[Any], None]:
    """Queues each of ``writes`` on the same pipeline, in order."""

    def queue(pipe: Any) -> None:
        for write in writes:
            write(pipe)

    return queue


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


class GateReads(NamedTuple):
    """A camera's gate state for the minute of one time, as read from Redis (``queue_gate_reads``'s replies)."""

    cooling: Any
    used: Any
    """Calls to the model this minute so far."""
    recent: Any
    camera: Any
    unserved: Any


GATE_READS = 5
"""Replies of ``queue_gate_reads``."""


def queue_gate_reads(pipe: Any, camera_id: str, now: float) -> None:
    """Queue the reads of the camera's gate state for the minute of ``now`` (``GATE_READS`` replies)."""
    pipe.exists(redis_keys.camera_cooldown(camera_id))
    pipe.get(redis_keys.camera_budget(camera_id, int(now // 60)))
    pipe.hgetall(redis_keys.camera_recent_verdicts(camera_id))
    pipe.hget(redis_keys.CAMERAS, camera_id)
    pipe.hgetall(redis_keys.camera_unserved_changes(camera_id))


def gate_groups(
    ctx: WorkerContext, camera_id: str, contexts: Sequence[GroupContext], now: float, urgent: frozenset[int]
) -> tuple[GateDecision, str | int]:
    """Cooldown, unchanged-scene reuse and per-minute budget; also the camera's wire id (same round trip),
    the gate's state written at once."""
    decision, wire_id, writes = gate(ctx, camera_id, contexts, now, urgent)
    pipe = ctx.redis.pipeline(transaction=False)
    writes(pipe)
    if len(pipe):
        pipe.execute()
    return decision, wire_id


GateWrites = Callable[[Any], None]
"""Queues the gate's state changes on a pipeline."""


def gate(
    ctx: WorkerContext,
    camera_id: str,
    contexts: Sequence[GroupContext],
    now: float,
    urgent: frozenset[int],
    *,
    reads: GateReads | None = None,
) -> tuple[GateDecision, str | int, GateWrites]:
    """:func:`gate_groups`, leaving the state's changes to the caller (queued with the frame's record, in
    the same transaction); no round trip when the state was read ahead for ``now`` (``reads``)."""
    settings = ctx.settings
    minute = int(now // 60)
    if reads is None:
        pipe = ctx.redis.pipeline(transaction=False)
        queue_gate_reads(pipe, camera_id, now)
        reads = GateReads(*pipe.execute())
    cooling, used, recent_raw, camera_raw, unserved_raw = reads
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
    unserved_name = redis_keys.camera_unserved_changes(camera_id)
    stale = [*decision.forget_unserved, *({as_text(k) for k in unserved_raw} - _unserved(unserved_raw).keys())]

    def writes(pipe: Any) -> None:
        if forget:
            pipe.hdel(redis_keys.camera_recent_verdicts(camera_id), *forget)
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

    return decision, wire_id_of(camera_id, camera_raw), writes


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
