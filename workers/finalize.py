"""Finalising a frame exactly once: fold verdicts, store the latest result, alerts, emit."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from infra.frame_store import FrameStore, as_text
from infra.redis_lock import redis_lock
from traffic import redis_keys
from traffic.alerts import Alert, AlertEvent, AlertKind, alert_from_json, alert_to_json, expire_alerts, update_alerts
from traffic.codec import CodecError, recent_verdict_to_json
from traffic.frame_record import FrameRecord
from traffic.gate import RecentVerdict
from traffic.models import Assessment, FrameVerdict, GroupVerdict, RiskLevel
from traffic.risk import aggregate_frame, error_verdict
from traffic.wire import frame_result
from workers.context import WorkerContext
from workers.evidence import record_evidence
from workers.metrics import record as record_metric

log = logging.getLogger(__name__)

ALERT_LOG_LENGTH = 1000
ALERTS_LOCK_S = 5.0
"""A camera's alerts lock lapses this long after its holder died."""
ALERTS_WAIT_S = 2.0
"""How long a frame waits for its camera's alerts before it goes on without the lock."""
INCIDENTS_PENDING_MAX = 200_000
"""Alert events kept for the incident database while it is down (about three days of 50 busy cameras)."""


def finalise(
    ctx: WorkerContext,
    frame_id: str,
    *,
    by: str,
    extra: Iterable[GroupVerdict] = (),
    record: FrameRecord | None = None,
    claimed: Sequence[GroupVerdict] | None = None,
) -> FrameVerdict | None:
    """Finalise ``frame_id`` unless someone already did; returns the verdict when this call did it.

    ``record``: the frame's record when the caller has just stored it (the detector), else it is loaded.
    ``claimed``: the frame's verdicts when the caller has claimed it already (``FrameStore.save_detected``).
    """
    store = FrameStore(ctx.redis)
    if record is None:
        record = store.record(frame_id)
    if record is None:
        store.confirm_final(frame_id, time.time())
        log.warning("frame %s: record expired before it could be finalised (%s)", frame_id, by)
        return None
    stored = claimed if claimed is not None else store.claim_final_with_verdicts(frame_id)
    if stored is None:
        log.debug("frame %s already final (or being finalised); %s did nothing", frame_id, by)
        return None
    verdict = fold(record, [*stored, *extra])
    publish(ctx, store, record, verdict, by=by)
    # Only now does the frame leave the sweeper's set: a finaliser cut off before this point leaves
    # its claim to lapse, and the sweeper publishes the frame again (at least once, never never).
    store.confirm_final(frame_id, record.deadline)
    remember_assessed(ctx, record, verdict)
    return verdict


def fold(record: FrameRecord, verdicts: list[GroupVerdict]) -> FrameVerdict:
    """The frame verdict: groups left out by the budget are error verdicts, so the frame says partial."""
    if record.skipped is not None:
        folded = aggregate_frame(record.camera_id, record.frame_id, list(record.expected), verdicts)
        return replace(folded, assessment=Assessment.SKIPPED)
    left_out = [error_verdict(i, "not_assessed:budget") for i in record.dropped]
    groups = [g.index for g in record.analysis.groups]
    return aggregate_frame(record.camera_id, record.frame_id, groups, [*verdicts, *left_out])


def publish(ctx: WorkerContext, store: FrameStore, record: FrameRecord, verdict: FrameVerdict, *, by: str) -> None:
    """Store the result as the camera's latest (if newest), update alerts, emit both."""
    payload = frame_result(record, verdict, verdict.assessment)
    payload["finalisedBy"] = by
    # The result goes out in the round trip that stores it as the camera's latest.
    broadcast = ctx.emitter.detection_result_broadcast(record.camera_id, payload, captured_at=record.captured_at)
    newest, (alerts_raw,) = store.store_final(
        record.camera_id,
        record.frame_id,
        record.captured_at,
        record.deadline,
        payload,
        ttl_s=ctx.settings.pipeline.latest_ttl_s,
        counter=f"final_{verdict.assessment.value}",
        read_hashes=[redis_keys.camera_alerts(record.camera_id)],
        also=broadcast.queue,
    )
    broadcast.sent()
    record_metric("final", by, verdict.assessment.value)
    # A frame the model judged brings news even when frames detected after it were final sooner (the
    # detector runs faster than the model answers): its verdicts raise and update alerts all the same.
    # A frame without fresh verdicts (skipped, reusing) only speaks for the camera when it is the newest.
    if newest or record.assess:
        update_camera_alerts(ctx, record, verdict, seen=decode_alerts(alerts_raw))
    log.info(
        "frame %s final (%s by %s): max=%s groups=%d",
        record.frame_id,
        verdict.assessment.value,
        by,
        verdict.max_risk_level.value,
        len(verdict.verdicts),
    )


def load_alerts(ctx: WorkerContext, camera_id: str) -> dict[str, Alert]:
    """The camera's active alerts (corrupt entries are dropped with a warning)."""
    return decode_alerts(ctx.redis.hgetall(redis_keys.camera_alerts(camera_id)))


def decode_alerts(stored: dict[Any, Any]) -> dict[str, Alert]:
    """Active alerts from the camera's alerts hash as read (corrupt entries are dropped with a warning)."""
    active: dict[str, Alert] = {}
    for alert_id, raw in stored.items():
        try:
            active[as_text(alert_id)] = alert_from_json(json.loads(raw)).alert
        except (CodecError, ValueError) as exc:
            log.warning("dropping corrupt alert %r: %s", alert_id, exc)
    return active


def save_alerts(ctx: WorkerContext, camera_id: str, before: dict[str, Alert], after: dict[str, Alert]) -> None:
    """Write the active set back: ended alerts removed, the rest replaced."""
    name = redis_keys.camera_alerts(camera_id)
    pipe = ctx.redis.pipeline()
    gone = [alert_id for alert_id in before if alert_id not in after]
    if gone:
        pipe.hdel(name, *gone)
    for alert_id, alert in after.items():
        pipe.hset(name, alert_id, json.dumps(alert_to_json(AlertEvent(AlertKind.UPDATE, alert))))
    pipe.execute()


def emit_alert_events(ctx: WorkerContext, camera_id: str, events: list[AlertEvent]) -> None:
    """Send and log each alert event."""
    pipe = ctx.redis.pipeline(transaction=False)
    for event in events:
        data = alert_to_json(event)
        ctx.emitter.alert(camera_id, data)
        if event.kind is AlertKind.NEW:
            record_metric("alert", event.alert.level.value, list(event.alert.risk_types))
        pipe.lpush(redis_keys.ALERT_LOG, json.dumps(data))
        if ctx.settings.incidents.database_url:
            # Written to the incident database by the flush job: a database that is down delays it only.
            pipe.rpush(redis_keys.INCIDENTS_PENDING, json.dumps(data))
    pipe.ltrim(redis_keys.ALERT_LOG, 0, ALERT_LOG_LENGTH - 1)
    if ctx.settings.incidents.database_url:
        pipe.ltrim(redis_keys.INCIDENTS_PENDING, -INCIDENTS_PENDING_MAX, -1)
    pipe.execute()


@contextmanager
def alerts_locked(ctx: WorkerContext, camera_id: str) -> Iterator[None]:
    """Hold the camera's alerts while one process reads, changes and writes them back: two frames folded
    in at once (two aggregations, a detector's rule-based alert beside them) must not lose an update. Past
    ``ALERTS_WAIT_S`` the frame goes on without it (logged): a verdict is never held back for long."""
    name = redis_keys.camera_alerts_lock(camera_id)
    with redis_lock(ctx.redis, name, ttl_s=ALERTS_LOCK_S, wait_s=ALERTS_WAIT_S) as had:
        if not had:
            log.warning("camera %s: alerts busy for %.1f s; updating them anyway", camera_id, ALERTS_WAIT_S)
        yield


def update_camera_alerts(
    ctx: WorkerContext, record: FrameRecord, verdict: FrameVerdict, *, seen: dict[str, Alert] | None = None
) -> None:
    """Fold the frame into the camera's alerts.

    ``seen``: the alerts as the caller just read them. When the frame changes nothing in them (most frames:
    no alert, none raised) nothing is written and the lock is not taken: the outcome is the frame folded in
    at that read. Otherwise they are read again, changed and written back under the camera's alerts lock.
    """
    pipeline = ctx.settings.pipeline

    def folded(before: dict[str, Alert]) -> tuple[dict[str, Alert], list[AlertEvent]]:
        return update_alerts(
            before,
            camera_id=record.camera_id,
            frame=verdict,
            groups={g.index: g for g in record.analysis.groups},
            image_size=record.analysis.image_size,
            now=time.time(),
            min_level=RiskLevel(pipeline.alert_level),
            end_after_s=pipeline.alert_end_after_s,
        )

    if seen is not None:
        after, events = folded(seen)
        if not events and after == seen:
            return
    with alerts_locked(ctx, record.camera_id):
        before = load_alerts(ctx, record.camera_id)
        after, events = folded(before)
        save_alerts(ctx, record.camera_id, before, after)
    if events:
        record_evidence(ctx, record.camera_id, events, record.analysis, record.captured_at)
        emit_alert_events(ctx, record.camera_id, list(events))


def end_stale_alerts(ctx: WorkerContext, camera_id: str) -> int:
    """End the camera's alerts not seen for ``alert_end_after_s``; returns how many ended."""
    with alerts_locked(ctx, camera_id):
        before = load_alerts(ctx, camera_id)
        after, ended = expire_alerts(before, time.time(), ctx.settings.pipeline.alert_end_after_s)
        if ended:
            save_alerts(ctx, camera_id, before, after)
    if ended:
        emit_alert_events(ctx, camera_id, list(ended))
    return len(ended)


def remember_assessed(ctx: WorkerContext, record: FrameRecord, verdict: FrameVerdict) -> None:
    """Keep fresh model verdicts by group signature, so an unchanged scene reuses them. A verdict is as old
    as the frame the model saw, not as its answer: reuse ends ``dedupe_window_s`` after that frame."""
    window = ctx.settings.pipeline.dedupe_window_s
    fresh = [
        v for v in verdict.verdicts if v.ok and v.group_index in record.assess and v.group_index in record.signatures
    ]
    if not fresh or window <= 0:
        return
    name = redis_keys.camera_recent_verdicts(record.camera_id)
    judged_at = min(record.captured_at, time.time())
    pipe = ctx.redis.pipeline(transaction=False)
    for v in fresh:
        remembered = recent_verdict_to_json(RecentVerdict(v, judged_at))
        pipe.hset(name, record.signatures[v.group_index], json.dumps(remembered))
    pipe.expire(name, int(window * 2) + 1)
    pipe.execute()
