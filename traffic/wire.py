"""Conversion of domain values to the Socket.IO / WebSocket wire format (camelCase, contract)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from traffic.analysis import FrameAnalysis
from traffic.frame_record import FrameRecord
from traffic.models import Assessment, Detection, FrameVerdict, GroupVerdict, RiskLevel, TrafficGroup

JSON = dict[str, Any]


def iso_timestamp(epoch_s: float) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z`` suffix."""
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def wire_millis(epoch_s: float) -> int:
    """``epoch_s`` in whole milliseconds as ``iso_timestamp`` writes it (truncated), so a time and its
    round trip through the wire give the same number."""
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return int(moment.replace(microsecond=0).timestamp()) * 1000 + moment.microsecond // 1000


def _int_box(bbox: tuple[float, float, float, float]) -> list[int]:
    """A bbox as integer pixels."""
    return [int(round(v)) for v in bbox]


def detection_json(detection: Detection, tracked: bool = False) -> JSON:
    """One ``detectedObjects`` entry; with tracking on, its ``trackId`` (null until its track is confirmed)."""
    data: JSON = {
        "class": detection.cls,
        "confidence": round(detection.confidence, 3),
        "bbox": _int_box(detection.bbox),
    }
    if tracked:
        data["trackId"] = detection.track_id
    return data


def group_json(group: TrafficGroup, level: RiskLevel | None, tracked: bool = False) -> JSON:
    """One ``trafficGroups`` entry; ``riskLevel`` is ``none`` until the group has a verdict and ``assessed``
    says whether it has one (``none`` then means judged no-risk); with tracking on, its ``groupKey``
    (stable across frames, null while no member is tracked) and members' ``trackIds``."""
    data: JSON = {
        "groupIndex": group.index,
        "objectCount": group.object_count,
        "bbox": _int_box(group.bbox),
        "classes": list(group.classes),
        "averageConfidence": round(group.average_confidence, 3),
        "riskLevel": (level or RiskLevel.NONE).value,
        "memberIndices": list(group.member_indices),
        "assessed": level is not None,
    }
    if tracked:
        data |= {"groupKey": group.key, "trackIds": list(group.tracks)}
    return data


def verdict_json(verdict: GroupVerdict) -> JSON:
    """One ``dangerousDrivingResults`` entry (``type`` repeats the first risk type for old clients)."""
    return {
        "groupIndex": verdict.group_index,
        "riskLevel": verdict.risk_level.value,
        "confidence": round(verdict.confidence, 3),
        "riskTypes": list(verdict.risk_types),
        "type": verdict.risk_types[0] if verdict.risk_types else "",
        "description": verdict.description,
        "dangerObjectCount": verdict.danger_object_count,
        "triggerObjectIds": list(verdict.trigger_object_ids),
        "llmModel": verdict.model,
    }


def detection_result(
    *,
    camera_id: str | int,
    frame_id: str,
    captured_at: float,
    analysis: FrameAnalysis,
    model_type: str,
    supported_classes: tuple[str, ...],
    process_time_s: float,
    assessment: Assessment,
    verdict: FrameVerdict | None = None,
    frame_data_uri: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSON:
    """The ``detection_result`` payload: the fast-path one (no verdict) or the final one."""
    levels = {v.group_index: v.risk_level for v in verdict.verdicts if v.ok} if verdict else {}
    results = (
        [verdict_json(v) for v in verdict.verdicts if v.ok and v.risk_level is not RiskLevel.NONE] if verdict else []
    )
    width, height = analysis.image_size
    tracked = analysis.tracking_epoch is not None
    payload: JSON = {
        "cameraId": camera_id,
        "frameId": frame_id,
        "timestamp": iso_timestamp(captured_at),
        "imageWidth": width,
        "imageHeight": height,
        "detectedObjects": [detection_json(d, tracked) for d in analysis.detections],
        "trafficGroups": [group_json(g, levels.get(g.index), tracked) for g in analysis.groups],
        "dangerousDrivingResults": results,
        "hasDangerousDriving": bool(verdict and verdict.has_dangerous_driving),
        "maxRiskLevel": (verdict.max_risk_level if verdict else RiskLevel.NONE).value,
        "processTime": round(process_time_s, 4),
        "llmLatency": round(verdict.llm_latency_s, 4) if verdict else 0.0,
        "llmModel": verdict.llm_model if verdict else "",
        "modelType": model_type,
        "supportedClasses": list(supported_classes),
        "trackingEnabled": tracked,
        "assessment": assessment.value,
    }
    if tracked:
        payload["trackingEpoch"] = analysis.tracking_epoch
    if frame_data_uri is not None:
        payload["frame"] = frame_data_uri
    if extra:
        payload.update(extra)
    return payload


def frame_result(record: FrameRecord, verdict: FrameVerdict | None, assessment: Assessment) -> dict[str, object]:
    """The ``detection_result`` payload of a recorded frame (``verdict`` None until it has one)."""
    return detection_result(
        camera_id=record.wire_id,
        frame_id=record.frame_id,
        captured_at=record.captured_at,
        analysis=record.analysis,
        model_type=record.model_type,
        supported_classes=record.supported_classes,
        process_time_s=record.process_time_s,
        assessment=assessment,
        verdict=verdict,
    )
