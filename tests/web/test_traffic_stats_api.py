"""``GET /api/cameras/<id>/stats``: a camera's traffic analytics over REST, on a real Redis.

Data goes in through ``infra.traffic_stats.TrafficStats.record``, as the workers put it there; every
answer is checked against the OpenAPI document's ``TrafficStats`` schema.
"""

from __future__ import annotations

import time
from typing import Any

import jsonschema
import pytest
import redis
from flask.testing import FlaskClient

from infra.camera_registry import CameraRegistry
from infra.traffic_stats import TrafficStats
from tests.web.test_api import ok, refused
from traffic.analytics import MotionEvent
from traffic.cameras import Camera
from traffic.wire import iso_timestamp
from web import openapi


def check_schema(data: Any) -> None:
    """``data`` is a valid 200 answer of the stats endpoint as the OpenAPI document describes it."""
    document = openapi.document()
    schema = document["paths"]["/api/cameras/{cameraId}/stats"]["get"]["responses"]["200"]["content"]
    envelope = schema["application/json"]["schema"]
    root = {**document, **envelope}  # the document's components resolve from the root
    jsonschema.Draft202012Validator(root).validate({"code": 200, "msg": "OK", "data": data})


def snapshot(wire_id: str | int, at: float) -> dict[str, Any]:
    """A frame's analytics as the workers store them (``traffic.motion_wire.motion_snapshot``'s shape)."""
    return {
        "cameraId": wire_id,
        "timestamp": iso_timestamp(at),
        "trackingEpoch": 3,
        "unit": "px",
        "calibrated": False,
        "imageSize": [1280, 720],
        "lines": [
            {"name": "stop-line", "start": [100.0, 500.0], "end": [900.0, 520.0], "forward": "in", "backward": "out"}
        ],
        "zones": [
            {
                "name": "crossing",
                "polygon": [[200.0, 400.0], [600.0, 400.0], [600.0, 700.0]],
                "direction": [0.0, -1.0],
                "occupancy": {"person": 2},
                "total": 2,
            }
        ],
        "tracks": [
            {
                "trackId": 7,
                "class": "car",
                "trail": [[410.5, 600.0], [420.0, 598.5]],
                "speed": 31.4,
                "speedUnit": "px/s",
                "zones": ["crossing"],
            }
        ],
        "nearMisses": [
            {
                "kind": "near_miss",
                "measure": "ttc",
                "value": 0.8,
                "threshold": 1.5,
                "trackIds": [3, 7],
                "classes": ["car", "person"],
                "position": [400.0, 610.0],
                "phase": "start",
                "rule": "rule-based",
                "at": iso_timestamp(at),
            }
        ],
    }


@pytest.fixture
def cameras(redis_client: redis.Redis) -> CameraRegistry:
    """The registry with ``cam-1`` (a string id) and ``2`` (sent as a number)."""
    registry = CameraRegistry(redis_client)
    registry.add(Camera("cam-1", "rtsp://10.0.0.5/a", "gate"))
    registry.add(Camera("2", "rtsp://10.0.0.6/b", "", True, 2))
    return registry


@pytest.fixture
def stats(redis_client: redis.Redis) -> TrafficStats:
    return TrafficStats(redis_client)


def test_an_unknown_camera_is_a_404(client: FlaskClient, cameras: CameraRegistry) -> None:
    refused(client.get("/api/cameras/nope/stats"), 404, "camera_not_found", "cameraId")


def test_a_camera_without_stats_answers_recorded_false_and_empty_lists(
    client: FlaskClient, cameras: CameraRegistry
) -> None:
    data = ok(client.get("/api/cameras/cam-1/stats"))
    check_schema(data)
    assert data == {
        "cameraId": "cam-1",
        "recorded": False,
        "timestamp": None,
        "trackingEpoch": None,
        "unit": None,
        "calibrated": None,
        "imageSize": None,
        "since": None,
        "lines": [],
        "zones": [],
        "tracks": [],
        "nearMisses": [],
        "events": [],
    }
    # The requested since is echoed back, as an ISO-8601 date-time, whatever form it came in.
    assert ok(client.get("/api/cameras/cam-1/stats?since=1700000000"))["since"] == "2023-11-14T22:13:20.000Z"
    same = ok(client.get("/api/cameras/cam-1/stats?since=2023-11-14T23:13:20%2B01:00"))
    assert same["since"] == "2023-11-14T22:13:20.000Z"


def test_recorded_stats_are_served_with_the_wire_id(
    client: FlaskClient, cameras: CameraRegistry, stats: TrafficStats
) -> None:
    now = time.time()
    stats.record("2", snapshot(2, now), [], now)
    data = ok(client.get("/api/cameras/2/stats"))
    check_schema(data)
    assert data["recorded"] is True
    assert data["cameraId"] == 2, "the id as the client knows it: a number"
    assert data["timestamp"] == iso_timestamp(now) and data["imageSize"] == [1280, 720]
    assert data["unit"] == "px" and data["calibrated"] is False and data["trackingEpoch"] == 3
    (line,) = data["lines"]
    assert line["name"] == "stop-line" and line["totals"] == {"in": 0, "out": 0}
    assert [zone["name"] for zone in data["zones"]] == ["crossing"] and data["zones"][0]["total"] == 2
    assert [track["trackId"] for track in data["tracks"]] == [7]
    assert [miss["trackIds"] for miss in data["nearMisses"]] == [[3, 7]]
    assert data["events"] == [] and data["since"]
    # Another camera's stats are not this one's.
    assert ok(client.get("/api/cameras/cam-1/stats"))["recorded"] is False


def test_a_quiet_camera_shows_no_live_tracks(client: FlaskClient, cameras: CameraRegistry, stats: TrafficStats) -> None:
    long_ago = time.time() - 120
    stats.record("cam-1", snapshot("cam-1", long_ago), [], long_ago)
    data = ok(client.get("/api/cameras/cam-1/stats"))
    check_schema(data)
    assert data["recorded"] is True and data["tracks"] == [] and data["nearMisses"] == []
    assert [zone["name"] for zone in data["zones"]] == ["crossing"], "the geometry stays"


def crossing(at: float, cls: str, direction: str) -> MotionEvent:
    return MotionEvent("line_crossing", at, (1,), (cls,), where="stop-line", direction=direction)


def test_counts_and_events_are_since_the_given_time(
    client: FlaskClient, cameras: CameraRegistry, stats: TrafficStats
) -> None:
    minute = int(time.time() // 60)
    early, late = (minute - 10) * 60 + 5.0, (minute - 1) * 60 + 5.0
    stats.record("cam-1", snapshot("cam-1", early), [crossing(early, "car", "in")], early)
    stats.record("cam-1", snapshot("cam-1", late), [crossing(late, "person", "in"), crossing(late, "car", "out")], late)

    everything = ok(client.get("/api/cameras/cam-1/stats"))
    check_schema(everything)
    (line,) = everything["lines"]
    assert line["counts"] == {"in": {"car": 1, "person": 1}, "out": {"car": 1}}
    assert line["totals"] == {"in": 2, "out": 1}
    assert everything["since"] == iso_timestamp(early), "by default: since counting began"
    first, *rest = [(e["at"], e["kind"], e["direction"], e["classes"][0]) for e in everything["events"]]
    assert first == (iso_timestamp(early), "line_crossing", "in", "car"), "oldest first, newest last"
    assert sorted(rest) == [
        (iso_timestamp(late), "line_crossing", "in", "person"),
        (iso_timestamp(late), "line_crossing", "out", "car"),
    ]

    for since in (f"{late:.0f}", iso_timestamp(late).replace("Z", "%2B00:00")):
        recent = ok(client.get(f"/api/cameras/cam-1/stats?since={since}"))
        check_schema(recent)
        assert recent["lines"][0]["totals"] == {"in": 1, "out": 1}
        assert len(recent["events"]) == 2

    # Counts have minute resolution: a since inside the late minute still counts that minute (and says
    # so: the answer's since is the minute's start), while events are exactly those since then.
    inside = ok(client.get(f"/api/cameras/cam-1/stats?since={late + 20:.0f}"))
    assert inside["lines"][0]["totals"] == {"in": 1, "out": 1}
    assert inside["since"] == iso_timestamp((minute - 1) * 60)
    assert inside["events"] == []


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("since=yesterday", "invalid_value"),
        ("since=-5", "invalid_value"),
        ("since=2024-05-01T08:00:00", "invalid_value"),  # no offset: ambiguous
        ("since=2024-02-30T08:00:00Z", "invalid_value"),
        ("since=999999999999", "invalid_value"),  # past year 9999
        ("since=" + "1" * 65, "invalid_length"),
        ("since=1&since=2", "duplicate_parameter"),
    ],
)
def test_a_bad_since_is_a_400(client: FlaskClient, cameras: CameraRegistry, query: str, error: str) -> None:
    refused(client.get(f"/api/cameras/cam-1/stats?{query}"), 400, error, "since")
    refused(client.get(f"/api/cameras/nope/stats?{query}"), 400, error, "since")
