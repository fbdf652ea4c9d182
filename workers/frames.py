"""Redis storage of a frame's journey: image, detector record, crops, verdicts, pending set, final mark."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from traffic import keys
from traffic.analysis import FrameAnalysis
from traffic.codec import CodecError, analysis_from_json, analysis_to_json, verdict_from_json, verdict_to_json
from traffic.models import GroupVerdict

KEEP_AFTER_DEADLINE_S = 120.0
FINAL_CLAIM_S = 15.0
"""How long a finaliser holds a frame's claim before the sweeper may try again (publishing takes ms)."""
"""Frame records outlive the deadline this long, for late chords and the dead-letter replay."""

_SET_IF_NEWER = """
local current = redis.call('GET', KEYS[2])
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
return 1
"""


@dataclass(frozen=True)
class FrameMeta:
    """What the capture service recorded about a frame."""

    camera_id: str
    captured_at: float
    deadline: float


@dataclass(frozen=True)
class FrameRecord:
    """What the detector stage found and decided for a frame; everything later stages need."""

    frame_id: str
    camera_id: str
    wire_id: str | int
    captured_at: float
    deadline: float
    analysis: FrameAnalysis
    model_type: str
    supported_classes: tuple[str, ...]
    process_time_s: float
    assess: tuple[int, ...] = ()
    expected: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    skipped: str | None = None
    signatures: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "frameId": self.frame_id,
            "cameraId": self.camera_id,
            "wireId": self.wire_id,
            "capturedAt": self.captured_at,
            "deadline": self.deadline,
            "analysis": analysis_to_json(self.analysis),
            "modelType": self.model_type,
            "supportedClasses": list(self.supported_classes),
            "processTime": self.process_time_s,
            "assess": list(self.assess),
            "expected": list(self.expected),
            "dropped": list(self.dropped),
            "skipped": self.skipped,
            "signatures": {str(k): v for k, v in self.signatures.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FrameRecord:
        """Inverse of ``to_json``; raises CodecError on corrupt data."""
        try:
            return cls(
                frame_id=str(data["frameId"]),
                camera_id=str(data["cameraId"]),
                wire_id=data["wireId"],
                captured_at=float(data["capturedAt"]),
                deadline=float(data["deadline"]),
                analysis=analysis_from_json(data["analysis"]),
                model_type=str(data["modelType"]),
                supported_classes=tuple(str(c) for c in data["supportedClasses"]),
                process_time_s=float(data["processTime"]),
                assess=tuple(int(i) for i in data["assess"]),
                expected=tuple(int(i) for i in data["expected"]),
                dropped=tuple(int(i) for i in data["dropped"]),
                skipped=data["skipped"],
                signatures={int(k): str(v) for k, v in data["signatures"].items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"corrupt frame record: {exc}") from None


def as_text(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else value


def as_bytes(value: bytes | str) -> bytes:
    """A Redis reply as bytes."""
    return value.encode() if isinstance(value, str) else bytes(value)


class FrameStore:
    """Typed access to a frame's Redis keys."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client
        self._set_if_newer = client.register_script(_SET_IF_NEWER)

    def meta(self, frame_id: str) -> FrameMeta | None:
        """The capture-time metadata, or None once it expired."""
        raw = self._r.hgetall(keys.frame_meta(frame_id))
        if not raw:
            return None
        fields = {as_text(k): as_text(v) for k, v in raw.items()}
        return FrameMeta(fields["camera_id"], float(fields["captured_at"]), float(fields["deadline"]))

    def load_for_detection(self, frame_id: str) -> tuple[FrameMeta | None, bytes | None]:
        """Meta and JPEG in one round trip, stamping when the detector received the frame."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hgetall(keys.frame_meta(frame_id))
        pipe.get(keys.frame_image(frame_id))
        pipe.hset(keys.frame_timings(frame_id), "received", repr(time.time()))
        pipe.expire(keys.frame_timings(frame_id), 600)
        raw, data, _, _ = pipe.execute()
        meta = None
        if raw:
            fields = {as_text(k): as_text(v) for k, v in raw.items()}
            meta = FrameMeta(fields["camera_id"], float(fields["captured_at"]), float(fields["deadline"]))
        return meta, (as_bytes(data) if data is not None else None)

    def image(self, frame_id: str) -> bytes | None:
        """The frame's JPEG, or None once it expired."""
        data = self._r.get(keys.frame_image(frame_id))
        return as_bytes(data) if data is not None else None

    def save(
        self, record: FrameRecord, crops: dict[int, bytes], reused: Iterable[GroupVerdict], *, pending: bool = False
    ) -> None:
        """Store the detector record, crops and reused verdicts (and register a pending frame) at once."""
        ttl = _ttl_ms(record.deadline)
        pipe = self._r.pipeline(transaction=True)
        pipe.set(keys.frame_analysis(record.frame_id), json.dumps(record.to_json()), px=ttl)
        self._queue_crops(pipe, record.frame_id, crops, ttl)
        if pending:
            pipe.zadd(keys.FRAMES_PENDING, {record.frame_id: record.deadline})
        for verdict in reused:
            pipe.hset(
                keys.frame_verdicts(record.frame_id), str(verdict.group_index), json.dumps(verdict_to_json(verdict))
            )
        pipe.pexpire(keys.frame_verdicts(record.frame_id), ttl)
        pipe.execute()

    def save_crops(self, frame_id: str, crops: dict[int, bytes], deadline: float) -> None:
        """Store the JPEG crops of the groups to assess."""
        pipe = self._r.pipeline(transaction=False)
        self._queue_crops(pipe, frame_id, crops, _ttl_ms(deadline))
        pipe.execute()

    @staticmethod
    def _queue_crops(pipe: Any, frame_id: str, crops: dict[int, bytes], ttl_ms: int) -> None:
        """Queue the SETs of the crops."""
        for index, jpeg in crops.items():
            pipe.set(keys.group_crop(frame_id, index), jpeg, px=ttl_ms)

    def record(self, frame_id: str) -> FrameRecord | None:
        """The detector record, or None once it expired."""
        raw = self._r.get(keys.frame_analysis(frame_id))
        return FrameRecord.from_json(json.loads(raw)) if raw else None

    def crop(self, frame_id: str, group_index: int) -> bytes | None:
        """A group's JPEG crop, or None once it expired."""
        data = self._r.get(keys.group_crop(frame_id, group_index))
        return as_bytes(data) if data is not None else None

    def save_verdict(self, frame_id: str, verdict: GroupVerdict, deadline: float) -> None:
        """Record one group's verdict as soon as it exists (the sweeper reads these)."""
        name = keys.frame_verdicts(frame_id)
        pipe = self._r.pipeline(transaction=False)
        pipe.hset(name, str(verdict.group_index), json.dumps(verdict_to_json(verdict)))
        pipe.pexpire(name, _ttl_ms(deadline))
        self._stamp(pipe, frame_id, f"assessed:{verdict.group_index}", deadline)
        pipe.execute()

    def stamp(self, frame_id: str, stage: str, deadline: float, durations: dict[str, float] | None = None) -> None:
        """Record when a stage of the frame happened, plus named durations (latency figures, metrics)."""
        pipe = self._r.pipeline(transaction=False)
        self._stamp(pipe, frame_id, stage, deadline)
        if durations:
            pipe.hset(keys.frame_timings(frame_id), mapping={k: repr(v) for k, v in durations.items()})
        pipe.execute()

    def timings(self, frame_id: str) -> dict[str, float]:
        """Every recorded stage time of the frame."""
        return {as_text(k): float(as_text(v)) for k, v in self._r.hgetall(keys.frame_timings(frame_id)).items()}

    @staticmethod
    def _stamp(pipe: Any, frame_id: str, stage: str, deadline: float) -> None:
        """Queue the HSET of one stage time."""
        pipe.hset(keys.frame_timings(frame_id), stage, repr(time.time()))
        pipe.pexpire(keys.frame_timings(frame_id), _ttl_ms(deadline))

    def verdicts(self, frame_id: str) -> list[GroupVerdict]:
        """Every verdict recorded for the frame so far."""
        raw = self._r.hgetall(keys.frame_verdicts(frame_id))
        return [verdict_from_json(json.loads(v)) for v in raw.values()]

    def due(self, now: float, limit: int = 200) -> list[str]:
        """Pending frames whose deadline has passed."""
        members = self._r.zrangebyscore(keys.FRAMES_PENDING, "-inf", now, start=0, num=limit)
        return [as_text(m) for m in members if isinstance(m, bytes | str)]

    def claim_final(self, frame_id: str) -> bool:
        """True when the caller may finalise the frame: nobody has, nor is doing so now.

        The claim is a lease: a finaliser that dies (or loses Redis) before :meth:`confirm_final`
        leaves the frame pending, and once the lease lapses the deadline sweeper finalises it.
        """
        return bool(self._r.set(keys.frame_final(frame_id), "claimed", nx=True, px=int(FINAL_CLAIM_S * 1000)))

    def confirm_final(self, frame_id: str, deadline: float) -> None:
        """The frame's result is stored and sent: it is final for good and leaves the sweeper's set."""
        pipe = self._r.pipeline(transaction=True)
        pipe.set(keys.frame_final(frame_id), "1", px=_ttl_ms(deadline))
        pipe.zrem(keys.FRAMES_PENDING, frame_id)
        pipe.execute()

    def set_latest(self, camera_id: str, captured_at: float, payload: dict[str, Any], ttl_s: float) -> bool:
        """Store the camera's latest result unless a newer frame's result is already there."""
        stored = self._set_if_newer(
            keys=[keys.camera_latest(camera_id), keys.camera_latest_time(camera_id)],
            args=[repr(captured_at), json.dumps(payload), int(ttl_s * 1000)],
        )
        return bool(stored)

    def done_inflight(self, camera_id: str, frame_id: str) -> None:
        """The detector is done with the frame: it no longer counts against the camera's in-flight cap."""
        self._r.zrem(keys.camera_inflight(camera_id), frame_id)

    def count(self, camera_id: str, counter: str, amount: int = 1) -> None:
        """Bump one of the camera's counters."""
        self._r.hincrby(keys.camera_stats(camera_id), counter, amount)


def _ttl_ms(deadline: float) -> int:
    """Milliseconds from now until ``KEEP_AFTER_DEADLINE_S`` past the deadline (at least one minute)."""
    return max(60_000, int((deadline + KEEP_AFTER_DEADLINE_S - time.time()) * 1000))
