"""A camera's tracker and analytics as one state; the ``traffic_stats`` payload; rule-based alerts."""

from __future__ import annotations

import pytest

from traffic.alerts import RULE_BASED, Alert, AlertKind, alert_from_json, alert_to_json, motion_alerts
from traffic.analytics import CameraAnalytics, MotionEvent, MotionUpdate
from traffic.bytetrack import ByteTracker
from traffic.errors import TrackerStateError
from traffic.geometry import CameraGeometry, CountingLine, Zone
from traffic.models import Detection, RiskLevel
from traffic.motion import CameraMotion
from traffic.motion_wire import count_field, motion_snapshot, parse_count_field, stats_payload, sum_counts
from traffic.settings import AnalyticsSettings, TrackingSettings

SIZE = (1000, 600)
GEOMETRY = CameraGeometry(
    "cam",
    SIZE,
    lines=(CountingLine("gate", (500.0, 0.0), (500.0, 600.0), "westbound", "eastbound"),),
    zones=(Zone("road", ((0.0, 0.0), (1000.0, 0.0), (1000.0, 600.0), (0.0, 600.0)), direction=(1.0, 0.0)),),
)


def _motion() -> CameraMotion:
    return CameraMotion(ByteTracker(TrackingSettings()), CameraAnalytics(GEOMETRY, AnalyticsSettings()))


def _car(x: float) -> Detection:
    return Detection("car", 0.9, (x - 40, 300.0, x + 40, 360.0))


def test_one_state_carries_tracker_and_analytics_to_another_worker() -> None:
    a, b = _motion(), _motion()
    for k in range(4):
        a.update([_car(300 + 40 * k)], 10.0 + 0.2 * k, SIZE)
    b.restore(a.state())
    steps_a = [a.update([_car(300 + 40 * k)], 10.0 + 0.2 * k, SIZE) for k in range(4, 10)]
    steps_b = [b.update([_car(300 + 40 * k)], 10.0 + 0.2 * k, SIZE) for k in range(4, 10)]
    assert steps_a == steps_b
    crossings = [e for s in steps_b if s.analytics for e in s.analytics.events if e.kind == "line_crossing"]
    # x goes 300 → 660: the anchor passes x = 500 once. Seen from the line's start (top) towards its end
    # (bottom), its left is +x: moving from -x to +x is right to left, the backward direction.
    assert [(c.where, c.direction, c.classes) for c in crossings] == [("gate", "eastbound", ("car",))]
    assert steps_b[-1].tracked[0].track_id is not None


@pytest.mark.parametrize("blob", [b"", b"TMS1", b"TMS1\x00\x00\x00\x09abc", b"pickle-of-a-bare-tracker"])
def test_a_state_that_is_not_a_motion_state_is_refused(blob: bytes) -> None:
    with pytest.raises(TrackerStateError):
        _motion().restore(blob)


def test_without_analytics_only_tracks_come_back() -> None:
    motion = CameraMotion(ByteTracker(TrackingSettings()))
    step = motion.update([_car(100)], 1.0, SIZE)
    assert step.analytics is None and len(step.tracked) == 1
    other = CameraMotion(ByteTracker(TrackingSettings()))
    other.restore(motion.state())


def test_count_fields_survive_names_with_separators() -> None:
    field = count_field("a|b", "in\\out", "car")
    assert parse_count_field(field) == ("a|b", "in\\out", "car")
    assert parse_count_field("nonsense") is None
    assert sum_counts([{field: 2, "junk": 5}, {field: 1}]) == {("a|b", "in\\out", "car"): 3}


def _update(events: tuple[MotionEvent, ...] = (), active: tuple[MotionEvent, ...] = ()) -> MotionUpdate:
    return MotionUpdate(events=events, tracks=(), occupancy=(("road", "car", 2),), active_near_misses=active, unit="px")


def test_stats_payload_lists_each_line_with_counts_by_direction_and_class() -> None:
    snapshot = motion_snapshot("7", 1700000000.0, 3, GEOMETRY, _update())
    counts = {("gate", "eastbound", "car"): 3, ("gate", "eastbound", "person"): 1, ("gone", "in", "bus"): 2}
    payload = stats_payload(snapshot, counts, 1699999000.0, [])
    gate, gone = payload["lines"]
    assert gate["counts"] == {"westbound": {}, "eastbound": {"car": 3, "person": 1}}
    assert gate["totals"] == {"westbound": 0, "eastbound": 4}
    assert gone["name"] == "gone" and gone["totals"] == {"in": 2}  # a line since removed still reports
    assert payload["zones"][0]["occupancy"] == {"car": 2} and payload["zones"][0]["total"] == 2
    assert payload["unit"] == "px" and payload["calibrated"] is False and payload["trackingEpoch"] == 3
    assert payload["since"] == "2023-11-14T21:56:40.000Z"  # 1000 s before 22:13:20


def _near(value: float, phase: str = "start", at: float = 100.0) -> MotionEvent:
    return MotionEvent(
        kind="near_miss",
        at=at,
        track_ids=(3, 7),
        classes=("car", "person"),
        measure="ttc",
        value=value,
        threshold=1.5,
        position=(400.0, 610.0),
        phase=phase,
    )


def _fold(active: dict[str, Alert], update: MotionUpdate, frame: str, now: float) -> tuple[dict[str, Alert], list]:
    boxes = {3: (300.0, 500.0, 420.0, 620.0), 7: (410.0, 520.0, 450.0, 615.0)}
    return motion_alerts(
        active, camera_id="cam", epoch=2, update=update, boxes=boxes, frame_id=frame, now=now, end_after_s=10.0
    )


def test_a_near_miss_is_one_rule_based_alert_from_start_to_end() -> None:
    active, events = _fold({}, _update((_near(1.2),), (_near(1.2),)), "f1", 100.0)
    assert [e.kind for e in events] == [AlertKind.NEW]
    alert = events[0].alert
    assert alert.alert_id == "cam:nm:e2t3-t7" and alert.source == RULE_BASED
    assert alert.level is RiskLevel.MEDIUM and alert.tracks == (3, 7) and alert.risk_types == ("near_miss",)
    assert alert.bbox == (300.0, 500.0, 450.0, 620.0)
    assert "rule-based" in alert.description
    # Still in progress, the same minimum: nothing new to say.
    active, events = _fold(active, _update((), (_near(1.2),)), "f2", 100.5)
    assert events == [] and active[alert.alert_id].last_seen == 100.5
    # A lower minimum, at most half the threshold: high.
    active, events = _fold(active, _update((), (_near(0.6),)), "f3", 101.0)
    assert [e.kind for e in events] == [AlertKind.UPDATE] and events[0].alert.level is RiskLevel.HIGH
    # The encounter ends; the alert ends once not raised again for end_after_s.
    active, events = _fold(active, _update((_near(0.6, "end"),)), "f4", 101.5)
    assert events == []
    active, events = _fold(active, _update((_near(1.4, "start", 120.0),), ()), "f5", 112.0)
    kinds = [(e.kind, e.alert.alert_id) for e in events]
    assert (AlertKind.END, "cam:nm:e2t3-t7") not in kinds  # raised again within end_after_s: still one alert
    active, events = _fold(active, _update(), "f6", 123.0)
    assert [(e.kind, e.alert.alert_id) for e in events] == [(AlertKind.END, "cam:nm:e2t3-t7")]
    assert active == {}


def test_wrong_way_raises_a_high_alert_and_model_alerts_are_left_alone() -> None:
    model = Alert("cam:e2t1", "cam", RiskLevel.LOW, ("crowd",), "x", 0.0, 0.0, "f0", (0, 0, 1, 1), 1)
    wrong = MotionEvent("wrong_way", 50.0, (3,), ("car",), where="road", value=42.0)
    active, events = _fold({"cam:e2t1": model}, _update((wrong,)), "f1", 50.0)
    assert [(e.kind, e.alert.alert_id, e.alert.level) for e in events] == [
        (AlertKind.NEW, "cam:ww:e2t3:road", RiskLevel.HIGH)
    ]
    assert active["cam:e2t1"] is model  # long unseen, but only rule-based alerts are ended here


def test_the_alert_wire_form_says_where_an_alert_came_from() -> None:
    _, events = _fold({}, _update((_near(0.5),), ()), "f1", 100.0)
    data = alert_to_json(events[0])
    assert data["source"] == "rule-based"
    assert alert_from_json(data).alert == events[0].alert
    del data["source"]
    assert alert_from_json(data).alert.source == "model"  # stored before the field existed
