"""Alert events into the incident database: drained from Redis by one beat job at a time, in order,
idempotently (a write repeated after a crash changes nothing), so a database that is down only delays them."""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid

from infra import outbox
from infra.evidence_store import EvidenceStore
from infra.incident_db import IncidentDbError, IncidentStore, open_store
from infra.redis_lock import RELEASE
from traffic import redis_keys
from traffic.alerts import alert_from_json
from traffic.codec import CodecError
from traffic.evidence import ClipWritten
from traffic.incidents import Incident, incident_to_json, retention_cutoffs, sighting_of
from workers.context import WorkerContext
from workers.evidence import evidence_store

log = logging.getLogger(__name__)

BATCH = 500
"""Alert events read per step of one flush."""
LOCK_S = 30.0
ORPHAN_AFTER_S = 86_400.0
"""Evidence files no incident names are deleted once this old."""
CLIP_WAIT_S = 3600.0
"""A written clip whose incident is still not in the database this long after its first sighting is
dropped (logged): the incident's alert event was lost or expired."""

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
        if ctx.redis.exists(redis_keys.CLIPS_WRITTEN):
            try:
                record_clips(ctx, store_for(url))
            except IncidentDbError as exc:
                log.warning("incident database unavailable (%s); written clips wait in Redis", exc)
    finally:
        ctx.redis.eval(RELEASE, 1, redis_keys.INCIDENTS_FLUSH_LOCK, token)
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
    evidence = evidence_store(ctx)
    if created and evidence is not None:
        snapshot = evidence.snapshot_path(incident.camera_id, incident.natural_key)
        if evidence.resolve(snapshot) is not None:  # written by the worker that raised the alert
            incident = store.set_evidence(incident.natural_key, snapshot=snapshot) or incident
    _announce(ctx, "incident" if created else "incident_updated", incident)


def _announce(ctx: WorkerContext, name: str, incident: Incident) -> None:
    """Tell dashboards (``incident`` / ``incident_updated``) and the outputs (MQTT, webhooks)."""
    data = incident_to_json(incident)
    ctx.emitter.incident(incident.camera_id, name, data)
    outbox.push(ctx.redis, outbox.enabled_outputs(ctx.settings), name, data)


def record_clips(ctx: WorkerContext, store: IncidentStore, limit: int = BATCH) -> int:
    """Record the clips the capture processes wrote in their incidents (announced as ``incident_updated``);
    how many. A clip of an incident not written yet waits (its alert event is ahead of it in the queue)."""
    recorded = 0
    for raw in ctx.redis.lrange(redis_keys.CLIPS_WRITTEN, 0, limit - 1):
        try:
            written = ClipWritten.from_json(json.loads(raw))
        except ValueError as exc:
            log.error("dropping an unreadable clip record: %s", exc)
            ctx.redis.lpop(redis_keys.CLIPS_WRITTEN)
            continue
        if written.clip_path is None:
            log.info("incident %s has no clip: %s", written.natural_key, written.reason)
        else:
            incident = store.set_evidence(written.natural_key, clip=written.clip_path)
            if incident is None:
                if not _expired(written):
                    break  # its incident is still on its way to the database
                log.warning("no incident %s for its clip %s", written.natural_key, written.clip_path)
            else:
                _announce(ctx, "incident_updated", incident)
        ctx.redis.lpop(redis_keys.CLIPS_WRITTEN)
        recorded += 1
    return recorded


def _expired(written: ClipWritten) -> bool:
    """Whether a clip's incident would have been written by now (its alert event is long past)."""
    first_seen = float(written.natural_key.rpartition("@")[2] or 0) / 1000
    return time.time() - first_seen > CLIP_WAIT_S


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
        deleted, files = store_for(config.database_url).expire(cutoffs)
    except IncidentDbError as exc:
        log.warning("incident retention skipped: %s", exc)
        return 0
    evidence = evidence_store(ctx)
    removed = evidence.delete(files) if evidence is not None else 0
    if deleted:
        log.info("incident retention: %d incident(s) deleted, with %d evidence file(s)", deleted, removed)
    if evidence is not None:
        _delete_orphans(evidence, store_for(config.database_url), now)
    return deleted


def _delete_orphans(evidence: EvidenceStore, store: IncidentStore, now: float) -> None:
    """Delete evidence files no incident names, a day after they were written (an alert whose incident was
    never stored, a clip whose incident expired first, a write cut short)."""
    try:
        stale = evidence.files_older_than(now - ORPHAN_AFTER_S)
        if not stale:
            return
        owned = store.evidence_paths()
    except IncidentDbError as exc:
        log.warning("evidence clean-up skipped: %s", exc)
        return
    orphans = [path for path in stale if path not in owned]
    for path in orphans:
        (evidence.root / path).unlink(missing_ok=True)
    if orphans:
        log.info("evidence clean-up: %d file(s) no incident names were deleted", len(orphans))
