"""Assessing one group inside a worker: key pool, vision model, rules fallback, typed outcomes.

Outcomes of a call on a leased key:
- 429 (``RateLimited``): the key cools (Retry-After, adaptive) and the group is tried at once on
  another key, within the same run, bounded by the frame's deadline and the task's time limit;
- ``KeyRejected`` (401/403/InvalidApiKey/Arrearage): the key is disabled cluster-wide, a
  ``key_alert`` goes to the alerts room, and the group is tried on another key;
- ``ProviderUnavailable`` (5xx, timeout): a ``Transient`` — the task retries with backoff;
- no key before the deadline: the rules assessor answers, labelled ``fallback:deadline``, or
  ``fallback:no_usable_key`` when every key is disabled.
A lease is always released before anything waits: a task waits for a key holding nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import redis

from infra.key_pool import Lease, NoKey
from traffic import redis_keys
from traffic.errors import BadModelReply, KeyRejected, ProviderError, ProviderUnavailable, RateLimited
from traffic.key_pool_rules import Outcome
from traffic.models import GroupContext, GroupVerdict
from traffic.risk import error_verdict
from workers.context import WorkerContext
from workers.metrics import record

log = logging.getLogger(__name__)

MIN_CALL_S = 1.0
"""Below this much time left, a provider call is not started."""
LEASE_SLACK_S = 2.0
"""A lease outlives the call's own time budget by this much (then it expires if its holder died)."""


@dataclass(frozen=True)
class Transient:
    """A provider error worth retrying later (5xx, timeout)."""

    reason: str
    wait_s: float | None = None


def _error_code(exc: ProviderError) -> str:
    """A short code for the pool's ``last_error``: the error class and status, never a message."""
    return f"{type(exc).__name__}:{exc.status}" if exc.status is not None else type(exc).__name__


def assess_with_pool(
    ctx: WorkerContext, context: GroupContext, crop: bytes, *, deadline: float, started: float
) -> GroupVerdict | Transient:
    """A verdict from the vision model via the key pool, the rules assessor, or a Transient to retry."""
    index = context.group.index
    llm, pool = ctx.llm, ctx.key_pool
    if llm is None or not pool.configured:
        return ctx.rules.assess(context)
    end = min(deadline, started + ctx.settings.pipeline.assess_time_limit_s)
    while True:
        budget = end - time.time()
        if budget < MIN_CALL_S:
            return _fallback(ctx, context, "deadline")
        try:
            got = pool.acquire(until=end - MIN_CALL_S, ttl_s=budget + LEASE_SLACK_S)
        except redis.RedisError as exc:
            log.warning("group %d: key pool unavailable: %s", index, exc)
            return Transient("key_pool_unavailable")
        if isinstance(got, NoKey):
            return _fallback(ctx, context, "no_usable_key" if got.retry_in_s is None else "deadline")
        lease: Lease = got
        call_started = time.perf_counter()
        timeout = max(0.1, min(end - time.time(), ctx.settings.llm.timeout_s))
        held = [lease]

        try:
            verdict = llm.assess(
                context,
                crop,
                api_key=lease.key.api_key,
                key_id=lease.key_id,
                timeout_s=timeout,
                repair_key=_repair_grant(ctx, held, call_started, end),
                on_sent=_stamp_sent(ctx, held),
            )
        except RateLimited as exc:
            _release_held(ctx, held, Outcome.RATE_LIMITED, retry_after_s=exc.retry_after, error=_error_code(exc))
            continue
        except KeyRejected as exc:
            rejected = _release_held(ctx, held, Outcome.REJECTED, error=_error_code(exc))
            if rejected is not None:
                _key_alert(ctx, rejected, _error_code(exc))
            continue
        except ProviderUnavailable as exc:
            _release_held(ctx, held, Outcome.UNAVAILABLE, error=_error_code(exc))
            log.info("group %d: provider unavailable with key %s: %s", index, lease.key_id, exc)
            return Transient("provider_unavailable")
        except BadModelReply as exc:
            _release_held(ctx, held, Outcome.FAILED, error=_error_code(exc))
            log.warning("group %d: unusable model reply after one repair: %s", index, exc)
            return error_verdict(index, "bad_model_reply", model=llm.model, latency_s=time.time() - started)
        except ProviderError as exc:
            _release_held(ctx, held, Outcome.FAILED, error=_error_code(exc))
            log.error("group %d: provider error %s: %s", index, exc.status, exc)
            return error_verdict(index, f"provider_error:{exc.status}", model=llm.model)
        except BaseException:
            _release_held(ctx, held, Outcome.CANCELLED)  # e.g. a time limit: never leave the slot taken
            raise
        latency = time.perf_counter() - call_started
        _release_held(ctx, held, Outcome.OK, latency_s=latency, tokens=verdict.usage.total_tokens or None)
        return verdict


def _repair_grant(ctx: WorkerContext, held: list[Lease], call_started: float, end: float) -> Callable[[], str | None]:
    """The repair turn's key, granted like any call: the first call's slot is released, a new one taken."""

    def grant() -> str | None:
        if held:
            _release(ctx, held.pop(), Outcome.OK, latency_s=time.perf_counter() - call_started)
        second = ctx.key_pool.acquire(until=end - MIN_CALL_S, ttl_s=max(1.0, end - time.time()) + LEASE_SLACK_S)
        if isinstance(second, NoKey):
            return None
        held.append(second)
        return second.key.api_key

    return grant


def _stamp_sent(ctx: WorkerContext, held: list[Lease]) -> Callable[[], None]:
    """The send stamp of the lease of the call in progress (a Redis failure: its release stamps it)."""

    def stamp() -> None:
        if not held:
            return
        try:
            ctx.key_pool.sent(held[-1])
        except redis.RedisError as exc:
            log.warning("key %s: send not stamped (%s); its release stamps it", held[-1].key_id, exc)

    return stamp


def _release_held(ctx: WorkerContext, held: list[Lease], outcome: Outcome, **details: Any) -> Lease | None:
    """Release the lease of the call in progress, if one is held; returns it."""
    if not held:
        return None
    lease = held.pop()
    _release(ctx, lease, outcome, **details)
    return lease


def _release(ctx: WorkerContext, lease: Lease, outcome: Outcome, **details: Any) -> None:
    """Give the lease back with the call's outcome; a Redis failure only costs the slot until its TTL."""
    if outcome is not Outcome.CANCELLED:
        record("llm_call", ctx.settings.llm.model, lease.key_id, outcome.value, details.get("latency_s"))
    try:
        ctx.key_pool.release(lease, outcome, **details)
    except redis.RedisError as exc:
        log.warning("key %s: lease not released (%s); it expires with its TTL", lease.key_id, exc)


def _key_alert(ctx: WorkerContext, lease: Lease, reason: str) -> None:
    """Tell operators (Socket.IO alerts room) that the provider rejected a key; ids only, never the secret."""
    payload = {"keyId": lease.key_id, "account": lease.key.account, "reason": reason, "action": "disabled"}
    ctx.emitter.emit(redis_keys.KEY_ALERT_EVENT, payload, room=redis_keys.ALERTS_ROOM)


def _fallback(ctx: WorkerContext, context: GroupContext, reason: str) -> GroupVerdict:
    """The rules assessor's verdict, labelled with why the vision model did not answer."""
    log.info("group %d: rules assessor answers (%s)", context.group.index, reason)
    return replace(ctx.rules.assess(context), error=f"fallback:{reason}")
