"""A local OpenAI/DashScope-compatible vision provider for tests and benchmarks (not product code).

Serves ``POST /v1/chat/completions`` (also ``/chat/completions`` and
``/compatible-mode/v1/chat/completions``), ``GET /health``, ``GET /stats``, ``GET /_requests`` and
``POST /_control``. It enforces per-key (qps, rpm) and per-account (rpm, tpm) sliding-window limits,
counts every request that arrived over a limit, injects faults, and answers valid requests with a flat
verdict JSON derived from a hash of the image, so runs are reproducible.

In process::

    with ProviderSimulator(SimConfig(keys={"sk-...": SimKey(qps_limit=2)})) as sim:
        VisionClient(sim.base_url, "qwen-vl-plus", timeout_s=5)...

As a process: ``python -m stack.provider_sim --port 0 --config sim.json`` prints
``READY http://127.0.0.1:PORT/v1`` once listening.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import hashlib
import json
import logging
import math
import random
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger(__name__)

LEVELS = ("none", "low", "medium", "high")
DEFAULT_LEVEL_WEIGHTS: Mapping[str, float] = {"none": 0.55, "low": 0.25, "medium": 0.13, "high": 0.07}
DEFAULT_RISK_TYPES: Mapping[str, tuple[str, ...]] = {
    # The vocabulary ids the prompt offers (traffic/risk_types.py), as a compliant model answers.
    "none": ("other",),
    "low": ("close_following", "dense_traffic", "poor_visibility"),
    "medium": ("tailgating", "jaywalking", "illegal_turn"),
    "high": ("collision_risk", "red_light_running", "wrong_way"),
}
_CONFIDENCE_RANGES = {"none": (0.20, 0.44), "low": (0.45, 0.64), "medium": (0.65, 0.79), "high": (0.80, 0.97)}
_LEVEL_WORDS = {"none": "无", "low": "低", "medium": "中", "high": "高"}

MALFORMED_VARIANTS = (
    "not_json",
    "prose_wrapped",
    "missing_fields",
    "empty_content",
    "not_json_body",
    "no_choices",
)
"""2xx replies that are not a clean verdict; the first three carry content, the rest are unusable."""
RETRY_AFTER_STYLES = ("seconds", "http-date", "none")
CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions", "/compatible-mode/v1/chat/completions"})
MAX_BODY_BYTES = 32 * 1024 * 1024

ScriptStep = int | str
"""A scripted reply: an HTTP status (200 = the normal path), ``"timeout"``, or a malformed variant name."""


@dataclass(frozen=True)
class SimKey:
    """Limits of one simulated API key."""

    account: str = "default"
    qps_limit: float | None = None
    rpm_limit: int | None = None
    key_id: str | None = None
    """Label used in stats and logs; default ``…`` plus the key's last four characters."""


@dataclass(frozen=True)
class SimAccount:
    """Limits shared by every key of one simulated account."""

    rpm_limit: int | None = None
    tpm_limit: int | None = None


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulator does; changed at run time with ``update`` or ``POST /_control``."""

    keys: Mapping[str, SimKey] = field(default_factory=dict)
    accounts: Mapping[str, SimAccount] = field(default_factory=dict)
    rejected_keys: frozenset[str] = frozenset()
    """Answered 401 ``InvalidApiKey``."""
    arrears_keys: frozenset[str] = frozenset()
    """Answered 400 ``Arrearage``."""
    open_mode: bool = False
    """Accept any key (account ``open``, no key limits)."""
    qps_window_s: float = 1.0
    rpm_window_s: float = 60.0
    """Window of both ``rpm_limit`` and ``tpm_limit``; shorten it to test minute limits quickly."""
    window_grace_ms: float = 0.0
    """Entries leave a window this much early, to tolerate clock skew of a client-side limiter."""
    fail_rate_5xx: float = 0.0
    timeout_rate: float = 0.0
    hang_s: float = 30.0
    """How long a simulated timeout holds the request before answering 504."""
    malformed_rate: float = 0.0
    malformed_variants: tuple[str, ...] = ("not_json", "prose_wrapped", "missing_fields")
    throttle_rate: float = 0.0
    """Fraction of requests within every limit answered 429 anyway (Retry-After 1 s), as providers do."""
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    """Extra uniform random latency in [0, jitter_ms]."""
    status_script: tuple[ScriptStep, ...] = ()
    """Replies for the next requests, in order, before any other check."""
    levels: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_LEVEL_WEIGHTS))
    """Relative weights of the risk levels in valid replies."""
    risk_types: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_RISK_TYPES))
    completion_tokens: int = 60
    content_parts: bool = False
    """Send message content as a list of text parts instead of a string (both are legal)."""
    echo_key_in_errors: bool = False
    """Echo the full key in auth error messages, like a careless provider, to test client scrubbing."""
    model: str = "qwen-vl-plus"
    """Model reported when the request names none."""
    retry_after_style: str = "seconds"
    """``Retry-After`` of a 429: ``seconds``, ``http-date`` or ``none`` (header left out)."""
    seed: int = 0
    record_requests: int = 8
    """How many recent request bodies to keep for inspection."""

    def __post_init__(self) -> None:
        for name in ("fail_rate_5xx", "timeout_rate", "malformed_rate", "throttle_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {rate!r}")
        if self.qps_window_s <= 0 or self.rpm_window_s <= 0:
            raise ValueError("qps_window_s and rpm_window_s must be positive")
        if self.window_grace_ms < 0 or self.latency_ms < 0 or self.jitter_ms < 0 or self.hang_s < 0:
            raise ValueError("window_grace_ms, latency_ms, jitter_ms and hang_s must not be negative")
        unknown = [v for v in self.malformed_variants if v not in MALFORMED_VARIANTS]
        if unknown or not self.malformed_variants:
            raise ValueError(f"malformed_variants must be a non-empty subset of {MALFORMED_VARIANTS}")
        if self.retry_after_style not in RETRY_AFTER_STYLES:
            raise ValueError(f"retry_after_style must be one of {RETRY_AFTER_STYLES}")
        if set(self.levels) - set(LEVELS) or any(w < 0 for w in self.levels.values()):
            raise ValueError(f"levels must map some of {LEVELS} to non-negative weights")
        if sum(self.levels.values()) <= 0:
            raise ValueError("levels must have a positive total weight")
        for step in self.status_script:
            if isinstance(step, str) and step != "timeout" and step not in MALFORMED_VARIANTS:
                raise ValueError(f"unknown status_script step {step!r}")
            if isinstance(step, int) and not 200 <= step <= 599:
                raise ValueError(f"status_script status {step!r} is not an HTTP status")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimConfig:
        """Build from JSON-like data; unknown fields are an error."""
        return cls(**_convert_fields(data))

    def updated(self, changes: Mapping[str, Any]) -> SimConfig:
        """A copy with ``changes`` (JSON-like, as for :meth:`from_dict`) applied."""
        return dataclasses.replace(self, **_convert_fields(changes))


def _convert_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-like values converted to SimConfig field types; raises ValueError on unknown fields."""
    names = {f.name for f in dataclasses.fields(SimConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown SimConfig fields: {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name == "keys":
            out[name] = _convert_keys(value)
        elif name == "accounts":
            out[name] = {
                str(a): v if isinstance(v, SimAccount) else SimAccount(**dict(v)) for a, v in dict(value).items()
            }
        elif name in ("rejected_keys", "arrears_keys"):
            out[name] = frozenset(str(k) for k in value)
        elif name in ("malformed_variants", "status_script"):
            out[name] = tuple(value)
        elif name == "levels":
            out[name] = {str(k): float(v) for k, v in dict(value).items()}
        elif name == "risk_types":
            out[name] = {str(k): tuple(str(t) for t in v) for k, v in dict(value).items()}
        else:
            out[name] = value
    return out


def _convert_keys(value: Any) -> dict[str, SimKey]:
    """Keys as ``{secret: {...}}`` or as a list of ``{api_key, key_id, ...}`` (api_keys.yaml style)."""
    if isinstance(value, Mapping):
        return {str(k): v if isinstance(v, SimKey) else SimKey(**dict(v or {})) for k, v in value.items()}
    keys: dict[str, SimKey] = {}
    for item in value:
        spec = dict(item)
        secret = spec.pop("api_key", None) or spec.pop("key", None)
        if not secret:
            raise ValueError("each entry of a key list needs api_key")
        if "name" in spec and "key_id" not in spec:
            spec["key_id"] = spec.pop("name")
        keys[str(secret)] = SimKey(**spec)
    return keys


def mask(secret: str) -> str:
    """A label for a key that never reveals more than its last four characters."""
    return f"…{secret[-4:]}" if len(secret) >= 8 else "…"


class _Window:
    """Weighted events of a sliding window, oldest first."""

    def __init__(self) -> None:
        self.events: deque[tuple[float, int]] = deque()
        self.total = 0

    def prune(self, now: float, span: float) -> None:
        """Drop events that left the window ending at ``now``."""
        while self.events and self.events[0][0] <= now - span:
            self.total -= self.events.popleft()[1]

    def over(self, now: float, span: float, capacity: float, weight: int) -> float | None:
        """Seconds until ``weight`` more would fit under ``capacity``; None when it fits now."""
        self.prune(now, span)
        if self.total + weight <= capacity:
            return None
        if weight > capacity:
            return span
        excess = self.total + weight - capacity
        freed = 0
        for at, w in self.events:
            freed += w
            if freed >= excess:
                return max(0.0, at + span - now)
        return span

    def add(self, now: float, weight: int) -> None:
        """Record an accepted event."""
        self.events.append((now, weight))
        self.total += weight


@dataclass
class _Counts:
    """Mutable counters of one key or account."""

    requests: int = 0
    accepted: int = 0
    over_limit: int = 0
    tokens: int = 0
    by_status: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "over_limit": self.over_limit,
            "tokens": self.tokens,
            "by_status": dict(self.by_status),
        }


@dataclass
class _Reply:
    """What the HTTP handler should send."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Sleep before answering (latency injection, or a hang)."""


def _json_reply(status: int, payload: Any, **headers: str) -> _Reply:
    """A JSON reply."""
    return _Reply(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), headers=dict(headers))


def _error_reply(status: int, code: str, message: str, request_id: str, **headers: str) -> _Reply:
    """A compatible-mode error body, as DashScope sends it."""
    body = {
        "error": {"code": code, "message": message, "type": code, "param": None},
        "request_id": request_id,
    }
    return _json_reply(status, body, **{"x-request-id": request_id, **headers})


_SCRIPTED_ERRORS = {
    400: ("InvalidParameter", "Simulated bad request."),
    401: ("InvalidApiKey", "Invalid API-key provided."),
    403: ("AccessDenied", "Access denied."),
    404: ("ModelNotFound", "The model does not exist."),
    429: ("Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
    500: ("InternalError", "An internal error has occured, please try again later."),
}


class SimulatorCore:
    """The simulator's decisions and counters, independent of HTTP; thread-safe."""

    def __init__(self, config: SimConfig) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._reset_locked()

    @property
    def config(self) -> SimConfig:
        """The current configuration."""
        return self._config

    def _reset_locked(self) -> None:
        """Counters, windows, recordings, randomness and script back to the config's start."""
        cfg = self._config
        self._rng = random.Random(cfg.seed)
        self._script: deque[ScriptStep] = deque(cfg.status_script)
        self._key_windows: dict[str, tuple[_Window, _Window]] = {}
        self._account_windows: dict[str, tuple[_Window, _Window]] = {}
        self._total = 0
        self._accepted = 0
        self._over_limit = 0
        self._timeouts = 0
        self._by_status: Counter[str] = Counter()
        self._over_reason: Counter[str] = Counter()
        self._keys: dict[str, _Counts] = {}
        self._accounts: dict[str, _Counts] = {}
        self._recorded: deque[dict[str, Any]] = deque(maxlen=max(0, cfg.record_requests))
        self._in_flight = 0
        self._max_in_flight = 0
        self._started = time.monotonic()

    # --- control -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Clear counters, limit windows and recordings; restart the random stream and the script."""
        with self._lock:
            self._reset_locked()

    def update(self, changes: Mapping[str, Any]) -> SimConfig:
        """Apply config changes (JSON-like); a new ``status_script`` replaces the pending one."""
        with self._lock:
            self._config = self._config.updated(changes)
            if "status_script" in changes:
                self._script = deque(self._config.status_script)
            if "record_requests" in changes:
                self._recorded = deque(self._recorded, maxlen=max(0, self._config.record_requests))
            return self._config

    def script(self, *steps: ScriptStep) -> None:
        """Replace the pending scripted replies."""
        self.update({"status_script": steps})

    def set_key(self, api_key: str, spec: SimKey | None = None) -> None:
        """Add or replace a key."""
        with self._lock:
            keys = dict(self._config.keys)
            keys[api_key] = spec or SimKey()
            self._config = dataclasses.replace(self._config, keys=keys)

    def remove_key(self, api_key: str) -> None:
        """Forget a key: it is answered as unknown from now on."""
        with self._lock:
            keys = {k: v for k, v in self._config.keys.items() if k != api_key}
            self._config = dataclasses.replace(self._config, keys=keys)

    def set_account(self, account: str, spec: SimAccount) -> None:
        """Add or replace an account's limits."""
        with self._lock:
            accounts = dict(self._config.accounts)
            accounts[account] = spec
            self._config = dataclasses.replace(self._config, accounts=accounts)

    def reject_key(self, api_key: str) -> None:
        """Answer this key 401 ``InvalidApiKey`` from now on."""
        self._mark(api_key, rejected=True, arrears=False)

    def arrears_key(self, api_key: str) -> None:
        """Answer this key 400 ``Arrearage`` from now on."""
        self._mark(api_key, rejected=False, arrears=True)

    def restore_key(self, api_key: str) -> None:
        """Undo ``reject_key`` / ``arrears_key``."""
        self._mark(api_key, rejected=False, arrears=False)

    def _mark(self, api_key: str, *, rejected: bool, arrears: bool) -> None:
        with self._lock:
            cfg = self._config
            rej = cfg.rejected_keys | {api_key} if rejected else cfg.rejected_keys - {api_key}
            arr = cfg.arrears_keys | {api_key} if arrears else cfg.arrears_keys - {api_key}
            self._config = dataclasses.replace(cfg, rejected_keys=rej, arrears_keys=arr)

    def control(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Run one ``POST /_control`` command ``{"action": ..., ...}``; raises ValueError if invalid."""
        action = command.get("action")
        if action == "reset":
            self.reset()
        elif action == "update":
            config = command.get("config")
            if not isinstance(config, Mapping):
                raise ValueError("update needs a config object")
            self.update(config)
        elif action == "script":
            self.script(*command.get("steps", ()))
        elif action == "set_key":
            fields = {k: v for k, v in command.items() if k not in ("action", "key")}
            self.set_key(_required_key(command), SimKey(**fields))
        elif action == "set_account":
            fields = {k: v for k, v in command.items() if k not in ("action", "account")}
            self.set_account(str(command["account"]), SimAccount(**fields))
        elif action in ("remove_key", "reject_key", "arrears_key", "restore_key"):
            getattr(self, action)(_required_key(command))
        else:
            raise ValueError(f"unknown control action {action!r}")
        return {"ok": True, "action": action}

    # --- inspection ----------------------------------------------------------------------------

    def label(self, api_key: str) -> str:
        """The stats/log label of ``api_key``."""
        spec = self._config.keys.get(api_key)
        return spec.key_id if spec is not None and spec.key_id else mask(api_key)

    def stats(self) -> dict[str, Any]:
        """JSON-ready counters (no secrets)."""
        with self._lock:
            return {
                "total": self._total,
                "accepted": self._accepted,
                "over_limit": self._over_limit,
                "over_limit_by_reason": dict(self._over_reason),
                "timeouts": self._timeouts,
                "by_status": dict(self._by_status),
                "keys": {label: c.as_dict() for label, c in self._keys.items()},
                "accounts": {account: c.as_dict() for account, c in self._accounts.items()},
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "pending_script": len(self._script),
                "uptime_s": round(time.monotonic() - self._started, 3),
            }

    def recorded(self) -> list[dict[str, Any]]:
        """Recent requests, oldest first: ``{path, key, body}`` with the key as its label."""
        with self._lock:
            return list(self._recorded)

    def last_request(self) -> dict[str, Any] | None:
        """The JSON body of the latest chat request, or None."""
        with self._lock:
            return self._recorded[-1]["body"] if self._recorded else None

    # --- requests ------------------------------------------------------------------------------

    def enter(self) -> None:
        """Count a chat request as in flight."""
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def leave(self) -> None:
        """Count a chat request as finished."""
        with self._lock:
            self._in_flight -= 1

    def handle_chat(self, path: str, authorization: str | None, raw_body: bytes) -> _Reply:
        """Decide the reply to one chat-completions request."""
        arrival = time.monotonic()
        api_key = _bearer(authorization)
        try:
            body: Any = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = None
        with self._lock:
            cfg = self._config
            self._total += 1
            request_id = f"sim-{self._total:08d}"
            step = self._script.popleft() if self._script else None
            label = self._known_label(api_key)
            self._recorded.append({"path": path, "key": label, "body": body})
            if step is not None and step != 200:
                reply = self._scripted(step, request_id, body)
                return self._count(reply, label, None)
            if api_key is None:
                reply = _error_reply(401, "InvalidApiKey", "No API-key provided.", request_id)
                return self._count(reply, label, None)
            echo = f": {api_key}" if cfg.echo_key_in_errors else "."
            if api_key in cfg.rejected_keys:
                native = {
                    "code": "InvalidApiKey",
                    "message": f"Invalid API-key provided{echo}",
                    "request_id": request_id,
                }
                return self._count(_json_reply(401, native, **{"x-request-id": request_id}), label, None)
            if api_key in cfg.arrears_keys:
                message = f"Access denied, please make sure your account is in good standing{echo}"
                return self._count(_error_reply(400, "Arrearage", message, request_id), label, None)
            spec = cfg.keys.get(api_key)
            if spec is None and not cfg.open_mode:
                message = f"Incorrect API key provided{echo}"
                return self._count(_error_reply(401, "invalid_api_key", message, request_id), label, None)
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                message = "Request body must be a JSON object with messages."
                return self._count(_error_reply(400, "InvalidParameter", message, request_id), label, None)
            account = spec.account if spec is not None else "open"
            image, text = _request_parts(body)
            prompt_tokens = _image_tokens(image) + max(1, len(text) // 3)
            tokens = prompt_tokens + cfg.completion_tokens
            throttled = self._check_limits(api_key, spec, account, arrival, tokens)
            if throttled is not None:
                reason, wait = throttled
                self._over_limit += 1
                self._over_reason[reason] += 1
                self._counts(self._keys, label).over_limit += 1
                self._counts(self._accounts, account).over_limit += 1
                log.debug("429 %s key=%s account=%s retry in %.2fs", reason, label, account, wait)
                return self._count(self._throttle_reply(reason, wait, request_id), label, account)
            self._accepted += 1
            self._counts(self._keys, label).accepted += 1
            acct = self._counts(self._accounts, account)
            acct.accepted += 1
            acct.tokens += tokens
            delay = (cfg.latency_ms + self._rng.uniform(0.0, cfg.jitter_ms)) / 1000.0
            roll = self._rng.random()
            if roll < cfg.timeout_rate:
                self._timeouts += 1
                reply = _error_reply(504, "RequestTimeOut", "Request timed out.", request_id)
                reply.delay_s = cfg.hang_s
            elif roll < cfg.timeout_rate + cfg.fail_rate_5xx:
                status = self._rng.choice((500, 503))
                reply = self._scripted(status, request_id, body)
                reply.delay_s = delay
            elif roll < cfg.timeout_rate + cfg.fail_rate_5xx + cfg.malformed_rate:
                variant = self._rng.choice(cfg.malformed_variants)
                reply = self._completion(cfg, body, image, text, prompt_tokens, request_id, variant)
                reply.delay_s = delay
            elif roll < cfg.timeout_rate + cfg.fail_rate_5xx + cfg.malformed_rate + cfg.throttle_rate:
                reply = self._throttle_reply("injected", 1.0, request_id)
                reply.delay_s = delay
            else:
                reply = self._completion(cfg, body, image, text, prompt_tokens, request_id, None)
                reply.delay_s = delay
            return self._count(reply, label, account)

    def _known_label(self, api_key: str | None) -> str:
        """Stats label: configured or open-mode keys by label, anything else lumped as ``<unknown>``."""
        cfg = self._config
        if api_key is None:
            return "<none>"
        if api_key in cfg.keys or api_key in cfg.rejected_keys or api_key in cfg.arrears_keys or cfg.open_mode:
            return self.label(api_key)
        return "<unknown>"

    def _count(self, reply: _Reply, label: str, account: str | None) -> _Reply:
        """Record ``reply``'s status against the totals, the key and the account."""
        status = str(reply.status)
        self._by_status[status] += 1
        key_counts = self._counts(self._keys, label)
        key_counts.requests += 1
        key_counts.by_status[status] += 1
        if account is not None:
            acct = self._counts(self._accounts, account)
            acct.requests += 1
            acct.by_status[status] += 1
        return reply

    @staticmethod
    def _counts(table: dict[str, _Counts], name: str) -> _Counts:
        counts = table.get(name)
        if counts is None:
            counts = table[name] = _Counts()
        return counts

    def _check_limits(
        self, api_key: str, spec: SimKey | None, account: str, now: float, tokens: int
    ) -> tuple[str, float] | None:
        """(reason, seconds to wait) for the first limit this request exceeds; records it if none."""
        cfg = self._config
        grace = cfg.window_grace_ms / 1000.0
        qps_win, rpm_win = self._key_windows.setdefault(api_key, (_Window(), _Window()))
        arpm_win, tpm_win = self._account_windows.setdefault(account, (_Window(), _Window()))
        acct = cfg.accounts.get(account)
        checks: list[tuple[str, _Window, float, float, int]] = []
        if spec is not None and spec.qps_limit is not None:
            capacity, span = _qps_capacity(spec.qps_limit, cfg.qps_window_s)
            checks.append(("key_qps", qps_win, span, capacity, 1))
        if spec is not None and spec.rpm_limit is not None:
            checks.append(("key_rpm", rpm_win, cfg.rpm_window_s, spec.rpm_limit, 1))
        if acct is not None and acct.rpm_limit is not None:
            checks.append(("account_rpm", arpm_win, cfg.rpm_window_s, acct.rpm_limit, 1))
        if acct is not None and acct.tpm_limit is not None:
            checks.append(("account_tpm", tpm_win, cfg.rpm_window_s, acct.tpm_limit, tokens))
        for reason, window, span, capacity, weight in checks:
            wait = window.over(now, max(1e-3, span - grace), capacity, weight)
            if wait is not None:
                return reason, wait
        qps_win.add(now, 1)
        rpm_win.add(now, 1)
        arpm_win.add(now, 1)
        tpm_win.add(now, tokens)
        return None

    def _throttle_reply(self, reason: str, wait: float, request_id: str) -> _Reply:
        """A DashScope-like 429."""
        seconds = max(1, math.ceil(wait))
        headers: dict[str, str] = {}
        style = self._config.retry_after_style
        if style == "seconds":
            headers["Retry-After"] = str(seconds)
        elif style == "http-date":
            headers["Retry-After"] = formatdate(time.time() + seconds, usegmt=True)
        if reason == "account_tpm":
            code, message = (
                "Throttling.AllocationQuota",
                "Tokens rate limit exceeded, please try again later.",
            )
        else:
            code, message = "Throttling.RateQuota", "Requests rate limit exceeded, please try again later."
        return _error_reply(429, code, message, request_id, **headers)

    def _scripted(self, step: ScriptStep, request_id: str, body: Any) -> _Reply:
        """The reply for a scripted step or an injected 5xx."""
        cfg = self._config
        if step == "timeout":
            self._timeouts += 1
            reply = _error_reply(504, "RequestTimeOut", "Request timed out.", request_id)
            reply.delay_s = cfg.hang_s
            return reply
        if isinstance(step, str):
            image, text = _request_parts(body) if isinstance(body, dict) else (b"", "")
            return self._completion(cfg, body, image, text, _image_tokens(image), request_id, step)
        if step == 429:
            return self._throttle_reply("scripted", 1.0, request_id)
        if step >= 500:
            code, message = _SCRIPTED_ERRORS[500] if step == 500 else ("ServiceUnavailable", "Try again later.")
        else:
            code, message = _SCRIPTED_ERRORS.get(step, ("SimulatedError", f"Simulated HTTP {step}."))
        return _error_reply(step, code, message, request_id)

    def _completion(
        self,
        cfg: SimConfig,
        body: Any,
        image: bytes,
        text: str,
        prompt_tokens: int,
        request_id: str,
        variant: str | None,
    ) -> _Reply:
        """A 2xx chat completion: a verdict, or the named malformed variant."""
        verdict = make_verdict(image or text.encode("utf-8"), cfg)
        clean = json.dumps(verdict, ensure_ascii=False)
        headers = {"x-request-id": request_id}
        if variant == "not_json_body":
            return _Reply(200, b"<html><body>upstream ok</body></html>", "text/html", headers)
        content: str = clean
        if variant == "not_json":
            content = "抱歉，我无法确定图中的交通状况。"
        elif variant == "prose_wrapped":
            content = f"根据图像分析，结果如下：\n```json\n{clean}\n```\n以上为评估结果。"
        elif variant == "missing_fields":
            content = json.dumps({"riskLevel": verdict["riskLevel"]}, ensure_ascii=False)
        elif variant == "empty_content":
            content = ""
        model = body.get("model") if isinstance(body, dict) else None
        message: Any = [{"type": "text", "text": content}] if cfg.content_parts else content
        choices: list[dict[str, Any]] = [
            {"index": 0, "message": {"role": "assistant", "content": message}, "finish_reason": "stop"}
        ]
        payload = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model if isinstance(model, str) and model else cfg.model,
            "choices": [] if variant == "no_choices" else choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": cfg.completion_tokens,
                "total_tokens": prompt_tokens + cfg.completion_tokens,
            },
        }
        return _json_reply(200, payload, **headers)


def _required_key(command: Mapping[str, Any]) -> str:
    key = command.get("key")
    if not isinstance(key, str) or not key:
        raise ValueError("this action needs a key")
    return key


def _qps_capacity(qps: float, window_s: float) -> tuple[float, float]:
    """(requests, seconds) of a qps limit: floor(qps × window) per window, or 1 per 1/qps below 1."""
    if qps <= 0:
        return 0.0, window_s
    per_window = math.floor(qps * window_s + 1e-9)
    if per_window >= 1:
        return float(per_window), window_s
    return 1.0, 1.0 / qps


def _bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _request_parts(body: Mapping[str, Any]) -> tuple[bytes, str]:
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


def _image_tokens(image: bytes) -> int:
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


class _Server(ThreadingHTTPServer):
    """Threaded HTTP server that can cut its open keep-alive connections on close."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], core: SimulatorCore, stop: threading.Event) -> None:
        self.core = core
        self.stop = stop
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        """Shut down every open client connection so handler threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the simulator core."""

    protocol_version = "HTTP/1.1"
    server_version = "ProviderSim/1"

    @property
    def _srv(self) -> _Server:
        server = self.server
        assert isinstance(server, _Server)
        return server

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            message = format % args
            log.debug("%s %s", self.address_string(), message)

    def do_GET(self) -> None:
        """Health, stats and recorded requests."""
        path = self.path.split("?", 1)[0]
        core = self._srv.core
        if path in ("/health", "/v1/health"):
            self._send(_json_reply(200, {"status": "ok"}))
        elif path == "/stats":
            self._send(_json_reply(200, core.stats()))
        elif path == "/_requests":
            self._send(_json_reply(200, core.recorded()))
        else:
            self._send(_json_reply(404, {"error": {"code": "NotFound", "message": path}}))

    def do_POST(self) -> None:
        """Chat completions and control."""
        path = self.path.split("?", 1)[0]
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self.close_connection = True
            self._send(_json_reply(411, {"error": {"code": "LengthRequired", "message": "length required"}}))
            return
        length = int(length_header)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(_json_reply(413, {"error": {"code": "TooLarge", "message": "body too large"}}))
            return
        raw = self.rfile.read(length)
        core = self._srv.core
        if path in CHAT_PATHS:
            core.enter()
            try:
                reply = core.handle_chat(path, self.headers.get("Authorization"), raw)
                if reply.delay_s > 0 and self._srv.stop.wait(reply.delay_s):
                    self.close_connection = True
                    return
                self._send(reply)
            finally:
                core.leave()
        elif path == "/_control":
            try:
                command = json.loads(raw or b"{}")
                if not isinstance(command, dict):
                    raise ValueError("control body must be a JSON object")
                self._send(_json_reply(200, core.control(command)))
            except (ValueError, TypeError, KeyError) as exc:
                self._send(_json_reply(400, {"ok": False, "error": str(exc)}))
        else:
            self._send(_json_reply(404, {"error": {"code": "NotFound", "message": path}}))

    def _send(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", f"{reply.content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class ProviderSimulator:
    """The simulator as a local HTTP server on a background thread; also a context manager."""

    def __init__(self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.core = SimulatorCore(config or SimConfig())
        self._address = (host, port)
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ProviderSimulator:
        """Bind and serve; returns self."""
        if self._server is not None:
            return self
        self._stop.clear()
        self._server = _Server(self._address, self.core, self._stop)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="provider-sim",
            daemon=True,
        )
        self._thread.start()
        log.info("provider simulator listening on %s", self.base_url)
        return self

    def close(self) -> None:
        """Stop serving, end hanging requests and close connections."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stop.set()
        server.shutdown()
        server.cut_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        log.info("provider simulator stopped")

    def __enter__(self) -> ProviderSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return f"http://{self._address[0]}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    @property
    def config(self) -> SimConfig:
        """The current configuration."""
        return self.core.config

    def update(self, **changes: Any) -> SimConfig:
        """Change config fields at run time (same values as :meth:`SimConfig.from_dict`)."""
        return self.core.update(changes)

    def reset(self) -> None:
        """Clear counters, windows and recordings."""
        self.core.reset()

    def script(self, *steps: ScriptStep) -> None:
        """Replace the pending scripted replies."""
        self.core.script(*steps)

    def set_key(self, api_key: str, spec: SimKey | None = None) -> None:
        """Add or replace a key."""
        self.core.set_key(api_key, spec)

    def remove_key(self, api_key: str) -> None:
        """Forget a key."""
        self.core.remove_key(api_key)

    def set_account(self, account: str, spec: SimAccount) -> None:
        """Add or replace an account's limits."""
        self.core.set_account(account, spec)

    def reject_key(self, api_key: str) -> None:
        """Answer this key 401 InvalidApiKey from now on."""
        self.core.reject_key(api_key)

    def arrears_key(self, api_key: str) -> None:
        """Answer this key 400 Arrearage from now on."""
        self.core.arrears_key(api_key)

    def restore_key(self, api_key: str) -> None:
        """Undo reject_key / arrears_key."""
        self.core.restore_key(api_key)

    def control(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Run a ``POST /_control`` command in process."""
        return self.core.control(command)

    def stats(self) -> dict[str, Any]:
        """Counters, as ``GET /stats`` returns them."""
        return self.core.stats()

    def key_label(self, api_key: str) -> str:
        """The label ``api_key`` has in stats."""
        return self.core.label(api_key)

    def last_request(self) -> dict[str, Any] | None:
        """JSON body of the latest chat request."""
        return self.core.last_request()

    def recorded(self) -> list[dict[str, Any]]:
        """Recent chat requests, oldest first."""
        return self.core.recorded()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGINT/SIGTERM; prints ``READY <base_url>`` once listening."""
    parser = argparse.ArgumentParser(
        prog="python -m stack.provider_sim", description="Local OpenAI-compatible vision provider simulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--config", help="JSON file with SimConfig fields")
    parser.add_argument("--open-mode", action="store_true", help="accept any API key")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    data: dict[str, Any] = {}
    if args.config:
        with open(args.config, encoding="utf-8") as fh:
            data = json.load(fh)
    if args.open_mode:
        data["open_mode"] = True
    try:
        config = SimConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        print(f"provider_sim: bad config: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with ProviderSimulator(config, host=args.host, port=args.port) as sim:
        print(f"READY {sim.base_url}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
