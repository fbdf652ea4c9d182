"""Incident webhooks, the moving part: the outbox's events become deliveries, deliveries are POSTed, failed
tries wait in a Redis schedule, and deliveries that run out of tries become dead letters.

The flow (``docs/WEBHOOKS.md`` explains the choices)::

    outbox:webhooks ──dispatch (beat, 1 s; one at a time)──► delivery hashes + webhooks:due (now)
    webhooks:due ──dispatch: due ones handed out──► deliver_webhook(delivery id) ──► POST
         ▲                                                   │ 2xx: done (hash deleted)
         └───────── 408/429/5xx/timeout: due again later ────┤
                                         last try, 4xx, denied: dlq:webhooks (capped)

Fan-out is one Redis transaction with the outbox trim (a crash leaves both or neither); a waiting retry
is a score in a sorted set, not a Celery countdown, because the broker redelivers any message held
unacknowledged past its visibility timeout (25 s) while back-off runs to many minutes.

Redis keys, all owned here: ``DUE``, ``delivery_key(id)``, ``DISPATCH_LOCK`` and ``DEAD_LETTERS``.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import redis

from infra import outbox
from infra.host_resolver import resolve_host
from infra.redis_lock import RELEASE
from infra.webhook_http import TryResult, post
from traffic import redis_keys
from traffic.settings import WebhookSettings
from traffic.url_policy import Resolver
from traffic.webhooks import (
    Outcome,
    check_target,
    event_body,
    record_ttl_s,
    request_headers,
    retry_delay,
    subscribers,
)
from traffic.wire import iso_timestamp
from workers.context import WorkerContext
from workers.metrics import record

log = logging.getLogger(__name__)

DUE = redis_keys.WEBHOOKS_DUE
DISPATCH_LOCK = redis_keys.WEBHOOKS_DISPATCH_LOCK
DEAD_LETTERS = redis_keys.WEBHOOKS_DLQ

BATCH = 200
"""Outbox events fanned out per transaction."""
MAX_EVENTS = 5000
"""Most outbox events one dispatch fans out (the rest wait a second)."""
MAX_HAND_OUT = 1000
"""Most due deliveries one dispatch hands out."""
LOCK_S = 30.0
CLAIM_S = 300.0
"""A delivery handed to a task and not heard of for this long is handed out again (its message was lost)."""
MESSAGE_EXPIRES_S = CLAIM_S / 2
"""A ``deliver_webhook`` message still queued this long is dropped unrun: by then it may have been handed out again."""
MAX_DEAD_LETTERS = 10_000

Send = Callable[[str, float], None]
"""Sends ``deliver_webhook(delivery_id)`` with its message expiring after the given seconds."""

_CLAIM_DUE = """
local ids = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('zadd', KEYS[1], ARGV[2], id) end
return ids
"""
"""Take the due deliveries and push each ``CLAIM_S`` ahead, atomically: two dispatches never hand one out twice."""
_START_TRY = """
if redis.call('exists', KEYS[1]) == 0 then return false end
redis.call('hincrby', KEYS[1], 'attempts', 1)
return redis.call('hgetall', KEYS[1])
"""
"""Count a try of a stored delivery and read it; nothing for one that is gone."""


delivery_key = redis_keys.webhook_delivery


@dataclass(frozen=True)
class Delivery:
    """One event on its way to one subscription."""

    delivery_id: str
    subscription: str
    event: str
    body: bytes
    created_at: float
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None

    def fields(self) -> dict[str, str | bytes]:
        """The Redis hash of a new delivery."""
        return {
            "subscription": self.subscription,
            "event": self.event,
            "body": self.body,
            "created": repr(self.created_at),
            "attempts": "0",
        }

    @classmethod
    def from_hash(cls, delivery_id: str, data: dict[bytes, bytes]) -> Delivery:
        """Inverse of ``fields`` (with the try count and the last answer)."""
        status = data.get(b"last_status")
        error = data.get(b"last_error")
        return cls(
            delivery_id,
            data[b"subscription"].decode(),
            data[b"event"].decode(),
            data[b"body"],
            float(data[b"created"]),
            int(data.get(b"attempts", b"0")),
            int(status) if status else None,
            error.decode() if error else None,
        )

    def dead_letter(self, failed_at: float) -> dict[str, Any]:
        """The dead-letter entry: everything but the target URL and the secret (the body is kept for replay)."""
        return {
            "id": self.delivery_id,
            "subscription": self.subscription,
            "event": self.event,
            "attempts": self.attempts,
            "lastStatus": self.last_status,
            "lastError": self.last_error,
            "createdAt": iso_timestamp(self.created_at),
            "failedAt": iso_timestamp(failed_at),
            "payload": json.loads(self.body),
        }


# --------------------------------------------------------------------------- dispatch


def dispatch(ctx: WorkerContext, send: Send, now: float | None = None) -> int:
    """Fan waiting outbox events out to their subscriptions, then hand every due delivery to ``send``;
    how many deliveries were handed out."""
    at = time.time() if now is None else now
    fan_out(ctx.redis, ctx.settings.webhooks, at)
    return hand_out(ctx.redis, send, at)


def fan_out(client: redis.Redis, settings: WebhookSettings, now: float) -> int:
    """One delivery per waiting event and matching subscription, due now; how many were made.

    Runs under ``DISPATCH_LOCK``; each batch is stored and dropped from the outbox in one transaction
    that fails if the lock was lost meanwhile, so an event is fanned out exactly once.
    """
    token = uuid.uuid4().hex
    if not client.set(DISPATCH_LOCK, token, nx=True, px=int(LOCK_S * 1000)):
        return 0  # another dispatch is fanning out
    made = read = 0
    try:
        while read < MAX_EVENTS:
            events = outbox.waiting(client, outbox.WEBHOOKS, BATCH)
            if not events:
                break
            deliveries = [
                _new_delivery(s.name, e.event, e.incident, e.at, now)
                for e in events
                if e is not None
                for s in subscribers(settings.subscriptions, e.event, e.incident)
            ]
            if not _commit(client, token, deliveries, len(events), record_ttl_s(settings, CLAIM_S), now):
                log.warning("webhook dispatch lost its lock; the next dispatch goes on")
                break
            made += len(deliveries)
            read += len(events)
            if len(events) < BATCH:
                break
    finally:
        client.eval(RELEASE, 1, DISPATCH_LOCK, token)
    return made


def _new_delivery(subscription: str, event: str, incident: dict[str, Any], at: float, now: float) -> Delivery:
    """A delivery of one event to one subscription, with a fresh id."""
    delivery_id = str(uuid.uuid4())
    return Delivery(delivery_id, subscription, event, event_body(delivery_id, event, incident, at), now)


def _commit(
    client: redis.Redis, token: str, deliveries: Sequence[Delivery], read: int, ttl_s: float, now: float
) -> bool:
    """Store ``deliveries`` as due now and drop the ``read`` events they came from, if the lock is still ours."""
    with client.pipeline() as pipe:
        try:
            pipe.watch(DISPATCH_LOCK)
            if pipe.get(DISPATCH_LOCK) != token.encode():
                return False
            pipe.multi()
            for delivery in deliveries:
                key = delivery_key(delivery.delivery_id)
                pipe.hset(key, mapping=delivery.fields())  # type: ignore[arg-type]
                pipe.expire(key, int(ttl_s))
            if deliveries:
                pipe.zadd(DUE, {d.delivery_id: now for d in deliveries})
            outbox.drop(pipe, outbox.WEBHOOKS, read)
            pipe.pexpire(DISPATCH_LOCK, int(LOCK_S * 1000))
            pipe.execute()
        except redis.WatchError:
            return False
    for delivery in deliveries:
        log.debug("webhook %s: delivery %s of %s made", delivery.subscription, delivery.delivery_id, delivery.event)
    return True


def hand_out(client: redis.Redis, send: Send, now: float) -> int:
    """Send a ``deliver_webhook`` task for every due delivery; how many were sent."""
    raw = client.eval(_CLAIM_DUE, 1, DUE, repr(now), repr(now + CLAIM_S), MAX_HAND_OUT)
    ids = [item.decode() if isinstance(item, bytes) else str(item) for item in raw or ()]
    for n, delivery_id in enumerate(ids):
        try:
            send(delivery_id, MESSAGE_EXPIRES_S)
        except Exception:
            client.zadd(DUE, dict.fromkeys(ids[n:], now))  # due again at the next dispatch
            raise
    return len(ids)


# --------------------------------------------------------------------------- delivery


def deliver(ctx: WorkerContext, delivery_id: str, *, resolve: Resolver = resolve_host) -> str:
    """One try of a delivery: POST it, then mark it done, due again later, or dead-lettered; the outcome
    (``delivered``, ``retry``, ``dead_letter``, or ``missing`` for a delivery no longer stored)."""
    client = ctx.redis
    raw = client.eval(_START_TRY, 1, delivery_key(delivery_id))
    try:
        delivery = Delivery.from_hash(delivery_id, dict(zip(raw[0::2], raw[1::2], strict=True))) if raw else None
    except (KeyError, ValueError):
        delivery = None  # a hash left half-written (it expired between a try and its result): unusable
    if delivery is None:
        client.delete(delivery_key(delivery_id))
        client.zrem(DUE, delivery_id)
        log.warning("webhook delivery %s is no longer stored (expired or done); nothing sent", delivery_id)
        return "missing"
    settings = ctx.settings.webhooks
    subscription = settings.subscription(delivery.subscription)
    if subscription is None:
        result = TryResult(error="unknown_subscription", outcome=Outcome.REFUSED)
    else:
        timestamp = int(time.time())
        headers = request_headers(
            subscription.secret,
            event=delivery.event,
            delivery_id=delivery_id,
            attempt=delivery.attempts,
            timestamp=timestamp,
            body=delivery.body,
        )
        guard = functools.partial(check_target, allowed_hosts=settings.allowed_hosts, resolve=resolve)
        result = post(subscription.url, delivery.body, headers, settings.timeout_s, guard)
    return _settle(client, settings, delivery, result)


def _settle(client: redis.Redis, settings: WebhookSettings, delivery: Delivery, result: TryResult) -> str:
    """Record a try's result: done, due again after its back-off, or dead-lettered."""
    name, delivery_id, attempt = delivery.subscription, delivery.delivery_id, delivery.attempts
    answer = f"HTTP {result.status}" if result.status is not None else result.error
    if result.outcome is Outcome.DELIVERED:
        pipe = client.pipeline()
        pipe.delete(delivery_key(delivery_id))
        pipe.zrem(DUE, delivery_id)
        pipe.execute()
        log.info("webhook %s: delivery %s delivered (%s, try %d)", name, delivery_id, answer, attempt)
        record("webhook", name, "delivered")
        return "delivered"
    delay = retry_delay(attempt, settings, result.retry_after) if result.outcome is Outcome.RETRY else None
    if delay is not None:
        pipe = client.pipeline()
        last = {"last_status": str(result.status or ""), "last_error": result.error or ""}
        pipe.hset(delivery_key(delivery_id), mapping=last)  # type: ignore[arg-type]
        pipe.zadd(DUE, {delivery_id: time.time() + delay})
        pipe.execute()
        log.warning(
            "webhook %s: delivery %s try %d failed (%s); next try in %.1f s", name, delivery_id, attempt, answer, delay
        )
        record("webhook", name, "retried")
        return "retry"
    push_dead_letter(client, replace(delivery, last_status=result.status, last_error=result.error))
    log.error("webhook %s: delivery %s dead-lettered at try %d (%s)", name, delivery_id, attempt, answer)
    record("webhook", name, "dead_lettered")
    return "dead_letter"


def load_delivery(client: redis.Redis, delivery_id: str) -> Delivery | None:
    """A stored delivery (None once it is done, dead-lettered or expired)."""
    data = client.hgetall(delivery_key(delivery_id))
    return Delivery.from_hash(delivery_id, data) if data else None  # type: ignore[arg-type]


def push_dead_letter(client: redis.Redis, delivery: Delivery) -> None:
    """Move a delivery that failed for good to ``DEAD_LETTERS`` (the oldest go beyond ``MAX_DEAD_LETTERS``)."""
    pipe = client.pipeline()
    pipe.rpush(DEAD_LETTERS, json.dumps(delivery.dead_letter(time.time()), ensure_ascii=False))
    pipe.ltrim(DEAD_LETTERS, -MAX_DEAD_LETTERS, -1)
    pipe.delete(delivery_key(delivery.delivery_id))
    pipe.zrem(DUE, delivery.delivery_id)
    pipe.execute()


def dead_letters(client: redis.Redis) -> list[dict[str, Any]]:
    """Every webhook dead letter, oldest first."""
    return [json.loads(raw) for raw in client.lrange(DEAD_LETTERS, 0, -1)]


def replay(client: redis.Redis, settings: WebhookSettings, delivery_id: str, now: float | None = None) -> bool:
    """Take a dead letter off the list and deliver it again from its first try, under the same delivery id
    (a receiver that did get it sees a duplicate it can drop); False when no such dead letter is there."""
    for item in client.lrange(DEAD_LETTERS, 0, -1):
        raw = item.decode() if isinstance(item, bytes) else str(item)
        letter = json.loads(raw)
        if letter.get("id") != delivery_id:
            continue
        if not client.lrem(DEAD_LETTERS, 1, raw):
            return False  # another replay took it
        body = json.dumps(letter["payload"], separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        at = time.time() if now is None else now
        delivery = Delivery(delivery_id, str(letter["subscription"]), str(letter["event"]), body, at)
        pipe = client.pipeline()
        pipe.hset(delivery_key(delivery_id), mapping=delivery.fields())  # type: ignore[arg-type]
        pipe.expire(delivery_key(delivery_id), int(record_ttl_s(settings, CLAIM_S)))
        pipe.zadd(DUE, {delivery_id: at})
        pipe.execute()
        log.info("webhook %s: delivery %s replayed from the dead letters", delivery.subscription, delivery_id)
        return True
    return False
