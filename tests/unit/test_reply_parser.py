"""Tests of ``parse_reply`` against the ugly replies vision models really send."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traffic.errors import BadModelReply
from traffic.models import ModelReply, RiskLevel
from traffic.reply_parser import RAW_LIMIT, parse_confidence, parse_level, parse_reply

CLEAN = (
    '{"riskLevel": "medium", "confidence": 0.72, "riskTypes": ["tailgating"], '
    '"description": "两车车距过近", "dangerObjectCount": 2, "triggerObjectIds": [3, 7]}'
)
EXPECTED = ModelReply(RiskLevel.MEDIUM, 0.72, ("tailgating",), "两车车距过近", 2, (3, 7))


@pytest.mark.parametrize(
    "text",
    [
        CLEAN,
        f"```json\n{CLEAN}\n```",
        f"```\n{CLEAN}```",
        f"Here is my assessment:\n{CLEAN}\nHope this helps!",
        f"分析结果如下：```json {CLEAN} ``` 以上。",
        f'{{"note": "thinking"}} {CLEAN} {{"riskLevel": "high"}}',
        f'{{"result": {CLEAN}}}',
        f'{{"data": {{"result": {CLEAN}}}, "status": "ok"}}',
        f"[{CLEAN}]",
        json.dumps(CLEAN),
        CLEAN.replace('"', "'"),
        CLEAN.replace("[3, 7]}", "[3, 7],}").replace('["tailgating"]', '["tailgating",]'),
        CLEAN.replace("riskLevel", "risk_level")
        .replace("riskTypes", "risk_types")
        .replace("dangerObjectCount", "danger_object_count")
        .replace("triggerObjectIds", "trigger_object_ids"),
    ],
)
def test_tolerated_wrappings(text: str) -> None:
    assert parse_reply(text) == EXPECTED


def test_first_object_with_a_level_wins() -> None:
    text = '{"riskLevel": "low", "confidence": 0.5} and also {"riskLevel": "high", "confidence": 0.9}'
    assert parse_reply(text).risk_level is RiskLevel.LOW


def test_object_with_a_level_beats_an_earlier_partial_one() -> None:
    text = '{"confidence": 0.4} {"riskLevel": "medium", "confidence": 0.7}'
    reply = parse_reply(text)
    assert (reply.risk_level, reply.confidence) == (RiskLevel.MEDIUM, 0.7)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.7, 0.7),
        ("0.7", 0.7),
        ("70%", 0.7),
        ("70 %", 0.7),
        (70, 0.7),
        ("85", 0.85),
        (1, 1.0),
        (150, 1.0),
        (-0.2, 0.0),
        ("high", 0.0),
        (True, 0.0),
        (None, 0.0),
        (float("nan"), 0.0),
        ([0.5], 0.0),
    ],
)
def test_confidence_coercion(value: object, expected: float) -> None:
    assert parse_confidence(value) == pytest.approx(expected)


def test_huge_integer_confidence_is_clamped() -> None:
    assert (parse_confidence(10**400), parse_confidence(-(10**400))) == (1.0, 0.0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("high", RiskLevel.HIGH),
        ("HIGH", RiskLevel.HIGH),
        (" Medium ", RiskLevel.MEDIUM),
        ("moderate", RiskLevel.MEDIUM),
        ("High risk", RiskLevel.HIGH),
        ("low_risk", RiskLevel.LOW),
        ("高风险", RiskLevel.HIGH),
        ("中", RiskLevel.MEDIUM),
        ("低", RiskLevel.LOW),
        ("无", RiskLevel.NONE),
        ("medium (0.7)", RiskLevel.MEDIUM),
        ("red", None),
        ("none|low|medium|high", None),
        (3, None),
        (None, None),
    ],
)
def test_level_coercion(value: object, expected: RiskLevel | None) -> None:
    assert parse_level(value) is expected


def test_wrong_types_are_coerced() -> None:
    text = (
        '{"riskLevel": "HIGH", "confidence": "85%", "riskTypes": "Pedestrian Conflict, 车距过近", '
        '"description": ["行人靠近", "车辆未减速"], "dangerObjectCount": "2", "triggerObjectIds": "3, #7"}'
    )
    reply = parse_reply(text)
    assert reply == ModelReply(
        RiskLevel.HIGH, 0.85, ("pedestrian_conflict", "tailgating"), "行人靠近; 车辆未减速", 2, (3, 7)
    )


def test_missing_fields_get_defaults() -> None:
    reply = parse_reply('{"riskLevel": "low"}')
    assert reply == ModelReply(RiskLevel.LOW, 0.0, (), "", 0, ())


def test_invalid_level_is_none_so_confidence_decides_later() -> None:
    reply = parse_reply('{"riskLevel": "orange", "confidence": 0.9, "riskTypes": ["speeding"]}')
    assert reply.risk_level is None
    assert reply.confidence == 0.9


def test_risk_types_normalised_deduped_and_truncated() -> None:
    text = '{"riskLevel": "medium", "riskTypes": ["Tailgating", "车距过近", "闯红灯", "逆行", "超速"]}'
    assert parse_reply(text).risk_types == ("tailgating", "red_light_running", "wrong_way")


def test_old_style_type_field_and_type_objects() -> None:
    assert parse_reply('{"type": "tailgating", "riskLevel": "medium"}').risk_types == ("tailgating",)
    text = '{"riskLevel": "low", "riskTypes": [{"type": "congestion"}, 5, null]}'
    assert parse_reply(text).risk_types == ("congestion",)


def test_trigger_ids_filtered_to_valid_ones() -> None:
    text = '{"riskLevel": "medium", "dangerObjectCount": 5, "triggerObjectIds": [3, 4, "7", 3, -1, true, 2.0]}'
    reply = parse_reply(text, valid_object_ids=[3, 7])
    assert reply.trigger_object_ids == (3, 7)
    assert reply.danger_object_count == 2
    unfiltered = parse_reply(text)
    assert unfiltered.trigger_object_ids == (3, 4, 7, 2)
    assert unfiltered.danger_object_count == 5


def test_danger_count_defaults_to_trigger_count() -> None:
    assert parse_reply('{"riskLevel": "medium", "triggerObjectIds": [1, 2]}').danger_object_count == 2
    assert parse_reply('{"riskLevel": "medium", "dangerObjectCount": -3}').danger_object_count == 0
    assert parse_reply('{"riskLevel": "medium", "dangerObjectCount": 2.6}').danger_object_count == 3


def test_python_literals_and_single_quotes() -> None:
    text = (
        "{'riskLevel': 'none', 'confidence': 0.3, 'riskTypes': [], 'flag': True, 'x': None, "
        "'description': 'it\\'s fine'}"
    )
    reply = parse_reply(text)
    assert reply.risk_level is RiskLevel.NONE
    assert reply.description == "it's fine"


def test_bare_keys_are_quoted() -> None:
    reply = parse_reply("{riskLevel: 'high', confidence: 0.9, riskTypes: ['speeding'], note: 'a: b, c'}")
    assert (reply.risk_level, reply.confidence, reply.risk_types) == (RiskLevel.HIGH, 0.9, ("speeding",))


def test_truncated_reply_is_completed() -> None:
    text = '```json\n{"riskLevel": "medium", "confidence": 0.7, "riskTypes": ["tailgating"], "description": "两车车'
    reply = parse_reply(text)
    assert (reply.risk_level, reply.confidence, reply.risk_types) == (RiskLevel.MEDIUM, 0.7, ("tailgating",))
    assert reply.description == "两车车"


def test_truncated_after_a_key_falls_back_to_the_last_comma() -> None:
    reply = parse_reply('{"riskLevel": "low", "confidence": 0.5, "descr')
    assert (reply.risk_level, reply.confidence) == (RiskLevel.LOW, 0.5)


def test_chinese_keys() -> None:
    reply = parse_reply('{"风险等级": "高", "置信度": 0.9, "风险类型": ["行人冲突"], "描述": "行人横穿"}')
    assert reply == ModelReply(RiskLevel.HIGH, 0.9, ("pedestrian_conflict",), "行人横穿", 0, ())


def test_nested_risk_object() -> None:
    reply = parse_reply('{"risk": {"level": "medium", "score": 0.66}}')
    assert (reply.risk_level, reply.confidence) == (RiskLevel.MEDIUM, 0.66)


def test_exact_camel_key_beats_an_alias() -> None:
    assert parse_reply('{"level": "low", "riskLevel": "high"}').risk_level is RiskLevel.HIGH
    assert parse_reply('{"riskLevel": "high", "level": "low"}').risk_level is RiskLevel.HIGH


@pytest.mark.parametrize("text", ["", "   ", "The scene looks safe.", "riskLevel: high", "[1, 2, 3]", "{{{"])
def test_no_json_object_raises(text: str) -> None:
    with pytest.raises(BadModelReply) as caught:
        parse_reply(text)
    assert caught.value.raw == text


@pytest.mark.parametrize("text", ['{"answer": 42}', '{"objects": [{"id": 1}]}', "{}"])
def test_object_without_verdict_fields_raises(text: str) -> None:
    with pytest.raises(BadModelReply, match="no verdict fields"):
        parse_reply(text)


def test_raw_is_truncated() -> None:
    text = "no json here " * 500
    with pytest.raises(BadModelReply) as caught:
        parse_reply(text)
    assert caught.value.raw == text[:RAW_LIMIT]


def test_huge_numbers_and_deep_nesting_do_not_crash() -> None:
    assert parse_reply('{"riskLevel": "low", "confidence": 1e999}').confidence == 1.0
    assert parse_reply('{"riskLevel": "low", "dangerObjectCount": 1e999}').danger_object_count == 0
    deep = '{"riskLevel": "low", "x": ' + "[" * 5000 + "]" * 5000 + "}"
    with pytest.raises(BadModelReply):
        parse_reply(deep)
    digits = '{"riskLevel": "low", "triggerObjectIds": [' + "9" * 5000 + "]}"
    assert isinstance(parse_reply(digits), ModelReply)


def _only_reply_or_bad_reply(text: str) -> None:
    """parse_reply's whole contract on arbitrary input."""
    try:
        reply = parse_reply(text, valid_object_ids={1, 2, 3})
    except BadModelReply as error:
        assert error.raw == text[:RAW_LIMIT]
        return
    assert isinstance(reply, ModelReply)
    assert 0.0 <= reply.confidence <= 1.0
    assert len(reply.risk_types) <= 3
    assert set(reply.trigger_object_ids) <= {1, 2, 3}
    assert reply.danger_object_count >= 0


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_fuzz_arbitrary_text(text: str) -> None:
    _only_reply_or_bad_reply(text)


_JSONISH = st.text(alphabet="{}[]\":,'0123456789.-eE% \ntruefalsnulTFNoriskLvlcdphmg_\\`", max_size=120)


@settings(max_examples=500, deadline=None)
@given(_JSONISH)
def test_fuzz_jsonish_text(text: str) -> None:
    _only_reply_or_bad_reply(text)


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    [
        "riskLevel",
        "risk_level",
        "confidence",
        "riskTypes",
        "description",
        "dangerObjectCount",
        "triggerObjectIds",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, min_size=1), st.text(max_size=30), st.text(max_size=30))
def test_fuzz_verdict_shaped_objects(fields: dict[str, object], before: str, after: str) -> None:
    text = before.replace("{", "") + json.dumps(fields) + after
    _only_reply_or_bad_reply(text)
    if any(not isinstance(value, dict) for value in fields.values()):
        levels = [fields[key] for key in ("riskLevel", "risk_level") if key in fields]
        try:
            assert isinstance(parse_reply(json.dumps(fields)), ModelReply)
        except BadModelReply as exc:
            # Only a verdict that names neither a level nor a confidence is refused.
            assert str(exc) == "model reply names no risk level and no confidence"
            assert all(parse_level(level) is None for level in levels)


@pytest.mark.parametrize(
    "text",
    [
        '{"description": "two cars and a pedestrian at the crossing"}',
        '{"riskLevel": "hi',
        '{"riskLevel": "orange", "riskTypes": ["speeding"]}',
        '{"riskTypes": ["tailgating"], "dangerObjectCount": 2, "triggerObjectIds": [1, 2]}',
        '{"riskLevel": null, "confidence": "n/a"}',
    ],
)
def test_a_verdict_without_level_or_confidence_is_unusable_not_safe(text: str) -> None:
    with pytest.raises(BadModelReply, match="no risk level and no confidence") as caught:
        parse_reply(text)
    assert caught.value.raw == text


def test_a_confidence_alone_still_judges() -> None:
    reply = parse_reply('{"confidence": 0.85, "description": "close call"}')
    assert reply.risk_level is None and reply.confidence == 0.85
