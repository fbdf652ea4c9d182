"""The only module that speaks HTTP to the vision-model provider (OpenAI chat-completions protocol).

Every failure is mapped to a typed error from :mod:`traffic.errors`:

- 429, or an error code starting with ``Throttling`` / ``LimitRequests``  → ``RateLimited``
- 401/403, or codes ``InvalidApiKey``, ``invalid_api_key``, ``Arrearage``, ``AccessDenied*``,
  ``insufficient_quota`` on any status                                     → ``KeyRejected``
- 408, 5xx, timeouts, connection failures                                  → ``ProviderUnavailable``
- any other non-2xx                                                        → ``ProviderError``
- a 2xx without JSON, without ``choices[0].message.content`` or with empty content → ``BadModelReply``
- a reply still arriving when the call's timeout has passed (bytes dripping in)  → ``ProviderUnavailable``
- a reply larger than ``MAX_REPLY_BYTES`` (refused unread)                 → ``BadModelReply``

The API key is a secret: it is scrubbed from every message this module builds or logs.

``on_sent``: a caller may pass a callback that runs once the request is written to the socket (the
key pool counts the call against the provider's windows from that moment, however long the
connection or TLS handshake took). It runs in the calling thread, inside the HTTP connection,
before the reply is awaited; an exception in it is logged and never fails the call.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from types import TracebackType
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from traffic.bounded_read import BodyBroken, BodyTooLarge, BodyTooSlow, read_bounded
from traffic.errors import (
    BadModelReply,
    ConfigError,
    KeyRejected,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from traffic.models import Usage

log = logging.getLogger(__name__)

MAX_REPLY_BYTES = 1024 * 1024
"""A provider reply larger than this is refused unread (a verdict is a few hundred bytes)."""
_MAX_DETAIL = 200
"""Provider error text is cut to this many characters in our messages."""
_MAX_RAW = 2000
"""``BadModelReply.raw`` keeps at most this many characters of the reply."""

_KEY_REJECTED_CODES = frozenset({"invalidapikey", "invalid_api_key", "arrearage", "insufficient_quota"})
_KEY_REJECTED_PREFIXES = ("accessdenied",)
_THROTTLED_PREFIXES = ("throttling", "limitrequests", "rate_limit")
_SECRET_PATTERNS = (
    re.compile(r"(?i)bearer\s+\S+"),
    re.compile(r"\bsk-[A-Za-z0-9_*.\-]{6,}"),
)
_KEY_SHAPE = re.compile(r"[\x21-\x7e]+")
"""Visible ASCII only: anything else could be echoed by an HTTP library's header validation."""


@dataclass(frozen=True)
class Completion:
    """One successful chat completion."""

    text: str
    usage: Usage
    latency_s: float
    model: str
    request_id: str | None
    finish_reason: str | None = None
    """``stop``, or ``length`` when ``max_tokens`` cut the reply short."""


@dataclass(frozen=True)
class KeyCheck:
    """Outcome of :meth:`VisionClient.verify` for one key; never holds the key."""

    ok: bool
    status: int | None
    latency_s: float
    error: str | None = None
    """Name of the ``ProviderError`` subclass raised, e.g. ``KeyRejected``; None when ok."""
    detail: str = ""
    """Scrubbed, truncated error message; empty when ok."""


_sending = threading.local()
"""The ``on_sent`` callback of the request this thread is sending (None when it has none)."""


def _request_written() -> None:
    """Run the sending thread's ``on_sent`` callback once (called by the connection after the write)."""
    hook: Callable[[], None] | None = getattr(_sending, "hook", None)
    if hook is None:
        return
    _sending.hook = None
    try:
        hook()
    except Exception:  # the call itself must go on: the pool's release stamps the call instead
        log.warning("on_sent callback failed", exc_info=True)


class _NotifyingHTTPConnection(HTTPConnection):
    """An HTTP connection that reports each request as sent before it waits for the reply."""

    def getresponse(self) -> urllib3.HTTPResponse:  # type: ignore[override]
        _request_written()
        return super().getresponse()


class _NotifyingHTTPSConnection(HTTPSConnection):
    """The HTTPS flavour of :class:`_NotifyingHTTPConnection`."""

    def getresponse(self) -> urllib3.HTTPResponse:  # type: ignore[override]
        _request_written()
        return super().getresponse()


class _NotifyingHTTPPool(HTTPConnectionPool):
    ConnectionCls = _NotifyingHTTPConnection


class _NotifyingHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _NotifyingHTTPSConnection


class _NotifyingAdapter(HTTPAdapter):
    """A requests adapter whose connections report when a request is written (see ``on_sent``)."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _NotifyingHTTPPool, "https": _NotifyingHTTPSPool}


def scrub(text: str, secret: str | None = None) -> str:
    """``text`` with ``secret`` and anything shaped like a bearer token or ``sk-`` key masked."""
    if secret:
        text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("***", text)
    return text


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date), or None if unusable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = time.time() if now is None else now
        return max(0.0, when.timestamp() - current)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class VisionClient:
    """Calls ``{base_url}/chat/completions`` with one image and a prompt; no hidden retries."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        timeout_s: float,
        max_tokens: int = 400,
        temperature: float = 0.1,
        session: requests.Session | None = None,
        pool_maxsize: int = 32,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"llm base_url must start with http:// or https://, got {base_url[:80]!r}")
        if not timeout_s > 0:
            raise ConfigError(f"llm timeout_s must be positive, got {timeout_s!r}")
        if max_tokens < 1:
            raise ConfigError(f"llm max_tokens must be at least 1, got {max_tokens!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._url = f"{self.base_url}/chat/completions"
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            # max_retries=0: retrying is the caller's decision (it knows the deadline and the key pool).
            adapter = _NotifyingAdapter(max_retries=0, pool_connections=4, pool_maxsize=pool_maxsize)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._session = session

    def __repr__(self) -> str:
        return f"VisionClient(base_url={self.base_url!r}, model={self.model!r}, timeout_s={self.timeout_s})"

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> VisionClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def complete(
        self,
        api_key: str,
        *,
        system: str,
        user: str,
        image_jpeg: bytes,
        timeout_s: float | None = None,
        followup: tuple[str, str] | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> Completion:
        """Ask the model about one JPEG; ``timeout_s`` overrides the client's (e.g. to fit a deadline).

        ``followup`` is (the model's earlier reply, our next message), for one repair turn;
        ``on_sent`` runs once the request is written (see the module docstring).
        """
        data_uri = "data:image/jpeg;base64," + base64.b64encode(image_jpeg).decode("ascii")
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": data_uri}},
                        {"type": "text", "text": user},
                    ],
                },
            ],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if followup is not None:
            payload["messages"] += [
                {"role": "assistant", "content": followup[0]},
                {"role": "user", "content": followup[1]},
            ]
        body, latency, request_id = self._post(api_key, payload, timeout_s, on_sent)
        raw = _truncate(scrub(json.dumps(body, ensure_ascii=False), api_key), _MAX_RAW)
        choice = _first_choice(body)
        message = choice.get("message") if choice is not None else None
        content = message.get("content") if isinstance(message, dict) else None
        text = _content_text(content)
        if text is None:
            raise BadModelReply("provider reply has no choices[0].message.content", raw=raw, status=200)
        if not text.strip():
            raise BadModelReply("provider reply content is empty", raw=raw, status=200)
        finish = choice.get("finish_reason") if choice is not None else None
        model = body.get("model")
        completion = Completion(
            text=text,
            usage=_usage(body.get("usage")),
            latency_s=latency,
            model=model if isinstance(model, str) and model else self.model,
            request_id=request_id,
            finish_reason=finish if isinstance(finish, str) else None,
        )
        log.debug(
            "completion model=%s latency=%.3fs tokens=%d request_id=%s",
            completion.model,
            latency,
            completion.usage.total_tokens,
            request_id,
        )
        return completion

    def verify(
        self, api_key: str, *, timeout_s: float | None = None, on_sent: Callable[[], None] | None = None
    ) -> KeyCheck:
        """One cheap text-only call (``max_tokens=1``) that tells whether ``api_key`` is usable now."""
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": "ping"}],
            "max_tokens": 1,
            "temperature": 0,
        }
        started = time.perf_counter()
        try:
            _, latency, _ = self._post(api_key, payload, timeout_s, on_sent)
        except ProviderError as exc:
            return KeyCheck(
                ok=False,
                status=exc.status,
                latency_s=time.perf_counter() - started,
                error=type(exc).__name__,
                detail=_truncate(scrub(str(exc), api_key), _MAX_DETAIL),
            )
        return KeyCheck(ok=True, status=200, latency_s=latency)

    def _post(
        self,
        api_key: str,
        payload: dict[str, Any],
        timeout_s: float | None,
        on_sent: Callable[[], None] | None = None,
    ) -> tuple[dict[str, Any], float, str | None]:
        """POST ``payload``; return (JSON body, latency, request id) of a 2xx or raise a typed error."""
        if not api_key or not _KEY_SHAPE.fullmatch(api_key):
            # Never hand a malformed key to requests: its header validation error would echo it.
            raise KeyRejected("api key is empty or contains characters not allowed in a header")
        timeout = self.timeout_s if timeout_s is None else timeout_s
        headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": "traffic-vision-client/1",
        }
        started = time.perf_counter()
        _sending.hook = on_sent
        try:
            response = self._session.post(
                self._url, json=payload, headers=headers, timeout=timeout, allow_redirects=False, stream=True
            )
            with response:
                content = read_bounded(
                    response, max_bytes=MAX_REPLY_BYTES, deadline=started + timeout, clock=time.perf_counter
                )
        except BodyTooLarge:
            raise BadModelReply(f"provider reply is larger than {MAX_REPLY_BYTES} bytes", raw="", status=None) from None
        except (BodyTooSlow, BodyBroken) as exc:
            latency = time.perf_counter() - started
            kind = "timed out" if isinstance(exc, BodyTooSlow) else "connection failed"
            raise ProviderUnavailable(f"provider {kind} after {latency:.2f}s (while reading the reply)") from None
        except (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            latency = time.perf_counter() - started
            kind = "timed out" if _is_timeout(exc) else "connection failed"
            message = scrub(f"provider {kind} after {latency:.2f}s ({type(exc).__name__}, {self._url})", api_key)
            log.debug("%s", message)
            raise ProviderUnavailable(message) from None
        except requests.RequestException as exc:
            message = scrub(f"provider request failed: {type(exc).__name__}: {exc}", api_key)
            raise ProviderError(_truncate(message, _MAX_DETAIL * 2)) from None
        finally:
            _sending.hook = None
        latency = time.perf_counter() - started
        request_id = response.headers.get("x-request-id") or response.headers.get("x-dashscope-request-id")
        status = response.status_code
        text = content.decode("utf-8", errors="replace")  # JSON is UTF-8 (RFC 8259); skip sniffing
        try:
            parsed: Any = json.loads(text) if text else None
        except ValueError:
            parsed = None
        body = parsed if isinstance(parsed, dict) else None
        if request_id is None and body is not None:
            rid = body.get("request_id") or body.get("id")
            request_id = rid if isinstance(rid, str) else None
        if 200 <= status < 300:
            if body is None:
                raise BadModelReply(
                    f"provider answered HTTP {status} without a JSON object",
                    raw=_truncate(scrub(text, api_key), _MAX_RAW),
                    status=status,
                )
            return body, latency, request_id
        raise _error_for(status, body, text, response.headers.get("Retry-After"), api_key, request_id)


def _error_for(
    status: int,
    body: dict[str, Any] | None,
    text: str,
    retry_after: str | None,
    api_key: str,
    request_id: str | None,
) -> ProviderError:
    """The typed error for a non-2xx reply."""
    code, detail = _error_code(body)
    summary = ": ".join(part for part in (code, detail) if part) or text.strip() or "no body"
    summary = _truncate(" ".join(scrub(summary, api_key).split()), _MAX_DETAIL)
    rid = f" request_id={request_id}" if request_id else ""
    message = f"provider answered HTTP {status} ({summary}){rid}"
    lowered = code.lower()
    error: ProviderError
    if lowered in _KEY_REJECTED_CODES or lowered.startswith(_KEY_REJECTED_PREFIXES):
        error = KeyRejected(message, status=status)
    elif status == 429 or lowered.startswith(_THROTTLED_PREFIXES):
        error = RateLimited(message, retry_after=parse_retry_after(retry_after), status=status)
    elif status in (401, 403):
        error = KeyRejected(message, status=status)
    elif status == 408 or status >= 500:
        error = ProviderUnavailable(message, status=status)
    else:
        error = ProviderError(message, status=status)
    log.debug("%s -> %s", message, type(error).__name__)
    return error


def _error_code(body: dict[str, Any] | None) -> tuple[str, str]:
    """(code, message) from an OpenAI-style ``{"error": {...}}`` or DashScope-style ``{"code": ...}`` body."""
    if body is None:
        return "", ""
    err = body.get("error")
    source: dict[str, Any] = err if isinstance(err, dict) else body
    code = source.get("code")
    if not isinstance(code, str) or not code:
        code = source.get("type") if isinstance(source.get("type"), str) else ""
    message = source.get("message")
    if not isinstance(message, str):
        message = err if isinstance(err, str) else ""
    return str(code), message


def _first_choice(body: dict[str, Any]) -> dict[str, Any] | None:
    """``choices[0]`` if it is an object."""
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def _content_text(content: object) -> str | None:
    """Message content as text: a string, or the joined ``text`` of a list of parts; None if neither."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text") for part in content if isinstance(part, dict)]
        joined = [t for t in texts if isinstance(t, str)]
        return "".join(joined) if joined else None
    return None


def _usage(usage: object) -> Usage:
    """Token usage from ``usage`` (OpenAI names, DashScope's input/output names as fallback)."""
    if not isinstance(usage, dict):
        return Usage()

    def count(*names: str) -> int:
        for name in names:
            value = usage.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                return int(value)
        return 0

    return Usage(
        prompt_tokens=count("prompt_tokens", "input_tokens"),
        completion_tokens=count("completion_tokens", "output_tokens"),
    )


def _is_timeout(exc: BaseException) -> bool:
    """True for connect/read timeouts, including read timeouts surfaced while reading the body."""
    return isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower()


def _truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
