"""The incident database on a real SQLite file and a real PostgreSQL server (Debian's, a private
cluster), schema by Alembic: idempotent writes of alert events, the operators' audit log, filtered
pages, writers racing on one incident, and a clear error when the database is not there."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from infra.incident_db import Base, IncidentDbError, IncidentQuery, IncidentStore, database_engine, migrate
from traffic.alerts import RULE_BASED, Alert, AlertEvent, AlertKind
from traffic.incidents import (
    IncidentAction,
    IncidentError,
    IncidentKind,
    IncidentStatus,
    retention_cutoffs,
    sighting_of,
)
from traffic.models import RiskLevel

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgres":
        yield request.getfixturevalue("postgres_engine")
        return
    engine = database_engine(f"sqlite:///{tmp_path / 'incidents.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> IncidentStore:
    return IncidentStore(engine)


def _event(kind: AlertKind = AlertKind.NEW, **changes: object) -> AlertEvent:
    fields: dict[str, object] = {
        "alert_id": "cam-1:jaywalking:2x3", "camera_id": "cam-1", "level": RiskLevel.MEDIUM,
        "risk_types": ("jaywalking",), "description": "a pedestrian steps out", "first_seen": T0,
        "last_seen": T0, "frame_id": "f1", "bbox": (1.0, 2.0, 3.0, 4.0), "count": 1, "tracks": (4, 9),
        "model": "qwen-vl-plus",
    }  # fmt: skip
    return AlertEvent(kind, Alert(**(fields | changes)))  # type: ignore[arg-type]


def test_the_migrated_schema_is_the_models_schema_and_migrating_again_changes_nothing(engine: Engine) -> None:
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    migrate(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"incidents", "incident_actions", "alembic_version"} <= tables


def test_an_alert_life_is_one_incident_whatever_is_written_twice(store: IncidentStore) -> None:
    first = store.record(sighting_of(_event()), key_id="k1", now=T0)[0].incident_id
    repeated, created = store.record(sighting_of(_event()), now=T0 + 1)  # a redelivered task
    assert repeated.incident_id == first and not created
    worse = _event(AlertKind.UPDATE, level=RiskLevel.HIGH, last_seen=T0 + 5, frame_id="f2", description="closer")
    assert store.record(sighting_of(worse), now=T0 + 5)[0].incident_id == first
    milder = _event(AlertKind.UPDATE, level=RiskLevel.MEDIUM, last_seen=T0 + 8, frame_id="f3")
    store.record(sighting_of(milder), now=T0 + 8)
    store.record(sighting_of(_event(AlertKind.END, last_seen=T0 + 8, frame_id="f3")), now=T0 + 20)
    found = store.get(first)
    assert found is not None
    incident, actions = found
    assert incident.level is RiskLevel.HIGH  # the worst it reached
    assert incident.description == "a pedestrian steps out" and incident.last_seen == T0 + 8
    assert incident.frame_ids == ("f1", "f2", "f3") and incident.ended_at == T0 + 8
    assert incident.key_id == "k1" and incident.model == "qwen-vl-plus" and incident.track_ids == (4, 9)
    assert incident.status is IncidentStatus.OPEN and actions == ()
    assert store.count() == 1
    # Raised again after it ended: a new incident.
    again, created = store.record(sighting_of(_event(first_seen=T0 + 60, last_seen=T0 + 60)))
    assert created and again.incident_id != first
    assert store.count() == 2


def test_operator_actions_are_an_append_only_audit_log(store: IncidentStore) -> None:
    incident_id = store.record(sighting_of(_event()))[0].incident_id
    store.act(incident_id, IncidentAction.ACKNOWLEDGE, "ann", "on it", now=T0 + 10)
    with pytest.raises(IncidentError, match="cannot acknowledge an incident that is acknowledged"):
        store.act(incident_id, IncidentAction.ACKNOWLEDGE, "bob", now=T0 + 11)
    incident, entry = store.act(incident_id, IncidentAction.FALSE_POSITIVE, "bob", "a shadow", now=T0 + 12)
    assert incident.status is IncidentStatus.FALSE_POSITIVE and entry.status_before is IncidentStatus.ACKNOWLEDGED
    store.act(incident_id, IncidentAction.REOPEN, "ann", now=T0 + 13)
    found = store.get(incident_id)
    assert found is not None
    incident, actions = found
    assert incident.status is IncidentStatus.OPEN and incident.updated_at == T0 + 13
    assert [(a.who, a.action.value, a.note, a.status_after.value) for a in actions] == [
        ("ann", "acknowledge", "on it", "acknowledged"),
        ("bob", "false_positive", "a shadow", "false_positive"),
        ("ann", "reopen", "", "open"),
    ]
    with pytest.raises(IncidentError, match="no incident 999") as missing:
        store.act(999, IncidentAction.RESOLVE, "ann")
    assert missing.value.code == "not_found"
    assert store.get(999) is None


def test_pages_filter_and_sort(store: IncidentStore) -> None:
    for k in range(12):
        level = (RiskLevel.MEDIUM, RiskLevel.HIGH)[k % 2]
        camera = ("cam-1", "cam-2")[k % 3 == 0]
        store.record(sighting_of(_event(alert_id=f"a{k}", camera_id=camera, level=level, first_seen=T0 + k)))
    store.record(sighting_of(_event(alert_id="nm", source=RULE_BASED, risk_types=("near_miss",), first_seen=T0 + 50)))
    newest = store.query(IncidentQuery(limit=5))
    assert [i.alert_id for i in newest.incidents] == ["nm", "a11", "a10", "a9", "a8"] and newest.next_offset == 5
    last = store.query(IncidentQuery(limit=5, offset=10))
    assert [i.alert_id for i in last.incidents] == ["a2", "a1", "a0"] and last.next_offset is None
    high = store.query(IncidentQuery(min_level=RiskLevel.HIGH, newest_first=False))
    assert [i.alert_id for i in high.incidents] == [f"a{k}" for k in range(1, 12, 2)]
    cam2 = store.query(IncidentQuery(camera_id="cam-2", since=T0 + 3, until=T0 + 9))
    assert [i.alert_id for i in cam2.incidents] == ["a6", "a3"]
    near = store.query(IncidentQuery(kind=IncidentKind.NEAR_MISS))
    assert [i.alert_id for i in near.incidents] == ["nm"]
    store.act(near.incidents[0].incident_id, IncidentAction.RESOLVE, "ann")
    assert [i.alert_id for i in store.query(IncidentQuery(status=IncidentStatus.RESOLVED)).incidents] == ["nm"]


def test_writers_racing_on_one_alert_make_one_incident(store: IncidentStore) -> None:
    ids: list[int] = []
    start = threading.Barrier(4)

    def write(k: int) -> None:
        start.wait()
        sighting = sighting_of(_event(AlertKind.UPDATE, last_seen=T0 + k, frame_id=f"f{k}"))
        ids.append(store.record(sighting)[0].incident_id)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    # (four writers at once: on SQLite they take turns on the write lock, on PostgreSQL the loser of the
    # insert race updates the winner's row)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1 and store.count() == 1
    found = store.get(ids[0])
    assert found is not None and set(found[0].frame_ids) == {"f0", "f1", "f2", "f3"}


def test_a_database_that_is_not_there_is_a_clear_error(tmp_path: Path) -> None:
    engine = database_engine(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'incidents.db'}")
    with pytest.raises(IncidentDbError, match="incident database failed"):
        IncidentStore(engine).record(sighting_of(_event()))


def test_the_key_id_comes_with_the_alert(store: IncidentStore) -> None:
    incident, _ = store.record(sighting_of(_event(key_id="k7")))
    assert incident.key_id == "k7"
    later, _ = store.record(sighting_of(_event(AlertKind.UPDATE, last_seen=T0 + 3, key_id="k8")))
    assert later.key_id == "k8"  # the latest call's key


def test_expired_incidents_go_with_their_audit_logs(store: IncidentStore, engine: Engine) -> None:
    old = store.record(sighting_of(_event(alert_id="old", first_seen=T0 - 100 * 86_400)))[0]
    store.act(old.incident_id, IncidentAction.RESOLVE, "ann")
    kept = store.record(sighting_of(_event(alert_id="kept", level=RiskLevel.HIGH, first_seen=T0 - 100 * 86_400)))[0]
    store.record(sighting_of(_event(alert_id="new", first_seen=T0)))
    store.set_evidence(old.natural_key, snapshot="cam/old.jpg", clip="cam/old.webm")
    assert store.evidence_paths() == {"cam/old.jpg", "cam/old.webm"}
    cutoffs = retention_cutoffs(T0, default=90.0, by_level=(("high", 365.0),))
    assert store.expire(cutoffs) == (1, ["cam/old.jpg", "cam/old.webm"])  # its files, for the caller to delete
    assert store.get(old.incident_id) is None and store.get(kept.incident_id) is not None
    assert store.count() == 2
    with engine.connect() as connection:  # the audit log went with it
        assert connection.exec_driver_sql("SELECT count(*) FROM incident_actions").scalar() == 0
    assert store.expire(cutoffs) == (0, [])
