"""REST for incidents on a real SQLite file and the session's Redis: the filtered list and its pages, one
incident with its audit log, the operators' actions (and the event every dashboard gets), bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from infra.incident_db import IncidentStore, database_engine, migrate
from infra.socketio_packets import read_emit
from stack.harness import wait_until
from tests.web.conftest import MakeApp, MakeSettings
from traffic import redis_keys
from traffic.alerts import RULE_BASED, Alert, AlertEvent, AlertKind
from traffic.incidents import sighting_of
from traffic.models import RiskLevel
from web import openapi

T0 = 1_700_000_000.0


def _alert(alert_id: str, camera: str, level: RiskLevel, at: float, **more: Any) -> AlertEvent:
    alert = Alert(
        alert_id, camera, level, ("jaywalking",), "d", first_seen=at, last_seen=at, frame_id="f1",
        bbox=(1.0, 2.0, 3.0, 4.0), count=1, model="qwen-vl-plus", **more,
    )  # fmt: skip
    return AlertEvent(AlertKind.NEW, alert)


@pytest.fixture
def database(tmp_path: Path) -> IncidentStore:
    engine = database_engine(f"sqlite:///{tmp_path / 'incidents.db'}")
    migrate(engine)
    store = IncidentStore(engine)
    for k in range(7):
        level = (RiskLevel.MEDIUM, RiskLevel.HIGH)[k % 2]
        store.record(sighting_of(_alert(f"a{k}", ("cam-1", "cam-2")[k % 2], level, T0 + k)))
    near = _alert("nm", "cam-1", RiskLevel.HIGH, T0 + 20, source=RULE_BASED)
    store.record(sighting_of(AlertEvent(AlertKind.NEW, replace(near.alert, risk_types=("near_miss",), model=""))))
    return store


@pytest.fixture
def client(make_settings: MakeSettings, make_app: MakeApp, tmp_path: Path, database: IncidentStore) -> FlaskClient:
    settings = make_settings({"TRAFFIC_DATABASE_URL": f"sqlite:///{tmp_path / 'incidents.db'}"})
    return make_app(settings).test_client()


def ok(response: Any, code: int = 200) -> Any:
    assert response.status_code == code, response.get_data(as_text=True)
    return response.get_json()["data"]


def refused(response: Any, status: int, error: str, field: str | None = None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == status and body["data"]["error"] == error and body["msg"]
    if field is not None:
        assert body["data"]["field"] == field


def test_the_list_filters_sorts_and_pages(client: FlaskClient) -> None:
    page = ok(client.get("/api/incidents?limit=3"))
    assert [i["alertId"] for i in page["incidents"]] == ["nm", "a6", "a5"] and page["nextOffset"] == 3
    rest = ok(client.get("/api/incidents?limit=3&offset=6"))
    assert [i["alertId"] for i in rest["incidents"]] == ["a1", "a0"] and rest["nextOffset"] is None
    high = ok(client.get("/api/incidents?level=high&order=oldest&cameraId=cam-2"))
    assert [i["alertId"] for i in high["incidents"]] == ["a1", "a3", "a5"]
    near = ok(client.get("/api/incidents?kind=near_miss"))["incidents"]
    assert [(i["alertId"], i["kind"], i["llmModel"]) for i in near] == [("nm", "near_miss", "")]
    window = ok(client.get("/api/incidents?since=2023-11-14T22:13:22Z&until=1700000005"))
    assert [i["alertId"] for i in window["incidents"]] == ["a4", "a3", "a2"]
    first = page["incidents"][0]
    assert first["status"] == "open" and first["firstSeen"] == "2023-11-14T22:13:40.000Z" and "actions" not in first


@pytest.mark.parametrize(
    ("query", "field"),
    [("level=none", "level"), ("kind=x", "kind"), ("status=closed", "status"), ("limit=0", "limit"),
     ("offset=-1", "offset"), ("order=up", "order"), ("since=yesterday", "since"), ("cameraId=bad%20id", "cameraId")],
)  # fmt: skip
def test_bad_filters_are_refused(client: FlaskClient, query: str, field: str) -> None:
    response = client.get(f"/api/incidents?{query}")
    assert response.status_code == 400 and response.get_json()["data"]["field"] == field


def test_acting_on_an_incident_is_logged_and_announced(client: FlaskClient, redis_client: redis.Redis) -> None:
    pubsub = redis_client.pubsub()
    pubsub.subscribe(redis_keys.SOCKETIO_CHANNEL)
    wait_until(lambda: pubsub.get_message(timeout=0.1), 5, "the subscription")
    incident_id = ok(client.get("/api/incidents?limit=1"))["incidents"][0]["incidentId"]
    acted = ok(client.post(f"/api/incidents/{incident_id}/actions", json={"action": "acknowledge", "who": "ann",
                                                                       "note": "on it"}))  # fmt: skip
    assert acted["status"] == "acknowledged" and acted["action"]["who"] == "ann"
    refused(
        client.post(f"/api/incidents/{incident_id}/actions", json={"action": "acknowledge", "who": "bob"}),
        409,
        "invalid_transition",
    )
    ok(client.post(f"/api/incidents/{incident_id}/actions", json={"action": "resolve", "who": "bob"}))
    one = ok(client.get(f"/api/incidents/{incident_id}"))
    assert one["status"] == "resolved"
    assert [(a["who"], a["action"], a["note"], a["statusAfter"]) for a in one["actions"]] == [
        ("ann", "acknowledge", "on it", "acknowledged"),
        ("bob", "resolve", "", "resolved"),
    ]
    sent: list[dict[str, Any]] = []

    def announced() -> bool:
        while (message := pubsub.get_message(timeout=0.05)) is not None:
            packet = read_emit(message["data"]) if message["type"] == "message" else None
            if packet is not None and packet.event == "incident_updated" and packet.room == redis_keys.ALERTS_ROOM:
                sent.append(packet.data)
        return len(sent) >= 2

    wait_until(announced, 10, "two incident_updated events")
    assert [d["status"] for d in sent] == ["acknowledged", "resolved"]
    pubsub.close()


@pytest.mark.parametrize(
    ("body", "status", "error", "field"),
    [
        ({"action": "delete", "who": "ann"}, 400, "invalid_action", "action"),
        ({"action": "resolve", "who": ""}, 400, "invalid_action", "who"),
        ({"action": "resolve", "who": "ann", "note": 5}, 400, "invalid_action", "note"),
        ({"action": "resolve"}, 400, "missing_field", "who"),
        ({"action": "resolve", "who": "ann", "extra": 1}, 400, "unknown_field", "extra"),
    ],
)
def test_bad_actions_are_refused_and_change_nothing(
    client: FlaskClient, body: dict[str, Any], status: int, error: str, field: str
) -> None:
    incident_id = ok(client.get("/api/incidents?limit=1"))["incidents"][0]["incidentId"]
    refused(client.post(f"/api/incidents/{incident_id}/actions", json=body), status, error, field)
    assert ok(client.get(f"/api/incidents/{incident_id}"))["actions"] == []


def test_unknown_incidents_are_404(client: FlaskClient) -> None:
    refused(client.get("/api/incidents/999"), 404, "incident_not_found", "incidentId")
    refused(
        client.post("/api/incidents/999/actions", json={"action": "resolve", "who": "a"}), 404, "incident_not_found"
    )
    refused(client.get("/api/incidents/abc"), 404, "not_found")


def test_a_server_without_a_database_says_it_keeps_no_history(make_settings: MakeSettings, make_app: MakeApp) -> None:
    client = make_app(make_settings()).test_client()
    refused(client.get("/api/incidents"), 404, "incidents_not_kept")
    assert "TRAFFIC_DATABASE_URL" in client.get("/api/incidents").get_json()["msg"]


def test_the_incident_paths_are_in_the_openapi_document() -> None:
    paths = openapi.document()["paths"]
    assert {"/api/incidents", "/api/incidents/{incidentId}", "/api/incidents/{incidentId}/actions"} <= set(paths)
    json.dumps(paths)


def test_a_database_that_is_not_there_is_a_503_to_retry(
    make_settings: MakeSettings, make_app: MakeApp, tmp_path: Path
) -> None:
    missing = f"sqlite:///{tmp_path / 'gone' / 'incidents.db'}"
    client = make_app(make_settings({"TRAFFIC_DATABASE_URL": missing})).test_client()
    response = client.get("/api/incidents")
    refused(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "5"
    assert "incident database" in response.get_json()["msg"]


def test_an_operators_action_is_handed_to_the_configured_outputs(
    make_settings: MakeSettings, make_app: MakeApp, tmp_path: Path, database: IncidentStore, redis_client: Any
) -> None:
    from infra import outbox

    settings = make_settings(
        {"TRAFFIC_DATABASE_URL": f"sqlite:///{tmp_path / 'incidents.db'}", "TRAFFIC_MQTT_URL": "mqtt://127.0.0.1:1883"}
    )
    client = make_app(settings).test_client()
    incident_id = ok(client.get("/api/incidents?limit=1"))["incidents"][0]["incidentId"]
    ok(client.post(f"/api/incidents/{incident_id}/actions", json={"action": "acknowledge", "who": "ann"}))
    (event,) = outbox.waiting(redis_client, outbox.MQTT, 10)
    assert event is not None and event.event == "incident_updated"
    assert event.incident["incidentId"] == incident_id and event.incident["status"] == "acknowledged"
    assert outbox.backlog(redis_client, outbox.WEBHOOKS) == 0  # no subscriptions: nothing waits for them
