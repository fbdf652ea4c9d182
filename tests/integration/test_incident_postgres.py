"""A PostgreSQL server (Debian's, a private cluster) stopped in the middle of a run: alert events wait in
Redis and are all written, once, when it is back. (The store's own tests run on PostgreSQL too:
``test_incident_db.py``.)"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from infra.incident_db import IncidentDbError, IncidentQuery, IncidentStore
from stack.postgres_server import LocalPostgres
from traffic import redis_keys
from traffic.alerts import Alert, AlertEvent, AlertKind
from traffic.config import load_settings
from traffic.models import RiskLevel
from workers.context import WorkerContext
from workers.finalize import emit_alert_events
from workers.incidents import flush_incidents

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def _event(kind: AlertKind, alert_id: str, last_seen: float, frame: str = "f1") -> AlertEvent:
    alert = Alert(
        alert_id, "cam-p", RiskLevel.MEDIUM, ("jaywalking",), "d", first_seen=T0, last_seen=last_seen,
        frame_id=frame, bbox=(1.0, 2.0, 3.0, 4.0), count=1, model="qwen-vl-plus",
    )  # fmt: skip
    return AlertEvent(kind, alert)


def test_a_database_stopped_mid_run_loses_and_doubles_nothing(
    postgres_server: LocalPostgres, postgres_engine: Engine, redis_url: str
) -> None:
    postgres, engine = postgres_server, postgres_engine
    ctx = WorkerContext(load_settings({"REDIS_URL": redis_url, "TRAFFIC_DATABASE_URL": postgres.url}))
    emit_alert_events(ctx, "cam-p", [_event(AlertKind.NEW, f"b{k}", T0) for k in range(5)])
    assert flush_incidents(ctx) == 5
    postgres.stop()
    postgres.wait_until_stopped()
    try:
        emit_alert_events(ctx, "cam-p", [_event(AlertKind.NEW, f"c{k}", T0) for k in range(5)])
        emit_alert_events(ctx, "cam-p", [_event(AlertKind.UPDATE, "b0", T0 + 9, "f9")])
        assert flush_incidents(ctx) == 0
        assert ctx.redis.llen(redis_keys.INCIDENTS_PENDING) == 6  # waiting, none lost
        with pytest.raises(IncidentDbError):
            IncidentStore(engine).count()
    finally:
        postgres.start()
    assert flush_incidents(ctx) == 6
    assert ctx.redis.llen(redis_keys.INCIDENTS_PENDING) == 0
    store = IncidentStore(engine)
    assert store.count() == 10
    b0 = store.query(IncidentQuery(camera_id="cam-p", limit=500)).incidents
    assert [i.frame_ids for i in b0 if i.alert_id == "b0"] == [("f1", "f9")]
    ctx.redis.close()
