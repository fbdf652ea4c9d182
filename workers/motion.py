"""After a frame is tracked: store its analytics, raise rule-based alerts, send ``traffic_stats`` (about 1/s,
the last of a burst from the beat) to dashboards and, when configured, to the MQTT broker."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping

from traffic.alerts import motion_alerts
from traffic.analysis import FrameAnalysis
from traffic.analytics import MotionUpdate
from traffic.geometry import empty_geometry
from traffic.motion_wire import motion_snapshot
from workers.context import WorkerContext
from workers.evidence import record_evidence
from workers.finalize import alerts_locked, emit_alert_events, load_alerts, save_alerts
from workers.mqtt_output import publish_stats

log = logging.getLogger(__name__)

TRAFFIC_STATS = "traffic_stats"
"""The Socket.IO event (camera room) with a camera's counts, occupancy, tracks and motion events."""


def publish_motion(
    ctx: WorkerContext,
    camera_id: str,
    wire_id: str | int,
    frame_id: str,
    captured_at: float,
    analysis: FrameAnalysis,
    motion: MotionUpdate,
) -> None:
    """Record the frame's analytics, raise its rule-based alerts and, when due, send ``traffic_stats``.

    A Redis error is logged and the frame goes on: analytics never hold a verdict back.
    """
    width, height = analysis.image_size
    configured = ctx.settings.geometry_of(camera_id)
    geometry = configured.scaled(width, height) if configured is not None else empty_geometry(camera_id, width, height)
    try:
        snapshot = motion_snapshot(wire_id, captured_at, analysis.tracking_epoch, geometry, motion)
        due = ctx.traffic_stats.record(camera_id, snapshot, motion.events, captured_at)
        _alerts(ctx, camera_id, frame_id, captured_at, analysis, motion)
        if due:
            payload = ctx.traffic_stats.live(camera_id)
            if payload is not None:
                ctx.emitter.to_camera(camera_id, TRAFFIC_STATS, payload)
                publish_stats(ctx, camera_id, payload)
    except Exception:  # Redis away: the frame's verdict matters more than its statistics
        log.warning("camera %s: could not record the analytics of frame %s", camera_id, frame_id, exc_info=True)


def send_owed_stats(ctx: WorkerContext) -> int:
    """Send the ``traffic_stats`` event each camera is owed once its interval is up; how many were sent."""
    sent = 0
    for camera_id in ctx.traffic_stats.owed():
        if not ctx.traffic_stats.take_owed(camera_id):
            continue
        payload = ctx.traffic_stats.live(camera_id)  # read after taking it: a newer frame is owed again
        if payload is not None:
            ctx.emitter.to_camera(camera_id, TRAFFIC_STATS, payload)
            publish_stats(ctx, camera_id, payload)
            sent += 1
    return sent


def _alerts(
    ctx: WorkerContext, camera_id: str, frame_id: str, captured_at: float, analysis: FrameAnalysis, motion: MotionUpdate
) -> None:
    """Near misses and wrong-way movement as rule-based alerts (with or without a model); they end when not
    raised again for ``alert_end_after_s``, here or by the beat's stale-alert sweep."""
    if not motion.active_near_misses and not any(e.kind in ("near_miss", "wrong_way") for e in motion.events):
        return
    boxes = {d.track_id: d.bbox for d in analysis.detections if d.track_id is not None}
    with alerts_locked(ctx, camera_id):
        before = load_alerts(ctx, camera_id)
        after, events = motion_alerts(
            before,
            camera_id=camera_id,
            epoch=analysis.tracking_epoch or 0,
            update=motion,
            boxes=boxes,
            frame_id=frame_id,
            now=time.time(),
            end_after_s=ctx.settings.pipeline.alert_end_after_s,
        )
        if events or after != before:
            save_alerts(ctx, camera_id, before, after)
    if events:
        record_evidence(ctx, camera_id, events, analysis, captured_at)
        emit_alert_events(ctx, camera_id, events)


def motion_counts(motion: MotionUpdate | None) -> Mapping[tuple[str, ...], int]:
    """The frame's motion events as metric label tuples: crossings by line, direction and class; dwell and
    wrong-way events; near-miss encounters by measure (counted when they start)."""
    if motion is None:
        return {}
    counts: Counter[tuple[str, ...]] = Counter()
    for event in motion.events:
        if event.kind == "line_crossing":
            counts[("line_crossing", event.where, event.direction, event.classes[0] if event.classes else "")] += 1
        elif event.kind == "near_miss":
            if event.phase == "start" or event.measure == "pet":
                counts[("near_miss", event.measure)] += 1
        else:
            counts[(event.kind, "")] += 1
    return counts


def urgent_groups(analysis: FrameAnalysis, motion: MotionUpdate | None) -> frozenset[int]:
    """Indexes of the frame's groups holding a track of a near miss (in progress or raised) or of
    wrong-way movement: the gate offers those to the model again, whatever it remembers."""
    if motion is None:
        return frozenset()
    tracks = {t for e in motion.active_near_misses for t in e.track_ids}
    tracks |= {t for e in motion.events if e.kind in ("near_miss", "wrong_way") for t in e.track_ids}
    if not tracks:
        return frozenset()
    return frozenset(g.index for g in analysis.groups if tracks.intersection(g.tracks))
