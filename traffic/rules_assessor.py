"""Offline, conservative risk heuristic over a group's detections (used when no vision model answers).

Geometry only, every distance a fraction of the image diagonal, so a frame scaled ×2 gets the same
verdict. Findings, each with a level:

- person–vehicle (car, bus, truck, motorcycle): boxes overlapping → high ``pedestrian_conflict``;
  gap ≤ ``near_ratio`` → medium; gap ≤ ``close_ratio`` → low. A person whose box lies mostly on a
  motorcycle's is taken as its rider and ignored.
- bicycle–vehicle: the same distances, ``cyclist_conflict``; MODERATE, so an overlap is medium.
- vehicle–vehicle: IoU ≥ ``collision_iou`` → medium ``collision_risk``; overlapping or gap ≤
  ``vehicle_gap_ratio`` → low ``close_following``; IoU ≥ ``duplicate_iou`` is one object detected
  twice and ignored.
- many objects: ≥ ``congestion_count`` → low ``congestion``; ≥ ``dense_count`` → low ``dense_traffic``.

Each finding is capped like a reply (``traffic.risk.cap_high``) before they are combined, so only a
pedestrian overlap can be high. The verdict takes the highest finding; its confidence is the
threshold of that level, so level and confidence agree under ``traffic.risk.level_from_confidence``.
The reply then goes through ``traffic.risk.derive_level`` like a model's.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

from traffic.models import BBox, Detection, GroupContext, GroupVerdict, ModelReply, RiskLevel, Usage
from traffic.risk import RULES_MODEL, cap_high, verdict_from_reply
from traffic.risk_types import MAX_RISK_TYPES, Severity, severity
from traffic.settings import RiskThresholds

logger = logging.getLogger(__name__)

VEHICLES = frozenset({"car", "bus", "truck", "motorcycle"})
VULNERABLE = {"person": "pedestrian_conflict", "bicycle": "cyclist_conflict"}
"""Vulnerable road-user class → the risk type of its conflict with a vehicle."""

_SEVERITY_ORDER = {Severity.SEVERE: 0, Severity.MODERATE: 1, Severity.SOFT: 2}

_NAMES_ZH = {
    "person": "行人",
    "bicycle": "自行车",
    "car": "汽车",
    "motorcycle": "摩托车",
    "bus": "公交车",
    "truck": "卡车",
}
_NAMES_EN = {"person": "pedestrian", "bicycle": "cyclist"}

_TEMPLATES = {
    "zh": {
        "pedestrian_conflict": "{a}与{b}{relation}，存在人车冲突风险",
        "cyclist_conflict": "{a}与{b}{relation}，存在机非冲突风险",
        "collision_risk": "{a}与{b}检测框大面积重叠，存在碰撞风险",
        "close_following": "{a}与{b}距离过近",
        "congestion": "该区域目标众多（{n}个），交通拥堵",
        "dense_traffic": "该区域目标较多（{n}个），车流密集",
        "none": "未发现明显风险（基于规则的离线评估）",
        "overlap": "重叠",
        "near": "距离很近",
        "close": "距离较近",
    },
    "en": {
        "pedestrian_conflict": "A {a} is {relation} a {b}: possible pedestrian conflict",
        "cyclist_conflict": "A {a} is {relation} a {b}: possible cyclist conflict",
        "collision_risk": "A {a} and a {b} overlap heavily: possible collision",
        "close_following": "A {a} and a {b} are very close to each other",
        "congestion": "Many objects ({n}) in this area: congestion",
        "dense_traffic": "Several objects ({n}) in this area: dense traffic",
        "none": "No clear risk found (offline rule-based assessment)",
        "overlap": "overlapping",
        "near": "very close to",
        "close": "close to",
    },
}


@dataclass(frozen=True)
class _Finding:
    """One rule that fired: its level, type, the frame detection indices involved, and a sentence."""

    level: RiskLevel
    risk_type: str
    object_ids: tuple[int, ...]
    description: str


class RulesAssessor:
    """Assess a group from box geometry alone; model name ``rules``."""

    def __init__(
        self,
        thresholds: RiskThresholds,
        *,
        language: str = "zh-CN",
        near_ratio: float = 0.02,
        close_ratio: float = 0.05,
        vehicle_gap_ratio: float = 0.01,
        collision_iou: float = 0.3,
        duplicate_iou: float = 0.7,
        rider_overlap: float = 0.3,
        dense_count: int = 6,
        congestion_count: int = 10,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._thresholds = thresholds
        self._text = _TEMPLATES["zh" if language.lower().startswith("zh") else "en"]
        self._zh = language.lower().startswith("zh")
        self._near_ratio = near_ratio
        self._close_ratio = close_ratio
        self._vehicle_gap_ratio = vehicle_gap_ratio
        self._collision_iou = collision_iou
        self._duplicate_iou = duplicate_iou
        self._rider_overlap = rider_overlap
        self._dense_count = dense_count
        self._congestion_count = congestion_count
        self._clock = clock

    def assess(self, context: GroupContext) -> GroupVerdict:
        """An OK verdict for the group, with the measured latency."""
        started = self._clock()
        reply = self.reply_for(context)
        latency = max(self._clock() - started, 0.0)
        logger.debug("rules: group %s → %s %s", context.group.index, reply.risk_level, reply.risk_types)
        return verdict_from_reply(
            context.group.index,
            reply,
            thresholds=self._thresholds,
            model=RULES_MODEL,
            latency_s=latency,
            usage=Usage(),
        )

    def reply_for(self, context: GroupContext) -> ModelReply:
        """The reply the rules give, before ``derive_level`` caps it."""
        findings = self._findings(context)
        if not findings:
            return ModelReply(RiskLevel.NONE, self._confidence(RiskLevel.NONE), (), self._text["none"], 0, ())
        findings.sort(key=lambda finding: (-finding.level.rank, _SEVERITY_ORDER[severity(finding.risk_type)]))
        top = findings[0]
        types: list[str] = []
        for finding in findings:
            if finding.risk_type not in types:
                types.append(finding.risk_type)
        triggers = sorted({i for finding in findings if finding.level is top.level for i in finding.object_ids})
        return ModelReply(
            risk_level=top.level,
            confidence=self._confidence(top.level),
            risk_types=tuple(types[:MAX_RISK_TYPES]),
            description=top.description,
            danger_object_count=len(triggers),
            trigger_object_ids=tuple(triggers),
        )

    def _confidence(self, level: RiskLevel) -> float:
        """The threshold of ``level``; for none, the complement of the low threshold."""
        thresholds = self._thresholds
        by_level = {
            RiskLevel.HIGH: thresholds.high,
            RiskLevel.MEDIUM: thresholds.medium,
            RiskLevel.LOW: thresholds.low,
            RiskLevel.NONE: 1.0 - thresholds.low,
        }
        return by_level[level]

    def _findings(self, context: GroupContext) -> list[_Finding]:
        """Every rule that fires for the group, pairwise rules first, then density."""
        diagonal = math.hypot(*context.image_size) or 1.0
        members = list(zip(context.group.member_indices, context.detections, strict=False))
        findings: list[_Finding] = []
        for (id_a, a), (id_b, b) in combinations(members, 2):
            finding = self._pair_finding(id_a, a, id_b, b, diagonal)
            if finding is not None:
                findings.append(finding)
        density = self._density_finding(tuple(object_id for object_id, _ in members))
        if density is not None:
            findings.append(density)
        return findings

    def _pair_finding(self, id_a: int, a: Detection, id_b: int, b: Detection, diagonal: float) -> _Finding | None:
        """The finding for one pair of detections, if any."""
        if a.cls in VEHICLES and b.cls in VULNERABLE:
            return self._conflict(id_b, b, id_a, a, diagonal)
        if a.cls in VULNERABLE and b.cls in VEHICLES:
            return self._conflict(id_a, a, id_b, b, diagonal)
        if a.cls in VEHICLES and b.cls in VEHICLES:
            return self._vehicles(id_a, a, id_b, b, diagonal)
        return None

    def _conflict(
        self, id_user: int, user: Detection, id_vehicle: int, vehicle: Detection, diagonal: float
    ) -> _Finding | None:
        """A vulnerable road user near or on a vehicle; riders on their motorcycle are not conflicts."""
        if user.cls == "person" and vehicle.cls == "motorcycle" and self._is_rider(user.bbox, vehicle.bbox):
            return None
        gap = box_gap(user.bbox, vehicle.bbox) / diagonal
        if intersection_area(user.bbox, vehicle.bbox) > 0.0:
            level, relation = RiskLevel.HIGH, "overlap"
        elif gap <= self._near_ratio:
            level, relation = RiskLevel.MEDIUM, "near"
        elif gap <= self._close_ratio:
            level, relation = RiskLevel.LOW, "close"
        else:
            return None
        risk_type = VULNERABLE[user.cls]
        level = cap_high(level, (risk_type,))
        text = self._text[risk_type].format(
            a=self._name(user.cls), b=self._name(vehicle.cls), relation=self._text[relation]
        )
        return _Finding(level, risk_type, tuple(sorted((id_user, id_vehicle))), text)

    def _vehicles(self, id_a: int, a: Detection, id_b: int, b: Detection, diagonal: float) -> _Finding | None:
        """Two vehicles heavily overlapping (collision risk) or almost touching (close following)."""
        overlap = iou(a.bbox, b.bbox)
        if overlap >= self._duplicate_iou:
            return None
        names = {"a": self._name(a.cls), "b": self._name(b.cls)}
        ids = (id_a, id_b) if id_a < id_b else (id_b, id_a)
        if overlap >= self._collision_iou:
            return _Finding(RiskLevel.MEDIUM, "collision_risk", ids, self._text["collision_risk"].format(**names))
        if box_gap(a.bbox, b.bbox) / diagonal <= self._vehicle_gap_ratio:
            return _Finding(RiskLevel.LOW, "close_following", ids, self._text["close_following"].format(**names))
        return None

    def _density_finding(self, object_ids: tuple[int, ...]) -> _Finding | None:
        """A soft finding for a crowded group."""
        count = len(object_ids)
        if count >= self._congestion_count:
            risk_type = "congestion"
        elif count >= self._dense_count:
            risk_type = "dense_traffic"
        else:
            return None
        return _Finding(RiskLevel.LOW, risk_type, object_ids, self._text[risk_type].format(n=count))

    def _is_rider(self, person: BBox, motorcycle: BBox) -> bool:
        """Whether most of the person's box lies on the motorcycle's: a rider, not a pedestrian."""
        area = box_area(person)
        return area > 0.0 and intersection_area(person, motorcycle) / area >= self._rider_overlap

    def _name(self, cls: str) -> str:
        """A class name for the description, in the configured language."""
        return _NAMES_ZH.get(cls, cls) if self._zh else _NAMES_EN.get(cls, cls)


def box_area(box: BBox) -> float:
    """Area of a box; 0 for a degenerate one."""
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def intersection_area(a: BBox, b: BBox) -> float:
    """Area shared by two boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(width, 0.0) * max(height, 0.0)


def iou(a: BBox, b: BBox) -> float:
    """Intersection over union of two boxes; 0 when both are empty."""
    shared = intersection_area(a, b)
    union = box_area(a) + box_area(b) - shared
    return shared / union if union > 0.0 else 0.0


def box_gap(a: BBox, b: BBox) -> float:
    """Shortest distance between two boxes' edges; 0 when they touch or overlap."""
    dx = max(a[0] - b[2], b[0] - a[2], 0.0)
    dy = max(a[1] - b[3], b[1] - a[3], 0.0)
    return math.hypot(dx, dy)
