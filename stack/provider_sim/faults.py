"""Scripted steps and fault injection: error, 429, timeout and malformed chat-completion replies."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

MALFORMED_VARIANTS = (
    "not_json",
    "prose_wrapped",
    "missing_fields",
    "empty_content",
    "not_json_body",
    "no_choices",
    "no_verdict",
    "truncated",
)
"""2xx replies that are not a clean verdict: ``prose_wrapped`` and ``missing_fields`` still carry a level;
``no_verdict`` (a description only) and ``truncated`` (cut off inside the level) judge nothing."""
RETRY_AFTER_STYLES = ("seconds", "http-date", "none")

ScriptStep = int | str
"""A scripted reply: an HTTP status (200 = the normal path), ``"timeout"``, or a malformed variant name."""


@dataclass
class Reply:
    """What the HTTP handler should send."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Sleep before answering (latency injection, or a hang)."""


def json_reply(status: int, payload: Any, **headers: str) -> Reply:
    """A JSON reply."""
    return Reply(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), headers=dict(headers))


def error_reply(status: int, code: str, message: str, request_id: str, **headers: str) -> Reply:
    """A compatible-mode error body, as DashScope sends it."""
    body = {
        "error": {"code": code, "message": message, "type": code, "param": None},
        "request_id": request_id,
    }
    return json_reply(status, body, **{"x-request-id": request_id, **headers})


_SCRIPTED_ERRORS = {
    400: ("InvalidParameter", "Simulated bad request."),
    401: ("InvalidApiKey", "Invalid API-key provided."),
    403: ("AccessDenied", "Access denied."),
    404: ("ModelNotFound", "The model does not exist."),
    429: ("Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
    500: ("InternalError", "An internal error has occured, please try again later."),
}


def timeout_reply(request_id: str, hang_s: float) -> Reply:
    """A simulated timeout: a 504 held back for ``hang_s`` seconds."""
    reply = error_reply(504, "RequestTimeOut", "Request timed out.", request_id)
    reply.delay_s = hang_s
    return reply


def throttle_reply(reason: str, wait: float, request_id: str, retry_after_style: str) -> Reply:
    """A DashScope-like 429."""
    seconds = max(1, math.ceil(wait))
    headers: dict[str, str] = {}
    if retry_after_style == "seconds":
        headers["Retry-After"] = str(seconds)
    elif retry_after_style == "http-date":
        headers["Retry-After"] = formatdate(time.time() + seconds, usegmt=True)
    if reason == "account_tpm":
        code, message = (
            "Throttling.AllocationQuota",
            "Tokens rate limit exceeded, please try again later.",
        )
    else:
        code, message = "Throttling.RateQuota", "Requests rate limit exceeded, please try again later."
    return error_reply(429, code, message, request_id, **headers)


def status_reply(status: int, request_id: str, retry_after_style: str) -> Reply:
    """The reply for a scripted HTTP status or an injected 5xx."""
    if status == 429:
        return throttle_reply("scripted", 1.0, request_id, retry_after_style)
    if status >= 500:
        code, message = _SCRIPTED_ERRORS[500] if status == 500 else ("ServiceUnavailable", "Try again later.")
    else:
        code, message = _SCRIPTED_ERRORS.get(status, ("SimulatedError", f"Simulated HTTP {status}."))
    return error_reply(status, code, message, request_id)


def completion_reply(
    verdict: Mapping[str, Any],
    variant: str | None,
    *,
    body: Any,
    default_model: str,
    reply_model: str | None = None,
    content_parts: bool,
    prompt_tokens: int,
    completion_tokens: int,
    request_id: str,
) -> Reply:
    """A 2xx chat completion carrying ``verdict``, or the named malformed variant."""
    clean = json.dumps(verdict, ensure_ascii=False)
    headers = {"x-request-id": request_id}
    if variant == "not_json_body":
        return Reply(200, b"<html><body>upstream ok</body></html>", "text/html", headers)
    content: str = clean
    if variant == "not_json":
        content = "抱歉，我无法确定图中的交通状况。"
    elif variant == "prose_wrapped":
        content = f"根据图像分析，结果如下：\n```json\n{clean}\n```\n以上为评估结果。"
    elif variant == "missing_fields":
        content = json.dumps({"riskLevel": verdict["riskLevel"]}, ensure_ascii=False)
    elif variant == "empty_content":
        content = ""
    elif variant == "no_verdict":
        content = json.dumps({"description": verdict.get("description") or "a road scene"}, ensure_ascii=False)
    elif variant == "truncated":
        content = clean[: clean.index('"riskLevel"') + len('"riskLevel": "') + 1]
    model = body.get("model") if isinstance(body, dict) else None
    message: Any = [{"type": "text", "text": content}] if content_parts else content
    choices: list[dict[str, Any]] = [
        {"index": 0, "message": {"role": "assistant", "content": message}, "finish_reason": "stop"}
    ]
    payload = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply_model or (model if isinstance(model, str) and model else default_model),
        "choices": [] if variant == "no_choices" else choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return json_reply(200, payload, **headers)
