"""Tests of the level rules and of folding group verdicts into a frame verdict."""

from __future__ import annotations

import pytest

from traffic.models import Assessment, GroupVerdict, ModelReply, RiskLevel, Usage, VerdictStatus
from traffic.risk import (
    MISSING,
    aggregate_frame,
    cap_high,
    combined_model_name,
    derive_level,
    error_verdict,
    level_from_confidence,
    verdict_from_reply,
)
from traffic.settings import RiskThresholds

THRESHOLDS = RiskThresholds()


def _reply(level: RiskLevel | None, confidence: float = 0.5, types: tuple[str, ...] = ()) -> ModelReply:
    """A reply with only the fields the level rules read."""
    return ModelReply(level, confidence, types, "", 0, ())


def _ok(index: int, level: RiskLevel, *, model: str = "qwen-vl-plus", latency: float = 1.0) -> GroupVerdict:
    """An OK verdict for group ``index``."""
    return GroupVerdict(index, VerdictStatus.OK, level, 0.7, model=model, latency_s=latency)


@pytest.mark.parametrize(
    ("confidence", "expected"),
    [
        (0.0, RiskLevel.NONE),
        (0.449, RiskLevel.NONE),
        (0.45, RiskLevel.LOW),
        (0.649, RiskLevel.LOW),
        (0.65, RiskLevel.MEDIUM),
        (0.799, RiskLevel.MEDIUM),
        (0.80, RiskLevel.HIGH),
        (1.0, RiskLevel.HIGH),
    ],
)
def test_level_from_confidence_default_thresholds(confidence: float, expected: RiskLevel) -> None:
    assert level_from_confidence(confidence, THRESHOLDS) is expected


def test_level_from_confidence_custom_thresholds() -> None:
    thresholds = RiskThresholds(low=0.2, medium=0.3, high=0.4)
    assert level_from_confidence(0.35, thresholds) is RiskLevel.MEDIUM


def test_valid_level_beats_confidence() -> None:
    assert derive_level(_reply(RiskLevel.LOW, 0.95, ("speeding",)), THRESHOLDS) is RiskLevel.LOW
    assert derive_level(_reply(RiskLevel.MEDIUM, 0.1), THRESHOLDS) is RiskLevel.MEDIUM


def test_missing_level_falls_back_to_confidence() -> None:
    assert derive_level(_reply(None, 0.9, ("collision_risk",)), THRESHOLDS) is RiskLevel.HIGH
    assert derive_level(_reply(None, 0.7, ("tailgating",)), THRESHOLDS) is RiskLevel.MEDIUM
    assert derive_level(_reply(None, 0.3), THRESHOLDS) is RiskLevel.NONE


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        (("pedestrian_conflict",), RiskLevel.HIGH),
        (("congestion", "wrong_way"), RiskLevel.HIGH),
        (("tailgating",), RiskLevel.MEDIUM),
        (("congestion", "tailgating"), RiskLevel.MEDIUM),
        (("some_unknown_hazard",), RiskLevel.MEDIUM),
        (("congestion", "occlusion"), RiskLevel.LOW),
        (("other",), RiskLevel.LOW),
        ((), RiskLevel.LOW),
    ],
)
def test_high_without_severe_type_is_downgraded(types: tuple[str, ...], expected: RiskLevel) -> None:
    assert derive_level(_reply(RiskLevel.HIGH, 0.95, types), THRESHOLDS) is expected
    assert derive_level(_reply(None, 0.95, types), THRESHOLDS) is expected


def test_only_high_is_capped() -> None:
    assert cap_high(RiskLevel.MEDIUM, ("congestion",)) is RiskLevel.MEDIUM
    assert cap_high(RiskLevel.LOW, ()) is RiskLevel.LOW


def test_verdict_from_reply() -> None:
    reply = ModelReply(RiskLevel.HIGH, 0.9, ("tailgating",), "车距过近", 2, (3, 7))
    usage = Usage(100, 20)
    verdict = verdict_from_reply(
        4, reply, thresholds=THRESHOLDS, model="qwen-vl-plus", latency_s=1.2, usage=usage, key_id="k1"
    )
    assert verdict == GroupVerdict(
        group_index=4,
        status=VerdictStatus.OK,
        risk_level=RiskLevel.MEDIUM,
        confidence=0.9,
        risk_types=("tailgating",),
        description="车距过近",
        danger_object_count=2,
        trigger_object_ids=(3, 7),
        model="qwen-vl-plus",
        latency_s=1.2,
        usage=usage,
        key_id="k1",
    )
    assert verdict.ok


def test_error_verdict() -> None:
    verdict = error_verdict(2, "bad_reply", model="qwen-vl-plus", latency_s=3.0)
    assert not verdict.ok
    assert (verdict.risk_level, verdict.confidence, verdict.error) == (RiskLevel.NONE, 0.0, "bad_reply")
    assert (verdict.model, verdict.latency_s) == ("qwen-vl-plus", 3.0)


def test_no_expected_groups_is_skipped() -> None:
    frame = aggregate_frame("cam", "f1", [], [_ok(1, RiskLevel.HIGH)])
    assert frame.assessment is Assessment.SKIPPED
    assert (frame.max_risk_level, frame.has_dangerous_driving, frame.verdicts) == (RiskLevel.NONE, False, ())
    assert (frame.llm_model, frame.llm_latency_s) == ("", 0.0)


def test_all_ok_is_complete() -> None:
    frame = aggregate_frame(
        "cam", "f1", [1, 2], [_ok(2, RiskLevel.LOW, latency=2.5), _ok(1, RiskLevel.MEDIUM, latency=1.0)]
    )
    assert (frame.camera_id, frame.frame_id) == ("cam", "f1")
    assert frame.assessment is Assessment.COMPLETE
    assert frame.max_risk_level is RiskLevel.MEDIUM
    assert frame.has_dangerous_driving
    assert [verdict.group_index for verdict in frame.verdicts] == [1, 2]
    assert (frame.llm_latency_s, frame.llm_model) == (2.5, "qwen-vl-plus")


def test_error_and_missing_groups_make_a_partial_frame() -> None:
    verdicts = [error_verdict(2, "timeout", latency_s=30.0), _ok(1, RiskLevel.LOW)]
    frame = aggregate_frame("cam", "f1", [3, 1, 2], verdicts)
    assert frame.assessment is Assessment.PARTIAL
    assert [(v.group_index, v.status, v.error) for v in frame.verdicts] == [
        (1, VerdictStatus.OK, None),
        (2, VerdictStatus.ERROR, "timeout"),
        (3, VerdictStatus.ERROR, MISSING),
    ]
    assert frame.max_risk_level is RiskLevel.LOW
    assert not frame.has_dangerous_driving
    assert frame.llm_latency_s == 1.0


def test_no_ok_verdict_is_unavailable() -> None:
    frame = aggregate_frame("cam", "f1", [1, 2], [error_verdict(1, "rate_limited")])
    assert frame.assessment is Assessment.UNAVAILABLE
    assert (frame.max_risk_level, frame.has_dangerous_driving, frame.llm_model) == (RiskLevel.NONE, False, "")
    assert [verdict.error for verdict in frame.verdicts] == ["rate_limited", MISSING]


def test_error_verdicts_never_make_danger() -> None:
    high_error = GroupVerdict(1, VerdictStatus.ERROR, RiskLevel.HIGH, 0.9)
    frame = aggregate_frame("cam", "f1", [1, 2], [high_error, _ok(2, RiskLevel.LOW)])
    assert (frame.max_risk_level, frame.has_dangerous_driving) == (RiskLevel.LOW, False)


@pytest.mark.parametrize(
    ("level", "dangerous"),
    [(RiskLevel.NONE, False), (RiskLevel.LOW, False), (RiskLevel.MEDIUM, True), (RiskLevel.HIGH, True)],
)
def test_dangerous_driving_means_medium_or_high(level: RiskLevel, dangerous: bool) -> None:
    assert aggregate_frame("cam", "f1", [1], [_ok(1, level)]).has_dangerous_driving is dangerous


def test_duplicate_verdicts_keep_the_ok_one() -> None:
    verdicts = [error_verdict(1, "timeout"), _ok(1, RiskLevel.MEDIUM), _ok(1, RiskLevel.LOW)]
    frame = aggregate_frame("cam", "f1", [1], verdicts)
    assert frame.assessment is Assessment.COMPLETE
    assert frame.verdicts == (verdicts[1],)


def test_duplicate_errors_keep_the_first() -> None:
    frame = aggregate_frame("cam", "f1", [1], [error_verdict(1, "first"), error_verdict(1, "second")])
    assert [verdict.error for verdict in frame.verdicts] == ["first"]


def test_unexpected_groups_and_duplicate_expectations_are_ignored() -> None:
    frame = aggregate_frame("cam", "f1", [1, 1], [_ok(1, RiskLevel.LOW), _ok(9, RiskLevel.HIGH)])
    assert frame.assessment is Assessment.COMPLETE
    assert frame.max_risk_level is RiskLevel.LOW
    assert [verdict.group_index for verdict in frame.verdicts] == [1]


def test_mixed_models_are_joined_deterministically() -> None:
    verdicts = [_ok(1, RiskLevel.LOW, model="rules"), _ok(2, RiskLevel.LOW), _ok(3, RiskLevel.LOW, model="")]
    assert aggregate_frame("cam", "f1", [1, 2, 3], verdicts).llm_model == "qwen-vl-plus+rules"
    assert aggregate_frame("cam", "f1", [1, 2, 3], list(reversed(verdicts))).llm_model == "qwen-vl-plus+rules"


def test_combined_model_name_puts_rules_last() -> None:
    assert combined_model_name(["rules", "zz-model", "aa-model", "zz-model"]) == "aa-model+zz-model+rules"
    assert combined_model_name([]) == ""
