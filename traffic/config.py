"""Build :class:`~traffic.settings.Settings` from an environment mapping and optional YAML files.

Precedence: defaults < YAML files < environment variables (plain ``REDIS_URL`` < ``ALGO_*`` <
``TRAFFIC_*``). One table, :data:`_ROWS`, says for every setting its type, its environment
variable names and its YAML paths; both the environment and the YAML parsers are driven by it.
The per-camera geometry comes from a file of its own only (``traffic.geometry_config`` parses it), and so
do the webhook subscriptions (``traffic.webhook_config``).
This module is pure: it reads only the mapping and the files it is given.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml

from traffic.detector_backends import CHOICES as BACKEND_CHOICES
from traffic.errors import ConfigError
from traffic.geometry_config import finite_number, geometry_from_mapping
from traffic.settings import AccountSpec, KeyPoolSettings, KeySpec, Settings, WebhookSubscription
from traffic.url_policy import parse_allowed_hosts
from traffic.webhook_config import subscriptions_from_mapping
from traffic.webhooks import TargetDenied, check_literal_target, display_url

_log = logging.getLogger(__name__)

PREFIX = "TRAFFIC_"
"""Prefix of this system's environment variables."""
OLD_PREFIX = "ALGO_"
"""Prefix of the old system's environment variables, still accepted."""
SINGLE_KEY_VAR = "DASHSCOPE_API_KEY"
"""One API key (id ``default``) used when the API-keys file yields none."""

_MODEL_FILE_VARS = ("MODEL_CONFIG", "MODEL_CONFIG_PATH")
_KEYS_FILE_VARS = ("API_KEYS_FILE",)
_GEOMETRY_FILE_VARS = ("GEOMETRY_FILE",)
_WEBHOOKS_FILE_VARS = ("WEBHOOKS_FILE",)
_FILE_VARS = (*_MODEL_FILE_VARS, *_KEYS_FILE_VARS, *_GEOMETRY_FILE_VARS, *_WEBHOOKS_FILE_VARS)
_OBSOLETE_OLD_VARS = frozenset(
    {
        "ALGO_ENABLE_KAFKA_STREAMING",
        "ALGO_KAFKA_BOOTSTRAP_SERVERS",
        "ALGO_BACKEND_BASE_URL",
        "ALGO_JWT_SECRET",
        "ALGO_JWT_HEADER",
        "ALGO_MAX_CONCURRENT_STREAMS",
        "ALGO_WS_HEARTBEAT_SECONDS",
        "ALGO_SAVE_RAW_FRAMES",
    }
)
_IGNORED_YAML = {
    "model": {},
    "keys": {"max_retry_per_key": "retries are set by llm.max_retry / TRAFFIC_LLM_MAX_RETRY"},
}
_SHORT_SIDE_720P = 720.0
"""Old ``distance_threshold`` values are pixels at 1280x720; ``distance_ratio`` is of the shorter side."""
_MAX_DISTANCE_RATIO = 2.0
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

FileKind = Literal["model", "keys"]
Parser = Callable[[object], object]


class _Invalid(ValueError):
    """A value that does not fit its setting; the message never contains the value."""


# --------------------------------------------------------------------------- value parsers


def _text(raw: object) -> str:
    """A stripped string, or ``_Invalid``."""
    if not isinstance(raw, str):
        raise _Invalid("expected a string")
    return raw.strip()


def _nonempty(raw: object) -> str:
    """A non-empty string."""
    value = _text(raw)
    if not value:
        raise _Invalid("must not be empty")
    return value


def _choice(*choices: str) -> Parser:
    """A parser for one of ``choices`` (case-insensitive, ``-`` read as ``_``)."""

    def parse(raw: object) -> str:
        value = _nonempty(raw).lower().replace("-", "_")
        if value not in choices:
            raise _Invalid(f"must be one of {', '.join(choices)}")
        return value

    return parse


def _log_level(raw: object) -> str:
    """A logging level name, upper-cased."""
    value = _nonempty(raw).upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise _Invalid("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def _boolean(raw: object) -> bool:
    """A bool, from YAML or from ``1/0 true/false yes/no on/off``."""
    if isinstance(raw, bool):
        return raw
    value = _text(raw).lower() if isinstance(raw, str) else None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise _Invalid("expected true or false")


def _to_int(raw: object) -> int:
    """An integer from an int or a decimal string."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            pass
    raise _Invalid("expected an integer")


def _to_float(raw: object) -> float:
    """A finite number from an int, a float or a string."""
    value = finite_number(raw)
    if value is None:
        raise _Invalid("expected a number")
    return value


def _bounds_text(lo: float | None, hi: float | None, lo_open: bool) -> str:
    """Words for a range, e.g. ``must be > 0 and <= 1``."""
    parts = [f"{'>' if lo_open else '>='} {lo:g}"] if lo is not None else []
    parts += [f"<= {hi:g}"] if hi is not None else []
    return "must be " + " and ".join(parts)


def _check_bounds(value: float, lo: float | None, hi: float | None, lo_open: bool) -> None:
    """Raise ``_Invalid`` unless ``value`` lies in the range."""
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    if too_low or (hi is not None and value > hi):
        raise _Invalid(_bounds_text(lo, hi, lo_open))


def _integer(lo: int, hi: int | None = None) -> Parser:
    """A parser for integers in ``[lo, hi]``."""

    def parse(raw: object) -> int:
        value = _to_int(raw)
        _check_bounds(value, lo, hi, False)
        return value

    return parse


def _number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Parser:
    """A parser for finite floats in a range."""

    def parse(raw: object) -> float:
        value = _to_float(raw)
        _check_bounds(value, lo, hi, lo_open)
        return value

    return parse


_POSITIVE = _number(0.0, lo_open=True)
_NON_NEGATIVE = _number(0.0)
_UNIT = _number(0.0, 1.0)
_FRACTION = _number(0.0, 1.0, lo_open=True)
_DISTANCE_RATIO = _number(0.0, _MAX_DISTANCE_RATIO, lo_open=True)


def _pixels_to_ratio(raw: object) -> float:
    """An old pixel distance (at 1280x720) as a fraction of the image's shorter side."""
    value = _to_float(raw)
    _check_bounds(value, 0.0, _MAX_DISTANCE_RATIO * _SHORT_SIDE_720P, True)
    return value / _SHORT_SIDE_720P


def _items(raw: object) -> list[str]:
    """Items of a YAML list or of a comma-separated string, stripped, empties dropped."""
    if isinstance(raw, str):
        parts: list[object] = list(raw.split(","))
    elif isinstance(raw, list | tuple):
        parts = list(raw)
    else:
        raise _Invalid("expected a list or a comma-separated string")
    return [item for item in (_text(part) for part in parts) if item]


def _names(raw: object) -> tuple[str, ...]:
    """A tuple of distinct names."""
    items = _items(raw)
    if len(set(items)) != len(items):
        raise _Invalid("lists a name twice")
    return tuple(items)


def _allowed_hosts(raw: object) -> tuple[str, ...]:
    """Camera hosts allowed past the URL policy: names, addresses or CIDR networks."""
    names = _names(raw)
    try:
        parse_allowed_hosts(names)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    return names


def _renames(raw: object) -> tuple[tuple[str, str], ...]:
    """Class renames from a YAML mapping or ``"Old=new,Other=new"``."""
    if isinstance(raw, Mapping):
        pairs = [(_nonempty(old), _nonempty(new)) for old, new in raw.items()]
    else:
        pairs = [_rename_pair(item) for item in _items(raw)]
    if len({old for old, _ in pairs}) != len(pairs):
        raise _Invalid("renames a class twice")
    return tuple(pairs)


def _days_by(names: tuple[str, ...]) -> Parser:
    """Days per name from a YAML mapping or ``"name=days,other=days"`` (names from ``names``)."""

    def parse(raw: object) -> tuple[tuple[str, float], ...]:
        items = list(raw.items()) if isinstance(raw, Mapping) else [_rename_pair(i) for i in _items(raw)]
        pairs: list[tuple[str, float]] = []
        for name, days in items:
            key = _nonempty(name)
            if key not in names:
                raise _Invalid(f"{key!r} is not one of {', '.join(names)}")
            value = _to_float(days)
            _check_bounds(value, 0.0, None, False)
            pairs.append((key, value))
        if len({k for k, _ in pairs}) != len(pairs):
            raise _Invalid("names a level or kind twice")
        return tuple(pairs)

    return parse


def _rename_pair(item: str) -> tuple[str, str]:
    """``"Old=new"`` as ``("Old", "new")``."""
    old, sep, new = item.partition("=")
    if not sep or not old.strip() or not new.strip():
        raise _Invalid("expected Old=new pairs separated by commas")
    return old.strip(), new.strip()


_DEVICE = re.compile(r"auto|cpu|cuda|cuda:\d+|mps")


def _device(raw: object) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; a bare ``N`` means ``cuda:N``."""
    value = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else _nonempty(raw).lower()
    value = f"cuda:{value}" if value.isdigit() else value
    if not _DEVICE.fullmatch(value):
        raise _Invalid("must be auto, cpu, cuda, cuda:N or mps")
    return value


def _url(*schemes: str) -> Parser:
    """A parser for URLs with one of ``schemes`` and a host (or a path for ``unix``)."""

    def parse(raw: object) -> str:
        value = _nonempty(raw)
        parts = urlsplit(value)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            raise _Invalid(f"must be a URL with scheme {' or '.join(schemes)}")
        return value

    return parse


_TOPIC_LEVEL = re.compile(r"[\w.:@-]{1,64}")


def _topic_prefix(raw: object) -> str:
    """An MQTT topic prefix: levels of letters, digits or ``_ . : @ -`` joined by ``/`` (no wildcards)."""
    value = _nonempty(raw).strip("/")
    if not value or not all(_TOPIC_LEVEL.fullmatch(level) for level in value.split("/")):
        raise _Invalid("must be topic levels of letters, digits or _ . : @ - joined by / (no + or #)")
    return value


_KEY_ID = re.compile(r"[\w.:@-]{1,64}")


def _identifier(raw: object) -> str:
    """A key or account id: 1-64 letters, digits or ``_ . : @ -``."""
    value = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else _nonempty(raw)
    if not _KEY_ID.fullmatch(value):
        raise _Invalid("must be 1-64 letters, digits or _ . : @ -")
    return value


def _optional(parse: Parser) -> Parser:
    """``parse``, letting ``None`` through."""

    def parse_optional(raw: object) -> object:
        return None if raw is None else parse(raw)

    return parse_optional


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class _Row:
    """One way to set one setting: its path in ``Settings``, its parser and where it is read from."""

    path: str
    parse: Parser
    env: tuple[str, ...]
    """Names after ``TRAFFIC_`` / ``ALGO_``."""
    yaml: tuple[str, ...]
    """Dotted paths in the YAML file ``file``."""
    file: FileKind = "model"
    secret: bool = False
    """Never echo the value in an error."""
    bare: tuple[str, ...] = ()
    """Unprefixed environment variable names (lowest environment precedence)."""


def _row(path: str, parse: Parser, env: str, yaml_paths: str, **extra: Any) -> _Row:
    """A table row; ``env`` and ``yaml_paths`` are space-separated names."""
    return _Row(path, parse, tuple(env.split()), tuple(yaml_paths.split()), **extra)


_ROWS: tuple[_Row, ...] = (
    _row(
        "redis_url",
        _url("redis", "rediss", "unix"),
        "REDIS_URL",
        "redis.url",
        secret=True,
        bare=("REDIS_URL",),
    ),
    _row("log_level", _log_level, "LOG_LEVEL", "logging.level"),
    _row("detector.weights", _nonempty, "MODEL_NAME YOLO_MODEL_NAME", "model.name model.weights"),
    _row("detector.device", _device, "DEVICE", "model.device"),
    _row("detector.imgsz", _integer(32, 8192), "IMGSZ", "model.imgsz"),
    _row("detector.half", _boolean, "HALF", "model.half_precision model.half"),
    _row("detector.conf", _UNIT, "YOLO_CONFIDENCE CONF", "model.confidence_threshold model.conf"),
    _row("detector.iou", _UNIT, "YOLO_IOU IOU", "model.iou_threshold model.iou"),
    _row("detector.max_det", _integer(1), "MAX_DET", "model.max_det"),
    _row("detector.classes", _names, "ALLOWED_CLASSES", "model.allowed_classes model.classes"),
    _row("detector.class_map", _renames, "CLASS_MAP", "model.class_map"),
    _row("detector.allow_download", _boolean, "ALLOW_DOWNLOAD", "model.allow_download"),
    _row("detector.backend", _choice(*BACKEND_CHOICES), "DETECTOR_BACKEND", "model.backend"),
    _row("detector.threads", _integer(0, 1024), "DETECTOR_THREADS", "model.threads"),
    _row("detector.cache_dir", _text, "MODEL_CACHE", "model.cache_dir"),
    _row("detector.batch", _integer(0, 256), "DETECTOR_BATCH", "model.batch"),
    _row("detector.batch_wait_ms", _number(0.0, 60000.0), "DETECTOR_BATCH_WAIT_MS", "model.batch_wait_ms"),
    _row("detector.pipeline", _integer(1, 64), "DETECTOR_PIPELINE", "model.pipeline"),
    _row("detector.scaled_decode", _boolean, "DETECTOR_SCALED_DECODE", "model.scaled_decode"),
    _row("tracking.enabled", _boolean, "TRACKING", "tracking.enabled"),
    _row("tracking.tracker", _choice("bytetrack"), "TRACKER_TYPE", "tracking.tracker"),
    _row("tracking.lost_track_s", _POSITIVE, "TRACK_LOST_S", "tracking.lost_track_s"),
    _row("tracking.activation_confidence", _UNIT, "TRACK_ACTIVATION", "tracking.activation_confidence"),
    _row("tracking.high_confidence", _UNIT, "TRACK_HIGH_CONFIDENCE", "tracking.high_confidence"),
    _row("tracking.min_frames", _integer(1, 100), "TRACK_MIN_FRAMES", "tracking.min_frames"),
    _row("tracking.min_iou", _UNIT, "TRACK_MIN_IOU", "tracking.min_iou"),
    _row("analytics.enabled", _boolean, "ANALYTICS", "analytics.enabled"),
    _row("analytics.ttc_s", _number(0.0, 10.0, lo_open=True), "NEAR_MISS_TTC_S", "analytics.ttc_s"),
    _row("analytics.pet_s", _number(0.0, 10.0, lo_open=True), "NEAR_MISS_PET_S", "analytics.pet_s"),
    _row(
        "analytics.conflict_radius_m",
        _number(0.0, 50.0, lo_open=True),
        "CONFLICT_RADIUS_M",
        "analytics.conflict_radius_m",
    ),
    _row(
        "analytics.min_closing_speed_mps",
        _number(0.0, 50.0, lo_open=True),
        "MIN_CLOSING_SPEED_MPS",
        "analytics.min_closing_speed_mps",
    ),
    _row("analytics.dwell_s", _number(0.0, 86400.0, lo_open=True), "DWELL_S", "analytics.dwell_s"),
    _row("analytics.stop_speed_mps", _number(0.0, 10.0, lo_open=True), "STOP_SPEED_MPS", "analytics.stop_speed_mps"),
    _row("analytics.wrong_way_s", _number(0.0, 600.0, lo_open=True), "WRONG_WAY_S", "analytics.wrong_way_s"),
    _row("analytics.speed_window_s", _number(0.25, 10.0), "SPEED_WINDOW_S", "analytics.speed_window_s"),
    _row("analytics.trail_s", _number(0.0, 60.0), "TRAIL_S", "analytics.trail_s"),
    _row("analytics.line_margin_px", _number(0.0, 100.0), "LINE_MARGIN_PX", "analytics.line_margin_px"),
    _row("grouping.distance_ratio", _DISTANCE_RATIO, "DISTANCE_RATIO", "post_processing.distance_ratio"),
    _row(
        "grouping.distance_ratio",
        _pixels_to_ratio,
        "DISTANCE_THRESHOLD",
        "post_processing.distance_threshold",
    ),
    _row("grouping.min_group_size", _integer(1), "MIN_GROUP_SIZE", "post_processing.min_group_size"),
    _row("grouping.margin_px", _integer(0), "MARGIN", "post_processing.margin"),
    _row(
        "grouping.crop_jpeg_quality",
        _integer(1, 100),
        "CROP_JPEG_QUALITY",
        "post_processing.crop_jpeg_quality",
    ),
    _row("grouping.max_groups", _integer(1), "MAX_GROUPS", "post_processing.max_groups"),
    _row("risk.low", _FRACTION, "RISK_LOW", "llm.risk_threshold.low"),
    _row("risk.medium", _FRACTION, "RISK_MEDIUM", "llm.risk_threshold.medium"),
    _row("risk.high", _FRACTION, "RISK_HIGH", "llm.risk_threshold.high"),
    _row("llm.enabled", _boolean, "LLM_ENABLED", "llm.enabled"),
    _row("llm.model", _nonempty, "LLM_MODEL", "llm.model"),
    _row("llm.base_url", _url("http", "https"), "LLM_BASE_URL", "llm.base_url"),
    _row("llm.timeout_s", _POSITIVE, "LLM_TIMEOUT", "llm.timeout"),
    _row(
        "llm.cooldown_s",
        _NON_NEGATIVE,
        "LLM_COOLDOWN ALERT_PAUSE_SECONDS",
        "llm.cooldown_seconds llm.cooldown",
    ),
    _row("llm.language", _nonempty, "LLM_LANGUAGE", "llm.language"),
    _row("llm.max_tokens", _integer(1), "LLM_MAX_TOKENS", "llm.max_tokens"),
    _row("llm.temperature", _number(0.0, 2.0), "LLM_TEMPERATURE", "llm.temperature"),
    _row("llm.max_retries", _integer(0, 10), "LLM_MAX_RETRY LLM_MAX_RETRIES", "llm.max_retry llm.max_retries"),
    _row(
        "keys.strategy",
        _choice("round_robin", "least_loaded", "priority"),
        "KEY_STRATEGY",
        "strategy",
        file="keys",
    ),
    _row(
        "keys.default_cooldown_s",
        _POSITIVE,
        "KEY_COOLDOWN",
        "default_cooldown scheduler.key_cooldown_seconds",
        file="keys",
    ),
    _row("keys.max_cooldown_s", _POSITIVE, "KEY_MAX_COOLDOWN", "max_cooldown", file="keys"),
    _row("keys.lease_ttl_s", _POSITIVE, "KEY_LEASE_TTL", "lease_ttl", file="keys"),
    _row("keys.window_margin_ms", _NON_NEGATIVE, "KEY_WINDOW_MARGIN", "window_margin", file="keys"),
    _row("capture.frame_interval_s", _POSITIVE, "FRAME_INTERVAL", "capture.frame_interval"),
    _row("capture.jpeg_quality", _integer(1, 100), "JPEG_QUALITY", "capture.jpeg_quality"),
    _row("capture.frame_ttl_s", _POSITIVE, "FRAME_TTL", "capture.frame_ttl"),
    _row("capture.max_in_flight", _integer(1), "MAX_IN_FLIGHT", "capture.max_in_flight"),
    _row("capture.frame_deadline_s", _POSITIVE, "FRAME_DEADLINE", "capture.frame_deadline"),
    _row("capture.turn_timing", _boolean, "TURN_TIMING", "capture.turn_timing"),
    _row("pipeline.visibility_timeout_s", _POSITIVE, "VISIBILITY_TIMEOUT", "pipeline.visibility_timeout"),
    _row("pipeline.assess_time_limit_s", _POSITIVE, "ASSESS_TIME_LIMIT", "pipeline.assess_time_limit"),
    _row("pipeline.retry_backoff_s", _POSITIVE, "RETRY_BACKOFF", "pipeline.retry_backoff"),
    _row("pipeline.dedupe_window_s", _NON_NEGATIVE, "DEDUPE_WINDOW", "pipeline.dedupe_window"),
    _row("pipeline.dedupe_recheck_s", _NON_NEGATIVE, "DEDUPE_RECHECK", "pipeline.dedupe_recheck"),
    _row(
        "pipeline.dedupe_distance_tolerance",
        _NON_NEGATIVE,
        "DEDUPE_DISTANCE_TOLERANCE",
        "pipeline.dedupe_distance_tolerance",
    ),
    _row("pipeline.budget_per_minute", _integer(0, 1_000_000), "BUDGET_PER_MINUTE", "pipeline.budget_per_minute"),
    _row("pipeline.alert_level", _choice("low", "medium", "high"), "ALERT_LEVEL", "pipeline.alert_level"),
    _row("pipeline.alert_end_after_s", _POSITIVE, "ALERT_END_AFTER", "pipeline.alert_end_after"),
    _row("pipeline.latest_ttl_s", _POSITIVE, "LATEST_TTL", "pipeline.latest_ttl"),
    _row("capture.allow_file_sources", _boolean, "ALLOW_FILE_SOURCES", "capture.allow_file_sources"),
    _row("capture.media_dir", _nonempty, "MEDIA_DIR", "capture.media_dir"),
    _row("capture.allowed_hosts", _allowed_hosts, "CAMERA_ALLOWED_HOSTS", "capture.allowed_hosts"),
    _row("capture.max_cameras", _integer(1, 100_000), "MAX_CAMERAS", "capture.max_cameras"),
    _row("server.host", _nonempty, "SERVER_HOST", "server.host"),
    _row("server.port", _integer(1, 65535), "SERVER_PORT", "server.port"),
    _row("server.auth_token", _nonempty, "AUTH_TOKEN", "server.auth_token", secret=True),
    _row("server.cors_origins", _names, "CORS_ORIGINS", "server.cors_origins"),
    _row("server.client_file_sources", _boolean, "CLIENT_FILE_SOURCES", "server.client_file_sources"),
    _row("server.trusted_network", _boolean, "TRUSTED_NETWORK", "server.trusted_network"),
    _row("server.flower_auth", _nonempty, "FLOWER_BASIC_AUTH", "", secret=True, bare=("FLOWER_BASIC_AUTH",)),
    _row("server.max_probes", _integer(1, 1000), "MAX_PROBES", "server.max_probes"),
    _row("server.max_probes_per_client", _integer(1, 1000), "MAX_PROBES_PER_CLIENT", "server.max_probes_per_client"),
    _row("metrics.port", _integer(0, 65535), "METRICS_PORT", "metrics.port"),
    _row("metrics.host", _nonempty, "METRICS_HOST", "metrics.host"),
    _row("metrics.dir", _nonempty, "METRICS_DIR", "metrics.dir", bare=("PROMETHEUS_MULTIPROC_DIR",)),
    _row(
        "incidents.database_url",
        _url("sqlite", "postgresql", "postgresql+psycopg"),
        "DATABASE_URL",
        "incidents.database_url",
        secret=True,
    ),
    _row("incidents.retention_days", _NON_NEGATIVE, "INCIDENT_RETENTION_DAYS", "incidents.retention_days"),
    _row(
        "incidents.retention_by_level",
        _days_by(("low", "medium", "high")),
        "INCIDENT_RETENTION_BY_LEVEL",
        "incidents.retention_by_level",
    ),
    _row(
        "incidents.retention_by_kind",
        _days_by(("model", "near_miss", "wrong_way")),
        "INCIDENT_RETENTION_BY_KIND",
        "incidents.retention_by_kind",
    ),
    _row("evidence.dir", _nonempty, "EVIDENCE_DIR", "evidence.dir"),
    _row("evidence.clip_before_s", _number(0.0, 30.0), "EVIDENCE_CLIP_BEFORE_S", "evidence.clip_before_s"),
    _row("evidence.clip_after_s", _number(0.0, 30.0), "EVIDENCE_CLIP_AFTER_S", "evidence.clip_after_s"),
    _row("evidence.clip_fps", _number(0.0, 30.0, lo_open=True), "EVIDENCE_CLIP_FPS", "evidence.clip_fps"),
    _row("evidence.ring_max_mb", _number(1.0, 4096.0), "EVIDENCE_RING_MAX_MB", "evidence.ring_max_mb"),
    _row("privacy.blur", _boolean, "PRIVACY_BLUR", "privacy.blur"),
    _row("privacy.blur_classes", _names, "PRIVACY_BLUR_CLASSES", "privacy.blur_classes"),
    _row("mqtt.url", _url("mqtt", "mqtts"), "MQTT_URL", "mqtt.url", secret=True),
    _row("mqtt.topic_prefix", _topic_prefix, "MQTT_TOPIC_PREFIX", "mqtt.topic_prefix"),
    _row("mqtt.qos", _integer(0, 2), "MQTT_QOS", "mqtt.qos"),
    _row("mqtt.stats", _boolean, "MQTT_STATS", "mqtt.stats"),
    _row("mqtt.client_id", _identifier, "MQTT_CLIENT_ID", "mqtt.client_id"),
    _row("webhooks.timeout_s", _number(0.0, 60.0, lo_open=True), "WEBHOOK_TIMEOUT_S", "webhooks.timeout_s"),
    _row("webhooks.max_attempts", _integer(1, 50), "WEBHOOK_MAX_ATTEMPTS", "webhooks.max_attempts"),
    _row("webhooks.backoff_s", _number(0.0, 86400.0, lo_open=True), "WEBHOOK_BACKOFF_S", "webhooks.backoff_s"),
    _row(
        "webhooks.backoff_max_s",
        _number(0.0, 86400.0, lo_open=True),
        "WEBHOOK_BACKOFF_MAX_S",
        "webhooks.backoff_max_s",
    ),
    _row("webhooks.allowed_hosts", _allowed_hosts, "WEBHOOK_ALLOWED_HOSTS", "webhooks.allowed_hosts"),
)

_KEY_FIELDS: dict[str, Parser] = {
    "qps_limit": _optional(_POSITIVE),
    "rpm_limit": _optional(_integer(1)),
    "priority": _integer(1),
    "enabled": _boolean,
    "max_concurrency": _optional(_integer(1)),
    "account": _optional(_identifier),
}
_KEY_ID_NAMES = ("key_id", "id", "name")
_KEY_SECRET_NAMES = ("api_key", "key")
_ACCOUNT_FIELDS: dict[str, Parser] = {
    "rpm_limit": _optional(_integer(1)),
    "tpm_limit": _optional(_integer(1)),
}
_ACCOUNT_ID_NAMES = ("account_id", "id")
_KEY_LIST_NAMES = ("keys", "api_keys")


def _env_index() -> dict[str, _Row]:
    """Rows by environment suffix (the name after the prefix)."""
    return {name: row for row in _ROWS for name in row.env}


def _yaml_index(file: FileKind) -> dict[str, _Row]:
    """Rows by dotted YAML path in ``file``."""
    return {path: row for row in _ROWS if row.file == file for path in row.yaml}


def known_env_vars() -> tuple[str, ...]:
    """Every environment variable name this module reads, ``TRAFFIC_`` names first."""
    suffixes = [*_env_index(), *_FILE_VARS]
    bare = [name for row in _ROWS for name in row.bare]
    return (*(PREFIX + s for s in suffixes), *(OLD_PREFIX + s for s in suffixes), *bare, SINGLE_KEY_VAR)


# --------------------------------------------------------------------------- layers


@dataclass
class _Layer:
    """Values set by one source of one precedence level, by settings path."""

    values: dict[str, tuple[object, str]] = field(default_factory=dict)

    def put(self, path: str, value: object, where: str) -> None:
        """Record ``value``; two names of one level setting different values is an error."""
        previous = self.values.get(path)
        if previous is not None and previous[0] != value:
            raise ConfigError(f"{where} and {previous[1]} both set {path}; keep one")
        self.values[path] = (value, where)


def _parse(row: _Row, raw: object, where: str) -> object:
    """``row.parse(raw)``, as a ConfigError naming the setting and ``where``."""
    try:
        return row.parse(raw)
    except _Invalid as exc:
        raise ConfigError(f"{where}: invalid {row.path}: {exc}{_shown(raw, row.secret)}") from None


def _shown(raw: object, secret: bool) -> str:
    """`` (got 'x')`` for a non-secret value, else nothing."""
    if secret or raw is None:
        return ""
    text = repr(raw)
    return f" (got {text[:60]}{'…' if len(text) > 60 else ''})"


def _suggest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest known name, if any is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


# --------------------------------------------------------------------------- environment


def _env_layers(environ: Mapping[str, str]) -> list[_Layer]:
    """The environment's values as three layers: plain names, ``ALGO_*``, ``TRAFFIC_*``."""
    index = _env_index()
    bare_rows = {name: row for row in _ROWS for name in row.bare}
    layers = {"": _Layer(), OLD_PREFIX: _Layer(), PREFIX: _Layer()}
    for name in sorted(environ):
        prefix, row = _env_row(name, index, bare_rows)
        value = environ[name].strip()
        if row is not None and value:
            layers[prefix].put(row.path, _parse(row, value, name), name)
    return list(layers.values())


def _env_row(name: str, index: Mapping[str, _Row], bare: Mapping[str, _Row]) -> tuple[str, _Row | None]:
    """The prefix and row of environment variable ``name``; raises for unknown prefixed names."""
    if name in bare:
        return "", bare[name]
    for prefix in (PREFIX, OLD_PREFIX):
        if name.startswith(prefix):
            return prefix, _prefixed_row(name, prefix, index)
    return "", None


def _prefixed_row(name: str, prefix: str, index: Mapping[str, _Row]) -> _Row | None:
    """The row of a prefixed name; ``None`` for file variables and obsolete old names."""
    suffix = name[len(prefix) :]
    if suffix in index:
        return index[suffix]
    if suffix in _FILE_VARS:
        return None
    if name in _OBSOLETE_OLD_VARS:
        _log.warning("ignoring %s: the old system's setting has no effect here", name)
        return None
    known = [prefix + s for s in (*index, *_FILE_VARS)]
    raise ConfigError(f"unknown environment variable {name}{_suggest(name, known)}")


def _env_file(environ: Mapping[str, str], suffixes: tuple[str, ...]) -> tuple[Path, str] | None:
    """The first non-empty file-path variable (``TRAFFIC_`` before ``ALGO_``) and its name."""
    for name in (prefix + suffix for prefix in (PREFIX, OLD_PREFIX) for suffix in suffixes):
        value = environ.get(name, "").strip()
        if value:
            return Path(value), name
    return None


# --------------------------------------------------------------------------- YAML


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """Construct a mapping after checking its scalar keys are distinct."""
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.MarkedYAMLError(
                        problem=f"duplicate key {key_node.value!r}", problem_mark=key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path, label: str) -> object:
    """The document in ``path``; errors name the file but never echo its content."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{label}: file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot read {path}: {type(exc).__name__}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError:
        raise ConfigError(f"{path}: invalid YAML") from None


def _expand(node: object, environ: Mapping[str, str], where: str) -> object:
    """``node`` with ``${VAR}`` / ``${VAR:-default}`` replaced in every string value."""
    if isinstance(node, str):
        return _ENV_REF.sub(lambda match: _lookup(match, environ, where), node)
    if isinstance(node, Mapping):
        return {key: _expand(value, environ, _join(where, key)) for key, value in node.items()}
    if isinstance(node, list):
        return [_expand(item, environ, f"{where}[{i}]") for i, item in enumerate(node)]
    return node


def _lookup(match: re.Match[str], environ: Mapping[str, str], where: str) -> str:
    """The value of one ``${VAR}`` reference; an unset one without default is an error."""
    name, default = match.group(1), match.group(2)
    value = environ.get(name)
    if value:
        return value
    if default is not None:
        return default
    if value is not None:
        return value
    raise ConfigError(f"{where}: environment variable {name} is not set (write ${{{name}:-}} to make it optional)")


def _join(where: str, key: object) -> str:
    """``where`` extended by one mapping key: ``file:a.b`` + ``c`` -> ``file:a.b.c``."""
    return f"{where}{'' if where.endswith(':') else '.'}{key}"


def _mapping(node: object, where: str) -> dict[str, object]:
    """``node`` as a mapping with string keys (``None`` reads as empty)."""
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    for key in node:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: keys must be strings (found {key!r})")
    return dict(node)


def _scan(node: object, dotted: str, file: FileKind, source: str, layer: _Layer) -> None:
    """Put every table value found under ``dotted`` into ``layer``; unknown keys are errors."""
    index = _yaml_index(file)
    for key, value in _mapping(node, f"{source}:{dotted}").items():
        path = f"{dotted}.{key}" if dotted else key
        row = index.get(path)
        if row is not None:
            if value is not None:
                layer.put(row.path, _parse(row, value, f"{source}:{path}"), f"{source}:{path}")
        elif any(known.startswith(path + ".") for known in index):
            _scan(value, path, file, source, layer)
        elif path in _IGNORED_YAML[file]:
            _log.warning("ignoring %s:%s: %s", source, path, _IGNORED_YAML[file][path])
        else:
            _unknown_yaml_key(path, dotted, file, source)


def _unknown_yaml_key(path: str, dotted: str, file: FileKind, source: str) -> None:
    """Raise for an unknown key, suggesting the closest sibling."""
    depth = path.count(".")
    under = [p for p in (*_yaml_index(file), *_IGNORED_YAML[file]) if not dotted or p.startswith(dotted + ".")]
    siblings = {".".join(p.split(".")[: depth + 1]) for p in under}
    if file == "keys" and not dotted:
        siblings |= {*_KEY_LIST_NAMES, "accounts"}
    raise ConfigError(f"{source}:{path}: unknown key{_suggest(path, siblings)}")


def _model_layer(doc: object, source: str, environ: Mapping[str, str]) -> _Layer:
    """The values of a ``model_config.yaml`` document."""
    layer = _Layer()
    _scan(_expand(doc, environ, f"{source}:"), "", "model", source, layer)
    return layer


# --------------------------------------------------------------------------- geometry


def _geometry_layer(doc: object, source: str, environ: Mapping[str, str]) -> _Layer:
    """The per-camera geometry of a geometry file (``traffic.geometry_config`` checks it)."""
    layer = _Layer()
    geometry = geometry_from_mapping(_expand(doc, environ, f"{source}:"), source)
    if geometry:
        layer.put("geometry", geometry, source)
    return layer


# --------------------------------------------------------------------------- webhooks


def _webhooks_layer(doc: object, source: str, environ: Mapping[str, str]) -> _Layer:
    """The subscriptions of a webhooks file (``traffic.webhook_config`` checks them; ``${VAR}`` secrets expanded)."""
    layer = _Layer()
    subscriptions = subscriptions_from_mapping(_expand(doc, environ, f"{source}:"), source)
    if subscriptions:
        layer.put("webhooks.subscriptions", subscriptions, source)
    return layer


# --------------------------------------------------------------------------- API keys


def _keys_layer(doc: object, source: str, environ: Mapping[str, str]) -> _Layer:
    """The values of an ``api_keys.yaml`` document: keys, accounts and pool options."""
    layer = _Layer()
    wrapped = {_KEY_LIST_NAMES[0]: doc} if isinstance(doc, list) else doc
    top = _mapping(_expand(wrapped, environ, f"{source}:"), source)
    lists = [name for name in _KEY_LIST_NAMES if name in top]
    if len(lists) > 1:
        raise ConfigError(f"{source}: both keys and api_keys are given; keep one")
    accounts = _accounts(top.pop("accounts", None), f"{source}:accounts")
    entries = top.pop(lists[0], None) if lists else None
    keys = _keys(entries, f"{source}:{lists[0] if lists else 'keys'}", {a.account_id for a in accounts})
    _scan(top, "", "keys", source, layer)
    if accounts:
        layer.put("keys.accounts", accounts, f"{source}:accounts")
    if keys:
        layer.put("keys.keys", keys, f"{source}:{lists[0]}")
    return layer


def _entries(node: object, where: str) -> list[object]:
    """A YAML list (``None`` reads as empty)."""
    if node is None:
        return []
    if not isinstance(node, list):
        raise ConfigError(f"{where}: expected a list")
    return node


def _fields(item: Mapping[str, object], spec: Mapping[str, Parser], where: str, taken: Iterable[str]) -> dict[str, Any]:
    """Parsed optional fields of a list entry; names neither in ``spec`` nor ``taken`` are errors."""
    allowed = {*spec, *taken}
    out: dict[str, Any] = {}
    for name, raw in item.items():
        if name not in allowed:
            raise ConfigError(f"{where}.{name}: unknown key{_suggest(name, allowed)}")
        if name in spec:
            out[name] = _parse_entry(spec[name], raw, f"{where}.{name}")
    return out


def _parse_entry(parse: Parser, raw: object, where: str) -> object:
    """``parse(raw)`` for a list-entry field, as a ConfigError naming ``where``."""
    try:
        return parse(raw)
    except _Invalid as exc:
        raise ConfigError(f"{where}: {exc}{_shown(raw, False)}") from None


def _first_id(item: Mapping[str, object], names: tuple[str, ...], where: str) -> str | None:
    """The first of ``names`` present in ``item``, parsed as an id."""
    for name in names:
        if item.get(name) is not None:
            return str(_parse_entry(_identifier, item[name], f"{where}.{name}"))
    return None


def _accounts(node: object, where: str) -> tuple[AccountSpec, ...]:
    """The ``accounts:`` list."""
    accounts: list[AccountSpec] = []
    for i, entry in enumerate(_entries(node, where)):
        at = f"{where}[{i}]"
        item = _mapping(entry, at)
        account_id = _first_id(item, _ACCOUNT_ID_NAMES, at)
        if account_id is None:
            raise ConfigError(f"{at}: no id (set id or account_id)")
        if account_id in {a.account_id for a in accounts}:
            raise ConfigError(f"{at}: duplicate account id {account_id!r}")
        accounts.append(AccountSpec(account_id, **_fields(item, _ACCOUNT_FIELDS, at, _ACCOUNT_ID_NAMES)))
    return tuple(accounts)


def _keys(node: object, where: str, accounts: set[str]) -> tuple[KeySpec, ...]:
    """The key list; keys whose secret is empty are skipped with a warning."""
    keys: list[KeySpec] = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(_entries(node, where)):
        at = f"{where}[{i}]"
        key = _key({"api_key": entry} if isinstance(entry, str) else _mapping(entry, at), i + 1, at, accounts)
        if key is None:
            continue
        if key.key_id in seen:
            raise ConfigError(f"{at}: duplicate key id {key.key_id!r} (also at {seen[key.key_id]})")
        seen[key.key_id] = at
        keys.append(key)
    return tuple(keys)


def _key(item: Mapping[str, object], n: int, at: str, accounts: set[str]) -> KeySpec | None:
    """One key entry, or ``None`` when its secret is empty."""
    key_id = _first_id(item, _KEY_ID_NAMES, at) or f"key-{n}"
    secret = _secret(item, at, key_id)
    fields = _fields(item, _KEY_FIELDS, at, (*_KEY_ID_NAMES, *_KEY_SECRET_NAMES))
    account = fields.get("account")
    if account is not None and account not in accounts:
        raise ConfigError(f"{at}.account: key {key_id} refers to undeclared account {account!r}")
    if not secret:
        _log.warning("skipping API key %s (%s): its api_key is empty", key_id, at)
        return None
    return KeySpec(key_id=key_id, api_key=secret, **fields)


def _secret(item: Mapping[str, object], at: str, key_id: str) -> str:
    """The key's secret; errors never include it."""
    present = [name for name in _KEY_SECRET_NAMES if name in item]
    if len(present) != 1:
        problem = "no api_key" if not present else "both api_key and key are given; keep one"
        raise ConfigError(f"{at}: key {key_id}: {problem}")
    secret = item[present[0]]
    if secret is None:
        return ""
    if not isinstance(secret, str):
        raise ConfigError(f"{at}.{present[0]}: key {key_id}: must be a string (quote it)")
    return secret.strip()


# --------------------------------------------------------------------------- assembly


def _merge(layers: Iterable[_Layer]) -> dict[str, tuple[object, str]]:
    """Later layers win."""
    merged: dict[str, tuple[object, str]] = {}
    for layer in layers:
        merged.update(layer.values)
    return merged


def _single_key(merged: dict[str, tuple[object, str]], environ: Mapping[str, str]) -> None:
    """Use ``DASHSCOPE_API_KEY`` as key ``default`` when no file gave keys."""
    secret = environ.get(SINGLE_KEY_VAR, "").strip()
    if not secret:
        return
    if "keys.keys" in merged:
        _log.info("%s is ignored: the API-keys file lists keys", SINGLE_KEY_VAR)
        return
    merged["keys.keys"] = ((KeySpec(key_id="default", api_key=secret),), SINGLE_KEY_VAR)


def _build(merged: Mapping[str, tuple[object, str]]) -> Settings:
    """Defaults with ``merged`` applied."""
    base = Settings()
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for path, (value, _) in merged.items():
        head, _, tail = path.partition(".")
        if tail:
            sections.setdefault(head, {})[tail] = value
        else:
            top[head] = value
    for name, changes in sections.items():
        top[name] = dataclasses.replace(getattr(base, name), **changes)
    return dataclasses.replace(base, **top)


def _origin(merged: Mapping[str, tuple[object, str]], path: str) -> str:
    """Where a setting came from: a variable, ``file:path`` or ``default``."""
    return merged[path][1] if path in merged else "default"


def _validate(settings: Settings, merged: Mapping[str, tuple[object, str]]) -> None:
    """Checks spanning several settings."""
    risk = settings.risk
    if not 0 < risk.low < risk.medium < risk.high <= 1:
        parts = ", ".join(f"{n}={getattr(risk, n):g} from {_origin(merged, 'risk.' + n)}" for n in _LEVELS)
        raise ConfigError(f"risk thresholds must satisfy 0 < low < medium < high <= 1 ({parts})")
    pool = settings.keys
    if pool.max_cooldown_s < pool.default_cooldown_s:
        raise ConfigError(
            f"keys.max_cooldown_s ({pool.max_cooldown_s:g} from {_origin(merged, 'keys.max_cooldown_s')}) is "
            f"below keys.default_cooldown_s ({pool.default_cooldown_s:g} from "
            f"{_origin(merged, 'keys.default_cooldown_s')})"
        )
    _validate_webhooks(settings, merged)


def _validate_webhooks(settings: Settings, merged: Mapping[str, tuple[object, str]]) -> None:
    """The back-off bounds agree, and no target is a literal address the URL policy denies."""
    hooks = settings.webhooks
    if hooks.backoff_max_s < hooks.backoff_s:
        raise ConfigError(
            f"webhooks.backoff_max_s ({hooks.backoff_max_s:g} from {_origin(merged, 'webhooks.backoff_max_s')}) is "
            f"below webhooks.backoff_s ({hooks.backoff_s:g} from {_origin(merged, 'webhooks.backoff_s')})"
        )
    for i, subscription in enumerate(hooks.subscriptions):
        try:
            check_literal_target(subscription.url, hooks.allowed_hosts)
        except TargetDenied as exc:
            where = _origin(merged, "webhooks.subscriptions")
            raise ConfigError(f"{where}:subscriptions[{i}] ({subscription.name}).url: {exc}") from None


_LEVELS = ("low", "medium", "high")


def _resolve(environ: Mapping[str, str], file_layers: Iterable[_Layer], *, use_env: bool = True) -> Settings:
    """Settings from file layers, then (optionally) the environment, validated."""
    layers = [*file_layers, *(_env_layers(environ) if use_env else [])]
    merged = _merge(layers)
    if use_env:
        _single_key(merged, environ)
    settings = _build(merged)
    _validate(settings, merged)
    return settings


def _file_layer(
    given: str | Path | None,
    environ: Mapping[str, str],
    suffixes: tuple[str, ...],
    reader: Callable[[object, str, Mapping[str, str]], _Layer],
) -> _Layer:
    """The layer of the file passed in, else of the file named in the environment, else empty."""
    if given is not None:
        path, label = Path(given), str(given)
    else:
        found = _env_file(environ, suffixes)
        if found is None:
            return _Layer()
        path, label = found
    return reader(_read_yaml(path, label), str(path), environ)


def load_settings(
    environ: Mapping[str, str],
    *,
    model_config: str | Path | None = None,
    api_keys: str | Path | None = None,
    geometry: str | Path | None = None,
    webhooks: str | Path | None = None,
) -> Settings:
    """Validated settings: defaults < ``model_config`` < ``api_keys`` file < ``environ``.

    A file not passed in is taken from ``TRAFFIC_MODEL_CONFIG`` (``ALGO_MODEL_CONFIG_PATH``),
    ``TRAFFIC_API_KEYS_FILE``, ``TRAFFIC_GEOMETRY_FILE`` and ``TRAFFIC_WEBHOOKS_FILE``; when those are
    unset too, no file is read. The geometry file alone sets ``Settings.geometry`` and the webhooks file
    alone ``Settings.webhooks.subscriptions`` (no environment variable overrides them).
    """
    model = _file_layer(model_config, environ, _MODEL_FILE_VARS, _model_layer)
    keys = _file_layer(api_keys, environ, _KEYS_FILE_VARS, _keys_layer)
    cameras = _file_layer(geometry, environ, _GEOMETRY_FILE_VARS, _geometry_layer)
    hooks = _file_layer(webhooks, environ, _WEBHOOKS_FILE_VARS, _webhooks_layer)
    return _resolve(environ, (model, keys, cameras, hooks))


def settings_from_mapping(
    data: Mapping[str, object], source: str = "<mapping>", *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from an already-loaded ``model_config.yaml`` document; no environment overrides.

    ``environ`` serves only ``${VAR}`` references (none are set when it is ``None``).
    """
    env = environ or {}
    return _resolve(env, [_model_layer(data, source, env)], use_env=False)


def key_pool_from_mapping(
    data: object, source: str = "<mapping>", *, environ: Mapping[str, str] | None = None
) -> KeyPoolSettings:
    """The key pool of an already-loaded ``api_keys.yaml`` document (a mapping or a bare list)."""
    env = environ or {}
    return _resolve(env, [_keys_layer(data, source, env)], use_env=False).keys


# --------------------------------------------------------------------------- description


def describe_settings(settings: Settings) -> dict[str, object]:
    """The effective settings as a JSON-safe dict, with every secret masked."""
    described = _describe(settings)
    assert isinstance(described, dict)
    return described


def _describe(value: object) -> object:
    """A JSON-safe rendering: dataclasses as dicts (without derived fields, such as a calibration's
    matrix), tuples as lists, secrets masked."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _describe_field(value, f) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, tuple | list):
        return [_describe(item) for item in value]
    if isinstance(value, str):
        return _mask_url(value)
    return value


def _describe_field(owner: object, f: dataclasses.Field[Any]) -> object:
    """One field; fields hidden from ``repr`` are secrets and are masked."""
    value = getattr(owner, f.name)
    if f.repr:
        return _describe(value)
    if isinstance(owner, KeySpec):
        return owner.masked
    if isinstance(owner, WebhookSubscription) and f.name == "url":
        return display_url(value)  # its path or query may be the receiver's token
    if isinstance(value, str) and "://" in value:
        return _mask_url(value)  # a URL hidden from repr for its password: show it without
    return "***" if value else None


def _mask_url(text: str) -> str:
    """``text`` with the password of a URL (``scheme://user:pw@host``) replaced by ``***``."""
    if "://" not in text or "@" not in text:
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
