"""Assessing one group inside a worker: key pool, vision model, rules fallback, typed outcomes."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from traffic.errors import BadModelReply, KeyRejected, ProviderError, ProviderUnavailable, RateLimited
from traffic.models import GroupContext, GroupVerdict
from traffic.risk import error_verdict
from workers.context import WorkerContext

log = logging.getLogger(__name__)

MIN_CALL_S = 1.0
"""Below this much time left, a provider call is not started."""


@dataclass(frozen=True)
class Transient:
    """A provider error worth retrying later (5xx, timeout), or a wait for a cooling key."""

    reason: str
    wait_s: float | None = None


def assess_with_pool(
    ctx: WorkerContext, context: GroupContext, crop: bytes, *, deadline: float, started: float
) -> GroupVerdict | Transient:
    """A verdict from the vision model via the key pool, the rules assessor, or a Transient to retry."""
    index = context.group.index
    llm, pool = ctx.llm, ctx.key_pool
    if llm is None or not pool.configured:
        return ctx.rules.assess(context)
    limit = started + ctx.settings.pipeline.assess_time_limit_s
    while True:
        budget = min(deadline, limit) - time.time()
        if budget < MIN_CALL_S:
            return _fallback(ctx, context, "deadline")
        key = pool.acquire()
        if key is None:
            wait = pool.wait_hint()
            if wait is None:
                return _fallback(ctx, context, "no_usable_key")
            return Transient("keys_cooling", wait)
        try:
            verdict = llm.assess(
                context, crop, api_key=key.api_key, key_id=key.key_id, timeout_s=min(budget, ctx.settings.llm.timeout_s)
            )
        except RateLimited as exc:
            pool.rate_limited(key, exc.retry_after)
            continue
        except KeyRejected:
            pool.rejected(key)
            continue
        except ProviderUnavailable as exc:
            log.info("group %d: provider unavailable with key %s: %s", index, key.key_id, exc)
            return Transient("provider_unavailable")
        except BadModelReply as exc:
            log.warning("group %d: unusable model reply after one repair: %s", index, exc)
            return error_verdict(index, "bad_model_reply", model=llm.model, latency_s=time.time() - started)
        except ProviderError as exc:
            log.error("group %d: provider error %s: %s", index, exc.status, exc)
            return error_verdict(index, f"provider_error:{exc.status}", model=llm.model)
        pool.succeeded(key)
        return verdict


def _fallback(ctx: WorkerContext, context: GroupContext, reason: str) -> GroupVerdict:
    """The rules assessor's verdict, labelled with why the vision model did not answer."""
    log.info("group %d: rules assessor answers (%s)", context.group.index, reason)
    return replace(ctx.rules.assess(context), error=f"fallback:{reason}")
