"""The dead-letter list of group assessments that exhausted their retries, with their saved inputs."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from infra.frame_store import FrameStore, as_bytes, as_text
from traffic import redis_keys
from traffic.frame_record import FrameRecord

log = logging.getLogger(__name__)

KEEP_S = 7 * 24 * 3600
"""Saved inputs of a dead letter are kept this long."""


@dataclass(frozen=True)
class DeadLetter:
    """One failed assessment with references to its saved inputs."""

    entry_id: str
    camera_id: str
    frame_id: str
    group_index: int
    reason: str
    failed_at: float

    def to_json(self) -> dict[str, Any]:
        """JSON form (no images, no secrets)."""
        return {
            "id": self.entry_id,
            "cameraId": self.camera_id,
            "frameId": self.frame_id,
            "groupIndex": self.group_index,
            "reason": self.reason,
            "failedAt": self.failed_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeadLetter:
        """Inverse of ``to_json``."""
        return cls(
            str(data["id"]),
            str(data["cameraId"]),
            str(data["frameId"]),
            int(data["groupIndex"]),
            str(data["reason"]),
            float(data["failedAt"]),
        )


class DeadLetters:
    """The list ``redis_keys.DLQ`` plus saved crops and frame records."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client

    def push(
        self, camera_id: str, frame_id: str, group_index: int, deadline: float, reason: str, store: FrameStore
    ) -> None:
        """Record a failed assessment and keep its inputs for replay."""
        entry = DeadLetter(uuid.uuid4().hex[:16], camera_id, frame_id, group_index, reason, time.time())
        crop = store.crop(frame_id, group_index)
        record = store.record_json(frame_id)
        pipe = self._r.pipeline()
        if crop is not None:
            pipe.set(redis_keys.dead_letter_input(entry.entry_id, "crop"), crop, ex=KEEP_S)
        if record is not None:
            pipe.set(redis_keys.dead_letter_input(entry.entry_id, "record"), record, ex=KEEP_S)
        pipe.rpush(redis_keys.DLQ, json.dumps(entry.to_json()))
        pipe.execute()
        log.warning("group %d of frame %s dead-lettered (%s) as %s", group_index, frame_id, reason, entry.entry_id)

    def list(self) -> list[DeadLetter]:
        """Every entry, oldest first."""
        return [DeadLetter.from_json(json.loads(raw)) for raw in self._r.lrange(redis_keys.DLQ, 0, -1)]

    def take(self, entry_id: str) -> DeadLetter | None:
        """Remove one entry from the list and return it."""
        for raw in self._r.lrange(redis_keys.DLQ, 0, -1):
            entry = DeadLetter.from_json(json.loads(raw))
            if entry.entry_id == entry_id and self._r.lrem(redis_keys.DLQ, 1, as_text(raw)):
                return entry
        return None

    def put_back(self, entry: DeadLetter) -> None:
        """Return an entry to the list (its replay could not be started)."""
        self._r.rpush(redis_keys.DLQ, json.dumps(entry.to_json()))

    def inputs(self, entry_id: str) -> tuple[bytes | None, FrameRecord | None]:
        """The saved crop and frame record of an entry."""
        crop = self._r.get(redis_keys.dead_letter_input(entry_id, "crop"))
        raw = self._r.get(redis_keys.dead_letter_input(entry_id, "record"))
        record = FrameRecord.from_json(json.loads(raw)) if raw else None
        return (as_bytes(crop) if crop is not None else None), record

    def forget_inputs(self, entry_id: str) -> None:
        """Delete an entry's saved inputs after a successful replay."""
        self._r.delete(redis_keys.dead_letter_input(entry_id, "crop"), redis_keys.dead_letter_input(entry_id, "record"))
