"""The risk-type vocabulary offered to the vision model, its severity classes, and a normaliser.

Ids are snake_case English. Only SEVERE types can justify a ``high`` level (see ``traffic.risk``).
Free-form strings are mapped to ids through an alias table (English variants, camelCase, Chinese);
a string that matches nothing is kept as a slug and classified MODERATE, so an unknown type can
never justify ``high`` and never hides a medium.
"""

from __future__ import annotations

import enum
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from types import MappingProxyType

logger = logging.getLogger(__name__)

MAX_RISK_TYPES = 3
"""A reply names at most this many risk types, most important first."""

_MAX_SLUG_LENGTH = 48


class Severity(enum.StrEnum):
    """How much a risk type can weigh: only SEVERE types justify ``high``."""

    SEVERE = "severe"
    MODERATE = "moderate"
    SOFT = "soft"


_VOCABULARY: dict[str, Severity] = {
    "pedestrian_conflict": Severity.SEVERE,
    "collision_risk": Severity.SEVERE,
    "red_light_running": Severity.SEVERE,
    "wrong_way": Severity.SEVERE,
    "dangerous_lane_change": Severity.SEVERE,
    "speeding": Severity.SEVERE,
    "running_stop_sign": Severity.SEVERE,
    "tailgating": Severity.MODERATE,
    "close_following": Severity.MODERATE,
    "jaywalking": Severity.MODERATE,
    "illegal_turn": Severity.MODERATE,
    "blocking_crosswalk": Severity.MODERATE,
    "cyclist_conflict": Severity.MODERATE,
    "failure_to_yield": Severity.MODERATE,
    "unsafe_overtaking": Severity.MODERATE,
    "congestion": Severity.SOFT,
    "dense_traffic": Severity.SOFT,
    "illegal_parking": Severity.SOFT,
    "poor_visibility": Severity.SOFT,
    "occlusion": Severity.SOFT,
    "other": Severity.SOFT,
}

RISK_TYPES: Mapping[str, Severity] = MappingProxyType(_VOCABULARY)
"""Every known id with its severity, in the order the prompt lists them."""

UNKNOWN_SEVERITY = Severity.MODERATE
"""Severity of a type outside the vocabulary: never enough for ``high``."""

_ALIASES_BY_ID: dict[str, tuple[str, ...]] = {
    "pedestrian_conflict": (
        "pedestrian", "pedestrian_risk", "pedestrian_danger", "pedestrian_safety",
        "vehicle_pedestrian_conflict", "pedestrian_vehicle_conflict", "person_vehicle_conflict",
        "people_vehicle_conflict", "pedestrian_collision", "pedestrian_collision_risk",
        "行人冲突", "人车冲突", "行人与车辆冲突", "车辆与行人冲突", "人车混行", "行人碰撞风险",
        "行人危险", "行人风险", "行人安全", "撞人",
    ),
    "collision_risk": (
        "collision", "potential_collision", "possible_collision", "near_miss", "crash",
        "crash_risk", "accident", "accident_risk", "rear_end", "rear_end_collision",
        "碰撞风险", "碰撞", "追尾风险", "追尾", "剐蹭", "刮蹭", "撞车", "事故风险", "交通事故",
        "车辆碰撞",
    ),
    "red_light_running": (
        "red_light", "running_red_light", "running_a_red_light", "run_red_light",
        "red_light_violation", "ran_red_light", "signal_violation", "traffic_light_violation",
        "闯红灯", "闯红灯风险", "违反信号灯", "违反交通信号", "闯信号灯",
    ),
    "wrong_way": (
        "wrong_way_driving", "wrong_direction", "driving_wrong_way", "retrograde",
        "retrograde_driving", "reverse_driving", "contraflow",
        "逆行", "逆向行驶", "车辆逆行", "逆向",
    ),
    "dangerous_lane_change": (
        "unsafe_lane_change", "illegal_lane_change", "lane_change", "sudden_lane_change",
        "aggressive_lane_change", "lane_cutting", "cutting_in", "cut_in", "weaving",
        "危险变道", "违规变道", "随意变道", "强行变道", "频繁变道", "变道", "加塞", "强行加塞",
        "违法变道",
    ),
    "speeding": (
        "overspeed", "overspeeding", "over_speed", "excessive_speed", "high_speed", "speed",
        "超速", "超速行驶", "车速过快", "速度过快", "高速行驶",
    ),
    "running_stop_sign": (
        "stop_sign", "stop_sign_violation", "run_stop_sign", "ran_stop_sign",
        "running_a_stop_sign", "ignoring_stop_sign",
        "闯停车标志", "无视停车标志", "未按停车标志停车", "闯停车让行",
    ),
    "tailgating": (
        "tailgate", "following_too_closely", "following_too_close", "too_close",
        "short_following_distance", "insufficient_following_distance", "unsafe_following_distance",
        "车距过近", "跟车过近", "跟车太近", "车距太近", "尾随", "跟车距离过近", "未保持安全车距",
        "安全距离不足",
    ),
    "close_following": (
        "close_distance", "vehicles_too_close", "close_proximity", "vehicle_proximity",
        "short_distance", "close_vehicles",
        "近距离跟车", "跟车较近", "车辆距离过近", "车辆间距过小", "车辆间距小", "距离过近", "车辆靠近",
    ),
    "jaywalking": (
        "jaywalk", "illegal_crossing", "pedestrian_crossing_violation", "unsafe_crossing",
        "横穿马路", "乱穿马路", "违规横穿", "行人闯红灯", "横穿道路", "行人横穿",
    ),
    "illegal_turn": (
        "illegal_u_turn", "u_turn", "illegal_left_turn", "illegal_right_turn", "improper_turn",
        "unsafe_turn",
        "违规转弯", "违法转弯", "违规掉头", "违法掉头", "非法转弯", "掉头", "违章掉头",
    ),
    "blocking_crosswalk": (
        "crosswalk_blocking", "blocking_the_crosswalk", "blocking_zebra_crossing",
        "stopping_on_crosswalk", "crosswalk_violation",
        "占用人行横道", "阻挡人行横道", "压斑马线", "停在斑马线", "占用斑马线", "堵塞人行横道",
    ),
    "cyclist_conflict": (
        "cyclist", "bicycle_conflict", "bike_conflict", "cyclist_risk", "bicycle_risk",
        "non_motor_vehicle_conflict", "vehicle_cyclist_conflict",
        "非机动车冲突", "自行车冲突", "骑行者冲突", "电动车冲突", "机非冲突", "非机动车风险",
    ),
    "failure_to_yield": (
        "not_yielding", "failure_to_yield_to_pedestrian", "no_yield", "yield_violation",
        "未礼让行人", "不礼让行人", "未礼让", "未让行", "不让行",
    ),
    "unsafe_overtaking": (
        "illegal_overtaking", "dangerous_overtaking", "overtaking", "unsafe_passing",
        "违规超车", "危险超车", "强行超车", "超车",
    ),
    "congestion": (
        "traffic_congestion", "traffic_jam", "jam", "queue", "queuing", "slow_traffic",
        "拥堵", "交通拥堵", "堵车", "道路拥堵", "拥挤",
    ),
    "dense_traffic": (
        "heavy_traffic", "high_traffic", "crowded", "crowding", "dense_vehicles", "busy_traffic",
        "车流密集", "交通密集", "车辆密集", "车流量大", "人员密集", "行人密集",
    ),
    "illegal_parking": (
        "parking_violation", "illegally_parked", "improper_parking", "double_parking",
        "违停", "违章停车", "违规停车", "违法停车", "乱停车", "占道停车",
    ),
    "poor_visibility": (
        "low_visibility", "visibility", "bad_visibility", "low_light", "night", "glare", "fog",
        "能见度低", "视线不佳", "光线不足", "光线较暗", "夜间", "雾天", "逆光",
    ),
    "occlusion": (
        "occluded", "obstruction", "obstructed_view", "blocked_view", "view_blocked",
        "遮挡", "视线遮挡", "被遮挡",
    ),
    "other": ("others", "unknown", "misc", "miscellaneous", "其他", "其它", "未知"),
}  # fmt: skip

_NO_RISK: frozenset[str] = frozenset(
    {"none", "no", "no_risk", "normal", "safe", "null", "n_a", "na", "无", "无风险", "正常", "安全"}
)
"""Strings that name no risk at all: dropped rather than kept as a type."""


def _slug(value: str) -> str:
    """Lowercase snake_case form of ``value``; CJK characters are kept, other punctuation is not."""
    text = unicodedata.normalize("NFKC", value).strip()
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)
    text = re.sub(r"[\W_]+", "_", text.lower())
    return text.strip("_")[:_MAX_SLUG_LENGTH].strip("_")


def _build_alias_table() -> dict[str, str]:
    """Slugged alias (and id) → id."""
    table = {risk_id: risk_id for risk_id in _VOCABULARY}
    for risk_id, aliases in _ALIASES_BY_ID.items():
        for alias in aliases:
            table.setdefault(_slug(alias), risk_id)
    return table


_ALIAS_TABLE = _build_alias_table()
_CJK_ALIASES: tuple[tuple[str, str], ...] = tuple(
    sorted(
        ((alias, risk_id) for alias, risk_id in _ALIAS_TABLE.items() if not alias.isascii()),
        key=lambda item: (-len(item[0]), item[0]),
    )
)
"""Non-ASCII aliases, longest first, for matching inside longer Chinese phrases."""

_AFFIXES = re.compile(r"^(?:potential|possible|risk_of|danger_of)_|_(?:risk|danger|behaviou?r|violation|issue)$")


def normalize_risk_type(value: str) -> str | None:
    """The vocabulary id for ``value``, its slug when unknown, or None when it names no risk."""
    slug = _slug(value)
    if not slug or slug in _NO_RISK:
        return None
    known = _lookup(slug)
    if known is None:
        logger.debug("unknown risk type %r kept as %r", value, slug)
        return slug
    return known


def _lookup(slug: str) -> str | None:
    """Match ``slug`` exactly, then without common affixes, then by a contained Chinese alias."""
    if slug in _ALIAS_TABLE:
        return _ALIAS_TABLE[slug]
    stripped = _AFFIXES.sub("", slug)
    if stripped in _ALIAS_TABLE:
        return _ALIAS_TABLE[stripped]
    if not slug.isascii():
        for alias, risk_id in _CJK_ALIASES:
            if alias in slug:
                return risk_id
    return None


def normalize_risk_types(values: Iterable[str], *, limit: int = MAX_RISK_TYPES) -> tuple[str, ...]:
    """Normalise, drop non-risks and duplicates (first wins), keep at most ``limit``."""
    result: list[str] = []
    for value in values:
        risk_id = normalize_risk_type(value)
        if risk_id is not None and risk_id not in result:
            result.append(risk_id)
            if len(result) >= limit:
                break
    return tuple(result)


def severity(risk_type: str) -> Severity:
    """Severity of a normalised id; unknown ids are MODERATE."""
    return _VOCABULARY.get(risk_type, UNKNOWN_SEVERITY)


def is_known(risk_type: str) -> bool:
    """Whether ``risk_type`` is an id of the vocabulary."""
    return risk_type in _VOCABULARY


def ids_with_severity(level: Severity) -> tuple[str, ...]:
    """The vocabulary's ids of one severity, in vocabulary order."""
    return tuple(risk_id for risk_id, sev in _VOCABULARY.items() if sev is level)
