"""Privacy blur of what leaves the pipeline for people: the frames browsers get (a blurred preview and
latest frame, published by the detector worker once it knows where people are) and the boxes that clips,
cut from frames no detector saw, are blurred by."""

from __future__ import annotations

import json

from infra.frame_store import FrameStore
from traffic import redis_keys
from traffic.analysis import FrameAnalysis
from traffic.evidence import private
from traffic.frame_image import FrameImage
from traffic.imaging import encode_jpeg, preview_jpeg
from workers.context import WorkerContext
from workers.evidence import evidence_store

PRIVACY_BOXES_KEPT_S = 120.0
"""How long a camera's detected privacy boxes are kept for clips (longer than any clip waits)."""


def publish_private_frame(
    ctx: WorkerContext, store: FrameStore, frame_id: str, camera_id: str, image: FrameImage, analysis: FrameAnalysis
) -> None:
    """With privacy on: the frame as browsers may see it (people and plates blurred), before any
    ``detection_result`` points a browser at it."""
    privacy = ctx.settings.privacy
    if not privacy.blur:
        return
    shown = private(image.full, analysis.detections, privacy.blur_classes)
    jpeg = encode_jpeg(shown, ctx.settings.capture.jpeg_quality)
    store.publish_private(frame_id, camera_id, preview_jpeg(shown), jpeg, ttl_s=ctx.settings.capture.frame_ttl_s)


def keep_privacy_boxes(ctx: WorkerContext, camera_id: str, analysis: FrameAnalysis, captured_at: float) -> None:
    """With privacy on and evidence kept: remember the frame's boxes to blur, so clips (cut from frames no
    detector saw) hide the same people."""
    privacy = ctx.settings.privacy
    if not privacy.blur or evidence_store(ctx) is None:
        return
    wanted = set(privacy.blur_classes)
    boxes = [[round(v, 1) for v in d.bbox] for d in analysis.detections if d.cls in wanted]
    entry = json.dumps({"at": captured_at, "size": list(analysis.image_size), "boxes": boxes})
    name = redis_keys.camera_privacy_boxes(camera_id)
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.zadd(name, {entry: captured_at})
    pipe.zremrangebyscore(name, "-inf", captured_at - PRIVACY_BOXES_KEPT_S)
    pipe.expire(name, int(PRIVACY_BOXES_KEPT_S) * 2)
    pipe.execute()
