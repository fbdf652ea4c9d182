"""Incident events and traffic stats to the MQTT broker (topics, payloads and guarantees: ``docs/MQTT.md``).

Incident events are drained from their outbox in Redis by one beat job at a time, in order, and leave it only
once the broker has acknowledged them (QoS ≥ 1; at QoS 0, once handed to the connection): a broker that is down
only delays them. Stats are published without waiting and skipped while the broker is away (a newer snapshot
follows within a second).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from infra import outbox
from infra.mqtt_client import MqttTopics, Outgoing
from infra.redis_lock import RELEASE
from traffic import redis_keys
from traffic.settings import MqttSettings
from workers.context import WorkerContext

log = logging.getLogger(__name__)

BATCH = 100
"""Events published before waiting for their acknowledgements (paho keeps up to 20 in flight)."""
ACK_TIMEOUT_S = 5.0
"""How long a batch may wait for the broker's acknowledgements before the drain stops (the rest wait)."""
RUN_S = 10.0
"""Most time one drain spends starting batches (the beat starts another each second)."""
LOCK_S = 30.0
"""The drain lock's lifetime, renewed at each batch: well above ``RUN_S + ACK_TIMEOUT_S``."""
FIRST_CONNECT_S = 5.0
"""How long a process's first drain waits for its first connection."""
DRAIN_LOCK = redis_keys.MQTT_PUBLISH_LOCK
"""String: held by the one drain at a time (expires if its holder dies)."""


def publish_waiting(ctx: WorkerContext, limit: int = 50 * BATCH) -> int:
    """Publish the incident events waiting in the ``mqtt`` outbox, oldest first; how many were published.

    Stops at the first event the broker does not acknowledge in time (the rest wait for the next run, which
    publishes that one again: at least once). An event that cannot be read, or names no camera, is dropped
    (logged).
    """
    settings, publisher = ctx.settings.mqtt, ctx.mqtt
    if publisher is None:
        return 0
    if not publisher.wait_connected(FIRST_CONNECT_S):
        return 0  # the publisher logs the outage once; the events wait
    token = uuid.uuid4().hex
    if not ctx.redis.set(DRAIN_LOCK, token, nx=True, px=int(LOCK_S * 1000)):
        return 0  # another drain is running
    topics = MqttTopics(settings.topic_prefix)
    published = 0
    try:
        deadline = time.monotonic() + RUN_S
        while published < limit and time.monotonic() < deadline:
            events = outbox.waiting(ctx.redis, outbox.MQTT, min(BATCH, limit - published))
            if not events:
                break
            messages = [incident_message(topics, settings, e) if e is not None else None for e in events]
            acknowledged = publisher.publish_in_order([m for m in messages if m is not None], ACK_TIMEOUT_S)
            done = _settled_prefix(messages, acknowledged)
            if done and not _drop_if_held(ctx.redis, token, done):
                log.warning("MQTT drain lost its lock after %d event(s); another drain goes on", published)
                break
            published += acknowledged
            if done < len(events):
                break  # the broker did not acknowledge in time: the rest wait (the publisher logged why)
    finally:
        ctx.redis.eval(RELEASE, 1, DRAIN_LOCK, token)
    return published


def incident_message(topics: MqttTopics, settings: MqttSettings, event: outbox.OutboxEvent) -> Outgoing | None:
    """The event on its camera's ``incidents`` topic (JSON ``{event, incident, at}``, QoS from the settings,
    not retained); None (logged) when the incident names no camera."""
    camera_id = event.incident.get("cameraId")
    if not isinstance(camera_id, str) or not camera_id:
        log.error("dropping an MQTT outbox event whose incident names no camera (%s)", event.event)
        return None
    return Outgoing(topics.incidents(camera_id), _json(event.to_json()), qos=settings.qos, retain=False)


def publish_stats(ctx: WorkerContext, camera_id: str, payload: Mapping[str, Any]) -> bool:
    """Publish a camera's ``traffic_stats`` payload (QoS 0, retained) without waiting; False when MQTT stats
    are off or the broker is not connected (skipped: the next snapshot comes within a second)."""
    publisher = ctx.mqtt
    if publisher is None or not ctx.settings.mqtt.stats:
        return False
    topic = MqttTopics(ctx.settings.mqtt.topic_prefix).stats(camera_id)
    return publisher.publish_nowait(Outgoing(topic, _json(payload), qos=0, retain=True))


def _json(data: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON (non-ASCII text as-is, as a subscriber shows it)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _settled_prefix(messages: Sequence[Outgoing | None], acknowledged: int) -> int:
    """How many of the first events are done: those acknowledged and the unusable ones (None) among and just
    after them."""
    done = sent = 0
    for message in messages:
        if message is not None:
            if sent == acknowledged:
                break
            sent += 1
        done += 1
    return done


def _drop_if_held(client: redis.Redis, token: str, count: int) -> bool:
    """Drop the first ``count`` waiting events and renew the lock, atomically, if this drain still holds it
    (WATCH: a drain that lost its lock leaves the list to the one that took over)."""
    with client.pipeline() as pipe:
        try:
            pipe.watch(DRAIN_LOCK)
            if pipe.get(DRAIN_LOCK) != token.encode():
                return False
            pipe.multi()
            outbox.drop(pipe, outbox.MQTT, count)
            pipe.pexpire(DRAIN_LOCK, int(LOCK_S * 1000))
            pipe.execute()
        except redis.WatchError:
            return False
    return True
