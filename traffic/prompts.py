"""Pure builders of the per-group vision-model prompt; the transport adds the crop image.

The text is deterministic: the same context and language always give the same prompt, so replies
can be cached and prompts diffed. Object ids are frame-level detection indices
(``group.member_indices``); boxes are given relative to the crop, whose origin is the top-left
corner of ``group.bbox``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from traffic.models import BBox, Detection, GroupContext
from traffic.risk_types import Severity, ids_with_severity

logger = logging.getLogger(__name__)

DEFAULT_LANGUAGE = "zh-CN"
_MAX_REPAIR_ECHO = 1500

_LANGUAGE_NAMES: dict[str, str] = {
    "zh": "Simplified Chinese (简体中文)",
    "zh-cn": "Simplified Chinese (简体中文)",
    "zh-sg": "Simplified Chinese (简体中文)",
    "zh-hans": "Simplified Chinese (简体中文)",
    "zh-tw": "Traditional Chinese (繁體中文)",
    "zh-hk": "Traditional Chinese (繁體中文)",
    "zh-mo": "Traditional Chinese (繁體中文)",
    "zh-hant": "Traditional Chinese (繁體中文)",
    "en": "English",
    "ja": "Japanese",
    "ko": "Korean",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "pt": "Portuguese",
    "it": "Italian",
    "nl": "Dutch",
    "ru": "Russian",
    "ar": "Arabic",
    "tr": "Turkish",
    "vi": "Vietnamese",
    "th": "Thai",
    "id": "Indonesian",
    "ms": "Malay",
    "hi": "Hindi",
}


@dataclass(frozen=True)
class Prompt:
    """System and user text for one group; the transport attaches the crop image to the user turn."""

    system: str
    user: str


def language_name(tag: str) -> str:
    """English name of a BCP-47 tag for the prompt, e.g. ``zh-CN`` → Simplified Chinese."""
    normalized = tag.strip().replace("_", "-").lower()
    if normalized in _LANGUAGE_NAMES:
        return _LANGUAGE_NAMES[normalized]
    subtags = normalized.split("-")
    if subtags[0] == "zh" and ("hant" in subtags or "tw" in subtags or "hk" in subtags):
        return _LANGUAGE_NAMES["zh-hant"]
    if subtags[0] in _LANGUAGE_NAMES:
        return _LANGUAGE_NAMES[subtags[0]]
    return f"the language with BCP-47 tag {tag.strip()!r}"


def build_group_prompt(context: GroupContext, *, language: str = DEFAULT_LANGUAGE) -> Prompt:
    """The prompt asking for one flat JSON verdict about ``context``'s group."""
    return Prompt(system=_system_text(language_name(language)), user=_user_text(context))


def build_repair_prompt(raw: str) -> str:
    """A follow-up user message asking once more for the bare JSON object after an unusable reply."""
    echo = raw if len(raw) <= _MAX_REPAIR_ECHO else raw[:_MAX_REPAIR_ECHO] + "…"
    return "\n".join(
        (
            "Your previous reply could not be parsed as the required JSON object. It was:",
            "<<<",
            echo,
            ">>>",
            "Reply again with exactly one JSON object and nothing else (no prose, no Markdown, "
            "no code fences), with exactly these keys:",
            _SCHEMA_LINE,
            "Use double quotes for keys and strings, no trailing commas, no comments.",
        )
    )


_SCHEMA_LINE = (
    '{"riskLevel": "none|low|medium|high", "confidence": 0.0, "riskTypes": ["<id>"], '
    '"description": "<text>", "dangerObjectCount": 0, "triggerObjectIds": [<object ids>]}'
)


def _system_text(language: str) -> str:
    """Instructions shared by every group prompt in one language."""
    lines = [
        "You are a traffic-safety analyst. The image is a crop of one frame from a fixed traffic "
        "camera, showing one group of nearby road users.",
        "Judge only what is visible in the image and the listed objects; do not guess.",
        "Reply with exactly one flat JSON object and nothing else: no prose, no Markdown, no code fences. Its shape:",
        _SCHEMA_LINE,
        "Rules:",
        '- "riskLevel": one of "none", "low", "medium", "high", lowercase English.',
        "  none: normal traffic, nothing abnormal. low: a minor anomaly worth watching. "
        "medium: suspicious or unsafe behaviour that deserves a warning. "
        "high: dangerous driving or an imminent collision that needs an alert now.",
        "- If unsure, choose the lower level.",
        '- "high" requires at least one severe risk type.',
        '- "confidence": a number from 0 to 1, how sure you are of riskLevel.',
        '- "riskTypes": 1 to 3 ids from the lists below, most important first; '
        "an empty list only when riskLevel is none.",
        "  severe: " + ", ".join(ids_with_severity(Severity.SEVERE)),
        "  moderate: " + ", ".join(ids_with_severity(Severity.MODERATE)),
        "  soft (alone, at most low): " + ", ".join(ids_with_severity(Severity.SOFT)),
        f'- "description": one or two short sentences in {language}.',
        "  Keys, levels and risk-type ids always stay in English.",
        '- "dangerObjectCount": how many listed objects are involved in the risk; 0 when none.',
        '- "triggerObjectIds": the ids of those objects, taken from the list; [] when none.',
    ]
    return "\n".join(lines)


def _user_text(context: GroupContext) -> str:
    """The group's geometry and objects, with frame-level ids and crop-relative boxes."""
    group = context.group
    crop_x, crop_y = group.bbox[0], group.bbox[1]
    crop_w, crop_h = group.bbox[2] - group.bbox[0], group.bbox[3] - group.bbox[1]
    frame_w, frame_h = context.image_size
    lines = [
        f"Traffic group {group.index}: {group.object_count} objects.",
        f"The image is a {_px(crop_w)}x{_px(crop_h)} px crop taken at ({_px(crop_x)}, {_px(crop_y)}) "
        f"of a {frame_w}x{frame_h} px frame.",
        "Boxes are [x1, y1, x2, y2] in pixels relative to the crop's top-left corner.",
        "Objects:",
    ]
    if len(context.detections) != len(group.member_indices):
        logger.warning(
            "group %s has %d member indices but %d detections",
            group.index,
            len(group.member_indices),
            len(context.detections),
        )
    for object_id, detection in zip(group.member_indices, context.detections, strict=False):
        lines.append(_object_line(object_id, detection, group.bbox))
    lines.append("Assess the risk in this group and return the JSON object now.")
    return "\n".join(lines)


def _object_line(object_id: int, detection: Detection, crop: BBox) -> str:
    """One listed object: id, class, confidence and crop-relative box."""
    box = ", ".join(str(value) for value in _relative_box(detection.bbox, crop))
    return f"- id {object_id}: {detection.cls}, confidence {detection.confidence:.2f}, box [{box}]"


def _relative_box(bbox: BBox, crop: BBox) -> tuple[int, int, int, int]:
    """``bbox`` shifted to the crop's origin, rounded and clipped to the crop."""
    width, height = crop[2] - crop[0], crop[3] - crop[1]
    x1, y1, x2, y2 = (bbox[0] - crop[0], bbox[1] - crop[1], bbox[2] - crop[0], bbox[3] - crop[1])
    return (
        _px(min(max(x1, 0.0), width)),
        _px(min(max(y1, 0.0), height)),
        _px(min(max(x2, 0.0), width)),
        _px(min(max(y2, 0.0), height)),
    )


def _px(value: float) -> int:
    """A pixel coordinate as the nearest integer."""
    return int(round(value))
