"""Validation of REST input: JSON bodies and query parameters; every refusal is an ``ApiError``.

Rules (``web.openapi`` documents the same ones):
- a body is one JSON object, UTF-8, ``Content-Type: application/json``, at most ``MAX_BODY_BYTES``;
  duplicate or unknown fields are errors, and so are NaN/Infinity;
- every field has one JSON type (``null`` is never accepted) and a bounded size;
- a query parameter appears at most once; parameters an endpoint does not use are ignored (so
  ``?token=`` and cache-busters keep working), the ones it uses are checked strictly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Request
from werkzeug.datastructures import MultiDict

from traffic.cameras import Camera, WireId, mask_url, normalise_camera_id, parse_detect_fps
from traffic.errors import CameraError

UrlCheck = Callable[[object], str]
"""Checks a camera URL from a client: the URL, or ``CameraError``."""

MAX_BODY_BYTES = 64 * 1024
MAX_NAME_LENGTH = 128
"""Same bound as the Socket.IO ``start_stream`` name (``web.realtime.protocol``)."""
MAX_JSON_INTEGER = 2**53 - 1
"""Largest integer camera id over REST: JSON clients (JavaScript) lose precision above it."""
MAX_QUERY_LENGTH = 64
"""Longest accepted value of any query parameter."""

CAMERA_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
EPOCH_PATTERN = r"[0-9]{1,12}(?:\.[0-9]{1,9})?"
ISO_PATTERN = (
    r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
SINCE_PATTERN = f"^(?:{EPOCH_PATTERN}|{ISO_PATTERN})$"
"""``since``: epoch seconds, or an ISO-8601 date-time with an explicit offset."""

_SINCE = re.compile(SINCE_PATTERN[1:-1])
_EPOCH = re.compile(EPOCH_PATTERN)
_DIGITS = re.compile(r"[0-9]{1,9}")


class ApiError(Exception):
    """A request the API refuses: HTTP ``status``, machine-readable ``error``, the field at fault."""

    def __init__(self, status: int, error: str, msg: str, field: str | None = None) -> None:
        super().__init__(msg)
        self.status = status
        self.error = error
        self.msg = msg
        self.field = field

    def data(self) -> dict[str, str]:
        """The envelope's ``data``: ``{error, field?}``."""
        return {"error": self.error} if self.field is None else {"error": self.error, "field": self.field}


def shown(name: object) -> str:
    """A client-supplied name, short and printable, for messages and ``field``."""
    text = name if isinstance(name, str) else repr(name)
    return text[:64].encode("ascii", "backslashreplace").decode()


# --------------------------------------------------------------------------- bodies


def _reject_constant(name: str) -> Any:
    """``json.loads`` hook: NaN and Infinity are not JSON."""
    raise ApiError(400, "invalid_json", f"request body is not valid JSON: {name} is not a JSON number")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: an object whose keys repeat is ambiguous, so it is refused."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ApiError(400, "duplicate_field", f"field {shown(key)!r} appears more than once", shown(key))
        obj[key] = value
    return obj


def json_object(req: Request, *, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request body as a JSON object; 415, 413 or 400 otherwise."""
    if req.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")
    # One byte over the limit: werkzeug raises 413 on a longer Content-Length, but silently cuts a
    # body without one (chunked) at the limit, so a cut body must be detectable by its length.
    req.max_content_length = max_bytes + 1
    raw = req.get_data(cache=True)
    if len(raw) > max_bytes:
        raise ApiError(413, "body_too_large", f"request body is larger than {max_bytes} bytes")
    if not raw:
        raise ApiError(400, "invalid_json", "request body is empty; send a JSON object")
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_unique_pairs)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "request body is not UTF-8") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "request body is nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {shown(str(exc))}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_body", f"request body must be a JSON object, got {json_type(value)}")
    return value


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def check_fields(body: Mapping[str, Any], *, required: Collection[str] = (), optional: Collection[str] = ()) -> None:
    """Unknown fields, then missing required ones, are errors (400)."""
    allowed = [*required, *optional]
    for name in body:
        if name not in allowed:
            raise ApiError(
                400, "unknown_field", f"unknown field {shown(name)!r}; allowed: {', '.join(allowed)}", shown(name)
            )
    for name in required:
        if name not in body:
            raise ApiError(400, "missing_field", f"field {name!r} is required", name)


def text(value: object, field: str, *, max_length: int, min_length: int = 0) -> str:
    """A string of ``min_length``..``max_length`` characters, valid Unicode (no lone surrogates)."""
    if not isinstance(value, str):
        raise ApiError(400, "invalid_type", f"{field} must be a string, got {json_type(value)}", field)
    if not min_length <= len(value) <= max_length:
        msg = f"{field} must have {min_length}..{max_length} characters, got {len(value)}"
        raise ApiError(400, "invalid_length", msg, field)
    return unicode_text(value, field)


def unicode_text(value: str, field: str) -> str:
    """``value`` if it is valid Unicode: JSON's ``\\ud800`` escapes can smuggle in lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_value", f"{field} contains an unpaired surrogate", field) from None
    return value


def boolean(value: object, field: str) -> bool:
    """A JSON ``true``/``false``."""
    if not isinstance(value, bool):
        raise ApiError(400, "invalid_type", f"{field} must be a boolean, got {json_type(value)}", field)
    return value


def camera_id(value: object, field: str = "cameraId") -> tuple[str, WireId]:
    """(key, wire id) of a camera id: an integer 0..2^53-1 or 1-64 of ``A-Z a-z 0-9 _ . : -``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_JSON_INTEGER:
        raise ApiError(400, "invalid_camera_id", f"a numeric {field} must be at most {MAX_JSON_INTEGER}", field)
    try:
        return normalise_camera_id(value)
    except CameraError as exc:
        raise ApiError(400, exc.code, str(exc), field) from None


def camera_url(value: object, field: str, *, check: UrlCheck, current: str | None = None) -> str:
    """A usable camera source URL (``traffic.cameras`` rules and error codes); masked ``current`` means ``current``."""
    # A client that sends back the camera a GET showed must not overwrite its credentials with ***.
    if current is not None and isinstance(value, str) and value == mask_url(current):
        return current
    if isinstance(value, str):
        unicode_text(value, field)
    try:
        return check(value)
    except CameraError as exc:
        raise ApiError(400, exc.code, str(exc), field) from None


def detect_fps(value: object, field: str = "detectFps") -> float:
    """A camera's detection rate: a JSON number in 0.05..30 frames per second (``traffic.cameras`` rules)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(
            400, "invalid_type", f"{field} must be a number of frames per second, got {json_type(value)}", field
        )
    try:
        parse_detect_fps(value)
    except CameraError as exc:
        raise ApiError(400, "invalid_value", str(exc), field) from None
    return float(value)


CAMERA_FIELDS = ("url", "name", "enabled", "detectFps")


def new_camera(
    body: Mapping[str, Any], *, check: UrlCheck, lookup: Callable[[str], Camera | None] = lambda _: None
) -> Camera:
    """The camera a POST body describes (without ``detectFps``: the global detection rate); ``lookup`` finds
    the one it replaces (for its masked URL)."""
    check_fields(body, required=("cameraId", "url"), optional=("name", "enabled", "detectFps"))
    key, wire = camera_id(body["cameraId"])
    current = lookup(key)
    url = camera_url(body["url"], "url", check=check, current=current.url if current else None)
    name = text(body.get("name", ""), "name", max_length=MAX_NAME_LENGTH)
    enabled = boolean(body.get("enabled", True), "enabled")
    rate = detect_fps(body["detectFps"]) if "detectFps" in body else None
    return Camera(key, url, name, enabled, wire, rate)


def patched_camera(body: Mapping[str, Any], current: Camera, *, check: UrlCheck) -> Camera:
    """``current`` with the fields of a PATCH body (``url?``, ``name?``, ``enabled?``, ``detectFps?``) replaced;
    ``detectFps: null`` clears the camera's own rate (back to the server's default)."""
    check_fields(body, optional=CAMERA_FIELDS)
    url = current.url
    if "url" in body:
        url = camera_url(body["url"], "url", check=check, current=current.url)
    name = text(body["name"], "name", max_length=MAX_NAME_LENGTH) if "name" in body else current.name
    enabled = boolean(body["enabled"], "enabled") if "enabled" in body else current.enabled
    rate = current.detect_fps
    if "detectFps" in body:
        rate = None if body["detectFps"] is None else detect_fps(body["detectFps"])
    return Camera(current.camera_id, url, name, enabled, current.wire_id, rate)


# --------------------------------------------------------------------------- query parameters


def query_value(args: MultiDict[str, str], name: str) -> str | None:
    """The one value of query parameter ``name`` (at most ``MAX_QUERY_LENGTH`` characters), or None."""
    values = args.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, "duplicate_parameter", f"query parameter {name!r} is given {len(values)} times", name)
    if len(values[0]) > MAX_QUERY_LENGTH:
        raise ApiError(400, "invalid_length", f"{name} must have at most {MAX_QUERY_LENGTH} characters", name)
    return values[0]


def query_camera_id(args: MultiDict[str, str], name: str = "cameraId") -> str | None:
    """The camera key named by a query parameter, or None when absent."""
    value = query_value(args, name)
    return None if value is None else camera_id(value, name)[0]


def query_int(args: MultiDict[str, str], name: str, *, minimum: int, maximum: int, default: int) -> int:
    """An integer query parameter in ``minimum``..``maximum`` (ASCII digits only)."""
    value = query_value(args, name)
    if value is None:
        return default
    if not _DIGITS.fullmatch(value) or not minimum <= int(value) <= maximum:
        raise ApiError(400, "invalid_value", f"{name} must be an integer in {minimum}..{maximum}", name)
    return int(value)


def query_choice(args: MultiDict[str, str], name: str, choices: Iterable[str]) -> str | None:
    """One of ``choices`` (exact spelling), or None when absent."""
    value = query_value(args, name)
    options = list(choices)
    if value is not None and value not in options:
        raise ApiError(400, "invalid_value", f"{name} must be one of {', '.join(options)}", name)
    return value


def query_time(args: MultiDict[str, str], name: str) -> float | None:
    """Epoch seconds from epoch seconds or an ISO-8601 date-time with offset, or None when absent."""
    value = query_value(args, name)
    if value is None:
        return None
    msg = f"{name} must be epoch seconds or an ISO-8601 date-time with Z or ±hh:mm (e.g. 2024-05-01T08:00:00Z)"
    if not _SINCE.fullmatch(value):
        raise ApiError(400, "invalid_value", msg, name)
    if _EPOCH.fullmatch(value):
        return float(value)
    try:
        return datetime.fromisoformat(value).astimezone(UTC).timestamp()
    except (ValueError, OverflowError):
        raise ApiError(400, "invalid_value", msg, name) from None
