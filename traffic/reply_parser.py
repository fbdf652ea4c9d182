"""Turn a vision model's free-form reply into a normalised ``ModelReply``.

Models wrap JSON in code fences, add prose, emit several objects, use single quotes, trailing
commas, bare or snake_case keys, wrappers such as ``{"result": {...}}``, strings for numbers and
percent confidences, and get cut off by ``max_tokens``. ``parse_reply`` tolerates all of that; it
raises ``BadModelReply`` when no JSON object can be found, none carries a verdict field, or the
verdict names neither a usable risk level nor a confidence (a description alone judges nothing).
Work is bounded (first 20,000 characters, 32 object starts), so hostile text cannot stall a worker.
"""

from __future__ import annotations

import json
import logging
import math
import re
import unicodedata
from collections import deque
from collections.abc import Collection, Iterator
from typing import Any

from traffic.errors import BadModelReply
from traffic.models import ModelReply, RiskLevel
from traffic.risk_types import MAX_RISK_TYPES, normalize_risk_types

logger = logging.getLogger(__name__)

RAW_LIMIT = 2000
"""At most this many characters of the reply are kept in ``BadModelReply.raw``."""

_MAX_SCAN_CHARS = 20_000
_MAX_OBJECT_STARTS = 32
_MAX_NESTING = 4
_MAX_DESCRIPTION = 1000
_TRUNCATION_RETRIES = 4
_MAX_COMPLETED_STARTS = 3
_MAX_CUT_DEPTH = 3
_MAX_OBJECT_IDS = 64

LEVEL, CONFIDENCE, TYPES, DESCRIPTION, COUNT, TRIGGERS = (
    "riskLevel",
    "confidence",
    "riskTypes",
    "description",
    "dangerObjectCount",
    "triggerObjectIds",
)

_KEY_ALIASES: dict[str, str] = {
    **dict.fromkeys(("risklevel", "level", "risk", "dangerlevel", "severity", "风险等级", "风险级别"), LEVEL),
    **dict.fromkeys(("confidence", "conf", "confidencescore", "score", "probability", "置信度"), CONFIDENCE),
    **dict.fromkeys(("risktypes", "risktype", "types", "type", "risks", "风险类型"), TYPES),
    **dict.fromkeys(("description", "desc", "reason", "explanation", "summary", "描述", "说明"), DESCRIPTION),
    **dict.fromkeys(("dangerobjectcount", "dangerobjects", "dangercount", "dangerousobjectcount"), COUNT),
    **dict.fromkeys(("triggerobjectids", "triggerids", "triggerobjects", "objectids"), TRIGGERS),
}

_LEVEL_WORDS: dict[str, RiskLevel] = {
    **dict.fromkeys(("none", "no", "nil", "null", "safe", "normal", "无", "正常", "安全"), RiskLevel.NONE),
    **dict.fromkeys(("low", "minor", "slight", "低", "较低", "轻微"), RiskLevel.LOW),
    **dict.fromkeys(("medium", "moderate", "mid", "middle", "med", "中", "中等", "较高"), RiskLevel.MEDIUM),
    **dict.fromkeys(("high", "severe", "critical", "veryhigh", "extreme", "高", "严重", "极高"), RiskLevel.HIGH),
}

_FENCE = re.compile(r"```[A-Za-z0-9_-]*")
_NUMBER = re.compile(r"[-+]?(?:\d{1,12}(?:\.\d{0,12})?|\.\d{1,12})(?:[eE][-+]?\d{1,3})?")
_SMALL_INT = re.compile(r"\d{1,9}")
_LIST_SEPARATORS = re.compile(r"[,，、;；|\n]+")
_WORDS = re.compile(r"[a-z]+|[\u4e00-\u9fff]+")
_LEVEL_NOISE = re.compile(r"risk|level|风险|等级|级别|[\s_\-]+")


def _parse_int(literal: str) -> int | float:
    """An int, or a float for absurdly long literals that ``int`` refuses to convert."""
    return int(literal) if len(literal) <= 30 else float(literal)


_DECODER = json.JSONDecoder(strict=False, parse_int=_parse_int)


def parse_reply(text: str, *, valid_object_ids: Collection[int] | None = None) -> ModelReply:
    """Parse a reply into a ``ModelReply``; raise ``BadModelReply`` when it holds no verdict."""
    raw = text[:RAW_LIMIT]
    candidates = list(_candidate_objects(_unwrap_text(text)))
    if not candidates:
        logger.debug("no JSON object in model reply %.200r", text)
        raise BadModelReply("no JSON object in model reply", raw=raw)
    fields = _pick_verdict(candidates)
    if fields is None:
        logger.debug("no verdict fields in model reply %.200r", text)
        raise BadModelReply("JSON in model reply has no verdict fields", raw=raw)
    if parse_level(fields.get(LEVEL)) is None and _number(fields.get(CONFIDENCE)) is None:
        # Nothing to judge by: reading it as "none" would call an unknown scene safe.
        logger.debug("no risk level and no confidence in model reply %.200r", text)
        raise BadModelReply("model reply names no risk level and no confidence", raw=raw)
    valid = frozenset(valid_object_ids) if valid_object_ids is not None else None
    return _build_reply(fields, valid)


def _unwrap_text(text: str) -> str:
    """Bound the text, drop code fences, and decode a reply that is one JSON string literal."""
    text = _FENCE.sub("", text[:_MAX_SCAN_CHARS]).strip()
    if text.startswith('"'):
        try:
            inner = json.loads(text)
        except (ValueError, RecursionError):
            return text
        if isinstance(inner, str):
            return inner[:_MAX_SCAN_CHARS]
    return text


def _candidate_objects(text: str) -> Iterator[dict[Any, Any]]:
    """Every JSON object in ``text`` in order, each followed by the objects nested in it."""
    position, completions_left = 0, _MAX_COMPLETED_STARTS
    for _ in range(_MAX_OBJECT_STARTS):
        start = text.find("{", position)
        if start < 0:
            return
        decoded, end = _decode_object_at(text, start, complete=completions_left > 0)
        if decoded is not None:
            yield from _walk(decoded, depth=0)
            position = end
            continue
        if end >= len(text):
            completions_left -= 1
        position = start + 1


def _walk(value: object, *, depth: int) -> Iterator[dict[Any, Any]]:
    """``value`` if it is a dict, then dicts nested in it (depth-first, bounded)."""
    if depth > _MAX_NESTING:
        return
    if isinstance(value, dict):
        yield value
        children: Collection[object] = list(value.values())
    elif isinstance(value, list):
        children = value
    else:
        return
    for child in children:
        yield from _walk(child, depth=depth + 1)


def _decode_object_at(text: str, start: int, *, complete: bool) -> tuple[dict[Any, Any] | None, int]:
    """Decode the object at ``start`` strictly, else leniently; return it (or None) and where it ends.

    With ``complete``, an object cut off by the end of the text is closed in a few ways and retried.
    """
    try:
        value, end = _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError):
        pass
    else:
        return (value if isinstance(value, dict) else None), end
    snippets, end = _lenient_snippets(text, start, complete=complete)
    for snippet in snippets:
        value = _loads_repaired(snippet)
        if isinstance(value, dict):
            return value, end
    return None, end


def _loads_repaired(snippet: str) -> object:
    """``json.loads`` after fixing single quotes, trailing commas and Python literals; None if hopeless."""
    try:
        return _DECODER.decode(_repair(snippet))
    except (ValueError, RecursionError):
        return None


def _lenient_snippets(text: str, start: int, *, complete: bool) -> tuple[list[str], int]:
    """The balanced object at ``start``, or (with ``complete``) closings of a cut-off one; and its end."""
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    commas: deque[tuple[int, str]] = deque(maxlen=_TRUNCATION_RETRIES)
    for index in range(start, len(text)):
        char = text[index]
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]":
            if not stack or stack.pop() != char:
                return [], start + 1
            if not stack:
                return [text[start : index + 1]], index + 1
        elif char == "," and len(stack) <= _MAX_CUT_DEPTH:
            commas.append((index - start, "".join(reversed(stack))))
    if not complete:
        return [], len(text)
    tail = text[start:]
    closings = [tail + (quote or "") + "".join(reversed(stack))]
    closings.extend(tail[:cut] + closers for cut, closers in reversed(commas))
    return closings, len(text)


def _repair(snippet: str) -> str:
    """Rewrite JSON-ish text as JSON: double quotes, quoted bare keys, no trailing commas, JSON literals."""
    out: list[str] = []
    index, length = 0, len(snippet)
    while index < length:
        char = snippet[index]
        if char in "\"'":
            index = _copy_string(snippet, index, out)
        elif char == "," and _next_significant(snippet, index + 1) in ("}", "]", ""):
            index += 1
        elif char.isalpha() or char == "_":
            index = _copy_word(snippet, index, out)
        else:
            out.append(char)
            index += 1
    return "".join(out)


_WORD = re.compile(r"\w+")
_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}


def _copy_word(snippet: str, index: int, out: list[str]) -> int:
    """Copy the bare word at ``index``: quoted when it is a key, JSON-spelled when a Python literal."""
    match = _WORD.match(snippet, index)
    end = match.end() if match else index + 1
    word = snippet[index:end]
    if _next_significant(snippet, end) == ":" and _previous_significant(out) in ("{", ","):
        out.append(f'"{word}"')
    else:
        out.append(_PY_LITERALS.get(word, word))
    return end


def _copy_string(snippet: str, index: int, out: list[str]) -> int:
    """Copy the string literal at ``index`` to ``out`` as a double-quoted one; return the next index."""
    quote = snippet[index]
    out.append('"')
    index += 1
    while index < len(snippet):
        char = snippet[index]
        if char == "\\" and index + 1 < len(snippet):
            following = snippet[index + 1]
            out.append("'" if following == "'" else char + following)
            index += 2
            continue
        if char == quote:
            out.append('"')
            return index + 1
        out.append('\\"' if char == '"' else char)
        index += 1
    out.append('"')
    return index


def _previous_significant(out: list[str]) -> str:
    """The last non-whitespace character written so far; "" when none."""
    for piece in reversed(out):
        stripped = piece.rstrip()
        if stripped:
            return stripped[-1]
    return ""


def _next_significant(snippet: str, index: int) -> str:
    """The first non-whitespace character at or after ``index``; "" at the end."""
    while index < len(snippet) and snippet[index].isspace():
        index += 1
    return snippet[index] if index < len(snippet) else ""


def _pick_verdict(candidates: list[dict[Any, Any]]) -> dict[str, object] | None:
    """The first candidate naming a level, else the one with the most verdict fields (first wins)."""
    best: dict[str, object] | None = None
    for candidate in candidates:
        fields = _verdict_fields(candidate)
        if LEVEL in fields:
            return fields
        if fields and (best is None or len(fields) > len(best)):
            best = fields
    return best


def _verdict_fields(candidate: dict[Any, Any]) -> dict[str, object]:
    """The candidate's verdict fields under canonical names; nested objects never count."""
    fields: dict[str, object] = {}
    for key, value in candidate.items():
        name = _KEY_ALIASES.get(_canonical_key(key))
        if name is None or isinstance(value, dict):
            continue
        if name not in fields or key == name:
            fields[name] = value
    return fields


def _canonical_key(key: object) -> str:
    """A key lowercased without spaces, underscores or hyphens: ``risk_level`` → ``risklevel``."""
    return re.sub(r"[\s_\-]+", "", str(key)).lower()


def _build_reply(fields: dict[str, object], valid: frozenset[int] | None) -> ModelReply:
    """Coerce canonical fields to a ``ModelReply``, using defaults for missing or unusable values."""
    triggers = parse_object_ids(fields.get(TRIGGERS), valid)
    count = parse_count(fields.get(COUNT))
    if count is None:
        count = len(triggers)
    if valid is not None:
        count = min(count, len(valid))
    return ModelReply(
        risk_level=parse_level(fields.get(LEVEL)),
        confidence=parse_confidence(fields.get(CONFIDENCE)),
        risk_types=normalize_risk_types(_strings(fields.get(TYPES)), limit=MAX_RISK_TYPES),
        description=_description(fields.get(DESCRIPTION)),
        danger_object_count=count,
        trigger_object_ids=triggers,
    )


def parse_level(value: object) -> RiskLevel | None:
    """The level named by ``value`` (English or Chinese, "High risk" included); None if none or several."""
    level = RiskLevel.parse(value)
    if level is not None or not isinstance(value, str):
        return level
    lowered = unicodedata.normalize("NFKC", value).lower()
    cleaned = _LEVEL_NOISE.sub("", lowered)
    if cleaned in _LEVEL_WORDS:
        return _LEVEL_WORDS[cleaned]
    named = {_LEVEL_WORDS.get(_LEVEL_NOISE.sub("", word)) for word in _WORDS.findall(lowered)} - {None}
    return named.pop() if len(named) == 1 else None


def parse_confidence(value: object) -> float:
    """A confidence in [0, 1]; percentages and a 0..100 scale are detected; 0.0 when unusable."""
    number = _number(value)
    if number is None or math.isnan(number):
        return 0.0
    if isinstance(value, str) and value.strip().endswith("%"):
        number /= 100.0
    elif 1.0 < number <= 100.0:
        number /= 100.0
    return min(max(number, 0.0), 1.0)


def parse_count(value: object) -> int | None:
    """A non-negative object count, or None when ``value`` is not a usable number."""
    number = _number(value)
    if number is None or not math.isfinite(number):
        return None
    return max(int(round(number)), 0)


def parse_object_ids(value: object, valid: frozenset[int] | None = None) -> tuple[int, ...]:
    """Object ids from ints, numeric strings ("#3", "id 4") or a comma string; unique, filtered."""
    ids: dict[int, None] = {}
    items = value if isinstance(value, list | tuple) else [value]
    for item in items[:_MAX_OBJECT_IDS]:
        for object_id in _ids_in(item):
            if valid is None or object_id in valid:
                ids.setdefault(object_id)
    return tuple(ids)[:_MAX_OBJECT_IDS]


def _ids_in(item: object) -> list[int]:
    """The non-negative integers one list item stands for."""
    if isinstance(item, bool):
        return []
    if isinstance(item, int):
        return [item] if item >= 0 else []
    if isinstance(item, float):
        return [int(item)] if math.isfinite(item) and item.is_integer() and item >= 0 else []
    if isinstance(item, str):
        return [int(match) for match in _SMALL_INT.findall(item)]
    return []


def _number(value: object) -> float | None:
    """A float from a number or the first number in a string; None for bools and anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return float(value) if abs(value) < 10**300 else (math.inf if value > 0 else -math.inf)
    if isinstance(value, str):
        match = _NUMBER.search(value)
        return float(match.group(0)) if match else None
    return None


def _strings(value: object) -> list[str]:
    """Risk-type strings from a list, a comma-separated string, or list items like {"type": ...}."""
    if isinstance(value, str):
        return [part for part in _LIST_SEPARATORS.split(value) if part.strip()]
    if not isinstance(value, list | tuple):
        return []
    strings: list[str] = []
    for item in value:
        if isinstance(item, str):
            strings.append(item)
        elif isinstance(item, dict):
            named = next((item[key] for key in ("type", "id", "name") if isinstance(item.get(key), str)), None)
            if named is not None:
                strings.append(named)
    return strings


def _description(value: object) -> str:
    """Free text from a string or a list of strings, trimmed and bounded."""
    if isinstance(value, list | tuple):
        text = "; ".join(item.strip() for item in value if isinstance(item, str) and item.strip())
    elif isinstance(value, str):
        text = value.strip()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
    else:
        text = ""
    return text[:_MAX_DESCRIPTION]
