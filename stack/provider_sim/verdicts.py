"""The fake verdict: chat-request parsing, image tokens and a deterministic verdict per image."""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections.abc import Mapping
from typing import Any

from stack.provider_sim.config import LEVELS, SimConfig

_CONFIDENCE_RANGES = {"none": (0.20, 0.44), "low": (0.45, 0.64), "medium": (0.65, 0.79), "high": (0.80, 0.97)}
_LEVEL_WORDS = {"none": "无", "low": "低", "medium": "中", "high": "高"}


def request_parts(body: Mapping[str, Any]) -> tuple[bytes, str]:
    """(image bytes of the first image part, all prompt text) of a chat request."""
    image = b""
    texts: list[str] = []
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content if isinstance(content, list) else ():
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "image_url" and not image:
                ref = part.get("image_url")
                url = ref.get("url") if isinstance(ref, dict) else ref
                if isinstance(url, str):
                    image = _decode_data_uri(url)
    return image, "\n".join(texts)


def _decode_data_uri(url: str) -> bytes:
    """Bytes of a base64 data URI; the URL itself for anything else."""
    if url.startswith("data:") and "," in url:
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=False)
        except (binascii.Error, ValueError):
            return url.encode("utf-8")
    return url.encode("utf-8")


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's SOF marker, or None if ``data`` is not a JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:
            i += 2 if marker != 0xFF else 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def image_tokens(image: bytes) -> int:
    """Qwen-VL-like image tokens: one per 28×28 patch of a JPEG, else one per 100 bytes."""
    if not image:
        return 0
    size = jpeg_size(image)
    if size is None:
        return max(1, len(image) // 100)
    width, height = size
    return math.ceil(width / 28) * math.ceil(height / 28) + 2


def make_verdict(content: bytes, config: SimConfig) -> dict[str, Any]:
    """The flat verdict the simulator answers for ``content`` (an image), deterministic in seed+content."""
    digest = hashlib.sha256(config.seed.to_bytes(8, "big", signed=True) + content).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    weights = [(level, config.levels.get(level, 0.0)) for level in LEVELS]
    total = sum(w for _, w in weights)
    level = next(lv for lv, w in weights if w > 0)
    acc = 0.0
    for candidate, weight in weights:
        acc += weight / total
        if weight > 0 and u < acc:
            level = candidate
            break
    low, high = _CONFIDENCE_RANGES[level]
    confidence = round(low + (high - low) * (int.from_bytes(digest[8:16], "big") / 2.0**64), 2)
    vocab = list(config.risk_types.get(level, ()))
    types: list[str] = []
    if vocab:
        count = 1 + digest[16] % min(3, len(vocab))
        start = digest[17] % len(vocab)
        types = [vocab[(start + i) % len(vocab)] for i in range(count)]
    if level == "none":
        danger, description = 0, "未发现明显危险驾驶行为。"
    else:
        danger = 1 + digest[18] % 3
        description = f"检测到{_LEVEL_WORDS[level]}风险：{'、'.join(types) or '异常'}。"
    return {
        "riskLevel": level,
        "confidence": confidence,
        "riskTypes": types,
        "description": description,
        "dangerObjectCount": danger,
        "triggerObjectIds": list(range(1, danger + 1)),
    }
