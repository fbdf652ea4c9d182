"""The pipeline's Celery tasks: thin adapters that load by reference, call ``traffic``, store, emit."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from celery import chord
from celery_batches import SimpleRequest

from infra import celery_names
from infra.camera_registry import CameraRegistry
from infra.dead_letters import DeadLetter, DeadLetters
from infra.frame_store import FrameStore
from traffic import redis_keys
from traffic.codec import verdict_to_json
from traffic.models import GroupVerdict
from traffic.risk import error_verdict
from workers import app, incidents, motion, mqtt_output, webhooks
from workers.assessment import Transient, assess_with_pool
from workers.batching import DetectorBatches, task_events
from workers.capture.leases import is_claimed
from workers.context import WorkerContext, worker_context
from workers.dead_letter_replay import replay_verdict
from workers.detection import FrameTask, detect_and_route, wire_id_of
from workers.finalize import end_stale_alerts, finalise
from workers.metrics import FrameOutcome

log = logging.getLogger(__name__)

MAX_DELIVERIES = 3
"""A task delivered more often than this (its workers keep dying) is answered with an error verdict."""


def _delivery_count(ctx: WorkerContext, task_id: str | None, retries: int) -> int:
    """How many times this attempt of the task was delivered (redeliveries after worker loss count)."""
    if not task_id:
        return 1
    name = redis_keys.task_deliveries(f"{task_id}:{retries}")
    pipe = ctx.redis.pipeline()
    pipe.incr(name)
    pipe.expire(name, 3600)
    count, _ = pipe.execute()
    return int(count)


@app.task(name=celery_names.DETECT_FRAME, base=DetectorBatches, acks_late=True, ignore_result=True, flush_every=1)
def detect_frame(requests: Sequence[SimpleRequest]) -> list[FrameOutcome]:
    """Detect, group and crop each camera's newest waiting frame (one predict for the batch); emit; route.

    celery-batches hands the worker's buffered ``detect_frame(camera_id, frame_id, captured_at)``
    messages over at once: ``detector.batch`` of them, those buffered when the ``gpu`` queue is empty, or
    those that came within ``detector.batch_wait_ms`` (``workers.batching`` sizes it when the worker
    starts). Each message is acknowledged after its batch.
    """
    ctx = worker_context()
    store = FrameStore(ctx.redis)
    with task_events(app, requests) as events:
        tasks = [FrameTask(*_frame_args(r.args, r.kwargs)) for r in requests]
        outcomes = detect_and_route(ctx, store, tasks, start_assessment=_start_chord, send_turn=_send_turn)
        events.report(outcomes)
    return outcomes


def _frame_args(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[str, str, float]:
    """(camera id, frame id, captured at) of one ``detect_frame`` message."""
    values = dict(zip(("camera_id", "frame_id", "captured_at"), args, strict=False)) | dict(kwargs)
    return str(values["camera_id"]), str(values["frame_id"]), float(values["captured_at"])


def _send_turn(camera_id: str, turn_id: str, expires: float) -> None:
    """The camera's next detector task: it will take whatever frame is newest when a worker starts it."""
    detect_frame.apply_async(
        args=[camera_id, turn_id, time.time()],
        queue=celery_names.GPU_QUEUE,
        expires=datetime.fromtimestamp(expires, UTC),
        ignore_result=True,
    )


def _start_chord(camera_id: str, frame_id: str, groups: tuple[int, ...], deadline: float) -> None:
    """One ``assess_group`` per group (queue llm), then ``aggregate_frame`` (queue default)."""
    header = [assess_group.s(camera_id, frame_id, i, deadline).set(queue=celery_names.LLM_QUEUE) for i in groups]
    chord(header)(aggregate_frame.s(camera_id, frame_id).set(queue=celery_names.DEFAULT_QUEUE))


@app.task(name=celery_names.ASSESS_GROUP, bind=True, acks_late=True, max_retries=None)
def assess_group(self: Any, camera_id: str, frame_id: str, group_index: int, deadline: float) -> dict[str, Any]:
    """One group's verdict (JSON); never raises into the chord: errors are verdicts too."""
    ctx = worker_context()
    store = FrameStore(ctx.redis)
    verdict_or_retry = _assess(ctx, store, self, camera_id, frame_id, group_index, deadline)
    if isinstance(verdict_or_retry, Exception):
        raise verdict_or_retry
    store.save_verdict(frame_id, verdict_or_retry, deadline)
    return verdict_to_json(verdict_or_retry)


def _assess(
    ctx: WorkerContext, store: FrameStore, task: Any, camera_id: str, frame_id: str, index: int, deadline: float
) -> GroupVerdict | Exception:
    """A verdict, or the Retry exception to raise for a transient failure with time left."""
    retries = int(task.request.retries or 0)
    started = time.time()
    if _delivery_count(ctx, task.request.id, retries) > MAX_DELIVERIES:
        DeadLetters(ctx.redis).push(camera_id, frame_id, index, deadline, "redelivered_too_often", store)
        return error_verdict(index, "redelivered_too_often")
    if started >= deadline:
        return error_verdict(index, "deadline_passed")
    record = store.record(frame_id)
    crop = store.crop(frame_id, index)
    groups = {g.index: g for g in record.analysis.groups} if record else {}
    if record is None or crop is None or index not in groups:
        return error_verdict(index, "inputs_expired")
    outcome = assess_with_pool(ctx, record.analysis.context(groups[index]), crop, deadline=deadline, started=started)
    if isinstance(outcome, GroupVerdict):
        if outcome.error and not outcome.error.startswith("fallback:"):
            # An unusable reply after its repair, another provider error: the model may answer a replay.
            DeadLetters(ctx.redis).push(camera_id, frame_id, index, deadline, outcome.error, store)
        return outcome
    return _retry_or_give_up(ctx, store, task, outcome, camera_id, frame_id, index, deadline, retries)


def _retry_or_give_up(
    ctx: WorkerContext,
    store: FrameStore,
    task: Any,
    outcome: Transient,
    camera_id: str,
    frame_id: str,
    index: int,
    deadline: float,
    retries: int,
) -> GroupVerdict | Exception:
    """Retry with exponential backoff while the deadline allows; else an error verdict in the DLQ."""
    pipeline = ctx.settings.pipeline
    countdown = outcome.wait_s if outcome.wait_s is not None else pipeline.retry_backoff_s * 2**retries
    countdown = min(countdown, 4.0)
    fits = time.time() + countdown + 1.0 < deadline
    if retries < ctx.settings.llm.max_retries and fits:
        log.info("group %d of %s: %s; retry %d in %.1f s", index, frame_id, outcome.reason, retries + 1, countdown)
        retry: Exception = task.retry(countdown=countdown, throw=False)
        return retry
    DeadLetters(ctx.redis).push(camera_id, frame_id, index, deadline, outcome.reason, store)
    return error_verdict(index, outcome.reason, model=ctx.settings.llm.model)


@app.task(name=celery_names.AGGREGATE_FRAME, acks_late=True, ignore_result=True)
def aggregate_frame(results: list[Any], camera_id: str, frame_id: str) -> None:
    """Chord body: finalise the frame (idempotent: a redelivered chord does nothing twice)."""
    ctx = worker_context()
    log.debug("chord of %s done with %d results", frame_id, len(results or []))
    finalise(ctx, frame_id, by="chord")


@app.task(name=celery_names.SWEEP_DEADLINES, ignore_result=True)
def sweep_deadlines() -> int:
    """Finalise every frame whose deadline passed, with whatever verdicts did arrive."""
    ctx = worker_context()
    store = FrameStore(ctx.redis)
    done = 0
    for frame_id in store.due(time.time()):
        if finalise(ctx, frame_id, by="deadline") is not None:
            done += 1
    return done


@app.task(name=celery_names.CAMERA_WATCHDOG, ignore_result=True)
def camera_watchdog() -> None:
    """Report cameras that no capture process holds as offline; end stale alerts."""
    ctx = worker_context()
    registry = CameraRegistry(ctx.redis)
    for camera_id in registry.ids():
        _report_orphan(ctx, registry, camera_id)
        end_stale_alerts(ctx, camera_id)


def _report_orphan(ctx: WorkerContext, registry: CameraRegistry, camera_id: str) -> None:
    """Mark a camera offline when its capture lease is gone but its status still says online."""
    if is_claimed(ctx.redis, camera_id):
        return
    message = "no capture process holds this camera"
    if not registry.mark_offline(camera_id, message):
        return
    wire_id = wire_id_of(camera_id, registry.raw_entry(camera_id))
    ctx.emitter.to_camera(camera_id, "camera_status", {"cameraId": wire_id, "status": 0, "message": message})


@app.task(name=celery_names.RECORD_GAUGES, ignore_result=True)
def record_gauges() -> dict[str, int]:
    """Queue depths, stored for the dashboard (Prometheus export comes with the metrics module)."""
    ctx = worker_context()
    depths = {name: int(ctx.redis.llen(name)) for name in celery_names.QUEUES}
    ctx.redis.hset(redis_keys.PREFIX + "gauges:queues", mapping={k: str(v) for k, v in depths.items()})
    return depths


@app.task(name=celery_names.FLUSH_INCIDENTS, ignore_result=True)
def flush_incidents() -> int:
    """Write the alert events waiting in Redis to the incident database."""
    return incidents.flush_incidents(worker_context())


@app.task(name=celery_names.EXPIRE_INCIDENTS, ignore_result=True)
def expire_incidents() -> int:
    """Delete incidents past their retention."""
    return incidents.expire_incidents(worker_context(), time.time())


@app.task(name=celery_names.SEND_OWED_STATS, ignore_result=True)
def send_owed_stats() -> int:
    """Send the ``traffic_stats`` events that cameras' last frames were owed (at most one a second each)."""
    return motion.send_owed_stats(worker_context())


@app.task(name=celery_names.PUBLISH_MQTT, ignore_result=True)
def publish_mqtt() -> int:
    """Publish the incident events waiting for the MQTT broker, oldest first."""
    return mqtt_output.publish_waiting(worker_context())


@app.task(name=celery_names.DISPATCH_WEBHOOKS, ignore_result=True)
def dispatch_webhooks() -> int:
    """Fan waiting incident events out to webhook subscriptions; send every delivery whose try is due."""
    return webhooks.dispatch(worker_context(), _send_delivery)


def _send_delivery(delivery_id: str, expires_s: float) -> None:
    """One ``deliver_webhook`` task (queue default); a message left queued past ``expires_s`` is dropped unrun."""
    deliver_webhook.apply_async(
        args=[delivery_id], queue=celery_names.DEFAULT_QUEUE, expires=expires_s, ignore_result=True
    )


@app.task(name=celery_names.DELIVER_WEBHOOK, acks_late=True, ignore_result=True)
def deliver_webhook(delivery_id: str) -> str:
    """One try of a webhook delivery (the secret is looked up by subscription name, never carried here)."""
    return webhooks.deliver(worker_context(), delivery_id)


@app.task(name=celery_names.REPLAY_DEAD_LETTER, acks_late=True)
def replay_dead_letter(entry: dict[str, Any]) -> dict[str, Any]:
    """Re-run a dead-lettered assessment from its saved inputs; a failure goes back on the list."""
    ctx = worker_context()
    letter = DeadLetter.from_json(entry)
    verdict = replay_verdict(ctx, letter)
    letters = DeadLetters(ctx.redis)
    if verdict.ok:
        letters.forget_inputs(letter.entry_id)
    else:
        letters.put_back(replace(letter, reason=verdict.error or "replay_failed", failed_at=time.time()))
    return verdict_to_json(verdict)
