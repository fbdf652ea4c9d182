"""The incident database on a real PostgreSQL server (Debian's, a private cluster): the same migration and
writes as on SQLite, concurrent writers on one incident, and a server stopped in the middle of a run:
alert events wait in Redis and are all written, once, when it is back."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from infra.incident_db import Base, IncidentDbError, IncidentQuery, IncidentStore, database_engine, migrate
from stack.postgres_server import LocalPostgres
from traffic import redis_keys
from traffic.alerts import Alert, AlertEvent, AlertKind
from traffic.config import load_settings
from traffic.incidents import IncidentAction, IncidentStatus, sighting_of
from traffic.models import RiskLevel
from workers.context import WorkerContext
from workers.finalize import emit_alert_events
from workers.incidents import flush_incidents

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[LocalPostgres]:
    with LocalPostgres() as server:
        yield server


@pytest.fixture
def engine(postgres: LocalPostgres) -> Iterator[Engine]:
    engine = database_engine(postgres.url)
    migrate(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("TRUNCATE incident_actions, incidents RESTART IDENTITY")
    yield engine
    engine.dispose()


def _event(kind: AlertKind, alert_id: str, last_seen: float, frame: str = "f1") -> AlertEvent:
    alert = Alert(
        alert_id, "cam-p", RiskLevel.MEDIUM, ("jaywalking",), "d", first_seen=T0, last_seen=last_seen,
        frame_id=frame, bbox=(1.0, 2.0, 3.0, 4.0), count=1, model="qwen-vl-plus",
    )  # fmt: skip
    return AlertEvent(kind, alert)


def test_the_migration_matches_the_models_on_postgres(engine: Engine) -> None:
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    migrate(engine)  # again: nothing to do


def test_writes_actions_and_pages_on_postgres(engine: Engine) -> None:
    store = IncidentStore(engine)
    incident, created = store.record(sighting_of(_event(AlertKind.NEW, "a1", T0)), key_id="k2")
    assert created and incident.key_id == "k2"
    again, created = store.record(sighting_of(_event(AlertKind.UPDATE, "a1", T0 + 3, "f2")))
    assert not created and again.incident_id == incident.incident_id and again.frame_ids == ("f1", "f2")
    acted, entry = store.act(incident.incident_id, IncidentAction.ACKNOWLEDGE, "ann", "seen")
    assert acted.status is IncidentStatus.ACKNOWLEDGED and entry.who == "ann"
    page = store.query(IncidentQuery(status=IncidentStatus.ACKNOWLEDGED, camera_id="cam-p"))
    assert [i.alert_id for i in page.incidents] == ["a1"]


def test_concurrent_writers_of_one_incident_make_one_row(engine: Engine) -> None:
    store = IncidentStore(engine)
    start = threading.Barrier(6)
    ids: list[int] = []

    def write(k: int) -> None:
        start.wait()
        ids.append(store.record(sighting_of(_event(AlertKind.UPDATE, "race", T0 + k, f"f{k}")))[0].incident_id)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1 and store.count() == 1
    found = store.get(ids[0])
    assert found is not None and set(found[0].frame_ids) == {f"f{k}" for k in range(6)}


def test_a_database_stopped_mid_run_loses_and_doubles_nothing(
    postgres: LocalPostgres, engine: Engine, redis_url: str
) -> None:
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
