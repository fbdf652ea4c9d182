"""Alert events reach the incident database through Redis (real Redis, real SQLite file): written in
order and once, and kept waiting while the database is not there."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from infra.incident_db import IncidentQuery, IncidentStore, database_engine
from infra.socketio_packets import read_emit
from stack.harness import wait_until
from traffic import redis_keys
from traffic.alerts import Alert, AlertEvent, AlertKind
from traffic.config import load_settings
from traffic.incidents import IncidentStatus
from traffic.models import RiskLevel
from workers.context import WorkerContext
from workers.finalize import emit_alert_events
from workers.incidents import expire_incidents, flush_incidents

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def _event(kind: AlertKind, alert_id: str, last_seen: float, level: RiskLevel = RiskLevel.MEDIUM) -> AlertEvent:
    alert = Alert(
        alert_id, "cam-9", level, ("jaywalking",), "d", first_seen=T0, last_seen=last_seen, frame_id=f"f{last_seen}",
        bbox=(1.0, 2.0, 3.0, 4.0), count=1, model="qwen-vl-plus",
    )  # fmt: skip
    return AlertEvent(kind, alert)


def _ctx(redis_url: str, database: Path) -> WorkerContext:
    return WorkerContext(load_settings({"REDIS_URL": redis_url, "TRAFFIC_DATABASE_URL": f"sqlite:///{database}"}))


@pytest.fixture
def ctx(redis_url: str, tmp_path: Path) -> Iterator[WorkerContext]:
    context = _ctx(redis_url, tmp_path / "incidents.db")
    yield context
    context.redis.close()


def _announced(pubsub: Any, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The first ``count`` incident events sent to dashboards (waiting for them)."""
    sent: list[tuple[str, dict[str, Any]]] = []

    def received() -> bool:
        while (message := pubsub.get_message(timeout=0.05)) is not None:
            packet = read_emit(message["data"]) if message["type"] == "message" else None
            if packet is not None and packet.event.startswith("incident") and packet.room == redis_keys.ALERTS_ROOM:
                sent.append((packet.event, packet.data))
        return len(sent) >= count

    wait_until(received, 10, f"{count} incident events")
    return sent


def test_alert_events_become_incidents_once_and_in_order(ctx: WorkerContext, tmp_path: Path) -> None:
    pubsub = ctx.redis.pubsub()
    pubsub.subscribe(redis_keys.SOCKETIO_CHANNEL)
    wait_until(lambda: pubsub.get_message(timeout=0.1), 5, "the subscription")
    emit_alert_events(ctx, "cam-9", [_event(AlertKind.NEW, "a1", T0), _event(AlertKind.NEW, "a2", T0)])
    emit_alert_events(ctx, "cam-9", [_event(AlertKind.UPDATE, "a1", T0 + 4, RiskLevel.HIGH)])
    emit_alert_events(ctx, "cam-9", [_event(AlertKind.END, "a1", T0 + 4, RiskLevel.HIGH)])
    assert ctx.redis.llen(redis_keys.INCIDENTS_PENDING) == 4
    assert flush_incidents(ctx) == 4
    assert ctx.redis.llen(redis_keys.INCIDENTS_PENDING) == 0
    store = IncidentStore(database_engine(f"sqlite:///{tmp_path / 'incidents.db'}"))
    page = store.query(IncidentQuery(newest_first=False))
    assert [(i.alert_id, i.level.value, i.ended_at) for i in page.incidents] == [
        ("a1", "high", T0 + 4),
        ("a2", "medium", None),
    ]
    assert all(i.status is IncidentStatus.OPEN for i in page.incidents)
    announced = _announced(pubsub, 4)
    assert [(name, data["alertId"], data["level"]) for name, data in announced] == [
        ("incident", "a1", "medium"),
        ("incident", "a2", "medium"),
        ("incident_updated", "a1", "high"),
        ("incident_updated", "a1", "high"),
    ]
    assert announced[-1][1]["endedAt"] == "2023-11-14T22:13:24.000Z" and announced[0][1]["status"] == "open"
    pubsub.close()
    # The same events again (a finaliser that ran twice): nothing new.
    ctx.redis.rpush(redis_keys.INCIDENTS_PENDING, json.dumps({"broken": True}))
    emit_alert_events(ctx, "cam-9", [_event(AlertKind.UPDATE, "a1", T0 + 4, RiskLevel.HIGH)])
    assert flush_incidents(ctx) == 2  # the unreadable one is dropped with an error in the log
    assert store.count() == 2 and ctx.redis.llen(redis_keys.INCIDENTS_PENDING) == 0


def test_events_wait_in_redis_while_the_database_is_not_there(redis_url: str, tmp_path: Path) -> None:
    database = tmp_path / "not-yet" / "incidents.db"
    ctx = _ctx(redis_url, database)
    emit_alert_events(ctx, "cam-9", [_event(AlertKind.NEW, "a1", T0), _event(AlertKind.NEW, "a2", T0)])
    assert flush_incidents(ctx) == 0
    assert ctx.redis.llen(redis_keys.INCIDENTS_PENDING) == 2  # nothing lost
    assert not ctx.redis.exists(redis_keys.INCIDENTS_FLUSH_LOCK)  # and the next run may try again
    database.parent.mkdir()  # the database is back
    assert flush_incidents(ctx) == 2
    assert IncidentStore(database_engine(f"sqlite:///{database}")).count() == 2


def test_one_flush_at_a_time(ctx: WorkerContext) -> None:
    emit_alert_events(ctx, "cam-9", [_event(AlertKind.NEW, "a1", T0)])
    ctx.redis.set(redis_keys.INCIDENTS_FLUSH_LOCK, "someone-else", px=5000)
    assert flush_incidents(ctx) == 0 and ctx.redis.llen(redis_keys.INCIDENTS_PENDING) == 1
    assert ctx.redis.get(redis_keys.INCIDENTS_FLUSH_LOCK) == b"someone-else"  # not released by us


def test_without_a_database_nothing_is_queued(redis_url: str) -> None:
    ctx = WorkerContext(load_settings({"REDIS_URL": redis_url}))
    emit_alert_events(ctx, "cam-9", [_event(AlertKind.NEW, "a1", T0)])
    assert ctx.redis.llen(redis_keys.INCIDENTS_PENDING) == 0 and flush_incidents(ctx) == 0


def test_the_retention_job_deletes_what_is_past_its_days(redis_url: str, tmp_path: Path) -> None:
    database = tmp_path / "incidents.db"
    env = {"REDIS_URL": redis_url, "TRAFFIC_DATABASE_URL": f"sqlite:///{database}"}
    ctx = WorkerContext(load_settings({**env, "TRAFFIC_INCIDENT_RETENTION_DAYS": "30"}))
    later = _event(AlertKind.NEW, "a2", T0 + 86_400)
    later = AlertEvent(later.kind, replace(later.alert, first_seen=T0 + 86_400))
    emit_alert_events(ctx, "cam-9", [_event(AlertKind.NEW, "a1", T0), later])
    assert flush_incidents(ctx) == 2
    assert expire_incidents(ctx, now=T0 + 30.5 * 86_400) == 1  # a1 is 30.5 days old, a2 29.5
    assert expire_incidents(ctx, now=T0 + 30.5 * 86_400) == 0
    keep = WorkerContext(load_settings({**env, "TRAFFIC_INCIDENT_RETENTION_DAYS": "0"}))
    assert expire_incidents(keep, now=T0 + 1000 * 86_400) == 0  # 0 keeps them for ever
    assert IncidentStore(database_engine(f"sqlite:///{database}")).count() == 1
    assert expire_incidents(WorkerContext(load_settings({"REDIS_URL": redis_url})), now=T0) == 0  # no database


def test_incident_events_wait_for_each_configured_output(redis_url: str, tmp_path: Path) -> None:
    """The writer hands every announced incident event to MQTT's and the webhooks' outboxes (when they are
    configured), and nothing to an output that is not."""
    from infra import outbox

    hooks = tmp_path / "webhooks.yaml"
    hooks.write_text("- name: ops\n  url: https://hooks.example.com/in\n  secret: 0123456789abcdef0123\n")
    settings = load_settings(
        {
            "REDIS_URL": redis_url,
            "TRAFFIC_DATABASE_URL": f"sqlite:///{tmp_path / 'incidents.db'}",
            "TRAFFIC_MQTT_URL": "mqtt://127.0.0.1:1883",
            "TRAFFIC_WEBHOOKS_FILE": str(hooks),
        }
    )
    ctx = WorkerContext(settings)
    emit_alert_events(ctx, "cam-9", [_event(AlertKind.NEW, "a1", T0)])
    emit_alert_events(ctx, "cam-9", [_event(AlertKind.UPDATE, "a1", T0 + 4, RiskLevel.HIGH)])
    assert flush_incidents(ctx) == 2
    for output in (outbox.MQTT, outbox.WEBHOOKS):
        waiting = outbox.waiting(ctx.redis, output, 10)
        assert [(e.event, e.incident["level"]) for e in waiting if e] == [
            ("incident", "medium"),
            ("incident_updated", "high"),
        ], output
    ctx.redis.close()

    plain = WorkerContext(
        load_settings({"REDIS_URL": redis_url, "TRAFFIC_DATABASE_URL": f"sqlite:///{tmp_path / 'b.db'}"})
    )
    plain.redis.delete(redis_keys.outbox(outbox.MQTT), redis_keys.outbox(outbox.WEBHOOKS))
    emit_alert_events(plain, "cam-9", [_event(AlertKind.NEW, "a2", T0)])
    assert flush_incidents(plain) == 1
    assert outbox.backlog(plain.redis, outbox.MQTT) == outbox.backlog(plain.redis, outbox.WEBHOOKS) == 0
    plain.redis.close()
