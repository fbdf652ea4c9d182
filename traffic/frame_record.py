"""The detector stage's record of a frame: what it found and decided, everything later stages need."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from traffic.analysis import FrameAnalysis
from traffic.codec import CodecError, analysis_from_json, analysis_to_json


@dataclass(frozen=True)
class FrameRecord:
    """What the detector stage found and decided for a frame; everything later stages need."""

    frame_id: str
    camera_id: str
    wire_id: str | int
    captured_at: float
    deadline: float
    analysis: FrameAnalysis
    model_type: str
    supported_classes: tuple[str, ...]
    process_time_s: float
    assess: tuple[int, ...] = ()
    expected: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    skipped: str | None = None
    signatures: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "frameId": self.frame_id,
            "cameraId": self.camera_id,
            "wireId": self.wire_id,
            "capturedAt": self.captured_at,
            "deadline": self.deadline,
            "analysis": analysis_to_json(self.analysis),
            "modelType": self.model_type,
            "supportedClasses": list(self.supported_classes),
            "processTime": self.process_time_s,
            "assess": list(self.assess),
            "expected": list(self.expected),
            "dropped": list(self.dropped),
            "skipped": self.skipped,
            "signatures": {str(k): v for k, v in self.signatures.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FrameRecord:
        """Inverse of ``to_json``; raises CodecError on corrupt data."""
        try:
            return cls(
                frame_id=str(data["frameId"]),
                camera_id=str(data["cameraId"]),
                wire_id=data["wireId"],
                captured_at=float(data["capturedAt"]),
                deadline=float(data["deadline"]),
                analysis=analysis_from_json(data["analysis"]),
                model_type=str(data["modelType"]),
                supported_classes=tuple(str(c) for c in data["supportedClasses"]),
                process_time_s=float(data["processTime"]),
                assess=tuple(int(i) for i in data["assess"]),
                expected=tuple(int(i) for i in data["expected"]),
                dropped=tuple(int(i) for i in data["dropped"]),
                skipped=data["skipped"],
                signatures={int(k): str(v) for k, v in data["signatures"].items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"corrupt frame record: {exc}") from None
