"""Fuzzing the REST API in-process: schemathesis from the served OpenAPI document, hypothesis bodies.

Whatever arrives, the API answers without a 5xx, every 4xx is the ``{code, msg, data: {error}}``
envelope with a message, a refused request changes nothing, and the server keeps working after.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from infra.incident_db import IncidentStore, database_engine, migrate
from tests.web.conftest import MakeApp, MakeSettings
from traffic.alerts import Alert, AlertEvent, AlertKind
from traffic.incidents import sighting_of
from traffic.models import RiskLevel
from web import openapi

pytestmark = pytest.mark.slow

NEGATIVE_EXAMPLES = 150
"""Per operation that takes input (8 of them): about 1,200 malformed requests."""
POSITIVE_EXAMPLES = 25
BODY_EXAMPLES = 300
"""Per body strategy and method."""

FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

CAMERAS = [
    {"cameraId": "cam-1", "url": "rtsp://admin:pw123456@10.0.0.5/stream", "name": "gate"},
    {"cameraId": 2, "url": "https://cams.example/feed"},
]


@pytest.fixture
def fuzz_app(make_settings: MakeSettings, make_app: MakeApp, tmp_path: Path) -> Flask:
    """The app with two cameras registered, so paths and PATCH bodies can hit real ones, and an incident
    database with incident 1 in it."""
    database = f"sqlite:///{tmp_path / 'incidents.db'}"
    engine = database_engine(database)
    migrate(engine)
    alert = Alert("cam-1:x:1x1", "cam-1", RiskLevel.HIGH, ("x",), "d", 1.7e9, 1.7e9, "f1", (1.0, 2.0, 3.0, 4.0), 1)
    IncidentStore(engine).record(sighting_of(AlertEvent(AlertKind.NEW, alert)))
    engine.dispose()
    app = make_app(make_settings({"TRAFFIC_DATABASE_URL": database}))
    client = app.test_client()
    for camera in CAMERAS:
        assert client.post("/api/cameras", json=camera).status_code == 201
    return app


@pytest.fixture
def api_schema(fuzz_app: Flask) -> Any:
    """The app's own OpenAPI document, loaded by schemathesis, calling the app in-process."""
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", fuzz_app)
    # A schema cannot say which URLs reach a camera or which dates exist (Feb 30), so schema-valid
    # input may still be refused; every other check (status, headers, body schemas, negative
    # data rejected, 405 with Allow...) stays on.
    schema.config.checks.update(excluded_check_names=["positive_data_acceptance"])
    return schema


def snapshot(client: FlaskClient) -> Any:
    """The camera set, to show that refused requests changed nothing."""
    response = client.get("/api/cameras")
    assert response.status_code == 200
    return [{k: v for k, v in c.items() if k != "stats"} for c in response.get_json()["data"]]


def assert_served(status: int, body: bytes, content_type: str) -> None:
    """No 5xx; a 4xx is the error envelope with a message and a machine code."""
    assert status < 500, body[:500]
    if status >= 400:
        assert content_type.startswith("application/json"), (status, content_type)
        payload = json.loads(body)
        assert payload["code"] == status
        assert isinstance(payload["msg"], str) and payload["msg"].strip()
        assert isinstance(payload["data"]["error"], str) and payload["data"]["error"]


def assert_still_working(client: FlaskClient, before: Any) -> None:
    """Health, reads and a write still work, and the camera set is as it was."""
    assert client.get("/api/health/health_check").get_json()["data"]["status"] == "UP"
    assert snapshot(client) == before
    assert client.patch("/api/cameras/cam-1", json={"name": "still here"}).status_code == 200


def exchange(case: Any, tally: Counter[str], app: Flask | None = None) -> Any:
    """Send one generated case (to ``app``, else the schema's), check the answer ourselves and against the document."""
    transport = {} if app is None else {"app": app}
    response = case.call(**transport)
    content_type = (response.headers.get("content-type") or [""])[0]
    assert_served(response.status_code, response.content, content_type)
    case.validate_response(response, transport_kwargs=transport or None)
    tally[f"{case.meta.generation.mode.value} {response.status_code // 100}xx"] += 1
    return response


def run_cases(strategy: Any, examples: int, tally: Counter[str]) -> None:
    """Draw ``examples`` cases from ``strategy`` and exchange each."""

    @settings(FUZZ, max_examples=examples)
    @given(case=strategy)
    def check(case: Any) -> None:
        exchange(case, tally)

    check()


def takes_input(operation: Any) -> bool:
    """Whether an operation has parameters or a body (only those can be given malformed input)."""
    definition = operation.definition.raw
    path_item = operation.schema.raw_schema["paths"][operation.path]
    return bool(definition.get("parameters") or path_item.get("parameters") or definition.get("requestBody"))


def operations(schema: Any) -> Iterator[Any]:
    """Every operation of the document."""
    for result in schema.get_all_operations():
        yield result.ok()


def test_schemathesis_negative_input_is_refused_cleanly(api_schema: Any, fuzz_app: Flask) -> None:
    client = fuzz_app.test_client()
    before = snapshot(client)
    tally: Counter[str] = Counter()
    fuzzed = [op for op in operations(api_schema) if takes_input(op)]
    assert len(fuzzed) == 16
    for operation in fuzzed:
        run_cases(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), NEGATIVE_EXAMPLES, tally)
        if operation.method.upper() == "PATCH":  # malformed bodies against a camera that exists
            strategy = operation.as_strategy(
                generation_mode=GenerationMode.NEGATIVE, path_parameters={"cameraId": "cam-1"}
            )
            run_cases(strategy, NEGATIVE_EXAMPLES, tally)
    print(f"schemathesis negative requests: {dict(tally)}")
    assert tally["negative 5xx"] == 0
    assert tally["negative 4xx"] >= 1000
    assert_still_working(client, before)


def test_schemathesis_valid_input_gets_documented_answers(api_schema: Any, fuzz_app: Flask) -> None:
    tally: Counter[str] = Counter()
    for operation in operations(api_schema):
        run_cases(operation.as_strategy(generation_mode=GenerationMode.POSITIVE), POSITIVE_EXAMPLES, tally)
    print(f"schemathesis positive requests: {dict(tally)}")
    assert tally["positive 2xx"] > 0 and tally["positive 5xx"] == 0
    assert fuzz_app.test_client().get("/api/queues").status_code == 200


# The pytest integration needs the schema at import: the document itself (no app needed to build it);
# cases are sent to the fixture's app. (``schemathesis.pytest.from_fixture`` fails under pytest 9.)
document_schema = schemathesis.openapi.from_dict(openapi.document())
document_schema.config.checks.update(excluded_check_names=["positive_data_acceptance"])


@document_schema.parametrize()
@settings(
    FUZZ, max_examples=10, suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.function_scoped_fixture]
)
def test_every_phase_of_schemathesis_against_the_document(case: Any, fuzz_app: Flask) -> None:
    """Coverage phase (boundaries, missing fields, undocumented methods → 405) and fuzzing, both modes."""
    exchange(case, Counter(), app=fuzz_app)


# --------------------------------------------------------------------------- camera bodies

CAMERA_FIELDS = ("cameraId", "url", "name", "enabled", "detectFps")
JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
BAD_FOR: dict[str, st.SearchStrategy[Any]] = {
    "cameraId": st.one_of(
        st.none(),
        st.booleans(),
        st.floats(),
        st.integers(max_value=-1),
        st.integers(min_value=2**53),
        st.text().filter(
            lambda s: not s or len(s) > 64 or any(not (c.isascii() and (c.isalnum() or c in "_.:-")) for c in s)
        ),
        st.lists(JSON_LEAVES, max_size=2),
    ),
    "url": st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.just(""),
        st.sampled_from(["gopher://h/x", "rtsp://", "http://h:99999/", "/etc/hostname", "file:///etc/hostname"]),
        st.text(min_size=1, max_size=40).map(lambda s: "rtsp://h/" + s + " x"),
        st.text(min_size=2049, max_size=2100).map(lambda s: "rtsp://h/" + s),
    ),
    "name": st.one_of(
        st.none(), st.booleans(), st.integers(), st.text(min_size=129, max_size=200), st.lists(st.text())
    ),
    "enabled": st.one_of(st.none(), st.integers(), st.text(), st.floats(allow_nan=False), st.lists(st.booleans())),
    "detectFps": st.one_of(
        st.none(),
        st.booleans(),
        st.text(max_size=5),
        st.floats(max_value=0.0499, allow_nan=False),
        st.floats(min_value=30.0001, allow_nan=False),
        st.integers(min_value=31),
        st.integers(max_value=0),
        st.lists(st.floats(min_value=1, max_value=5), max_size=2),
    ),
}
GOOD_FOR: dict[str, st.SearchStrategy[Any]] = {
    "cameraId": st.sampled_from(["cam-1", 2, "new-cam"]),
    "url": st.sampled_from(["rtsp://10.0.0.9/live", "https://h.example/mjpeg"]),
    "name": st.text(max_size=20),
    "enabled": st.booleans(),
    "detectFps": st.one_of(st.floats(min_value=0.05, max_value=30), st.integers(min_value=1, max_value=30)),
}


@st.composite
def malformed_objects(
    draw: st.DrawFn, fields: tuple[str, ...], required: tuple[str, ...], nullable: tuple[str, ...] = ()
) -> dict[str, Any]:
    """An object that breaks exactly one rule: a bad field value, a missing or an unknown field (``null`` is
    a good value for the ``nullable`` fields)."""
    body = {name: draw(GOOD_FOR[name]) for name in fields if draw(st.booleans()) or name in required}
    flaw = draw(st.sampled_from(["bad", "unknown", "missing"] if required else ["bad", "unknown"]))
    if flaw == "bad":
        name = draw(st.sampled_from(fields))
        body[name] = draw(BAD_FOR[name].filter(lambda value: value is not None or name not in nullable))
    elif flaw == "unknown":
        unknown = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in CAMERA_FIELDS))
        body[unknown] = draw(JSON_VALUES)
    else:
        del body[draw(st.sampled_from(required))]
    return body


def not_an_object(raw: bytes) -> bool:
    """Whether ``raw`` is something other than one JSON object (so every API must refuse it)."""
    try:
        return not isinstance(json.loads(raw), dict)
    except (ValueError, RecursionError):
        return True


RAW_BODIES = st.one_of(
    st.binary(max_size=200),
    JSON_VALUES.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"{", b'{"cameraId": NaN}', b'{"a": 1, "a": 2}', b"[" * 5000, b"\xef\xbb\xbf{}"]),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()[:-1]),
).filter(lambda raw: not_an_object(raw) or raw.startswith((b'{"cameraId": NaN', b'{"a": 1, "a"', b"\xef")))

BodySender = Callable[[FlaskClient, bytes, str], Any]
SENDERS: dict[str, tuple[BodySender, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "POST /api/cameras": (
        lambda c, raw, ct: c.post("/api/cameras", data=raw, content_type=ct),
        CAMERA_FIELDS,
        ("cameraId", "url"),
        (),
    ),
    "PATCH /api/cameras/cam-1": (
        lambda c, raw, ct: c.patch("/api/cameras/cam-1", data=raw, content_type=ct),
        CAMERA_FIELDS[1:],
        (),
        ("detectFps",),  # null clears the camera's own rate
    ),
}


@pytest.mark.parametrize("target", list(SENDERS))
def test_malformed_camera_bodies_are_refused(fuzz_app: Flask, target: str) -> None:
    send, fields, required, nullable = SENDERS[target]
    client = fuzz_app.test_client()
    before = snapshot(client)
    sent: Counter[str] = Counter()

    def refuse(raw: bytes, content_type: str = "application/json") -> None:
        response = send(client, raw, content_type)
        assert_served(response.status_code, response.data, response.content_type)
        assert 400 <= response.status_code < 500, (raw[:200], response.get_json())
        sent[str(response.status_code)] += 1

    @settings(FUZZ, max_examples=BODY_EXAMPLES)
    @given(body=malformed_objects(fields, required, nullable))
    def objects(body: dict[str, Any]) -> None:
        refuse(json.dumps(body).encode())

    @settings(FUZZ, max_examples=BODY_EXAMPLES)
    @given(raw=RAW_BODIES, content_type=st.sampled_from(["application/json"] * 4 + ["text/plain", ""]))
    def raw_bodies(raw: bytes, content_type: str) -> None:
        refuse(raw, content_type)

    objects()
    raw_bodies()
    print(f"{target}: malformed bodies by status {dict(sent)}")
    assert sum(sent.values()) >= BODY_EXAMPLES
    assert_still_working(client, before)
