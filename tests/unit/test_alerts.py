"""Alert lifecycle: stable identity, new/update/end, merging, idempotency, partial frames, wire payload."""

from __future__ import annotations

import json

import pytest

from traffic.alerts import (
    Alert,
    AlertEvent,
    AlertKind,
    alert_from_json,
    alert_identity,
    alert_to_json,
    expire_alerts,
    update_alerts,
)
from traffic.codec import CodecError
from traffic.models import Assessment, BBox, FrameVerdict, GroupVerdict, RiskLevel, TrafficGroup, VerdictStatus
from traffic.risk import aggregate_frame, error_verdict

CAM = "cam-1"
SIZE = (1280, 720)
LEFT: BBox = (100.0, 100.0, 300.0, 250.0)
"""Centre (200, 175): cell 0x0 of the 4x4 grid (cells are 320x180)."""
RIGHT: BBox = (900.0, 500.0, 1100.0, 650.0)
"""Centre (1000, 575): cell 3x3."""


def _verdict(
    index: int, level: RiskLevel = RiskLevel.MEDIUM, types: tuple[str, ...] = ("pedestrian_conflict",), text: str = "d"
) -> GroupVerdict:
    """An OK verdict for group ``index``."""
    return GroupVerdict(index, VerdictStatus.OK, level, 0.7, types, text, model="m")


def _group(index: int, bbox: BBox) -> TrafficGroup:
    """A two-member group with the given box."""
    return TrafficGroup(index, (0, 1), bbox, ("car", "person"), 0.9)


def _apply(
    active: dict[str, Alert],
    frame_id: str,
    now: float,
    sightings: list[tuple[GroupVerdict, BBox]],
    *,
    expected: tuple[int, ...] | None = None,
    min_level: RiskLevel = RiskLevel.MEDIUM,
) -> tuple[dict[str, Alert], list[AlertEvent]]:
    """Fold one frame of (verdict, group box) pairs into ``active``."""
    verdicts = [verdict for verdict, _ in sightings]
    groups = {verdict.group_index: _group(verdict.group_index, bbox) for verdict, bbox in sightings}
    indexes = expected if expected is not None else tuple(groups)
    frame = aggregate_frame(CAM, frame_id, indexes, verdicts)
    return update_alerts(
        active, camera_id=CAM, frame=frame, groups=groups, image_size=SIZE, now=now, min_level=min_level,
        end_after_s=10.0,
    )  # fmt: skip


def _kinds(events: list[AlertEvent]) -> list[str]:
    """Event kinds with their alert ids."""
    return [f"{event.kind}:{event.alert.alert_id}" for event in events]


def test_identity_is_camera_primary_type_and_coarse_cell() -> None:
    assert alert_identity(CAM, _verdict(1), _group(1, LEFT), SIZE) == "cam-1:pedestrian_conflict:0x0"
    assert alert_identity(CAM, _verdict(1, types=()), _group(1, RIGHT), SIZE) == "cam-1:unspecified:3x3"
    assert alert_identity(CAM, _verdict(1, types=("speeding", "tailgating")), _group(1, RIGHT), SIZE).startswith(
        "cam-1:speeding:"
    )


def test_identity_ignores_group_index_and_small_moves() -> None:
    first = alert_identity(CAM, _verdict(1), _group(1, LEFT), SIZE)
    assert alert_identity(CAM, _verdict(4), _group(4, (110.0, 95.0, 320.0, 240.0)), SIZE) == first


def test_first_sighting_raises_new() -> None:
    active, events = _apply({}, "f1", 100.0, [(_verdict(1), LEFT)])
    assert _kinds(events) == ["new:cam-1:pedestrian_conflict:0x0"]
    alert = active["cam-1:pedestrian_conflict:0x0"]
    assert alert == Alert(
        "cam-1:pedestrian_conflict:0x0", CAM, RiskLevel.MEDIUM, ("pedestrian_conflict",), "d",
        first_seen=100.0, last_seen=100.0, frame_id="f1", bbox=LEFT, count=1, model="m",
    )  # fmt: skip
    assert alert_to_json(AlertEvent(AlertKind.NEW, alert))["llmModel"] == "m"  # the model that raised it


def test_unchanged_sighting_refreshes_without_an_event_even_when_group_index_changes() -> None:
    active, _ = _apply({}, "f1", 100.0, [(_verdict(1), LEFT)])
    moved: BBox = (110.0, 105.0, 310.0, 255.0)
    active, events = _apply(active, "f2", 102.0, [(_verdict(3), moved)])
    assert events == []
    [alert] = active.values()
    assert (alert.first_seen, alert.last_seen, alert.count) == (100.0, 102.0, 2)
    assert (alert.frame_id, alert.bbox) == ("f2", moved)


@pytest.mark.parametrize(
    "changed",
    [
        _verdict(2, level=RiskLevel.HIGH),
        _verdict(2, types=("pedestrian_conflict", "speeding")),
        _verdict(2, text="worse"),
    ],
    ids=["level", "types", "description"],
)
def test_changed_sighting_raises_update(changed: GroupVerdict) -> None:
    active, _ = _apply({}, "f1", 100.0, [(_verdict(1), LEFT)])
    active, events = _apply(active, "f2", 102.0, [(changed, LEFT)])
    assert _kinds(events) == ["update:cam-1:pedestrian_conflict:0x0"]
    assert events[0].alert.level is changed.risk_level and events[0].alert.risk_types == changed.risk_types
    assert events[0].alert.description == changed.description and events[0].alert.count == 2


def test_far_away_sighting_is_a_different_alert() -> None:
    active, _ = _apply({}, "f1", 100.0, [(_verdict(1), LEFT)])
    active, events = _apply(active, "f2", 102.0, [(_verdict(1), RIGHT)])
    assert _kinds(events) == ["new:cam-1:pedestrian_conflict:3x3"]
    assert len(active) == 2


def test_other_primary_type_in_the_same_place_is_a_different_alert() -> None:
    active, _ = _apply({}, "f1", 100.0, [(_verdict(1), LEFT)])
    _, events = _apply(active, "f2", 102.0, [(_verdict(1, types=("speeding",)), LEFT)])
    assert _kinds(events) == ["new:cam-1:speeding:0x0"]


def test_drift_over_a_cell_line_keeps_the_alert() -> None:
    active, _ = _apply({}, "f1", 100.0, [(_verdict(1), (200.0, 100.0, 420.0, 250.0))])  # centre x 310: column 0
    active, events = _apply(active, "f2", 102.0, [(_verdict(2), (230.0, 100.0, 450.0, 250.0))])  # x 340: column 1
    assert events == [] and list(active) == ["cam-1:pedestrian_conflict:0x0"]
    assert active["cam-1:pedestrian_conflict:0x0"].count == 2


def test_two_groups_with_one_identity_merge_keeping_the_highest_level() -> None:
    near: BBox = (120.0, 110.0, 280.0, 240.0)
    sightings = [(_verdict(1, RiskLevel.MEDIUM, text="a"), LEFT), (_verdict(2, RiskLevel.HIGH, text="b"), near)]
    active, events = _apply({}, "f1", 100.0, sightings)
    assert _kinds(events) == ["new:cam-1:pedestrian_conflict:0x0"]
    assert events[0].alert.level is RiskLevel.HIGH and events[0].alert.description == "b"
    assert events[0].alert.bbox == near and len(active) == 1


def test_below_min_level_none_and_error_verdicts_raise_nothing() -> None:
    low = [(_verdict(1, RiskLevel.LOW), LEFT)]
    assert _apply({}, "f1", 100.0, low) == ({}, [])
    assert _kinds(_apply({}, "f1", 100.0, low, min_level=RiskLevel.LOW)[1]) == ["new:cam-1:pedestrian_conflict:0x0"]
    assert _apply({}, "f1", 100.0, [(_verdict(1, RiskLevel.NONE), LEFT)], min_level=RiskLevel.NONE) == ({}, [])
    frame = aggregate_frame(CAM, "f1", (1,), [error_verdict(1, "timeout")])
    groups = {1: _group(1, LEFT)}
    result = update_alerts(
        {}, camera_id=CAM, frame=frame, groups=groups, image_size=SIZE, now=100.0, min_level=RiskLevel.LOW,
        end_after_s=10.0,
    )  # fmt: skip
    assert result == ({}, [])


def test_verdict_without_a_known_group_is_ignored() -> None:
    frame = aggregate_frame(CAM, "f1", (1,), [_verdict(1)])
    result = update_alerts(
        {}, camera_id=CAM, frame=frame, groups={}, image_size=SIZE, now=100.0, min_level=RiskLevel.MEDIUM,
        end_after_s=10.0,
    )  # fmt: skip
    assert result == ({}, [])


def test_same_frame_twice_gives_no_second_event() -> None:
    active, first = _apply({}, "f1", 100.0, [(_verdict(1), LEFT)])
    again, second = _apply(active, "f1", 101.0, [(_verdict(1, RiskLevel.HIGH), LEFT)])
    assert _kinds(first) == ["new:cam-1:pedestrian_conflict:0x0"] and second == []
    assert again == active


def test_alert_ends_only_after_end_after_s_without_a_sighting() -> None:
    active, _ = _apply({}, "f1", 100.0, [(_verdict(1), LEFT)])
    active, events = _apply(active, "f2", 109.9, [])
    assert events == [] and len(active) == 1
    active, events = _apply(active, "f3", 110.0, [])
    assert _kinds(events) == ["end:cam-1:pedestrian_conflict:0x0"] and active == {}
    assert events[0].alert.last_seen == 100.0


def test_partial_frame_does_not_end_alerts_of_groups_without_a_verdict() -> None:
    active, _ = _apply({}, "f1", 100.0, [(_verdict(1), LEFT), (_verdict(2), RIGHT)])
    frame = aggregate_frame(CAM, "f2", (1, 2), [_verdict(1), error_verdict(2, "timeout")])
    assert frame.assessment is Assessment.PARTIAL
    groups = {1: _group(1, LEFT), 2: _group(2, RIGHT)}
    active, events = update_alerts(
        active, camera_id=CAM, frame=frame, groups=groups, image_size=SIZE, now=105.0, min_level=RiskLevel.MEDIUM,
        end_after_s=10.0,
    )  # fmt: skip
    assert events == [] and len(active) == 2
    assert active["cam-1:pedestrian_conflict:3x3"].last_seen == 100.0


def test_unavailable_frame_keeps_alerts_until_their_time_is_up() -> None:
    active, _ = _apply({}, "f1", 100.0, [(_verdict(1), LEFT)])
    frame = FrameVerdict(CAM, "f2", Assessment.UNAVAILABLE, RiskLevel.NONE, False, (), 0.0, "")
    kept, events = update_alerts(
        active, camera_id=CAM, frame=frame, groups={}, image_size=SIZE, now=105.0, min_level=RiskLevel.MEDIUM,
        end_after_s=10.0,
    )  # fmt: skip
    assert kept == active and events == []


def test_expire_alerts_ends_only_the_old_ones_in_id_order() -> None:
    active, _ = _apply({}, "f1", 100.0, [(_verdict(1), RIGHT), (_verdict(2), LEFT)])
    active, _ = _apply(active, "f2", 108.0, [(_verdict(1), RIGHT)])
    remaining, ended = expire_alerts(active, 111.0, 10.0)
    assert _kinds(ended) == ["end:cam-1:pedestrian_conflict:0x0"]
    assert list(remaining) == ["cam-1:pedestrian_conflict:3x3"]
    remaining, ended = expire_alerts(remaining, 118.0, 10.0)
    assert _kinds(ended) == ["end:cam-1:pedestrian_conflict:3x3"] and remaining == {}
    assert expire_alerts({}, 118.0, 10.0) == ({}, [])


def test_alert_seen_after_it_ended_starts_a_new_alert() -> None:
    active, _ = _apply({}, "f1", 100.0, [(_verdict(1), LEFT)])
    active, ended = expire_alerts(active, 120.0, 10.0)
    active, events = _apply(active, "f9", 121.0, [(_verdict(1), LEFT)])
    assert [e.kind for e in ended + events] == [AlertKind.END, AlertKind.NEW]
    assert active["cam-1:pedestrian_conflict:0x0"].first_seen == 121.0


def test_wire_payload_has_the_contract_fields() -> None:
    alert = Alert(
        "cam-1:speeding:2x1", CAM, RiskLevel.HIGH, ("speeding",), "超速", first_seen=1700000000.5,
        last_seen=1700000002.25, frame_id="f7", bbox=(10.0, 20.0, 30.4, 40.6), count=3, model="qwen-vl-plus",
    )  # fmt: skip
    payload = alert_to_json(AlertEvent(AlertKind.UPDATE, alert))
    assert payload == {
        "kind": "update",
        "alertId": "cam-1:speeding:2x1",
        "cameraId": "cam-1",
        "level": "high",
        "riskTypes": ["speeding"],
        "description": "超速",
        "firstSeen": "2023-11-14T22:13:20.500Z",
        "lastSeen": "2023-11-14T22:13:22.250Z",
        "frameId": "f7",
        "bbox": [10, 20, 30, 41],
        "count": 3,
        "trackIds": [],
        "source": "model",
        "llmModel": "qwen-vl-plus",
        "keyId": None,
    }
    json.dumps(payload)


def test_stored_alert_round_trips() -> None:
    active, events = _apply({}, "f1", 1700000000.125, [(_verdict(1, text="行人"), LEFT)])
    [event] = events
    stored = json.loads(json.dumps(alert_to_json(event)))
    assert alert_from_json(stored) == event
    assert alert_from_json(stored).alert == active["cam-1:pedestrian_conflict:0x0"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "started"}, r"alert\.kind: expected one of"),
        ({"level": "red"}, r"alert\.level: expected one of"),
        ({"lastSeen": 1700000000}, r"alert\.lastSeen: expected a string"),
        ({"firstSeen": "2023-11-14 22:13:20"}, r"alert\.firstSeen: expected an ISO-8601"),
        ({"bbox": [1, 2]}, r"alert\.bbox: expected 4 numbers"),
        ({"count": 0}, r"alert\.count: expected a positive count"),
        ({"riskTypes": None}, r"alert\.riskTypes: expected an array"),
    ],
)
def test_corrupt_stored_alert_raises_codec_error(change: dict[str, object], message: str) -> None:
    _, [event] = _apply({}, "f1", 100.0, [(_verdict(1), LEFT)])
    with pytest.raises(CodecError, match=message):
        alert_from_json(alert_to_json(event) | change)
    with pytest.raises(CodecError, match=r"alert\.alertId: missing"):
        alert_from_json({k: v for k, v in alert_to_json(event).items() if k != "alertId"})


def _tracked(index: int, bbox: BBox, tracks: tuple[int, ...], epoch: int = 1) -> TrafficGroup:
    """A group whose members are tracked (its key: the epoch and its oldest member)."""
    return TrafficGroup(index, (0, 1), bbox, ("car", "person"), 0.9, tracks=tracks, key=f"e{epoch}t{min(tracks)}")


def _apply_tracked(
    active: dict[str, Alert], frame_id: str, now: float, sightings: list[tuple[GroupVerdict, TrafficGroup]]
) -> tuple[dict[str, Alert], list[AlertEvent]]:
    """Fold one frame of (verdict, tracked group) pairs into ``active``."""
    groups = {group.index: group for _, group in sightings}
    frame = aggregate_frame(CAM, frame_id, tuple(groups), [verdict for verdict, _ in sightings])
    return update_alerts(
        active, camera_id=CAM, frame=frame, groups=groups, image_size=SIZE, now=now, min_level=RiskLevel.MEDIUM,
        end_after_s=10.0,
    )  # fmt: skip


def test_a_tracked_incident_is_one_alert_however_its_index_place_and_type_move() -> None:
    active, events = _apply_tracked({}, "f1", 0.0, [(_verdict(1), _tracked(1, LEFT, (3, 5)))])
    assert [(e.kind, e.alert.alert_id, e.alert.tracks) for e in events] == [(AlertKind.NEW, f"{CAM}:e1t3", (3, 5))]
    # Next frame: another group index, across the image, another risk type: the same tracks, the same alert.
    moved = (_verdict(2, RiskLevel.HIGH, ("near_collision",)), _tracked(2, RIGHT, (3, 5)))
    active, events = _apply_tracked(active, "f2", 1.0, [(_verdict(1), _tracked(1, LEFT, (8, 9))), moved])
    kinds = {(e.kind, e.alert.alert_id) for e in events}
    assert kinds == {(AlertKind.UPDATE, f"{CAM}:e1t3"), (AlertKind.NEW, f"{CAM}:e1t8")}
    # The oldest member leaves: the group's key changes, but it shares track 5 with the alert.
    active, events = _apply_tracked(active, "f3", 2.0, [(_verdict(1), _tracked(1, RIGHT, (5, 11)))])
    assert active[f"{CAM}:e1t3"].frame_id == "f3" and active[f"{CAM}:e1t3"].tracks == (5, 11)
    assert f"{CAM}:e1t5" not in active


def test_tracks_of_another_epoch_never_join_an_alert() -> None:
    active, _ = _apply_tracked({}, "f1", 0.0, [(_verdict(1), _tracked(1, LEFT, (3, 5), epoch=1))])
    active, events = _apply_tracked(active, "f2", 1.0, [(_verdict(1), _tracked(1, LEFT, (4, 5), epoch=2))])
    assert [(e.kind, e.alert.alert_id) for e in events] == [(AlertKind.NEW, f"{CAM}:e2t4")]


def test_an_alert_keeps_its_tracks_through_the_wire_format() -> None:
    active, events = _apply_tracked({}, "f1", 0.0, [(_verdict(1), _tracked(1, LEFT, (3, 5)))])
    payload = alert_to_json(events[0])
    assert payload["trackIds"] == [3, 5] and payload["alertId"] == f"{CAM}:e1t3"
    assert alert_from_json(json.loads(json.dumps(payload))) == events[0]


def test_an_alert_names_the_key_of_the_call_behind_it_never_the_key() -> None:
    verdict = GroupVerdict(1, VerdictStatus.OK, RiskLevel.HIGH, 0.9, ("speeding",), "d", model="m", key_id="k2")
    active, events = _apply({}, "f1", 100.0, [(verdict, LEFT)])
    (alert,) = active.values()
    assert alert.key_id == "k2"
    payload = alert_to_json(events[0])
    assert payload["keyId"] == "k2"
    assert alert_from_json(payload).alert == alert
    old = {k: v for k, v in payload.items() if k not in ("keyId", "llmModel")}  # stored before these fields
    assert alert_from_json(old).alert.key_id is None
