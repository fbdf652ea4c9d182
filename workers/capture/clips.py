"""Incident clips, cut by the capture process that owns the camera from the camera's ring buffer once the
clip's end has passed, encoded with OpenCV and written under the evidence directory; the incident writer
records them (``workers.incidents.record_clips``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import redis

from infra.evidence_store import EvidenceStore
from traffic import redis_keys
from traffic.errors import ImageError
from traffic.evidence import (
    PRIVACY_REACH_S,
    ClipRequest,
    ClipWindow,
    ClipWritten,
    FrameRing,
    PrivacyBoxes,
    blur_for_privacy,
)
from traffic.imaging import decode_jpeg, write_clip
from traffic.settings import Settings

log = logging.getLogger(__name__)

SETTLE_S = 0.5
"""A clip is cut this long after its end, so the last frames are in the ring."""
WRITTEN_MAX = 10_000
"""Written clips kept waiting for the incident writer (while its database is down)."""


class ClipCutter:
    """Serves the clip requests of the cameras whose rings ``rings()`` gives (those this process owns)."""

    def __init__(self, settings: Settings, client: redis.Redis, rings: Callable[[], Mapping[str, FrameRing]]) -> None:
        assert settings.evidence.dir, "clips need an evidence directory"
        self._settings = settings
        self._redis = client
        self._rings = rings
        self._store = EvidenceStore(settings.evidence.dir)

    def run_once(self, now: float) -> int:
        """Cut every clip that is due; how many requests were served."""
        rings = dict(self._rings())
        if not rings:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for camera_id in rings:
            pipe.lrange(redis_keys.camera_clip_requests(camera_id), 0, -1)
        served = 0
        for (camera_id, ring), raw_requests in zip(rings.items(), pipe.execute(), strict=True):
            for raw in raw_requests:
                try:
                    request = ClipRequest.from_json(json.loads(raw))
                except ValueError as exc:
                    log.error("camera %s: dropping an unreadable clip request: %s", camera_id, exc)
                    self._redis.lrem(redis_keys.camera_clip_requests(camera_id), 1, raw)
                    continue
                if request.window.end + SETTLE_S > now:
                    continue
                written = self._cut(request, ring)
                pipe = self._redis.pipeline(transaction=False)
                pipe.rpush(redis_keys.CLIPS_WRITTEN, json.dumps(written.to_json()))
                pipe.ltrim(redis_keys.CLIPS_WRITTEN, -WRITTEN_MAX, -1)
                pipe.lrem(redis_keys.camera_clip_requests(camera_id), 1, raw)
                pipe.execute()
                served += 1
        return served

    def _cut(self, request: ClipRequest, ring: FrameRing) -> ClipWritten:
        """Encode the request's window from the ring (blurred for privacy when asked)."""
        frames = ring.window(request.window)
        if not frames:
            reason = "no frames of that time are kept (the camera was offline, or its capture restarted)"
            kept = ring.window(ClipWindow(float("-inf"), float("inf")))
            log.info(
                "camera %s: no clip of %s: it asks for %.1f-%.1f, the ring holds %s",
                request.camera_id,
                request.natural_key,
                request.window.start,
                request.window.end,
                f"{kept[0].at:.1f}-{kept[-1].at:.1f}" if kept else "nothing",
            )
            return ClipWritten(request.natural_key, request.camera_id, None, 0, reason)
        privacy = self._settings.privacy
        detected = self._privacy_boxes(request) if privacy.blur else None
        relative = self._store.clip_path(request.camera_id, request.natural_key)
        temporary = self._store.temporary(relative)
        try:
            images = []
            for frame in frames:
                image = decode_jpeg(frame.jpeg)
                images.append(blur_for_privacy(image, frame.at, detected) if detected is not None else image)
            span = frames[-1].at - frames[0].at
            fps = min(self._settings.evidence.clip_fps, (len(frames) - 1) / span) if span > 0 else 1.0
            write_clip(str(temporary), images, max(1.0, fps))
            self._store.commit(temporary, relative)
        except (ImageError, OSError) as exc:
            temporary.unlink(missing_ok=True)
            log.warning("camera %s: clip of %s failed: %s", request.camera_id, request.natural_key, exc)
            return ClipWritten(request.natural_key, request.camera_id, None, 0, f"encoding failed: {exc}")
        log.info("camera %s: clip of %s written (%d frames)", request.camera_id, request.natural_key, len(frames))
        return ClipWritten(request.natural_key, request.camera_id, relative, len(frames))

    def _privacy_boxes(self, request: ClipRequest) -> list[PrivacyBoxes]:
        """The detected frames' boxes to blur around the clip's window, oldest first."""
        raw: list[Any] = self._redis.zrangebyscore(
            redis_keys.camera_privacy_boxes(request.camera_id),
            request.window.start - PRIVACY_REACH_S,
            request.window.end + PRIVACY_REACH_S,
        )
        found = []
        for entry in raw:
            try:
                data: Any = json.loads(entry)
                boxes = tuple((float(a), float(b), float(c), float(d)) for a, b, c, d in data["boxes"])
                found.append(PrivacyBoxes(float(data["at"]), (int(data["size"][0]), int(data["size"][1])), boxes))
            except (ValueError, KeyError, TypeError, IndexError):
                continue  # an unreadable entry: the frames it covered are blurred whole
        return sorted(found, key=lambda d: d.at)
