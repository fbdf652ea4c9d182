"""Incidents in the pure domain: identity of one alert life, the operators' workflow, the kept frames."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from traffic.alerts import RULE_BASED, Alert, AlertEvent, AlertKind, alert_from_json, alert_to_json
from traffic.incidents import (
    MAX_FRAME_IDS,
    IncidentAction,
    IncidentError,
    IncidentKind,
    IncidentStatus,
    checked_action,
    kept_frame_ids,
    natural_key,
    next_status,
    retention_cutoffs,
    retention_days,
    sighting_of,
)
from traffic.models import RiskLevel


def _alert(**changes: object) -> Alert:
    fields: dict[str, object] = {
        "alert_id": "cam-1:jaywalking:2x3", "camera_id": "cam-1", "level": RiskLevel.MEDIUM,
        "risk_types": ("jaywalking",), "description": "d", "first_seen": 1700000000.1234, "last_seen": 1700000003.5,
        "frame_id": "f9", "bbox": (1.0, 2.0, 3.0, 4.0), "count": 3, "tracks": (4, 9), "model": "qwen-vl-plus",
    }  # fmt: skip
    return Alert(**(fields | changes))  # type: ignore[arg-type]


@given(st.floats(min_value=1e9, max_value=4e9))
def test_an_alert_and_its_event_read_back_name_the_same_incident(first_seen: float) -> None:
    """The worker names evidence files from the live alert; the incident writer from the event in Redis."""
    event = AlertEvent(AlertKind.NEW, _alert(first_seen=first_seen, last_seen=first_seen))
    assert sighting_of(alert_from_json(alert_to_json(event))).natural_key == natural_key(
        event.alert.alert_id, first_seen
    )


def test_one_alert_life_is_one_incident() -> None:
    new = sighting_of(AlertEvent(AlertKind.NEW, _alert()))
    update = sighting_of(AlertEvent(AlertKind.UPDATE, _alert(level=RiskLevel.HIGH, last_seen=1700000009.0)))
    assert new.natural_key == update.natural_key == "cam-1:jaywalking:2x3@1700000000123"
    assert not new.ended and new.kind is IncidentKind.MODEL and new.alert.model == "qwen-vl-plus"
    assert sighting_of(AlertEvent(AlertKind.END, _alert())).ended
    # The same alert id raised again after it ended: another life, another incident.
    again = sighting_of(AlertEvent(AlertKind.NEW, _alert(first_seen=1700000100.0)))
    assert again.natural_key != new.natural_key
    assert natural_key("a", 1.0004) == natural_key("a", 1.0) == "a@1000"


@pytest.mark.parametrize(
    ("types", "kind"), [(("near_miss",), IncidentKind.NEAR_MISS), (("wrong_way",), IncidentKind.WRONG_WAY)]
)
def test_rule_based_alerts_are_incidents_of_their_rule(types: tuple[str, ...], kind: IncidentKind) -> None:
    alert = _alert(source=RULE_BASED, risk_types=types, model="")
    assert sighting_of(AlertEvent(AlertKind.NEW, alert)).kind is kind


def test_the_workflow() -> None:
    status = IncidentStatus.OPEN
    for action, expected in [
        (IncidentAction.ACKNOWLEDGE, IncidentStatus.ACKNOWLEDGED),
        (IncidentAction.RESOLVE, IncidentStatus.RESOLVED),
        (IncidentAction.REOPEN, IncidentStatus.OPEN),
        (IncidentAction.FALSE_POSITIVE, IncidentStatus.FALSE_POSITIVE),
        (IncidentAction.REOPEN, IncidentStatus.OPEN),
    ]:
        status = next_status(status, action)
        assert status is expected
    with pytest.raises(IncidentError, match="cannot reopen an incident that is open") as refused:
        next_status(IncidentStatus.OPEN, IncidentAction.REOPEN)
    assert refused.value.code == "invalid_transition"
    with pytest.raises(IncidentError, match="cannot acknowledge an incident that is resolved"):
        next_status(IncidentStatus.RESOLVED, IncidentAction.ACKNOWLEDGE)


@pytest.mark.parametrize(
    ("action", "who", "note", "message"),
    [
        ("delete", "ann", "", "action must be one of acknowledge, resolve, false_positive, reopen"),
        (["resolve"], "ann", "", "action must be one of"),
        ("resolve", "", "", "who must be a name"),
        ("resolve", "  ", "", "who must be a name"),
        ("resolve", "x" * 129, "", "who must be a name"),
        ("resolve", 7, "", "who must be a name"),
        ("resolve", "ann", 5, "note must be text"),
        ("resolve", "ann", "n" * 2001, "note must be text"),
    ],
)
def test_bad_actions_are_refused(action: object, who: object, note: object, message: str) -> None:
    with pytest.raises(IncidentError, match=message) as refused:
        checked_action(action, who, note)
    assert refused.value.code == "invalid_action"


def test_a_good_action_is_taken_as_given() -> None:
    assert checked_action("acknowledge", " ann ", None) == (IncidentAction.ACKNOWLEDGE, "ann", "")


def test_kept_frames_are_the_first_and_the_latest() -> None:
    frames: tuple[str, ...] = ()
    for k in range(200):
        frames = kept_frame_ids(frames, f"f{k}")
    assert len(frames) == MAX_FRAME_IDS
    assert frames[: MAX_FRAME_IDS // 2] == tuple(f"f{k}" for k in range(MAX_FRAME_IDS // 2))
    assert frames[-1] == "f199" and kept_frame_ids(frames, "f199") == frames


def test_retention_by_level_and_kind_the_longer_wins_and_zero_keeps() -> None:
    days = {"default": 90.0, "by_level": (("low", 30.0), ("high", 365.0)), "by_kind": (("near_miss", 180.0),)}
    assert retention_days(IncidentKind.MODEL, RiskLevel.MEDIUM, **days) == 90.0  # type: ignore[arg-type]
    assert retention_days(IncidentKind.MODEL, RiskLevel.LOW, **days) == 30.0  # type: ignore[arg-type]
    assert retention_days(IncidentKind.NEAR_MISS, RiskLevel.LOW, **days) == 180.0  # type: ignore[arg-type]
    assert retention_days(IncidentKind.NEAR_MISS, RiskLevel.HIGH, **days) == 365.0  # type: ignore[arg-type]
    assert retention_days(IncidentKind.WRONG_WAY, RiskLevel.LOW, default=90.0, by_kind=(("wrong_way", 0.0),)) is None
    assert retention_days(IncidentKind.MODEL, RiskLevel.HIGH, default=0.0) is None
    cutoffs = retention_cutoffs(1000.0 * 86_400, default=90.0, by_level=(("high", 0.0),))
    assert (IncidentKind.MODEL, RiskLevel.HIGH) not in cutoffs  # kept for ever
    assert cutoffs[(IncidentKind.NEAR_MISS, RiskLevel.LOW)] == 910.0 * 86_400 and len(cutoffs) == 6
