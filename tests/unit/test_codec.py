"""JSON codec of domain values: exact round trips through real JSON, CodecError on corrupt input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traffic.analysis import FrameAnalysis
from traffic.codec import (
    CodecError,
    analysis_from_json,
    analysis_to_json,
    frame_verdict_from_json,
    frame_verdict_to_json,
    parse_iso_timestamp,
    recent_verdict_from_json,
    recent_verdict_to_json,
    verdict_from_json,
    verdict_to_json,
)
from traffic.gate import RecentVerdict
from traffic.models import (
    Assessment,
    Detection,
    FrameVerdict,
    GroupVerdict,
    RiskLevel,
    TrafficGroup,
    Usage,
    VerdictStatus,
)
from traffic.wire import iso_timestamp

floats = st.floats(allow_nan=False, allow_infinity=False)
boxes = st.tuples(floats, floats, floats, floats)
texts = st.text(max_size=20)
small_ints = st.integers(min_value=-(2**40), max_value=2**40)


@st.composite
def analyses(draw: st.DrawFn) -> FrameAnalysis:
    """A frame analysis whose groups index its detections."""
    detections = draw(st.lists(st.builds(Detection, texts, floats, boxes), max_size=8))
    count = len(detections)
    members = st.lists(st.integers(0, count - 1), unique=True).map(lambda m: tuple(sorted(m))) if count else st.just(())
    groups = draw(
        st.lists(
            st.builds(TrafficGroup, st.integers(1, 99), members, boxes, st.lists(texts).map(tuple), floats),
            max_size=4,
        )
    )
    size = draw(st.tuples(st.integers(1, 8000), st.integers(1, 8000)))
    return FrameAnalysis(image_size=size, detections=tuple(detections), groups=tuple(groups))


verdicts = st.builds(
    GroupVerdict,
    group_index=small_ints,
    status=st.sampled_from(VerdictStatus),
    risk_level=st.sampled_from(RiskLevel),
    confidence=floats,
    risk_types=st.lists(texts, max_size=3).map(tuple),
    description=st.text(),
    danger_object_count=small_ints,
    trigger_object_ids=st.lists(small_ints, max_size=5).map(tuple),
    model=texts,
    latency_s=floats,
    usage=st.builds(Usage, small_ints, small_ints),
    key_id=st.none() | texts,
    error=st.none() | texts,
)

frame_verdicts = st.builds(
    FrameVerdict,
    camera_id=texts,
    frame_id=texts,
    assessment=st.sampled_from(Assessment),
    max_risk_level=st.sampled_from(RiskLevel),
    has_dangerous_driving=st.booleans(),
    verdicts=st.lists(verdicts, max_size=3).map(tuple),
    llm_latency_s=floats,
    llm_model=texts,
)


def _through_json(data: dict[str, Any]) -> Any:
    """What a reader gets back from Redis or a Celery result: strict JSON, no NaN."""
    return json.loads(json.dumps(data, allow_nan=False))


def _json_safe(value: object) -> bool:
    """Only dict/list/str/int/float/bool/None, recursively, with string keys."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_safe(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_safe(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def _verdict() -> GroupVerdict:
    """A fully populated verdict."""
    return GroupVerdict(
        group_index=2,
        status=VerdictStatus.OK,
        risk_level=RiskLevel.MEDIUM,
        confidence=0.7,
        risk_types=("pedestrian_conflict", "speeding"),
        description="行人与车辆距离过近",
        danger_object_count=2,
        trigger_object_ids=(1, 3),
        model="qwen-vl-plus",
        latency_s=1.25,
        usage=Usage(120, 40),
        key_id="k1",
    )


def _analysis() -> FrameAnalysis:
    """Two detections in one group."""
    detections = (Detection("car", 0.91, (100.0, 100.0, 200.0, 180.0)), Detection("person", 0.8, (210, 100, 240, 190)))
    group = TrafficGroup(1, (0, 1), (88.0, 88.0, 252.0, 202.0), ("car", "person"), 0.855)
    return FrameAnalysis(image_size=(1280, 720), detections=detections, groups=(group,))


@settings(max_examples=150, deadline=None)
@given(verdicts)
def test_group_verdict_round_trips_exactly(verdict: GroupVerdict) -> None:
    data = verdict_to_json(verdict)
    assert _json_safe(data)
    assert verdict_from_json(_through_json(data)) == verdict


@settings(max_examples=150, deadline=None)
@given(analyses())
def test_frame_analysis_round_trips_exactly(analysis: FrameAnalysis) -> None:
    data = analysis_to_json(analysis)
    assert _json_safe(data)
    decoded = analysis_from_json(_through_json(data))
    assert decoded == analysis
    assert all(type(d.bbox) is tuple and all(type(v) is float for v in d.bbox) for d in decoded.detections)


@settings(max_examples=60, deadline=None)
@given(frame_verdicts)
def test_frame_verdict_round_trips_exactly(frame: FrameVerdict) -> None:
    data = frame_verdict_to_json(frame)
    assert _json_safe(data)
    assert frame_verdict_from_json(_through_json(data)) == frame


def test_integer_pixels_decode_as_floats_and_tuples_are_restored() -> None:
    decoded = analysis_from_json(_through_json(analysis_to_json(_analysis())))
    assert decoded == _analysis()
    assert decoded.detections[1].bbox == (210.0, 100.0, 240.0, 190.0)
    assert isinstance(decoded.groups[0].member_indices, tuple) and isinstance(decoded.groups[0].classes, tuple)
    assert decoded.context(decoded.groups[0]).detections == decoded.detections


def test_verdict_uses_enum_values_and_readable_keys() -> None:
    data = verdict_to_json(_verdict())
    assert data["status"] == "ok" and data["riskLevel"] == "medium"
    assert data["usage"] == {"prompt": 120, "completion": 40} and data["keyId"] == "k1" and data["error"] is None


def test_recent_verdict_round_trips() -> None:
    recent = RecentVerdict(_verdict(), 1700000000.25)
    assert recent_verdict_from_json(_through_json(recent_verdict_to_json(recent))) == recent


def test_unknown_extra_keys_are_ignored() -> None:
    data = verdict_to_json(_verdict()) | {"addedLater": [1, 2]}
    assert verdict_from_json(data) == _verdict()


def _corrupt_verdict(**changes: object) -> dict[str, Any]:
    """The verdict's JSON with some fields replaced (or removed when the value is ``...``)."""
    data = verdict_to_json(_verdict())
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "verdict: expected an object, got null"),
        ([1, 2], "verdict: expected an object, got array"),
        (_corrupt_verdict(groupIndex=...), "verdict.groupIndex: missing"),
        (_corrupt_verdict(groupIndex="2"), "verdict.groupIndex: expected an integer, got string"),
        (_corrupt_verdict(groupIndex=True), "verdict.groupIndex: expected an integer, got boolean"),
        (_corrupt_verdict(groupIndex=2.0), "verdict.groupIndex: expected an integer, got number"),
        (_corrupt_verdict(riskLevel="red"), "verdict.riskLevel: expected one of"),
        (_corrupt_verdict(riskLevel="MEDIUM"), "verdict.riskLevel: expected one of"),
        (_corrupt_verdict(status=None), "verdict.status: expected one of"),
        (_corrupt_verdict(status=[]), "verdict.status: expected one of"),
        (_corrupt_verdict(confidence="0.7"), "verdict.confidence: expected a number, got string"),
        (_corrupt_verdict(confidence=float("nan")), "verdict.confidence: expected a finite number"),
        (_corrupt_verdict(latency=float("inf")), "verdict.latency: expected a finite number"),
        (_corrupt_verdict(confidence=10**400), "verdict.confidence: number out of range"),
        (_corrupt_verdict(riskTypes="speeding"), "verdict.riskTypes: expected an array, got string"),
        (_corrupt_verdict(riskTypes=["a", 3]), "verdict.riskTypes[1]: expected a string, got integer"),
        (_corrupt_verdict(triggerObjectIds=[1, None]), "verdict.triggerObjectIds[1]: expected an integer, got null"),
        (_corrupt_verdict(usage=None), "verdict.usage: expected an object, got null"),
        (_corrupt_verdict(usage={"prompt": 1}), "verdict.usage.completion: missing"),
        (_corrupt_verdict(keyId=7), "verdict.keyId: expected a string, got integer"),
        (_corrupt_verdict(description=...), "verdict.description: missing"),
    ],
)
def test_corrupt_verdict_raises_codec_error(data: object, message: str) -> None:
    with pytest.raises(CodecError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        verdict_from_json(data)


def _corrupt_analysis(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    """The analysis JSON with the value at ``path`` replaced."""
    data: Any = analysis_to_json(_analysis())
    target = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return dict(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_corrupt_analysis(("imageSize",), [1280]), r"analysis\.imageSize: expected \[width, height\]"),
        (_corrupt_analysis(("imageSize",), [0, 720]), r"analysis\.imageSize: expected positive sizes"),
        (_corrupt_analysis(("detections", 1, "bbox"), [1, 2, 3]), r"analysis\.detections\[1\]\.bbox: expected 4"),
        (_corrupt_analysis(("detections", 0, "bbox", 2), "x"), r"analysis\.detections\[0\]\.bbox\[2\]: expected a"),
        (_corrupt_analysis(("detections", 0), "car"), r"analysis\.detections\[0\]: expected an object"),
        (_corrupt_analysis(("groups",), {}), r"analysis\.groups: expected an array, got object"),
        (_corrupt_analysis(("groups", 0, "memberIndices"), [0, 5]), r"analysis\.groups\[0\]\.memberIndices: \[5\]"),
        (_corrupt_analysis(("groups", 0, "memberIndices"), [-1]), r"analysis\.groups\[0\]\.memberIndices: \[-1\]"),
        (_corrupt_analysis(("groups", 0, "classes"), [None]), r"analysis\.groups\[0\]\.classes\[0\]: expected a"),
    ],
)
def test_corrupt_analysis_raises_codec_error(data: object, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        analysis_from_json(data)


def test_corrupt_frame_verdict_names_the_nested_field() -> None:
    data = frame_verdict_to_json(
        FrameVerdict("cam-1", "f1", Assessment.COMPLETE, RiskLevel.MEDIUM, True, (_verdict(),), 1.25, "qwen-vl-plus")
    )
    data["verdicts"][0]["riskLevel"] = "orange"
    with pytest.raises(CodecError, match=r"frameVerdict\.verdicts\[0\]\.riskLevel"):
        frame_verdict_from_json(data)
    data["verdicts"] = [verdict_to_json(_verdict())]
    data["hasDangerousDriving"] = "yes"
    with pytest.raises(CodecError, match=r"frameVerdict\.hasDangerousDriving: expected a boolean"):
        frame_verdict_from_json(data)


def test_codec_error_is_a_value_error() -> None:
    assert issubclass(CodecError, ValueError)


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_iso_timestamps_parse_back_exactly_to_the_millisecond(millis: int) -> None:
    epoch = millis / 1000
    assert parse_iso_timestamp(iso_timestamp(epoch)) == epoch


@pytest.mark.parametrize("text", ["2024-02-30T00:00:00.000Z", "2024-01-01T00:00:00", "yesterday", "", 17])
def test_bad_iso_timestamps_raise_codec_error(text: object) -> None:
    with pytest.raises(CodecError, match="when"):
        parse_iso_timestamp(text, "when")
