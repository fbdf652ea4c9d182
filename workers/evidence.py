"""Evidence of new incidents, from the worker that raised their alert: the annotated snapshot of the frame
(written at once, while the frame is in Redis) and a request for a clip, which the capture process owning
the camera cuts from its ring buffer once the clip's end has passed. Evidence never holds a verdict back:
a failure is logged and the alert goes on."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from infra.evidence_store import EvidenceStore
from infra.frame_store import FrameStore
from traffic import redis_keys
from traffic.alerts import AlertEvent, AlertKind
from traffic.analysis import FrameAnalysis
from traffic.evidence import ClipRequest, annotated_snapshot, clip_window
from traffic.imaging import decode_jpeg
from traffic.incidents import natural_key
from workers.context import WorkerContext

log = logging.getLogger(__name__)

CLIP_REQUESTS_MAX = 200
"""Clip requests kept waiting per camera (a camera with no capture process must not grow Redis)."""
EVIDENCE_GRACE_S = 10.0
"""A frame in assessment keeps its JPEG this long past its deadline (its alert, and snapshot, come by then)."""
CLIP_REQUEST_TTL_S = 600
"""A camera's waiting clip requests expire this long after the last one (its frames are gone by then)."""


def evidence_store(ctx: WorkerContext) -> EvidenceStore | None:
    """The evidence directory, when evidence is kept (it needs the incident database too)."""
    directory = ctx.settings.evidence.dir
    return EvidenceStore(directory) if directory and ctx.settings.incidents.database_url else None


def record_evidence(
    ctx: WorkerContext, camera_id: str, events: Iterable[AlertEvent], analysis: FrameAnalysis, captured_at: float
) -> None:
    """For each new alert: write its snapshot from the frame that raised it, and ask for its clip."""
    store = evidence_store(ctx)
    if store is None:
        return
    for event in events:
        if event.kind is not AlertKind.NEW:
            continue
        try:
            _snapshot_and_clip(ctx, store, camera_id, event, analysis, captured_at)
        except Exception:  # evidence is best effort: the alert and its incident go on without it
            log.warning("camera %s: no evidence for alert %s", camera_id, event.alert.alert_id, exc_info=True)


def _snapshot_and_clip(
    ctx: WorkerContext,
    store: EvidenceStore,
    camera_id: str,
    event: AlertEvent,
    analysis: FrameAnalysis,
    captured_at: float,
) -> None:
    alert = event.alert
    key = natural_key(alert.alert_id, alert.first_seen)
    jpeg = FrameStore(ctx.redis).image(alert.frame_id)
    if jpeg is None:
        log.info("camera %s: frame %s is gone; alert %s has no snapshot", camera_id, alert.frame_id, alert.alert_id)
    else:
        privacy = ctx.settings.privacy
        caption = " ".join([alert.level.value.upper(), *alert.risk_types])
        snapshot = annotated_snapshot(
            decode_jpeg(jpeg),
            analysis.detections,
            alert.bbox,
            alert.level,
            caption,
            blur_classes=privacy.blur_classes if privacy.blur else (),
        )
        store.write(store.snapshot_path(camera_id, key), snapshot)
    config = ctx.settings.evidence
    request = ClipRequest(key, camera_id, clip_window(captured_at, config.clip_before_s, config.clip_after_s))
    name = redis_keys.camera_clip_requests(camera_id)
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.rpush(name, json.dumps(request.to_json()))
    pipe.ltrim(name, -CLIP_REQUESTS_MAX, -1)
    pipe.expire(name, CLIP_REQUEST_TTL_S)
    pipe.execute()
