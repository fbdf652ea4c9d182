"""Alert events into the incident database: drained from Redis by one beat job at a time, in order,
idempotently (a write repeated after a crash changes nothing), so a database that is down only delays them."""

from __future__ import annotations

import functools
import json
import logging
import uuid

from infra.incident_db import IncidentDbError, IncidentStore, open_store
from traffic import redis_keys
from traffic.alerts import alert_from_json
from traffic.codec import CodecError
from traffic.incidents import incident_to_json, retention_cutoffs, sighting_of
from workers.context import WorkerContext

log = logging.getLogger(__name__)

BATCH = 500
"""Alert events read per step of one flush."""
LOCK_S = 30.0

_TRIM_IF_HELD = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('ltrim', KEYS[2], tonumber(ARGV[2]), -1)
  redis.call('pexpire', KEYS[1], tonumber(ARGV[3]))
  return 1
end
return 0
"""
"""Drop the written events and renew the lock, only while this flush still holds it: a flush that lost
its lock (it ran too long) leaves the queue to the one that took over, which rewrites them idempotently."""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@functools.lru_cache(maxsize=4)
def store_for(url: str) -> IncidentStore:
    """The process's store on ``url`` (one engine and pool per URL; a failed open is not remembered)."""
    return open_store(url)


def flush_incidents(ctx: WorkerContext, limit: int = 20 * BATCH) -> int:
    """Write waiting alert events to the database, oldest first; how many were written. Stops at the first
    database error (the rest wait for the next run); an unreadable event is logged and dropped."""
    url = ctx.settings.incidents.database_url
    if not url:
        return 0
    token = uuid.uuid4().hex
    if not ctx.redis.set(redis_keys.INCIDENTS_FLUSH_LOCK, token, nx=True, px=int(LOCK_S * 1000)):
        return 0  # another flush is running
    written = 0
    try:
        while written < limit:
            raw_events = ctx.redis.lrange(redis_keys.INCIDENTS_PENDING, 0, BATCH - 1)
            if not raw_events:
                break
            done = 0
            try:
                for raw in raw_events:
                    _write(ctx, store_for(url), raw)
                    done += 1
            except IncidentDbError as exc:
                log.warning("incident database unavailable (%s); %d event(s) wait in Redis", exc, _waiting(ctx))
                break
            finally:
                held = not done or _trim_if_held(ctx, token, done)
                written += done
            if not held:
                log.warning("incident flush lost its lock after %d event(s); another flush goes on", written)
                break
    finally:
        ctx.redis.eval(_RELEASE, 1, redis_keys.INCIDENTS_FLUSH_LOCK, token)
    return written


def _trim_if_held(ctx: WorkerContext, token: str, done: int) -> bool:
    """Drop the first ``done`` waiting events and renew the lock, if this flush still holds it."""
    keys = (redis_keys.INCIDENTS_FLUSH_LOCK, redis_keys.INCIDENTS_PENDING)
    return bool(ctx.redis.eval(_TRIM_IF_HELD, 2, *keys, token, done, int(LOCK_S * 1000)))


def _write(ctx: WorkerContext, store: IncidentStore, raw: bytes | str) -> None:
    """One alert event into its incident, announced to dashboards (``incident`` when new, else
    ``incident_updated``); an event that cannot be read is logged and skipped."""
    try:
        event = alert_from_json(json.loads(raw))
    except (CodecError, ValueError) as exc:
        log.error("dropping an unreadable alert event from the incident queue: %s", exc)
        return
    incident, created = store.record(sighting_of(event))
    name = "incident" if created else "incident_updated"
    ctx.emitter.incident(incident.camera_id, name, incident_to_json(incident))


def _waiting(ctx: WorkerContext) -> int:
    return int(ctx.redis.llen(redis_keys.INCIDENTS_PENDING))


def expire_incidents(ctx: WorkerContext, now: float) -> int:
    """Delete incidents past their retention (``incidents.retention_*``); how many (0 while the database is
    down: the next run catches up)."""
    config = ctx.settings.incidents
    if not config.database_url:
        return 0
    cutoffs = retention_cutoffs(
        now, default=config.retention_days, by_level=config.retention_by_level, by_kind=config.retention_by_kind
    )
    if not cutoffs:
        return 0
    try:
        deleted = store_for(config.database_url).expire(cutoffs)
    except IncidentDbError as exc:
        log.warning("incident retention skipped: %s", exc)
        return 0
    if deleted:
        log.info("incident retention: %d incident(s) deleted", deleted)
    return deleted
