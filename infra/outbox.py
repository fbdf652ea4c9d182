"""Incident events waiting for each output (MQTT, webhooks): one Redis list per output, written where an
incident is created or changed (the incident writer, the web server's actions) and drained by that output's
beat job, which removes an event only once it is delivered (or handed to a delivery task)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from traffic import redis_keys
from traffic.settings import Settings

log = logging.getLogger(__name__)

MQTT = "mqtt"
WEBHOOKS = "webhooks"
OUTPUTS = (MQTT, WEBHOOKS)
MAX_WAITING = 100_000
"""Most events one output keeps waiting (the oldest go first, logged): an output down for days must not
fill Redis."""


@dataclass(frozen=True)
class OutboxEvent:
    """One incident event as the outputs send it: ``incident`` (new) or ``incident_updated``."""

    event: str
    incident: dict[str, Any]
    at: float
    """When it was put in the outbox (epoch s)."""

    def to_json(self) -> dict[str, Any]:
        """The event as stored (and as webhooks and MQTT carry it)."""
        return {"event": self.event, "incident": self.incident, "at": self.at}


def enabled_outputs(settings: Settings) -> tuple[str, ...]:
    """The outputs configured in ``settings``."""
    outputs = []
    if settings.mqtt.url:
        outputs.append(MQTT)
    if settings.webhooks.subscriptions:
        outputs.append(WEBHOOKS)
    return tuple(outputs)


def push(client: Any, outputs: Iterable[str], event: str, incident: dict[str, Any]) -> None:
    """Put an incident event in each output's list (one round trip); nothing when no output is on."""
    names = [redis_keys.outbox(o) for o in outputs]
    if not names:
        return
    raw = json.dumps(OutboxEvent(event, incident, time.time()).to_json(), separators=(",", ":"))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.rpush(name, raw)
        pipe.ltrim(name, -MAX_WAITING, -1)
    lengths = pipe.execute()[0::2]
    for name, length in zip(names, lengths, strict=True):
        if int(length) > MAX_WAITING:
            log.warning("outbox %s is full (%d events): the oldest was dropped", name, MAX_WAITING)


def waiting(client: Any, output: str, count: int) -> list[OutboxEvent | None]:
    """The oldest ``count`` events waiting for ``output`` (None for one that cannot be read, logged)."""
    return [_event(raw) for raw in client.lrange(redis_keys.outbox(output), 0, count - 1)]


def drop(client: Any, output: str, count: int) -> None:
    """Remove the oldest ``count`` events of ``output`` (those just delivered)."""
    if count > 0:
        client.ltrim(redis_keys.outbox(output), count, -1)


def backlog(client: Any, output: str) -> int:
    """How many events wait for ``output``."""
    return int(client.llen(redis_keys.outbox(output)))


def _event(raw: bytes | str) -> OutboxEvent | None:
    """An event read back from Redis, or None (logged) when it is not one."""
    try:
        data = json.loads(raw)
        event, incident, at = data["event"], data["incident"], float(data["at"])
        if not isinstance(event, str) or not isinstance(incident, dict):
            raise ValueError("not an incident event")
    except (ValueError, KeyError, TypeError) as exc:
        log.error("dropping an unreadable outbox event: %s", exc)
        return None
    return OutboxEvent(event, incident, at)
