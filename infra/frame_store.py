"""Redis storage of a frame's journey: image, detector record, crops, verdicts, pending set, final mark."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from infra.celery_names import GPU_QUEUE
from traffic import redis_keys
from traffic.codec import verdict_from_json, verdict_to_json
from traffic.frame_record import FrameRecord
from traffic.models import GroupVerdict
from traffic.turn_timing import TurnForecast, forecast

KEEP_AFTER_DEADLINE_S = 120.0
"""Frame records outlive the deadline this long, for late chords and the dead-letter replay."""
FINAL_MARK = "1"
"""A frame's final mark once its result is stored and sent (a finaliser's claim reads ``claimed``)."""
FINAL_CLAIM_S = 15.0
"""How long a finaliser holds a frame's claim before the sweeper may try again (publishing takes ms)."""
META_GRACE_S = 60.0
"""Frame metadata outlives the frame's deadline by this much (for late finalisation)."""
LATEST_FRAME_TTL_S = 60
"""The camera's most recent JPEG (the REST snapshot) is kept this long."""
INPUT_REPLIES = 4
"""Replies of the reads of one frame's detection inputs (meta, JPEG, final mark, preview)."""

# The camera's waiting slot: ``origin`` names the frame its queued detector task was sent for, ``sent`` when,
# ``frame`` the newest frame waiting for that task (absent right after a worker re-queued the camera's turn),
# ``ticket`` the queue's turn count (KEYS[3], see ``_TAKE``) when the task will be taken: a task sent now
# joins the queue (KEYS[4]) at its end. The ticket and the turn clock come back with ``waiting``.
_OFFER = """
local now = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[5]))
local waiting = redis.call('HMGET', KEYS[1], 'frame', 'sent', 'ticket')
local previous = waiting[1]
if waiting[2] and now - tonumber(waiting[2]) < tonumber(ARGV[3]) then
  if previous then
    redis.call('ZREM', KEYS[2], previous)
  elseif redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
    return {'dropped_inflight', false}
  end
  redis.call('HSET', KEYS[1], 'frame', ARGV[1])
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  if waiting[3] then
    local clock = redis.call('HMGET', KEYS[3], 'count', 'last', 'pace', 'jitter', 'run')
    return {'waiting', previous or false, waiting[3], clock[1] or false, clock[2] or false, clock[3] or false,
      clock[4] or false, clock[5] or false}
  end
  return {'waiting', previous or false}
end
redis.call('DEL', KEYS[1])
if previous then
  redis.call('ZREM', KEYS[2], previous)
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return {'dropped_inflight', previous or false}
end
local ticket = (tonumber(redis.call('HGET', KEYS[3], 'count')) or 0) + redis.call('LLEN', KEYS[4]) + 1
redis.call('HSET', KEYS[1], 'frame', ARGV[1], 'origin', ARGV[1], 'sent', ARGV[2], 'ticket', ticket)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {'send', previous or false}
"""
# The detector task sent for frame ARGV[1] takes its camera's waiting frame (the newest); a redelivery of
# that task finds what the first delivery took; a task sent for a frame directly (no waiting slot) keeps it.
# While other tasks wait in the queue (KEYS[3]), the camera's next turn is queued at once (origin ARGV[3]),
# so cameras take turns in the order they were served, whatever the phase of their sampling. Every take
# ticks the queue's turn clock (KEYS[4]): ``count``, the ``last`` run of takes (a batch's takes share a
# time) and its length, the smoothed time per take (``pace``) and its miss (``jitter``); a re-queued turn
# gets the ticket its take will have (ahead of it: the rest of this batch of ARGV[7] takes, the queue, and
# the batch's turns re-queued before it), from which the capture service times the camera's samples.
_TAKE = """
local now, weight = tonumber(ARGV[4]), tonumber(ARGV[6])
local clock = redis.call('HMGET', KEYS[4], 'count', 'last', 'run', 'pace', 'jitter')
local count, last, run = (tonumber(clock[1]) or 0) + 1, tonumber(clock[2]), tonumber(clock[3]) or 1
local pace, jitter = tonumber(clock[4]), tonumber(clock[5])
redis.call('HSET', KEYS[4], 'count', count)
if last and now <= last then
  redis.call('HSET', KEYS[4], 'run', run + 1)
else
  redis.call('HSET', KEYS[4], 'last', ARGV[4], 'run', 1)
  if last then
    local gap = (now - last) / run
    if pace then
      gap = math.min(gap, 3 * pace)
      local miss = math.abs(gap - pace)
      jitter = jitter and jitter + weight * (miss - jitter) or miss
      pace = pace + weight * (gap - pace)
      redis.call('HSET', KEYS[4], 'pace', tostring(pace), 'jitter', tostring(jitter))
    else
      redis.call('HSET', KEYS[4], 'pace', tostring(gap))
    end
  end
end
redis.call('PEXPIRE', KEYS[4], ARGV[2])
local waiting = redis.call('HMGET', KEYS[1], 'frame', 'origin')
if waiting[2] == ARGV[1] then
  if not waiting[1] then
    redis.call('DEL', KEYS[1])
    return {false, 'none'}
  end
  redis.call('SET', KEYS[2], waiting[1], 'PX', ARGV[2])
  local queued = redis.call('LLEN', KEYS[3])
  if ARGV[5] == '1' or queued > 0 then
    redis.call('HDEL', KEYS[1], 'frame')
    redis.call('HSET', KEYS[1], 'origin', ARGV[3], 'sent', ARGV[4], 'ticket', count + queued + tonumber(ARGV[7]))
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {waiting[1], 'waiting', ARGV[3]}
  end
  redis.call('DEL', KEYS[1])
  return {waiting[1], 'waiting'}
end
local taken = redis.call('GET', KEYS[2])
if taken then return {taken, 'redelivered'} end
return {ARGV[1], 'own'}
"""
_WITHDRAW = """
local waiting = redis.call('HMGET', KEYS[1], 'origin', 'frame')
if waiting[1] == ARGV[1] then
  if waiting[2] then redis.call('ZREM', KEYS[2], waiting[2]) end
  redis.call('DEL', KEYS[1])
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'send_failed', 1)
"""

TURN_SMOOTHING = 0.25
"""Weight of the newest time between two turns (and of its miss) in the turn clock's pace (and jitter)."""

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
class CapturedFrame:
    """A sampled frame as the capture service hands it to the pipeline."""

    frame_id: str
    camera_id: str
    wire_id: str | int
    captured_at: float
    deadline: float
    width: int
    height: int
    jpeg: bytes
    preview: bytes
    """Empty when browsers must not see the raw frame (privacy blur on): the detector worker publishes a
    blurred preview instead (``publish_private``)."""


@dataclass(frozen=True)
class Offer:
    """What became of a frame offered to the detector (``FrameStore.offer``).

    ``outcome``: ``send`` (the caller sends a detector task for it), ``waiting`` (the camera's queued task
    will take it) or ``dropped_inflight`` (the camera has as many frames in flight as allowed).
    ``shed``: the waiting frame this one displaced, if any.
    """

    outcome: str
    shed: str | None = None
    turn: TurnForecast | None = None
    """With ``waiting``: how far the camera's queued turn is (None until the queue's turn clock has a pace,
    after two takes)."""


@dataclass(frozen=True)
class DetectionInputs:
    """What the detector loads for a taken frame: its capture metadata, JPEG and preview (None once expired),
    and whether the frame is final already (a task delivered again after its frame was finalised)."""

    meta: FrameMeta | None
    jpeg: bytes | None
    final: bool = False
    preview: bytes | None = None
    """The capture's preview, which the detector decodes instead of the frame where it is small enough."""


@dataclass(frozen=True)
class Taken:
    """What a detector task works on: ``frame_id`` (None: nothing newer waited), how it got it (``waiting``,
    ``redelivered``, ``own`` or ``none``), and the id to send the camera's next turn for, if one is due."""

    frame_id: str | None
    how: str
    next_turn: str | None = None


def _forecast(ticket: Any, clock: Sequence[Any]) -> TurnForecast | None:
    """A turn's forecast from its ticket and the queue's clock (``count``, ``last``, ``pace``, ``jitter``, ``run``)."""
    count, last, pace, jitter, run = clock
    if ticket is None or count is None or last is None or pace is None:
        return None
    return forecast(
        int(as_text(ticket)),
        int(as_text(count)),
        float(as_text(last)),
        float(as_text(pace)),
        float(as_text(jitter)) if jitter is not None else 0.0,
        int(as_text(run)) if run is not None else 1,
    )


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
        self._offer = client.register_script(_OFFER)
        self._withdraw = client.register_script(_WITHDRAW)

    def admit(self, frame: CapturedFrame, *, ttl_s: float, fps: float, timed: bool = False) -> None:
        """Store a captured frame: JPEG, preview, metadata, the camera's latest frame, counters (then ``offer`` it).
        ``timed``: the sample was timed to the camera's detector turn (counted as ``samples_timed``)."""
        camera_id = frame.camera_id
        meta = _meta(camera_id, frame.wire_id, frame.captured_at, frame.deadline)
        meta |= {"width": frame.width, "height": frame.height}
        pipe = self._r.pipeline(transaction=True)
        pipe.set(redis_keys.frame_image(frame.frame_id), frame.jpeg, px=int(ttl_s * 1000))
        if frame.preview:
            pipe.set(redis_keys.frame_preview(frame.frame_id), frame.preview, px=int(ttl_s * 1000))
            pipe.set(redis_keys.camera_latest_frame(camera_id), frame.jpeg, ex=LATEST_FRAME_TTL_S)
        pipe.hset(redis_keys.frame_meta(frame.frame_id), mapping=meta)
        pipe.pexpireat(redis_keys.frame_meta(frame.frame_id), int((frame.deadline + META_GRACE_S) * 1000))
        pipe.hincrby(redis_keys.camera_stats(camera_id), "captured", 1)
        if timed:
            pipe.hincrby(redis_keys.camera_stats(camera_id), "samples_timed", 1)
        pipe.hset(redis_keys.camera_stats(camera_id), redis_keys.CAMERA_FPS_FIELD, repr(fps))
        pipe.execute()

    def publish_private(self, frame_id: str, camera_id: str, preview: bytes, jpeg: bytes, *, ttl_s: float) -> None:
        """With privacy blur on: the detected frame's blurred preview and full JPEG become what browsers get
        (``/api/frames/<id>/preview.jpg`` and the camera's latest frame)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.set(redis_keys.frame_preview(frame_id), preview, px=int(ttl_s * 1000))
        pipe.set(redis_keys.camera_latest_frame(camera_id), jpeg, ex=LATEST_FRAME_TTL_S)
        pipe.execute()

    def offer(
        self, frame: CapturedFrame, *, max_in_flight: int, task_lost_after_s: float, queue: str = GPU_QUEUE
    ) -> Offer:
        """Make an admitted frame its camera's waiting frame: the newest frame replaces a waiting one, never queues.

        A camera has at most one detector task waiting; a frame arriving while it waits takes the waiting
        frame's place (which is shed, counted as ``dropped_superseded``), so the task, when a worker starts
        it, works on the newest frame, and every camera gets its turn in the queue. A waiting task sent
        longer than ``task_lost_after_s`` ago is taken as lost (Redis lost it, or it expired), and a new one is
        sent. ``max_in_flight`` caps the camera's frames waiting for or inside the detector.
        """
        camera_id = frame.camera_id
        keep_s = round(frame.deadline - frame.captured_at + META_GRACE_S)
        reply = self._offer(
            keys=[
                redis_keys.camera_waiting(camera_id),
                redis_keys.camera_inflight(camera_id),
                redis_keys.turn_clock(queue),
                queue,
            ],
            args=[
                frame.frame_id,
                repr(time.time()),
                repr(task_lost_after_s),
                max_in_flight,
                repr(frame.deadline - frame.captured_at),
                keep_s,
            ],
        )
        outcome, shed = as_text(reply[0]), reply[1]
        turn = _forecast(reply[2], reply[3:]) if len(reply) > 2 else None
        offer = Offer(outcome, as_text(shed) if shed is not None else None, turn)
        pipe = self._r.pipeline(transaction=False)
        if offer.shed is not None:
            pipe.hincrby(redis_keys.camera_stats(camera_id), "dropped_superseded", 1)
            pipe.delete(*_frame_input_keys(offer.shed))
        if outcome == "dropped_inflight":
            pipe.hincrby(redis_keys.camera_stats(camera_id), "dropped_inflight", 1)
            pipe.delete(*_frame_input_keys(frame.frame_id))
        if len(pipe):
            pipe.execute()
        return offer

    def take(
        self, camera_id: str, frame_id: str, *, keep_s: float, queue: str, next_turn: str, contended: bool = False
    ) -> Taken:
        """The frame the detector task sent for ``frame_id`` works on (see ``offer``); redeliveries get the same.

        When other tasks wait in ``queue``, or the caller says the detector is ``contended`` (its batch holds
        other cameras' tasks, taken off the queue already), the camera's next turn is queued at once under
        the id ``next_turn`` (the caller sends that task, ``Taken.next_turn``), so that cameras are served in turn.
        """
        (taken,) = self.take_many([(camera_id, frame_id, next_turn)], keep_s=keep_s, queue=queue, contended=contended)
        return taken

    def take_many(
        self, turns: Sequence[tuple[str, str, str]], *, keep_s: float, queue: str, contended: bool = False
    ) -> list[Taken]:
        """:meth:`take` for each (camera id, frame id, next turn id) of a batch, in order, in one round trip."""
        if not turns:
            return []
        pipe = self._r.pipeline(transaction=False)
        self._queue_takes(pipe, turns, keep_s, queue, contended)
        return [self._taken(reply) for reply in pipe.execute()]

    @staticmethod
    def _queue_takes(
        pipe: Any, turns: Sequence[tuple[str, str, str]], keep_s: float, queue: str, contended: bool
    ) -> None:
        """Queue one take script per (camera id, frame id, next turn id), in order."""
        now, keep_ms = repr(time.time()), max(1000, int(keep_s * 1000))
        for camera_id, frame_id, next_turn in turns:
            # EVAL, not the registered script: in a pipeline, redis-py asks SCRIPT EXISTS first (a round trip).
            pipe.eval(
                _TAKE,
                4,
                redis_keys.camera_waiting(camera_id),
                redis_keys.frame_taken(frame_id),
                queue,
                redis_keys.turn_clock(queue),
                frame_id,
                keep_ms,
                next_turn,
                now,
                "1" if contended else "0",
                TURN_SMOOTHING,
                len(turns),
            )

    @staticmethod
    def _taken(reply: Sequence[Any]) -> Taken:
        """One take script's reply."""
        frame = as_text(reply[0]) if reply[0] is not None else None
        return Taken(frame, as_text(reply[1]), as_text(reply[2]) if len(reply) > 2 else None)

    @staticmethod
    def _queue_inputs(pipe: Any, frame_id: str) -> None:
        """Queue the reads of a frame's detection inputs (``INPUT_REPLIES`` replies, ``_inputs``)."""
        pipe.hgetall(redis_keys.frame_meta(frame_id))
        pipe.get(redis_keys.frame_image(frame_id))
        pipe.get(redis_keys.frame_final(frame_id))
        pipe.get(redis_keys.frame_preview(frame_id))

    @staticmethod
    def _inputs(raw: Any, data: Any, final: Any, preview: Any) -> DetectionInputs:
        """A frame's detection inputs from the replies of ``_queue_inputs``."""
        meta = None
        if raw:
            fields = {as_text(k): as_text(v) for k, v in raw.items()}
            meta = FrameMeta(fields["camera_id"], float(fields["captured_at"]), float(fields["deadline"]))
        image = as_bytes(data) if data is not None else None
        small = as_bytes(preview) if preview is not None else None
        return DetectionInputs(meta, image, final is not None and as_text(final) == FINAL_MARK, small)

    def take_and_load(
        self, turns: Sequence[tuple[str, str, str]], *, keep_s: float, queue: str, contended: bool = False
    ) -> list[tuple[Taken, DetectionInputs | None]]:
        """:meth:`take_many`, and each taken frame's inputs (None when nothing was taken), in one round trip
        when each task takes the frame it was sent for (a system keeping up), else in two.

        The frame a task names is read with its take; a task that takes another frame (its camera's newer
        frame, a turn's) has that one read after. Nothing is stamped: the caller stamps ``received``.
        """
        if not turns:
            return []
        pipe = self._r.pipeline(transaction=False)
        self._queue_takes(pipe, turns, keep_s, queue, contended)
        for _, frame_id, _ in turns:
            self._queue_inputs(pipe, frame_id)
        replies = pipe.execute()
        taken = [self._taken(reply) for reply in replies[: len(turns)]]
        inputs: list[DetectionInputs | None] = []
        again: list[int] = []
        for i, ((_, frame_id, _), t) in enumerate(zip(turns, taken, strict=True)):
            if t.frame_id == frame_id:
                at = len(turns) + INPUT_REPLIES * i
                inputs.append(self._inputs(*replies[at : at + INPUT_REPLIES]))
            else:
                inputs.append(None)
                if t.frame_id is not None:
                    again.append(i)
        if again:
            for i, loaded in zip(again, self._load_inputs([taken[i].frame_id or "" for i in again]), strict=True):
                inputs[i] = loaded
        return list(zip(taken, inputs, strict=True))

    @staticmethod
    def stamp_received(pipe: Any, received: Mapping[str, float]) -> None:
        """Queue on ``pipe`` the ``received`` stamp of each frame (frame id → when the detector took it)."""
        for frame_id, at in received.items():
            pipe.hset(redis_keys.frame_timings(frame_id), "received", repr(at))
            pipe.expire(redis_keys.frame_timings(frame_id), 600)

    def turn(self, camera_id: str, queue: str = GPU_QUEUE) -> TurnForecast | None:
        """How far the camera's re-queued detector turn is now (None: no turn re-queued, or no pace yet)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hget(redis_keys.camera_waiting(camera_id), "ticket")
        pipe.hmget(redis_keys.turn_clock(queue), "count", "last", "pace", "jitter", "run")
        ticket, clock = pipe.execute()
        return _forecast(ticket, clock)

    def has_room(self, camera_id: str, max_in_flight: int, max_age_s: float) -> bool:
        """Whether a new frame of the camera would be taken (a cheap check before encoding it; ``offer`` decides)."""
        inflight = redis_keys.camera_inflight(camera_id)
        pipe = self._r.pipeline(transaction=False)
        pipe.zremrangebyscore(inflight, "-inf", time.time() - max_age_s)
        pipe.zcard(inflight)
        pipe.exists(redis_keys.camera_waiting(camera_id))
        _, count, waiting = pipe.execute()
        return bool(waiting) or int(count) < max_in_flight

    def put(
        self, frame_id: str, camera_id: str, jpeg: bytes, *, captured_at: float, deadline: float, preview: bytes = b""
    ) -> None:
        """Store a frame's JPEG, preview (if any) and metadata only (no in-flight slot, latest frame or
        counters): test input."""
        meta = _meta(camera_id, camera_id, captured_at, deadline)
        pipe = self._r.pipeline()
        pipe.set(redis_keys.frame_image(frame_id), jpeg, ex=120)
        if preview:
            pipe.set(redis_keys.frame_preview(frame_id), preview, ex=120)
        pipe.hset(redis_keys.frame_meta(frame_id), mapping=meta)
        pipe.expire(redis_keys.frame_meta(frame_id), 300)
        pipe.execute()

    def withdraw(self, camera_id: str, frame_id: str) -> None:
        """The frame's detector task could not be sent: its waiting and in-flight slots are free again; counted."""
        self._withdraw(
            keys=[
                redis_keys.camera_waiting(camera_id),
                redis_keys.camera_inflight(camera_id),
                redis_keys.camera_stats(camera_id),
            ],
            args=[frame_id],
        )

    def meta(self, frame_id: str) -> FrameMeta | None:
        """The capture-time metadata, or None once it expired."""
        raw = self._r.hgetall(redis_keys.frame_meta(frame_id))
        if not raw:
            return None
        fields = {as_text(k): as_text(v) for k, v in raw.items()}
        return FrameMeta(fields["camera_id"], float(fields["captured_at"]), float(fields["deadline"]))

    def load_many_for_detection(self, frame_ids: Sequence[str]) -> list[DetectionInputs]:
        """Each frame's meta, JPEG and final mark, in order, in one round trip, stamping when the detector
        received them."""
        return self._load_inputs(frame_ids, received_at=time.time())

    def _load_inputs(self, frame_ids: Sequence[str], received_at: float | None = None) -> list[DetectionInputs]:
        """Each frame's detection inputs in one round trip (and its ``received`` stamp, when given)."""
        if not frame_ids:
            return []
        pipe = self._r.pipeline(transaction=False)
        for frame_id in frame_ids:
            self._queue_inputs(pipe, frame_id)
        if received_at is not None:
            self.stamp_received(pipe, dict.fromkeys(frame_ids, received_at))
        replies = pipe.execute()
        return [self._inputs(*replies[INPUT_REPLIES * i : INPUT_REPLIES * (i + 1)]) for i in range(len(frame_ids))]

    def keep_image_until(self, frame_id: str, until: float) -> None:
        """Keep the frame's JPEG until ``until`` (epoch s) at least: a frame waiting for the model may raise an
        alert, whose snapshot is drawn on it, later than the capture TTL."""
        self.queue_keep_image(self._r, frame_id, until)

    @staticmethod
    def queue_keep_image(pipe: Any, frame_id: str, until: float) -> None:
        """:meth:`keep_image_until`, queued on ``pipe`` (or run, given a client)."""
        pipe.eval(_EXTEND_TO, 1, redis_keys.frame_image(frame_id), int(until * 1000))

    def image(self, frame_id: str) -> bytes | None:
        """The frame's JPEG, or None once it expired."""
        data = self._r.get(redis_keys.frame_image(frame_id))
        return as_bytes(data) if data is not None else None

    def save(
        self,
        record: FrameRecord,
        crops: dict[int, bytes],
        reused: Iterable[GroupVerdict],
        *,
        pending: bool = False,
        also: Callable[[Any], None] | None = None,
    ) -> None:
        """Store the detector record, crops and reused verdicts (and register a pending frame) at once; ``also``
        queues the caller's own writes in the same transaction."""
        pipe = self._r.pipeline(transaction=True)
        if also is not None:
            also(pipe)
        self._queue_record(pipe, record, crops, reused, pending=pending)
        pipe.execute()

    def save_detected(
        self,
        record: FrameRecord,
        reused: Iterable[GroupVerdict],
        durations: dict[str, float],
        *,
        also: Callable[[Any], None] | None = None,
    ) -> list[GroupVerdict] | None:
        """A frame the detector finalises itself, in one transaction: :meth:`save` (nothing pending, ``also``),
        :meth:`detected`, and :meth:`claim_final_with_verdicts` (None: finalised already, a redelivery)."""
        frame_id = record.frame_id
        pipe = self._r.pipeline(transaction=True)
        if also is not None:
            also(pipe)
        self._queue_record(pipe, record, {}, reused, pending=False)
        self._queue_detected(pipe, record.camera_id, frame_id, record.deadline, durations)
        _queue_claim(pipe, frame_id)
        pipe.hgetall(redis_keys.frame_verdicts(frame_id))
        *_, claimed, raw = pipe.execute()
        if not claimed:
            return None
        return [verdict_from_json(json.loads(v)) for v in raw.values()]

    def _queue_record(
        self, pipe: Any, record: FrameRecord, crops: dict[int, bytes], reused: Iterable[GroupVerdict], *, pending: bool
    ) -> None:
        """Queue the writes of :meth:`save`."""
        ttl = _ttl_ms(record.deadline)
        pipe.set(redis_keys.frame_analysis(record.frame_id), json.dumps(record.to_json()), px=ttl)
        self._queue_crops(pipe, record.frame_id, crops, ttl)
        if pending:
            pipe.zadd(redis_keys.FRAMES_PENDING, {record.frame_id: record.deadline})
        for verdict in reused:
            pipe.hset(
                redis_keys.frame_verdicts(record.frame_id),
                str(verdict.group_index),
                json.dumps(verdict_to_json(verdict)),
            )
        pipe.pexpire(redis_keys.frame_verdicts(record.frame_id), ttl)

    def save_crops(self, frame_id: str, crops: dict[int, bytes], deadline: float) -> None:
        """Store the JPEG crops of the groups to assess."""
        pipe = self._r.pipeline(transaction=False)
        self._queue_crops(pipe, frame_id, crops, _ttl_ms(deadline))
        pipe.execute()

    @staticmethod
    def _queue_crops(pipe: Any, frame_id: str, crops: dict[int, bytes], ttl_ms: int) -> None:
        """Queue the SETs of the crops."""
        for index, jpeg in crops.items():
            pipe.set(redis_keys.group_crop(frame_id, index), jpeg, px=ttl_ms)

    def record(self, frame_id: str) -> FrameRecord | None:
        """The detector record, or None once it expired."""
        raw = self._r.get(redis_keys.frame_analysis(frame_id))
        return FrameRecord.from_json(json.loads(raw)) if raw else None

    def record_json(self, frame_id: str) -> bytes | None:
        """The detector record as stored (JSON bytes), or None once it expired."""
        raw = self._r.get(redis_keys.frame_analysis(frame_id))
        return as_bytes(raw) if raw is not None else None

    def crop(self, frame_id: str, group_index: int) -> bytes | None:
        """A group's JPEG crop, or None once it expired."""
        data = self._r.get(redis_keys.group_crop(frame_id, group_index))
        return as_bytes(data) if data is not None else None

    def save_verdict(self, frame_id: str, verdict: GroupVerdict, deadline: float) -> None:
        """Record one group's verdict as soon as it exists (the sweeper reads these)."""
        name = redis_keys.frame_verdicts(frame_id)
        pipe = self._r.pipeline(transaction=False)
        pipe.hset(name, str(verdict.group_index), json.dumps(verdict_to_json(verdict)))
        pipe.pexpire(name, _ttl_ms(deadline))
        self._stamp(pipe, frame_id, f"assessed:{verdict.group_index}", deadline)
        pipe.execute()

    def detected(self, camera_id: str, frame_id: str, deadline: float, durations: dict[str, float]) -> None:
        """The detector is done with the frame, in one round trip: the ``detected`` stamp and its durations,
        the camera's ``detected`` counter, and the frame off the camera's in-flight cap."""
        pipe = self._r.pipeline(transaction=False)
        self._queue_detected(pipe, camera_id, frame_id, deadline, durations)
        pipe.execute()

    def _queue_detected(
        self, pipe: Any, camera_id: str, frame_id: str, deadline: float, durations: dict[str, float]
    ) -> None:
        """Queue the writes of :meth:`detected`."""
        self._stamp(pipe, frame_id, "detected", deadline)
        pipe.hset(redis_keys.frame_timings(frame_id), mapping={k: repr(v) for k, v in durations.items()})
        pipe.hincrby(redis_keys.camera_stats(camera_id), "detected", 1)
        pipe.zrem(redis_keys.camera_inflight(camera_id), frame_id)

    def timings(self, frame_id: str) -> dict[str, float]:
        """Every recorded stage time of the frame."""
        return {as_text(k): float(as_text(v)) for k, v in self._r.hgetall(redis_keys.frame_timings(frame_id)).items()}

    @staticmethod
    def _stamp(pipe: Any, frame_id: str, stage: str, deadline: float) -> None:
        """Queue the HSET of one stage time."""
        pipe.hset(redis_keys.frame_timings(frame_id), stage, repr(time.time()))
        pipe.pexpire(redis_keys.frame_timings(frame_id), _ttl_ms(deadline))

    def verdicts(self, frame_id: str) -> list[GroupVerdict]:
        """Every verdict recorded for the frame so far."""
        raw = self._r.hgetall(redis_keys.frame_verdicts(frame_id))
        return [verdict_from_json(json.loads(v)) for v in raw.values()]

    def due(self, now: float, limit: int = 200) -> list[str]:
        """Pending frames whose deadline has passed."""
        members = self._r.zrangebyscore(redis_keys.FRAMES_PENDING, "-inf", now, start=0, num=limit)
        return [as_text(m) for m in members if isinstance(m, bytes | str)]

    def claim_final_with_verdicts(self, frame_id: str) -> list[GroupVerdict] | None:
        """The frame's verdicts so far when the caller may finalise it (nobody has, nor is doing so now), in
        one round trip; None when it may not.

        The claim is a lease: a finaliser that dies (or loses Redis) before :meth:`confirm_final`
        leaves the frame pending, and once the lease lapses the deadline sweeper finalises it. A frame final
        for good leaves the sweeper's set here too: a detector task delivered again after the frame was
        finalised may have put it back.
        """
        pipe = self._r.pipeline(transaction=False)
        _queue_claim(pipe, frame_id)
        pipe.get(redis_keys.frame_final(frame_id))
        pipe.hgetall(redis_keys.frame_verdicts(frame_id))
        claimed, mark, raw = pipe.execute()
        if not claimed:
            if mark is not None and as_text(mark) == FINAL_MARK:
                self._r.zrem(redis_keys.FRAMES_PENDING, frame_id)
            return None
        return [verdict_from_json(json.loads(v)) for v in raw.values()]

    def store_final(
        self,
        camera_id: str,
        frame_id: str,
        captured_at: float,
        deadline: float,
        payload: dict[str, Any],
        *,
        ttl_s: float,
        counter: str,
        read_hashes: Sequence[str] = (),
        also: Callable[[Any], None] | None = None,
    ) -> tuple[bool, list[dict[Any, Any]]]:
        """A final result in one round trip: the camera's latest result unless a newer frame's result is
        already there (whether it was stored comes back first), the ``final`` stamp, the camera's
        ``counter``; ``also`` queues the caller's own commands after those (the result's broadcast); and the
        hashes named in ``read_hashes``, read alongside (the camera's alerts)."""
        pipe = self._r.pipeline(transaction=False)
        # EVAL, not the registered script: in a pipeline, redis-py asks SCRIPT EXISTS first (a round trip).
        pipe.eval(
            _SET_IF_NEWER,
            2,
            redis_keys.camera_latest(camera_id),
            redis_keys.camera_latest_time(camera_id),
            repr(captured_at),
            json.dumps(payload),
            int(ttl_s * 1000),
        )
        self._stamp(pipe, frame_id, "final", deadline)
        pipe.hincrby(redis_keys.camera_stats(camera_id), counter, 1)
        if also is not None:
            also(pipe)
        writes = len(pipe)
        for name in read_hashes:
            pipe.hgetall(name)
        replies = pipe.execute()
        return bool(replies[0]), list(replies[writes:])

    def confirm_final(self, frame_id: str, deadline: float) -> None:
        """The frame's result is stored and sent: it is final for good and leaves the sweeper's set."""
        pipe = self._r.pipeline(transaction=True)
        pipe.set(redis_keys.frame_final(frame_id), FINAL_MARK, px=_ttl_ms(deadline))
        pipe.zrem(redis_keys.FRAMES_PENDING, frame_id)
        pipe.execute()

    def done_inflight(self, camera_id: str, frame_id: str) -> None:
        """The detector is done with the frame: it no longer counts against the camera's in-flight cap."""
        self._r.zrem(redis_keys.camera_inflight(camera_id), frame_id)

    def count(self, camera_id: str, counter: str, amount: int = 1) -> None:
        """Bump one of the camera's counters."""
        self._r.hincrby(redis_keys.camera_stats(camera_id), counter, amount)


def _queue_claim(pipe: Any, frame_id: str) -> None:
    """Queue the claim on finalising the frame (``SET NX`` of its final mark, a lease of ``FINAL_CLAIM_S``)."""
    pipe.set(redis_keys.frame_final(frame_id), "claimed", nx=True, px=int(FINAL_CLAIM_S * 1000))


def _meta(camera_id: str, wire_id: str | int, captured_at: float, deadline: float) -> dict[FieldT, EncodableT]:
    """The frame metadata hash's fields (``FrameMeta`` reads them back)."""
    return {
        "camera_id": camera_id,
        "wire_id": json.dumps(wire_id),
        "captured_at": repr(captured_at),
        "deadline": repr(deadline),
    }


_EXTEND_TO = """
local ttl = redis.call('PTTL', KEYS[1])
local now = redis.call('TIME')
if ttl > 0 and tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + ttl < tonumber(ARGV[1]) then
  redis.call('PEXPIREAT', KEYS[1], ARGV[1])
end
"""
"""Push a key's expiry out to ``ARGV[1]`` (epoch ms), never in (``PEXPIREAT … GT`` and ``PEXPIRETIME``
need Redis 7; the stack supports 6.2)."""


def _frame_input_keys(frame_id: str) -> list[str]:
    """The keys ``admit`` writes for one frame (deleted when the frame is shed before detection)."""
    return [redis_keys.frame_image(frame_id), redis_keys.frame_preview(frame_id), redis_keys.frame_meta(frame_id)]


def _ttl_ms(deadline: float) -> int:
    """Milliseconds from now until ``KEEP_AFTER_DEADLINE_S`` past the deadline (at least one minute)."""
    return max(60_000, int((deadline + KEEP_AFTER_DEADLINE_S - time.time()) * 1000))
