"""The simulator's configuration: keys, accounts, limits, fault rates and verdict vocabulary."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stack.provider_sim.faults import MALFORMED_VARIANTS, RETRY_AFTER_STYLES, ScriptStep

LEVELS = ("none", "low", "medium", "high")
DEFAULT_LEVEL_WEIGHTS: Mapping[str, float] = {"none": 0.55, "low": 0.25, "medium": 0.13, "high": 0.07}
DEFAULT_RISK_TYPES: Mapping[str, tuple[str, ...]] = {
    # The vocabulary ids the prompt offers (traffic/risk_types.py), as a compliant model answers.
    "none": ("other",),
    "low": ("close_following", "dense_traffic", "poor_visibility"),
    "medium": ("tailgating", "jaywalking", "illegal_turn"),
    "high": ("collision_risk", "red_light_running", "wrong_way"),
}


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
    arrival_jitter_ms: tuple[float, float] = (0.0, 0.0)
    """Network transit to a remote provider: each request is counted against the limits a uniform random
    [low, high] ms after it reached the simulator (requests sent in order can arrive out of it)."""
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
    reply_model: str | None = None
    """Model reported whatever the request names (the demo's ``simulated`` label); None: as requested."""
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
        low, high = self.arrival_jitter_ms
        if not 0 <= low <= high:
            raise ValueError("arrival_jitter_ms must be [low, high] with 0 <= low <= high")
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
        elif name == "arrival_jitter_ms":
            low, high = value
            out[name] = (float(low), float(high))
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
