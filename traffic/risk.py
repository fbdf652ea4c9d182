"""Risk rules: a group's level from a model reply, error verdicts, and folding groups into a frame."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from traffic.models import (
    Assessment,
    FrameVerdict,
    GroupVerdict,
    ModelReply,
    RiskLevel,
    Usage,
    VerdictStatus,
)
from traffic.risk_types import Severity, severity
from traffic.settings import RiskThresholds

logger = logging.getLogger(__name__)

RULES_MODEL = "rules"
"""``llmModel`` of verdicts made by the offline rules assessor; listed last in a mixed frame."""

MISSING = "missing"
"""``GroupVerdict.error`` of a synthetic verdict for an expected group that never answered."""


def level_from_confidence(confidence: float, thresholds: RiskThresholds) -> RiskLevel:
    """The level a bare confidence reaches: high ≥ high, medium ≥ medium, low ≥ low, else none."""
    if confidence >= thresholds.high:
        return RiskLevel.HIGH
    if confidence >= thresholds.medium:
        return RiskLevel.MEDIUM
    if confidence >= thresholds.low:
        return RiskLevel.LOW
    return RiskLevel.NONE


def cap_high(level: RiskLevel, risk_types: Iterable[str]) -> RiskLevel:
    """Downgrade ``high`` without a SEVERE type: soft types only (or none) → low, else medium."""
    if level is not RiskLevel.HIGH:
        return level
    severities = {severity(risk_type) for risk_type in risk_types}
    if Severity.SEVERE in severities:
        return level
    return RiskLevel.MEDIUM if Severity.MODERATE in severities else RiskLevel.LOW


def derive_level(reply: ModelReply, thresholds: RiskThresholds) -> RiskLevel:
    """The reply's level (from confidence when it named none valid), with ``high`` capped by type."""
    level = reply.risk_level
    if level is None:
        level = level_from_confidence(reply.confidence, thresholds)
    capped = cap_high(level, reply.risk_types)
    if capped is not level:
        logger.debug("level %s downgraded to %s for types %s", level.value, capped.value, reply.risk_types)
    return capped


def verdict_from_reply(
    group_index: int,
    reply: ModelReply,
    *,
    thresholds: RiskThresholds,
    model: str,
    latency_s: float,
    usage: Usage,
    key_id: str | None = None,
) -> GroupVerdict:
    """An OK verdict for one group from a parsed reply, with the level rules applied."""
    return GroupVerdict(
        group_index=group_index,
        status=VerdictStatus.OK,
        risk_level=derive_level(reply, thresholds),
        confidence=reply.confidence,
        risk_types=reply.risk_types,
        description=reply.description,
        danger_object_count=reply.danger_object_count,
        trigger_object_ids=reply.trigger_object_ids,
        model=model,
        latency_s=latency_s,
        usage=usage,
        key_id=key_id,
    )


def error_verdict(group_index: int, reason: str, *, model: str = "", latency_s: float = 0.0) -> GroupVerdict:
    """An ERROR verdict: level none, confidence 0, ``reason`` in ``error``."""
    return GroupVerdict(
        group_index=group_index,
        status=VerdictStatus.ERROR,
        risk_level=RiskLevel.NONE,
        confidence=0.0,
        model=model,
        latency_s=latency_s,
        error=reason,
    )


def aggregate_frame(
    camera_id: str,
    frame_id: str,
    expected_groups: Sequence[int],
    verdicts: Sequence[GroupVerdict],
) -> FrameVerdict:
    """Fold group verdicts into a frame verdict.

    ``max_risk_level`` is the highest level over OK verdicts (``none`` when there is none).
    ``has_dangerous_driving`` is True iff at least one OK verdict has level ``medium`` or ``high``;
    ERROR verdicts never count. ``assessment`` is SKIPPED when no group was expected, COMPLETE when
    every expected group has an OK verdict, PARTIAL when some but not all do, UNAVAILABLE when none
    does. Per group the first OK verdict wins over later ones and over ERROR verdicts (redelivery);
    verdicts for unexpected groups are ignored; an expected group with no verdict gets a synthetic
    ERROR verdict (``error="missing"``). Verdicts are sorted by group index.
    """
    expected = sorted(set(expected_groups))
    if not expected:
        return _frame(camera_id, frame_id, Assessment.SKIPPED, ())
    chosen = _choose_per_group(expected, verdicts)
    ok_count = sum(1 for verdict in chosen if verdict.ok)
    if ok_count == len(chosen):
        assessment = Assessment.COMPLETE
    elif ok_count:
        assessment = Assessment.PARTIAL
    else:
        assessment = Assessment.UNAVAILABLE
    return _frame(camera_id, frame_id, assessment, chosen)


def _choose_per_group(expected: list[int], verdicts: Sequence[GroupVerdict]) -> tuple[GroupVerdict, ...]:
    """One verdict per expected group, in group order: first OK, else first ERROR, else missing."""
    by_group: dict[int, GroupVerdict] = {}
    wanted = set(expected)
    for verdict in verdicts:
        if verdict.group_index not in wanted:
            logger.debug("ignoring verdict for unexpected group %s", verdict.group_index)
            continue
        current = by_group.get(verdict.group_index)
        if current is None or (verdict.ok and not current.ok):
            by_group[verdict.group_index] = verdict
    return tuple(by_group.get(index) or error_verdict(index, MISSING) for index in expected)


def _frame(camera_id: str, frame_id: str, assessment: Assessment, verdicts: tuple[GroupVerdict, ...]) -> FrameVerdict:
    """The frame verdict; level, danger flag, latency and model come from OK verdicts only."""
    ok = [verdict for verdict in verdicts if verdict.ok]
    max_level = RiskLevel.highest([verdict.risk_level for verdict in ok])
    return FrameVerdict(
        camera_id=camera_id,
        frame_id=frame_id,
        assessment=assessment,
        max_risk_level=max_level,
        has_dangerous_driving=any(verdict.risk_level.rank >= RiskLevel.MEDIUM.rank for verdict in ok),
        verdicts=verdicts,
        llm_latency_s=max((verdict.latency_s for verdict in ok), default=0.0),
        llm_model=combined_model_name(verdict.model for verdict in ok),
    )


def combined_model_name(models: Iterable[str]) -> str:
    """Distinct non-empty model names joined by "+", sorted, with ``rules`` last; "" if none."""
    names = {model for model in models if model}
    return "+".join(sorted(names, key=lambda name: (name == RULES_MODEL, name)))
