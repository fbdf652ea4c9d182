"""Each camera's traffic measures in Redis: line counts (per minute and running totals), recent motion events
and the latest snapshot; read back for the ``traffic_stats`` event and ``/api/cameras/<id>/stats``."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

from infra.frame_store import as_text
from traffic import redis_keys
from traffic.analytics import MotionEvent
from traffic.motion_wire import (
    RECENT_EVENTS,
    count_field,
    event_json,
    parse_count_field,
    stats_payload,
    sum_counts,
)

log = logging.getLogger(__name__)

SINCE_FIELD = "_since"
"""Field of the totals hash: when its counting began (epoch s)."""
EVENTS_KEPT = 500
"""Most motion events kept per camera (and returned by one REST call)."""
STALE_S = 10.0
"""A snapshot older than this shows no tracks and no near misses in progress (the camera went quiet)."""
EMIT_EVERY_MS = 1000
"""The least time between two ``traffic_stats`` events of one camera."""

_DUE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
end
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[2])
return 0
"""
"""KEYS: tick, owed set; ARGV: emit-every ms, camera id, time. 1: an event is due now; 0: one is owed."""

_TAKE_OWED = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then
  return 0
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
return 1
"""
"""KEYS: tick, owed set; ARGV: camera id, emit-every ms. 1: the owed event is this caller's to send now."""


class TrafficStats:
    """Records each frame's analytics and reads them back; one Redis round trip per frame."""

    def __init__(self, client: Any, *, retention_s: float = 86400.0) -> None:
        self._r = client
        self._retention_s = retention_s
        self._take_owed = client.register_script(_TAKE_OWED)

    def record(self, camera_id: str, snapshot: dict[str, Any], events: Sequence[MotionEvent], at: float) -> bool:
        """Store the frame's snapshot and events (crossings counted); True when a ``traffic_stats`` event is due.

        When one went out less than ``EMIT_EVERY_MS`` ago the camera is marked as owed one instead, which
        ``take_owed`` hands over once the interval is up: the last frames of a burst are always sent.
        """
        keep = max(60, int(self._retention_s))
        minute = int(at // 60)
        pipe = self._r.pipeline(transaction=False)
        crossings = [e for e in events if e.kind == "line_crossing"]
        if crossings:
            bucket, totals = redis_keys.camera_counts(camera_id, minute), redis_keys.camera_count_totals(camera_id)
            for event in crossings:
                field = count_field(event.where, event.direction, event.classes[0] if event.classes else "")
                pipe.hincrby(bucket, field, 1)
                pipe.hincrby(totals, field, 1)
            pipe.hsetnx(totals, SINCE_FIELD, repr(at))
            pipe.expire(bucket, keep + 120)
            pipe.expire(totals, keep)
            pipe.zadd(redis_keys.camera_count_minutes(camera_id), {str(minute): minute})
            pipe.zremrangebyscore(redis_keys.camera_count_minutes(camera_id), "-inf", (at - keep) // 60 - 1)
            pipe.expire(redis_keys.camera_count_minutes(camera_id), keep)
        if events:
            name = redis_keys.camera_motion_events(camera_id)
            pipe.zadd(name, {json.dumps(event_json(e), sort_keys=True): e.at for e in events})
            pipe.zremrangebyscore(name, "-inf", at - keep)
            pipe.zremrangebyrank(name, 0, -EVENTS_KEPT - 1)
            pipe.expire(name, keep)
        stored = {**snapshot, "_at": at}
        pipe.set(redis_keys.camera_motion(camera_id), json.dumps(stored), ex=keep)
        # EVAL, not the registered script: in a pipeline, redis-py asks SCRIPT EXISTS first (a round trip).
        pipe.eval(
            _DUE,
            2,
            redis_keys.camera_stats_tick(camera_id),
            redis_keys.MOTION_STATS_OWED,
            EMIT_EVERY_MS,
            camera_id,
            repr(at),
        )
        return bool(pipe.execute()[-1])

    def owed(self) -> list[str]:
        """The cameras owed a ``traffic_stats`` event (their last frames came within a second of the last one)."""
        return [as_text(c) for c in self._r.zrange(redis_keys.MOTION_STATS_OWED, 0, -1)]

    def take_owed(self, camera_id: str) -> bool:
        """True (once) when the camera's owed event is due now: its interval is up and no other caller took it."""
        keys = [redis_keys.camera_stats_tick(camera_id), redis_keys.MOTION_STATS_OWED]
        return bool(self._take_owed(keys=keys, args=[camera_id, EMIT_EVERY_MS]))

    def live(self, camera_id: str) -> dict[str, Any] | None:
        """The ``traffic_stats`` event: the latest snapshot, running totals and the newest events."""
        pipe = self._r.pipeline(transaction=False)
        pipe.get(redis_keys.camera_motion(camera_id))
        pipe.hgetall(redis_keys.camera_count_totals(camera_id))
        pipe.zrange(redis_keys.camera_motion_events(camera_id), -RECENT_EVENTS, -1)
        raw, totals, events = pipe.execute()
        snapshot = self._snapshot(camera_id, raw)
        if snapshot is None:
            return None
        fields = {as_text(k): as_text(v) for k, v in totals.items()}
        since = _float(fields.pop(SINCE_FIELD, None), default=snapshot.pop("_at"))
        return stats_payload(snapshot, sum_counts([_ints(fields)]), since, _events(events))

    def read(self, camera_id: str, wire_id: str | int, since: float | None) -> dict[str, Any] | None:
        """The camera's stats: counts since ``since`` (minute resolution; None: the running totals), the events
        since then (at most ``EVENTS_KEPT``), and the latest snapshot (no tracks once stale); None if none."""
        pipe = self._r.pipeline(transaction=False)
        pipe.get(redis_keys.camera_motion(camera_id))
        pipe.hgetall(redis_keys.camera_count_totals(camera_id))
        pipe.zrangebyscore(redis_keys.camera_motion_events(camera_id), since if since is not None else "-inf", "+inf")
        pipe.zrange(redis_keys.camera_count_minutes(camera_id), 0, -1)
        raw, totals, events, minutes = pipe.execute()
        snapshot = self._snapshot(camera_id, raw)
        if snapshot is None:
            return None
        at = snapshot.pop("_at")
        if at < _now(self._r) - STALE_S:
            snapshot["tracks"], snapshot["nearMisses"] = [], []
        fields = {as_text(k): as_text(v) for k, v in totals.items()}
        begun = _float(fields.pop(SINCE_FIELD, None), default=at)
        if since is None or since <= begun:
            counts = sum_counts([_ints(fields)])
            start = begun if since is None else since
        else:
            first = math.floor(since / 60)
            wanted = [int(m) for m in (as_text(x) for x in minutes) if m.lstrip("-").isdigit() and int(m) >= first]
            pipe = self._r.pipeline(transaction=False)
            for minute in wanted:
                pipe.hgetall(redis_keys.camera_counts(camera_id, minute))
            buckets = pipe.execute() if wanted else []
            counts = sum_counts([_ints({as_text(k): as_text(v) for k, v in b.items()}) for b in buckets])
            start = first * 60.0
        snapshot["cameraId"] = wire_id
        return stats_payload(snapshot, counts, start, _events(events[-EVENTS_KEPT:]))

    def forget(self, camera_id: str) -> None:
        """Drop the camera's snapshot, totals, events and owed event (per-minute buckets expire on their own)."""
        self._r.delete(
            redis_keys.camera_motion(camera_id),
            redis_keys.camera_count_totals(camera_id),
            redis_keys.camera_motion_events(camera_id),
            redis_keys.camera_count_minutes(camera_id),
        )
        self._r.zrem(redis_keys.MOTION_STATS_OWED, camera_id)

    @staticmethod
    def _snapshot(camera_id: str, raw: Any) -> dict[str, Any] | None:
        """The stored snapshot, or None when there is none or it is unreadable (logged)."""
        if raw is None:
            return None
        try:
            snapshot = json.loads(raw)
            if not isinstance(snapshot, dict) or not isinstance(snapshot.get("_at"), int | float):
                raise ValueError("not a snapshot")
        except ValueError as exc:
            log.warning("camera %s: unreadable motion snapshot: %s", camera_id, exc)
            return None
        return snapshot


def _events(raw: Sequence[Any]) -> list[dict[str, Any]]:
    """Decoded events, oldest first; unreadable entries skipped."""
    events = []
    for item in raw:
        try:
            data = json.loads(item)
        except ValueError:
            continue
        if isinstance(data, dict):
            events.append(data)
    return events


def _ints(fields: dict[str, str]) -> dict[str, int]:
    """Count fields with integer values (anything else skipped)."""
    out = {}
    for field, value in fields.items():
        if parse_count_field(field) is not None and value.lstrip("-").isdigit():
            out[field] = int(value)
    return out


def _float(value: str | None, *, default: float) -> float:
    """A stored float, or ``default``."""
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


def _now(client: Any) -> float:
    """Redis server time (epoch s): frames are stamped by capture hosts, whose clocks Redis arbitrates."""
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6
