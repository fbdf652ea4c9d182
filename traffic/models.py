"""Frozen value types passed between the pipeline's stages."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

BBox = tuple[float, float, float, float]
"""An axis-aligned box in pixels: (x1, y1, x2, y2), x1 <= x2 and y1 <= y2."""


def scale_bbox(bbox: BBox, size: tuple[int, int], to: tuple[int, int]) -> BBox:
    """A box of an image of ``size`` (width, height), in the same scene scaled to ``to``."""
    sx, sy = to[0] / size[0], to[1] / size[1]
    return (bbox[0] * sx, bbox[1] * sy, bbox[2] * sx, bbox[3] * sy)


class RiskLevel(enum.StrEnum):
    """Ordered risk levels; the wire always carries the lowercase value, never a colour."""

    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """Position in the order none < low < medium < high."""
        return _RANKS[self]

    @classmethod
    def parse(cls, value: object) -> RiskLevel | None:
        """Return the level named by ``value`` (case and spacing ignored), or None."""
        if isinstance(value, RiskLevel):
            return value
        if not isinstance(value, str):
            return None
        try:
            return cls(value.strip().lower())
        except ValueError:
            return None

    @classmethod
    def highest(cls, levels: list[RiskLevel] | tuple[RiskLevel, ...]) -> RiskLevel:
        """The highest of ``levels``; ``NONE`` for an empty sequence."""
        return max(levels, key=lambda level: level.rank, default=cls.NONE)


_RANKS = {RiskLevel.NONE: 0, RiskLevel.LOW: 1, RiskLevel.MEDIUM: 2, RiskLevel.HIGH: 3}


class Assessment(enum.StrEnum):
    """State of a frame's risk assessment, as sent in ``detection_result.assessment``."""

    PENDING = "pending"
    COMPLETE = "complete"
    PARTIAL = "partial"
    SKIPPED = "skipped"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Detection:
    """One object found by the detector, class named as COCO/YOLO names it."""

    cls: str
    confidence: float
    bbox: BBox
    track_id: int | None = None
    """The camera's track this object belongs to (None: tracking off, or the track not yet confirmed)."""

    @property
    def center(self) -> tuple[float, float]:
        """Centre of the box."""
        x1, y1, x2, y2 = self.bbox
        return ((x1 + x2) / 2.0, (y1 + y2) / 2.0)


@dataclass(frozen=True)
class TrafficGroup:
    """A cluster of nearby detections that is assessed as one scene."""

    index: int
    """1-based, in order of the group's first member; stable within a frame only."""
    member_indices: tuple[int, ...]
    """Indices into the frame's detection list, ascending."""
    bbox: BBox
    """Union of the members' boxes plus the margin, clipped to the image, integer pixels."""
    classes: tuple[str, ...]
    """Distinct member classes, sorted."""
    average_confidence: float
    tracks: tuple[int, ...] = ()
    """The members' confirmed track ids, ascending (empty without tracking)."""
    key: str | None = None
    """Stable across frames while its oldest tracked member stays in it: ``e<epoch>t<oldest track id>``."""

    @property
    def object_count(self) -> int:
        """Number of member detections."""
        return len(self.member_indices)


@dataclass(frozen=True)
class GroupContext:
    """What an assessor knows about a group besides its crop."""

    group: TrafficGroup
    detections: tuple[Detection, ...]
    """The members, in the order of ``group.member_indices``."""
    image_size: tuple[int, int]
    """(width, height) of the full frame."""


class VerdictStatus(enum.StrEnum):
    """Whether a group verdict carries a real assessment."""

    OK = "ok"
    ERROR = "error"


@dataclass(frozen=True)
class Usage:
    """Token usage reported by the provider for one call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ModelReply:
    """A parsed, normalised per-group reply, before risk rules are applied."""

    risk_level: RiskLevel | None
    """The level the model named, or None when it named none that is valid."""
    confidence: float
    risk_types: tuple[str, ...]
    description: str
    danger_object_count: int
    trigger_object_ids: tuple[int, ...]


@dataclass(frozen=True)
class GroupVerdict:
    """The final answer for one group: always produced, errors included."""

    group_index: int
    status: VerdictStatus
    risk_level: RiskLevel
    confidence: float
    risk_types: tuple[str, ...] = ()
    description: str = ""
    danger_object_count: int = 0
    trigger_object_ids: tuple[int, ...] = ()
    model: str = ""
    """``llmModel``: the provider's model name, or ``"rules"`` for the offline assessor."""
    latency_s: float = 0.0
    usage: Usage = field(default_factory=Usage)
    key_id: str | None = None
    """Id (never the secret) of the API key that answered, if any."""
    error: str | None = None
    """Short machine-readable reason when status is ERROR or a fallback answered."""

    @property
    def ok(self) -> bool:
        """True when this verdict carries a real assessment."""
        return self.status is VerdictStatus.OK


@dataclass(frozen=True)
class FrameVerdict:
    """All group verdicts of one frame folded into one risk result."""

    camera_id: str
    frame_id: str
    assessment: Assessment
    max_risk_level: RiskLevel
    has_dangerous_driving: bool
    verdicts: tuple[GroupVerdict, ...]
    llm_latency_s: float
    llm_model: str
