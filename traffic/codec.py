"""JSON-safe encoding of the domain values that travel through Redis and Celery task results.

Encoders return only dict/list/str/int/float/bool/None, so any JSON serializer can carry them, and
decoders restore the exact value (tuples, enums, floats). Keys follow the camelCase wire names where
one exists. Decoders accept untrusted input: a missing key, a wrong type, an unknown enum value, a
non-finite number or an out-of-range member index raises ``CodecError`` naming the path of the bad
field (e.g. ``analysis.groups[1].bbox``); unknown extra keys are ignored, so a newer writer can add
fields during a rolling upgrade. ``JsonReader`` is the typed accessor other decoders of this package
(alerts) build on.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from traffic.analysis import FrameAnalysis
from traffic.errors import TrafficError
from traffic.gate import RecentVerdict
from traffic.models import (
    Assessment,
    BBox,
    Detection,
    FrameVerdict,
    GroupVerdict,
    RiskLevel,
    TrafficGroup,
    Usage,
    VerdictStatus,
)

JSON = dict[str, Any]
E = TypeVar("E", bound=enum.Enum)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?Z")


class CodecError(TrafficError, ValueError):
    """Data that does not decode to the expected domain value; the message names the bad field."""


def _kind(value: object) -> str:
    """The JSON name of a value's type, for error messages."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object", list: "array"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _as_int(value: object, where: str) -> int:
    """An integer (booleans rejected)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError(f"{where}: expected an integer, got {_kind(value)}")
    return value


def _as_float(value: object, where: str) -> float:
    """A finite number as a float (integers accepted, booleans rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CodecError(f"{where}: expected a number, got {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise CodecError(f"{where}: number out of range") from None
    if not math.isfinite(number):
        raise CodecError(f"{where}: expected a finite number, got {number}")
    return number


def _as_str(value: object, where: str) -> str:
    """A string."""
    if not isinstance(value, str):
        raise CodecError(f"{where}: expected a string, got {_kind(value)}")
    return value


def _as_list(value: object, where: str) -> list[object]:
    """A JSON array (a list or tuple)."""
    if not isinstance(value, list | tuple):
        raise CodecError(f"{where}: expected an array, got {_kind(value)}")
    return list(value)


def parse_iso_timestamp(text: object, where: str = "timestamp") -> float:
    """Epoch seconds of an ISO-8601 UTC ``...Z`` string as ``traffic.wire.iso_timestamp`` writes it."""
    match = _ISO.fullmatch(_as_str(text, where))
    if match is None:
        raise CodecError(f"{where}: expected an ISO-8601 UTC timestamp ending in Z, got {text!r}")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    micros = int((match.group(7) or "").ljust(6, "0"))
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise CodecError(f"{where}: invalid date {text!r}") from None
    since = moment - _EPOCH
    return ((since.days * 86_400 + since.seconds) * 1_000_000 + micros) / 1_000_000


class JsonReader:
    """Typed access to one decoded JSON object; every failure is a ``CodecError`` naming the field."""

    __slots__ = ("_data", "where")

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, Mapping):
            raise CodecError(f"{where}: expected an object, got {_kind(value)}")
        self._data: Mapping[object, object] = value
        self.where = where

    def path(self, key: str) -> str:
        """The path of one field, for error messages."""
        return f"{self.where}.{key}"

    def has(self, key: str) -> bool:
        """Whether an optional field is present."""
        return key in self._data

    def get(self, key: str) -> object:
        """The raw value of a required field."""
        if key not in self._data:
            raise CodecError(f"{self.path(key)}: missing")
        return self._data[key]

    def text(self, key: str) -> str:
        """A string field."""
        return _as_str(self.get(key), self.path(key))

    def optional_text(self, key: str) -> str | None:
        """A string-or-null field."""
        value = self.get(key)
        return None if value is None else _as_str(value, self.path(key))

    def integer(self, key: str) -> int:
        """An integer field."""
        return _as_int(self.get(key), self.path(key))

    def number(self, key: str) -> float:
        """A finite-number field, as a float."""
        return _as_float(self.get(key), self.path(key))

    def flag(self, key: str) -> bool:
        """A boolean field."""
        value = self.get(key)
        if not isinstance(value, bool):
            raise CodecError(f"{self.path(key)}: expected a boolean, got {_kind(value)}")
        return value

    def array(self, key: str) -> list[tuple[object, str]]:
        """An array field as (item, path of the item) pairs."""
        where = self.path(key)
        return [(item, f"{where}[{i}]") for i, item in enumerate(_as_list(self.get(key), where))]

    def texts(self, key: str) -> tuple[str, ...]:
        """An array of strings."""
        return tuple(_as_str(item, where) for item, where in self.array(key))

    def integers(self, key: str) -> tuple[int, ...]:
        """An array of integers."""
        return tuple(_as_int(item, where) for item, where in self.array(key))

    def box(self, key: str) -> BBox:
        """A bbox: an array of four finite numbers."""
        items = self.array(key)
        if len(items) != 4:
            raise CodecError(f"{self.path(key)}: expected 4 numbers, got {len(items)} items")
        x1, y1, x2, y2 = (_as_float(item, where) for item, where in items)
        return (x1, y1, x2, y2)

    def size(self, key: str) -> tuple[int, int]:
        """An image size: an array of two positive integers (width, height)."""
        items = self.array(key)
        if len(items) != 2:
            raise CodecError(f"{self.path(key)}: expected [width, height], got {len(items)} items")
        width, height = (_as_int(item, where) for item, where in items)
        if width <= 0 or height <= 0:
            raise CodecError(f"{self.path(key)}: expected positive sizes, got {width}x{height}")
        return (width, height)

    def choice(self, key: str, kind: type[E]) -> E:
        """An enum field, carried as the enum's value."""
        value = self.get(key)
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(repr(member.value) for member in kind)
            raise CodecError(f"{self.path(key)}: expected one of {allowed}, got {value!r}") from None

    def timestamp(self, key: str) -> float:
        """An ISO-8601 UTC timestamp field, as epoch seconds."""
        return parse_iso_timestamp(self.get(key), self.path(key))

    def child(self, key: str) -> JsonReader:
        """A nested object field."""
        return JsonReader(self.get(key), self.path(key))


def detection_to_json(detection: Detection) -> JSON:
    """One detection."""
    data: JSON = {"class": detection.cls, "confidence": detection.confidence, "bbox": list(detection.bbox)}
    if detection.track_id is not None:
        data["trackId"] = detection.track_id
    return data


def detection_from_json(data: object, where: str = "detection") -> Detection:
    """Decode ``detection_to_json``'s output."""
    r = JsonReader(data, where)
    track_id = r.integer("trackId") if r.has("trackId") else None
    return Detection(cls=r.text("class"), confidence=r.number("confidence"), bbox=r.box("bbox"), track_id=track_id)


def group_to_json(group: TrafficGroup) -> JSON:
    """One traffic group."""
    data: JSON = {
        "groupIndex": group.index,
        "memberIndices": list(group.member_indices),
        "bbox": list(group.bbox),
        "classes": list(group.classes),
        "averageConfidence": group.average_confidence,
    }
    if group.key is not None or group.tracks:
        data |= {"groupKey": group.key, "trackIds": list(group.tracks)}
    return data


def group_from_json(data: object, where: str = "group") -> TrafficGroup:
    """Decode ``group_to_json``'s output."""
    r = JsonReader(data, where)
    return TrafficGroup(
        index=r.integer("groupIndex"),
        member_indices=r.integers("memberIndices"),
        bbox=r.box("bbox"),
        classes=r.texts("classes"),
        average_confidence=r.number("averageConfidence"),
        tracks=r.integers("trackIds") if r.has("trackIds") else (),
        key=r.optional_text("groupKey") if r.has("groupKey") else None,
    )


def analysis_to_json(analysis: FrameAnalysis) -> JSON:
    """A frame's detections and groups."""
    data: JSON = {
        "imageSize": list(analysis.image_size),
        "detections": [detection_to_json(d) for d in analysis.detections],
        "groups": [group_to_json(g) for g in analysis.groups],
    }
    if analysis.tracking_epoch is not None:
        data["trackingEpoch"] = analysis.tracking_epoch
    return data


def analysis_from_json(data: object, where: str = "analysis") -> FrameAnalysis:
    """Decode ``analysis_to_json``'s output; every group member must index a detection."""
    r = JsonReader(data, where)
    detections = tuple(detection_from_json(item, path) for item, path in r.array("detections"))
    groups = tuple(_member_checked(item, path, len(detections)) for item, path in r.array("groups"))
    epoch = r.integer("trackingEpoch") if r.has("trackingEpoch") else None
    return FrameAnalysis(image_size=r.size("imageSize"), detections=detections, groups=groups, tracking_epoch=epoch)


def _member_checked(data: object, where: str, detection_count: int) -> TrafficGroup:
    """Decode a group whose member indices must all index one of ``detection_count`` detections."""
    group = group_from_json(data, where)
    bad = [i for i in group.member_indices if not 0 <= i < detection_count]
    if bad:
        raise CodecError(f"{where}.memberIndices: {bad} out of range for {detection_count} detections")
    return group


def verdict_to_json(verdict: GroupVerdict) -> JSON:
    """One group verdict, usage and error included."""
    return {
        "groupIndex": verdict.group_index,
        "status": verdict.status.value,
        "riskLevel": verdict.risk_level.value,
        "confidence": verdict.confidence,
        "riskTypes": list(verdict.risk_types),
        "description": verdict.description,
        "dangerObjectCount": verdict.danger_object_count,
        "triggerObjectIds": list(verdict.trigger_object_ids),
        "model": verdict.model,
        "latency": verdict.latency_s,
        "usage": {"prompt": verdict.usage.prompt_tokens, "completion": verdict.usage.completion_tokens},
        "keyId": verdict.key_id,
        "error": verdict.error,
    }


def verdict_from_json(data: object, where: str = "verdict") -> GroupVerdict:
    """Decode ``verdict_to_json``'s output."""
    r = JsonReader(data, where)
    usage = r.child("usage")
    return GroupVerdict(
        group_index=r.integer("groupIndex"),
        status=r.choice("status", VerdictStatus),
        risk_level=r.choice("riskLevel", RiskLevel),
        confidence=r.number("confidence"),
        risk_types=r.texts("riskTypes"),
        description=r.text("description"),
        danger_object_count=r.integer("dangerObjectCount"),
        trigger_object_ids=r.integers("triggerObjectIds"),
        model=r.text("model"),
        latency_s=r.number("latency"),
        usage=Usage(prompt_tokens=usage.integer("prompt"), completion_tokens=usage.integer("completion")),
        key_id=r.optional_text("keyId"),
        error=r.optional_text("error"),
    )


def frame_verdict_to_json(frame: FrameVerdict) -> JSON:
    """A frame verdict with all of its group verdicts."""
    return {
        "cameraId": frame.camera_id,
        "frameId": frame.frame_id,
        "assessment": frame.assessment.value,
        "maxRiskLevel": frame.max_risk_level.value,
        "hasDangerousDriving": frame.has_dangerous_driving,
        "verdicts": [verdict_to_json(v) for v in frame.verdicts],
        "llmLatency": frame.llm_latency_s,
        "llmModel": frame.llm_model,
    }


def frame_verdict_from_json(data: object, where: str = "frameVerdict") -> FrameVerdict:
    """Decode ``frame_verdict_to_json``'s output."""
    r = JsonReader(data, where)
    return FrameVerdict(
        camera_id=r.text("cameraId"),
        frame_id=r.text("frameId"),
        assessment=r.choice("assessment", Assessment),
        max_risk_level=r.choice("maxRiskLevel", RiskLevel),
        has_dangerous_driving=r.flag("hasDangerousDriving"),
        verdicts=tuple(verdict_from_json(item, path) for item, path in r.array("verdicts")),
        llm_latency_s=r.number("llmLatency"),
        llm_model=r.text("llmModel"),
    )


def recent_verdict_to_json(recent: RecentVerdict) -> JSON:
    """A verdict remembered for unchanged-scene dedupe, with when it was assessed (epoch s)."""
    return {"verdict": verdict_to_json(recent.verdict), "assessedAt": recent.assessed_at}


def recent_verdict_from_json(data: object, where: str = "recent") -> RecentVerdict:
    """Decode ``recent_verdict_to_json``'s output."""
    r = JsonReader(data, where)
    return RecentVerdict(
        verdict=verdict_from_json(r.get("verdict"), r.path("verdict")), assessed_at=r.number("assessedAt")
    )
