"""The detection_result payload keeps the old field names and adds frameId/assessment."""

from __future__ import annotations

import json

from traffic.analysis import analyse_detections
from traffic.models import Assessment, FrameVerdict, GroupVerdict, RiskLevel, VerdictStatus
from traffic.settings import GroupingSettings
from traffic.wire import detection_result, iso_timestamp

OLD_FIELDS = {
    "cameraId", "timestamp", "imageWidth", "imageHeight", "detectedObjects", "trafficGroups",
    "dangerousDrivingResults", "hasDangerousDriving", "maxRiskLevel", "processTime", "llmLatency",
    "llmModel", "modelType", "supportedClasses", "trackingEnabled",
}  # fmt: skip


def _analysis():  # type: ignore[no-untyped-def]
    from traffic.models import Detection

    dets = [Detection("car", 0.91, (100, 100, 200, 180)), Detection("person", 0.8, (210, 100, 240, 190))]
    return analyse_detections(dets, (1280, 720), GroupingSettings())


def test_iso_timestamp_is_utc_with_millis_and_z() -> None:
    assert iso_timestamp(0.5) == "1970-01-01T00:00:00.500Z"


def test_fast_path_payload_has_every_old_field_and_pending_state() -> None:
    payload = detection_result(
        camera_id="cam-1", frame_id="f1", captured_at=1.0, analysis=_analysis(), model_type="yolo11n",
        supported_classes=("car", "person"), process_time_s=0.0123, assessment=Assessment.PENDING,
    )  # fmt: skip
    assert OLD_FIELDS <= payload.keys()
    assert payload["assessment"] == "pending" and payload["frameId"] == "f1"
    assert payload["detectedObjects"][0] == {"class": "car", "confidence": 0.91, "bbox": [100, 100, 200, 180]}
    group = payload["trafficGroups"][0]
    assert group["groupIndex"] == 1 and group["memberIndices"] == [0, 1] and group["riskLevel"] == "none"
    assert group["assessed"] is False  # not rated yet, which is not the same as judged no-risk
    assert payload["maxRiskLevel"] == "none" and payload["hasDangerousDriving"] is False
    assert "frame" not in payload
    json.dumps(payload)


def test_final_payload_carries_levels_never_colours() -> None:
    verdict = GroupVerdict(
        group_index=1, status=VerdictStatus.OK, risk_level=RiskLevel.MEDIUM, confidence=0.7,
        risk_types=("pedestrian_conflict",), description="d", danger_object_count=2,
        trigger_object_ids=(0, 1), model="qwen-vl-plus", latency_s=1.2,
    )  # fmt: skip
    frame = FrameVerdict("cam-1", "f1", Assessment.COMPLETE, RiskLevel.MEDIUM, True, (verdict,), 1.2, "qwen-vl-plus")
    payload = detection_result(
        camera_id=7, frame_id="f1", captured_at=1.0, analysis=_analysis(), model_type="yolo11n",
        supported_classes=(), process_time_s=0.01, assessment=Assessment.COMPLETE, verdict=frame,
    )  # fmt: skip
    assert payload["cameraId"] == 7
    assert payload["trafficGroups"][0]["riskLevel"] == "medium" and payload["trafficGroups"][0]["assessed"] is True
    (result,) = payload["dangerousDrivingResults"]
    assert result["riskLevel"] == "medium" and result["type"] == "pedestrian_conflict"
    assert result["triggerObjectIds"] == [0, 1]
    assert payload["hasDangerousDriving"] is True and payload["llmLatency"] == 1.2
