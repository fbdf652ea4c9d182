"""Cameras: ids as clients send them, source URLs and their validation, detection rates, credential masking,
reconnect policy.

Pure: no Redis, no network. The only I/O is checking that a local file source exists.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

from traffic.errors import CameraError

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")
"""Schemes of network sources; always allowed."""
MAX_URL_LENGTH = 2048
MAX_ID_LENGTH = 64
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SENSITIVE_PARAM = re.compile(r"pass|pwd|token|key|secret|auth|sig|session|credential", re.IGNORECASE)
MASK = "***"
MIN_DETECT_FPS = 0.05
"""Slowest per-camera detection rate: one frame every 20 s."""
MAX_DETECT_FPS = 30.0
"""Fastest per-camera detection rate: about a camera's own frame rate; more only re-sends the same frame."""

WireId = str | int
"""A camera id as the client sent it: old clients send integers, new ones strings."""


@dataclass(frozen=True)
class Camera:
    """One desired camera: its id (the Redis key part), source URL, the id as the client spelled it and how
    many of its frames are detected (and tracked) per second."""

    camera_id: str
    url: str
    name: str = ""
    enabled: bool = True
    wire_id: WireId = ""
    """Echoed back in every event's ``cameraId``; defaults to ``camera_id``."""
    detect_fps: float | None = None
    """Frames sampled into detection and tracking per second; None: every ``capture.frame_interval_s``. The
    model's cadence is separate (``llm.cooldown_s``, the gate, the budget)."""

    def __post_init__(self) -> None:
        if self.wire_id == "":
            object.__setattr__(self, "wire_id", self.camera_id)

    def detect_interval_s(self, default_s: float) -> float:
        """Seconds between the camera's sampled frames: ``1 / detect_fps``, else ``default_s`` (the global one)."""
        return default_s if self.detect_fps is None else 1.0 / self.detect_fps

    def to_json(self) -> dict[str, Any]:
        """The stored form: ``cameraId`` (key string), ``wireId`` (as the client sent it), the unmasked URL,
        and ``detectFps`` only when the camera has its own rate."""
        data: dict[str, Any] = {
            "cameraId": self.camera_id,
            "wireId": self.wire_id,
            "url": self.url,
            "name": self.name,
            "enabled": self.enabled,
        }
        if self.detect_fps is not None:
            data["detectFps"] = self.detect_fps
        return data

    def public_json(self) -> dict[str, Any]:
        """The form safe to log or send to clients: credentials in the URL masked."""
        return {**self.to_json(), "url": mask_url(self.url)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Camera:
        """The camera stored as ``data``; raises ``CameraError`` if it is malformed."""
        camera_id, _ = normalise_camera_id(data.get("cameraId"))
        wire_key, wire_id = normalise_camera_id(data.get("wireId", camera_id))
        if wire_key != camera_id:
            raise CameraError("invalid_camera", f"camera {camera_id}: wireId names another camera")
        url, name, enabled = data.get("url"), data.get("name", ""), data.get("enabled", True)
        if not isinstance(url, str) or not isinstance(name, str) or not isinstance(enabled, bool):
            raise CameraError("invalid_camera", f"camera {camera_id}: url/name/enabled have the wrong type")
        try:
            detect_fps = parse_detect_fps(data.get("detectFps"))
        except CameraError as exc:
            raise CameraError("invalid_camera", f"camera {camera_id}: {exc}") from None
        return cls(camera_id=camera_id, url=url, name=name, enabled=enabled, wire_id=wire_id, detect_fps=detect_fps)


def parse_detect_fps(value: object) -> float | None:
    """A camera's detection rate from client or stored input: None (absent: the global default), or a number
    in ``MIN_DETECT_FPS``..``MAX_DETECT_FPS``; raises ``CameraError("invalid_detect_fps")`` (booleans too)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CameraError(
            "invalid_detect_fps", f"detectFps must be a number (frames detected per second), got {_kind(value)}"
        )
    if not MIN_DETECT_FPS <= value <= MAX_DETECT_FPS:  # NaN fails too; int and float compare exactly
        shown = repr(value) if isinstance(value, float) or abs(value) < 10**12 else "a larger number"
        raise CameraError(
            "invalid_detect_fps",
            f"detectFps must be between {MIN_DETECT_FPS:g} and {MAX_DETECT_FPS:g} frames per second, got {shown}",
        )
    return float(value)


def _kind(value: object) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def normalise_camera_id(value: object) -> tuple[str, WireId]:
    """(key string, wire id) of a client-sent id: an int ≥ 0, or 1-64 of ``A-Z a-z 0-9 _ . : -``."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0 or len(str(value)) > MAX_ID_LENGTH:
            raise CameraError("invalid_camera_id", "a numeric camera id must be a non-negative integer")
        return str(value), value
    if isinstance(value, str) and _ID.fullmatch(value):
        return value, value
    raise CameraError("invalid_camera_id", "camera id must be an integer ≥ 0 or 1-64 characters of A-Z a-z 0-9 _ . : -")


def make_camera(
    raw_id: object,
    url: object,
    *,
    allow_files: bool,
    name: str = "",
    enabled: bool = True,
    detect_fps: object = None,
) -> Camera:
    """A validated camera from client input; raises ``CameraError``."""
    camera_id, wire_id = normalise_camera_id(raw_id)
    url = validate_camera_url(url, allow_files=allow_files)
    return Camera(camera_id, url, name, enabled, wire_id, parse_detect_fps(detect_fps))


def validate_camera_url(url: object, *, allow_files: bool) -> str:
    """``url`` if it is a usable camera source; raises ``CameraError`` (messages never hold credentials)."""
    if not isinstance(url, str) or not url:
        raise CameraError("invalid_url", "camera URL must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise CameraError("invalid_url", f"camera URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in url):
        raise CameraError("invalid_url", "camera URL contains whitespace or control characters")
    parts = _split(url)
    if parts.scheme in NETWORK_SCHEMES:
        return _network_url(url, parts)
    if parts.scheme in ("file", ""):
        return _file_url(url, parts, allow_files)
    raise CameraError(
        "scheme_not_allowed", f"URL scheme {parts.scheme!r} is not allowed; use rtsp, rtsps, http or https"
    )


def _split(url: str) -> SplitResult:
    """``urlsplit(url)``, as ``CameraError`` on malformed input."""
    try:
        return urlsplit(url)
    except ValueError:
        raise CameraError("invalid_url", "camera URL is malformed") from None


def _network_url(url: str, parts: SplitResult) -> str:
    """A network URL with a host and a valid port."""
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise CameraError("invalid_url", f"camera URL has an invalid port: {mask_url(url)}") from None
    if not parts.hostname:
        raise CameraError("invalid_url", f"camera URL has no host: {mask_url(url)}")
    return url


def _file_url(url: str, parts: SplitResult, allow_files: bool) -> str:
    """A ``file://`` URL or bare path naming an existing file, when file sources are allowed."""
    if not allow_files:
        raise CameraError("file_sources_disabled", "file sources are disabled; use an rtsp, rtsps, http or https URL")
    if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
        raise CameraError("invalid_url", "a file:// URL must not name a remote host")
    path = local_path(url)
    if path is None or not Path(path).is_file():
        raise CameraError("file_not_found", f"no such file: {mask_url(url)}")
    return url


def is_network_url(url: str) -> bool:
    """Whether ``url`` names a network source (rtsp, rtsps, http, https)."""
    try:
        return urlsplit(url).scheme in NETWORK_SCHEMES
    except ValueError:
        return False


def local_path(url: str) -> str | None:
    """The filesystem path of a ``file://`` URL or bare path; None for other URLs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme == "file":
        return url2pathname(unquote(parts.path))
    return url if parts.scheme == "" else None


def mask_url(url: str) -> str:
    """``url`` with its password (or lone user token) and secret-looking query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if colon else f"{MASK}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, _mask_query(parts.query), parts.fragment))


def _mask_query(query: str) -> str:
    """``query`` with the values of secret-looking parameters masked."""
    if not query:
        return query
    masked = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        masked.append(f"{name}={MASK}" if eq and _SENSITIVE_PARAM.search(name) else item)
    return "&".join(masked)


def reconnect_delay(
    attempt: int, *, base_s: float = 1.0, cap_s: float = 30.0, jitter: float = 0.2, rng: random.Random | None = None
) -> float:
    """Seconds to wait before reconnect ``attempt`` (0-based): base·2^attempt capped at ``cap_s``, ±jitter."""
    nominal = min(cap_s, base_s * 2.0 ** min(max(attempt, 0), 32))
    return nominal * (1.0 + (rng or random).uniform(-jitter, jitter))


def next_tick(origin: float, interval: float, now: float) -> float:
    """The first time ``origin + k·interval`` after ``now``: a drift-free schedule that skips missed ticks."""
    if now < origin:
        return origin
    return origin + (math.floor((now - origin) / interval) + 1) * interval
