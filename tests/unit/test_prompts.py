"""Tests of the per-group prompt builders and the risk-type vocabulary they offer."""

from __future__ import annotations

import json
import re

import pytest

from traffic.models import Detection, GroupContext, TrafficGroup
from traffic.prompts import Prompt, build_group_prompt, build_repair_prompt, language_name
from traffic.risk_types import (
    RISK_TYPES,
    Severity,
    ids_with_severity,
    is_known,
    normalize_risk_type,
    normalize_risk_types,
    severity,
)


def _context() -> GroupContext:
    """Two members, frame detections 3 and 7, in a group whose crop starts at (100, 200)."""
    detections = (
        Detection("person", 0.912, (150.0, 220.0, 180.0, 300.0)),
        Detection("car", 0.87, (170.4, 230.6, 330.0, 320.0)),
    )
    group = TrafficGroup(
        index=2,
        member_indices=(3, 7),
        bbox=(100.0, 200.0, 342.0, 332.0),
        classes=("car", "person"),
        average_confidence=0.89,
    )
    return GroupContext(group=group, detections=detections, image_size=(1280, 720))


def test_prompt_is_deterministic() -> None:
    assert build_group_prompt(_context()) == build_group_prompt(_context())


def test_prompt_lists_frame_ids_classes_confidences_and_crop_relative_boxes() -> None:
    user = build_group_prompt(_context()).user
    assert "- id 3: person, confidence 0.91, box [50, 20, 80, 100]" in user
    assert "- id 7: car, confidence 0.87, box [70, 31, 230, 120]" in user
    assert "242x132 px crop taken at (100, 200) of a 1280x720 px frame" in user
    assert "Traffic group 2" in user


def test_system_prompt_asks_for_one_bare_json_object() -> None:
    system = build_group_prompt(_context()).system
    for key in (
        "riskLevel",
        "confidence",
        "riskTypes",
        "description",
        "dangerObjectCount",
        "triggerObjectIds",
    ):
        assert f'"{key}"' in system
    assert "If unsure, choose the lower level." in system
    assert "no code fences" in system
    assert '"none", "low", "medium", "high", lowercase English' in system


def test_system_prompt_offers_the_whole_vocabulary() -> None:
    system = build_group_prompt(_context()).system
    for risk_id in RISK_TYPES:
        assert re.search(rf"\b{risk_id}\b", system), risk_id


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("zh-CN", "Simplified Chinese"),
        ("zh", "Simplified Chinese"),
        ("zh-Hant-TW", "Traditional Chinese"),
        ("en", "English"),
        ("en-US", "English"),
        ("ja-JP", "Japanese"),
        ("fr_FR", "French"),
        ("tlh", "BCP-47 tag 'tlh'"),
    ],
)
def test_description_language_is_named(language: str, expected: str) -> None:
    assert expected in language_name(language)
    assert expected in build_group_prompt(_context(), language=language).system


def test_default_language_is_simplified_chinese() -> None:
    assert "in Simplified Chinese" in build_group_prompt(_context()).system


def test_prompt_is_a_frozen_value() -> None:
    prompt = build_group_prompt(_context(), language="en")
    assert isinstance(prompt, Prompt)
    with pytest.raises(AttributeError):
        prompt.system = "x"  # type: ignore[misc]


def test_box_outside_the_crop_is_clipped() -> None:
    context = _context()
    outside = Detection("car", 0.5, (90.0, 190.0, 400.0, 400.0))
    clipped = GroupContext(context.group, (context.detections[0], outside), context.image_size)
    assert "box [0, 0, 242, 132]" in build_group_prompt(clipped).user


def test_repair_prompt_echoes_the_bad_reply_bounded() -> None:
    text = build_repair_prompt("Sure! The risk is high.")
    assert "Sure! The risk is high." in text
    assert "exactly one JSON object" in text
    assert "triggerObjectIds" in text
    long = build_repair_prompt("x" * 10_000)
    assert len(long) < 3000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Tailgating", "tailgating"),
        ("车距过近", "tailgating"),
        ("行人冲突", "pedestrian_conflict"),
        ("pedestrian conflict", "pedestrian_conflict"),
        ("Pedestrian-Conflict", "pedestrian_conflict"),
        ("redLightRunning", "red_light_running"),
        ("RED LIGHT RUNNING", "red_light_running"),
        ("闯红灯", "red_light_running"),
        ("逆行", "wrong_way"),
        ("wrong-way driving", "wrong_way"),
        ("speeding_risk", "speeding"),
        ("possible collision", "collision_risk"),
        ("两车之间存在追尾风险", "collision_risk"),
        ("行人闯红灯", "jaywalking"),
        ("交通拥堵", "congestion"),
        ("  Dense Traffic ", "dense_traffic"),
        ("其他", "other"),
        ("Mystery Hazard!", "mystery_hazard"),
    ],
)
def test_normalize_risk_type(raw: str, expected: str) -> None:
    assert normalize_risk_type(raw) == expected


@pytest.mark.parametrize("raw", ["", "  ", "none", "None", "无", "无风险", "n/a", "--"])
def test_non_risks_are_dropped(raw: str) -> None:
    assert normalize_risk_type(raw) is None


def test_normalize_risk_types_dedupes_and_truncates() -> None:
    raw = ["Tailgating", "车距过近", "none", "speeding", "congestion", "occlusion"]
    assert normalize_risk_types(raw) == ("tailgating", "speeding", "congestion")


def test_severity_classes() -> None:
    assert severity("pedestrian_conflict") is Severity.SEVERE
    assert severity("tailgating") is Severity.MODERATE
    assert severity("congestion") is Severity.SOFT
    assert severity("other") is Severity.SOFT
    assert severity("mystery_hazard") is Severity.MODERATE
    assert not is_known("mystery_hazard")
    assert set(ids_with_severity(Severity.SEVERE)) >= {"collision_risk", "running_stop_sign", "wrong_way"}


def test_vocabulary_ids_are_snake_case_and_map_to_themselves() -> None:
    for risk_id in RISK_TYPES:
        assert re.fullmatch(r"[a-z]+(?:_[a-z]+)*", risk_id)
        assert normalize_risk_type(risk_id) == risk_id


def test_schema_line_lists_levels_in_order() -> None:
    system = build_group_prompt(_context()).system
    line = next(line for line in system.splitlines() if line.startswith('{"riskLevel"'))
    assert json.loads(line.replace("[<object ids>]", "[]"))["riskLevel"] == "none|low|medium|high"
