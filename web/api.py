"""REST API under ``/api``: health, cameras, latest results, frames and traffic stats, alerts, key pool, queues,
OpenAPI.

Every JSON answer is the old envelope ``{code, msg, data}`` with the HTTP status equal to ``code``;
an error's ``data`` is ``{error, field?}`` (``error`` a stable machine code). Bad input is always a
4xx, an unreachable Redis a 503. Handlers stay thin: ``web.validation`` checks input,
``CameraRegistry`` and ``traffic`` do the work, ``web.openapi`` describes it all.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from collections.abc import Iterable
from typing import Any

import redis
from flask import Blueprint, Response, current_app, jsonify, request
from redis.client import NEVER_DECODE
from werkzeug.exceptions import HTTPException

import traffic
from infra.camera_registry import CameraLimitReached, CameraRegistry
from infra.celery_names import QUEUES
from infra.traffic_stats import TrafficStats
from traffic import redis_keys
from traffic.alerts import alert_from_json
from traffic.cameras import Camera, mask_url
from traffic.codec import CodecError
from traffic.models import RiskLevel
from traffic.settings import Settings
from traffic.wire import iso_timestamp
from web import auth, openapi, validation
from web.camera_urls import check_client_url
from web.validation import ApiError, UrlCheck

log = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 4096

FRAME_ID = re.compile(r"[A-Za-z0-9_.:-]{1,100}")

blueprint = Blueprint("api", __name__, url_prefix="/api")

ALERT_LEVELS = ("low", "medium", "high")
MAX_SINCE = 253402300799.0
"""9999-12-31T23:59:59Z: the latest ``since`` the stats answer can spell back as a date-time."""
ALERT_LIMIT_DEFAULT = 100
ALERT_LIMIT_MAX = 500
HTTP_ERRORS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}
"""Machine codes of errors werkzeug raises (routing, body size); others read ``http_<status>``."""


def envelope(data: Any, code: int = 200, msg: str = "OK") -> Any:
    """The old system's response shape ``{code, msg, data}``."""
    response = jsonify({"code": code, "msg": msg, "data": data})
    response.status_code = code
    return response


def store() -> redis.Redis:
    """The app's Redis client (str responses)."""
    client: redis.Redis = current_app.extensions["traffic_redis"]
    return client


def _url_check() -> UrlCheck:
    """The camera URL check for this app's clients."""
    config, resolve = settings(), current_app.extensions["traffic_resolver"]
    return lambda url: check_client_url(config, url, resolve)


def settings() -> Settings:
    """The app's settings."""
    value: Settings = current_app.config["TRAFFIC_SETTINGS"]
    return value


def registry() -> CameraRegistry:
    """The desired camera set."""
    return CameraRegistry(store())


# --------------------------------------------------------------------------- errors


@blueprint.errorhandler(ApiError)
def api_error(exc: ApiError) -> Any:
    """A refused request, in the envelope."""
    return envelope(exc.data(), exc.status, exc.msg)


@blueprint.errorhandler(redis.ConnectionError)
@blueprint.errorhandler(redis.TimeoutError)
def redis_unavailable(exc: redis.RedisError) -> Any:
    """Redis is down or slow: 503, retry later."""
    log.warning("%s %s: Redis unavailable: %s", request.method, request.path, exc)
    response = envelope({"error": "unavailable"}, 503, "the data store (Redis) is unavailable; try again shortly")
    response.headers["Retry-After"] = "5"
    return response


@blueprint.app_errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Any:
    """Werkzeug's errors (unknown path, wrong method, body too large) in the envelope, under /api only."""
    if request.path != "/api" and not request.path.startswith("/api/"):
        return exc
    code = exc.code or 500
    if code == 404:
        msg = f"no API endpoint at {validation.shown(request.path)}"
    elif code == 405:
        msg = f"method {request.method} is not allowed on {validation.shown(request.path)}"
    elif code == 413:
        msg = f"request body is larger than {validation.MAX_BODY_BYTES} bytes"
    else:
        msg = exc.name
    response = envelope({"error": HTTP_ERRORS.get(code, f"http_{code}")}, code, msg)
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value  # e.g. Allow on 405
    return response


@blueprint.errorhandler(Exception)
def unexpected_error(exc: Exception) -> Any:
    """A bug: logged with its traceback, answered as a 500 in the envelope."""
    if isinstance(exc, HTTPException):
        return http_error(exc)
    log.exception("%s %s failed", request.method, request.path)
    return envelope({"error": "internal_error"}, 500, "internal server error")


# --------------------------------------------------------------------------- health, description


@blueprint.get("/health/health_check")
def health_check() -> Any:
    """Liveness plus Redis reachability."""
    try:
        store().ping()
        status = "UP"
    except redis.RedisError:
        status = "DEGRADED"
    return envelope({"status": status, "service": "traffic", "version": traffic.__version__})


@blueprint.get("/openapi.json")
def openapi_document() -> Any:
    """The OpenAPI 3.1 description of this API (plain JSON, not enveloped)."""
    return jsonify(openapi.document())


# --------------------------------------------------------------------------- cameras


def camera_view(cameras: CameraRegistry, camera: Camera) -> dict[str, Any]:
    """A camera as clients see it: credentials masked, with its connection status and counters."""
    return {
        **camera.public_json(),
        "status": cameras.status(camera.camera_id),
        "stats": cameras.stats(camera.camera_id),
    }


def existing_camera(cameras: CameraRegistry, raw_id: str) -> Camera:
    """The stored camera named in the path, or a 404."""
    key, _ = validation.camera_id(raw_id)
    camera = cameras.get(key)
    if camera is None:
        raise ApiError(404, "camera_not_found", f"no camera {key!r}", "cameraId")
    return camera


@blueprint.get("/cameras")
def list_cameras() -> Any:
    """Every camera, by id."""
    cameras = registry()
    return envelope([camera_view(cameras, c) for c in cameras.list()])


@blueprint.get("/session")
def session_status() -> Any:
    """Whether a token is needed and whether this request is signed in (public)."""
    return envelope(auth.session_state(request, settings().server.auth_token))


@blueprint.post("/session")
def sign_in() -> Any:
    """Trade the access token for the session cookie (public): the dashboard keeps the token out of URLs."""
    body = validation.json_object(request)
    validation.check_fields(body, required=("token",))
    token = validation.text(body["token"], "token", max_length=MAX_TOKEN_LENGTH)
    expected = settings().server.auth_token
    if expected and not auth.token_matches(token, expected):
        raise ApiError(401, "unauthorized", "wrong token")
    response = envelope({"authRequired": bool(expected), "authenticated": True})
    if expected:
        auth.set_session(response, expected, secure=request.is_secure)
    return response


@blueprint.delete("/session")
def sign_out() -> Any:
    """Forget the session cookie (public)."""
    response = envelope({"authRequired": bool(settings().server.auth_token), "authenticated": False})
    auth.clear_session(response)
    return response


@blueprint.post("/cameras")
def put_camera() -> Any:
    """Create a camera (201) or replace the one with this id (200)."""
    body = validation.json_object(request)
    cameras = registry()
    camera = validation.new_camera(body, check=_url_check(), lookup=cameras.get)
    try:
        created = cameras.add(camera, limit=settings().capture.max_cameras)
    except CameraLimitReached as exc:
        raise ApiError(409, exc.code, str(exc)) from None
    log.info(
        "camera %s %s over REST (%s)", camera.camera_id, "created" if created else "replaced", mask_url(camera.url)
    )
    return envelope(camera_view(cameras, camera), 201 if created else 200, "created" if created else "updated")


@blueprint.get("/cameras/<camera_id>")
def get_camera(camera_id: str) -> Any:
    """One camera."""
    cameras = registry()
    return envelope(camera_view(cameras, existing_camera(cameras, camera_id)))


@blueprint.patch("/cameras/<camera_id>")
def patch_camera(camera_id: str) -> Any:
    """Change a camera's url, name or enabled flag."""
    cameras = registry()
    current = existing_camera(cameras, camera_id)
    body = validation.json_object(request)
    camera = validation.patched_camera(body, current, check=_url_check())
    cameras.add(camera)
    log.info("camera %s changed over REST: %s", camera.camera_id, ", ".join(sorted(body)) or "nothing")
    return envelope(camera_view(cameras, camera), 200, "updated")


@blueprint.delete("/cameras/<camera_id>")
def delete_camera(camera_id: str) -> Any:
    """Remove a camera (the capture service stops it)."""
    cameras = registry()
    camera = existing_camera(cameras, camera_id)
    if not cameras.remove(camera.camera_id):
        raise ApiError(404, "camera_not_found", f"no camera {camera.camera_id!r}", "cameraId")
    log.info("camera %s removed over REST", camera.camera_id)
    return envelope({"cameraId": camera.wire_id, "deleted": True}, 200, "deleted")


@blueprint.get("/cameras/<camera_id>/latest")
def latest(camera_id: str) -> Any:
    """The camera's latest final detection_result."""
    key, _ = validation.camera_id(camera_id)
    raw = store().get(redis_keys.camera_latest(key))
    if raw is None:
        raise ApiError(404, "no_result", f"camera {key!r} has no result yet", "cameraId")
    return envelope(json.loads(raw))


@blueprint.get("/cameras/<camera_id>/frame.jpg")
def latest_frame(camera_id: str) -> Any:
    """The camera's most recently captured JPEG, never cached."""
    key, _ = validation.camera_id(camera_id)
    jpeg = store().execute_command("GET", redis_keys.camera_latest_frame(key), **{NEVER_DECODE: []})
    if jpeg is None:
        response = envelope({"error": "no_frame", "field": "cameraId"}, 404, f"camera {key!r} has no frame yet")
    else:
        response = Response(jpeg, mimetype="image/jpeg")
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/frames/<frame_id>/preview.jpg")
def frame_preview(frame_id: str) -> Any:
    """A small JPEG of one captured frame (what a detection_result's boxes were drawn on), never cached."""
    if not FRAME_ID.fullmatch(frame_id):
        return envelope({"error": "invalid_value", "field": "frameId"}, 400, "frameId must be 1-100 of [A-Za-z0-9_.:-]")
    jpeg = store().execute_command("GET", redis_keys.frame_preview(frame_id), **{NEVER_DECODE: []})
    if jpeg is None:
        response = envelope({"error": "no_frame", "field": "frameId"}, 404, "that frame is gone (frames live seconds)")
    else:
        response = Response(jpeg, mimetype="image/jpeg")
    response.headers["Cache-Control"] = "no-store"
    return response


def empty_traffic_stats(camera: Camera, since: float | None) -> dict[str, Any]:
    """The stats of a camera with nothing recorded: ``recorded`` false, nulls for what is unknown, empty lists."""
    return {
        "cameraId": camera.wire_id,
        "recorded": False,
        "timestamp": None,
        "trackingEpoch": None,
        "unit": None,
        "calibrated": None,
        "imageSize": None,
        "since": None if since is None else iso_timestamp(since),
        "lines": [],
        "zones": [],
        "tracks": [],
        "nearMisses": [],
        "events": [],
    }


@blueprint.get("/cameras/<camera_id>/stats")
def traffic_stats(camera_id: str) -> Any:
    """The camera's traffic stats (the ``traffic_stats`` event's object): counts and events since ``since``."""
    since = validation.query_time(request.args, "since")  # input first: a bad since is a 400 for any camera
    if since is not None and since > MAX_SINCE:
        raise ApiError(400, "invalid_value", "since must be at most 9999-12-31T23:59:59Z", "since")
    camera = existing_camera(registry(), camera_id)
    stats = TrafficStats(store()).read(camera.camera_id, camera.wire_id, since)
    if stats is None:
        return envelope(empty_traffic_stats(camera, since))
    return envelope({**stats, "recorded": True})


# --------------------------------------------------------------------------- alerts


def alert_events(
    raw: Iterable[bytes | str], camera: str | None, level: str | None, since: float | None
) -> Iterable[Any]:
    """The decoded alert events (newest first) that match the filters; corrupt entries are skipped."""
    floor = RiskLevel(level).rank if level else 0
    for item in raw:
        try:
            data = json.loads(item)
            alert = alert_from_json(data).alert
        except (ValueError, CodecError) as exc:
            log.warning("skipping corrupt alert log entry: %s", exc)
            continue
        if camera is not None and alert.camera_id != camera:
            continue
        if alert.level.rank >= floor and (since is None or alert.last_seen >= since):
            yield data


@blueprint.get("/alerts")
def list_alerts() -> Any:
    """Recent alert events (new/update/end), newest first, filtered."""
    args = request.args
    camera = validation.query_camera_id(args)
    level = validation.query_choice(args, "level", ALERT_LEVELS)
    since = validation.query_time(args, "since")
    limit = validation.query_int(args, "limit", minimum=1, maximum=ALERT_LIMIT_MAX, default=ALERT_LIMIT_DEFAULT)
    events = []
    for event in alert_events(store().lrange(redis_keys.ALERT_LOG, 0, -1), camera, level, since):
        events.append(event)
        if len(events) == limit:
            break
    return envelope(events)


@blueprint.get("/alerts/active")
def active_alerts() -> Any:
    """Active alerts of one camera, or of every registered camera, by camera and alert id."""
    camera = validation.query_camera_id(request.args)
    ids = [camera] if camera is not None else [c.camera_id for c in registry().list()]
    pipe = store().pipeline(transaction=False)
    for camera_id in ids:
        pipe.hgetall(redis_keys.camera_alerts(camera_id))
    active = []
    for camera_id, entries in zip(ids, pipe.execute(), strict=True):
        for alert_id in sorted(entries):
            try:
                data = json.loads(entries[alert_id])
                alert_from_json(data)
            except (ValueError, CodecError) as exc:
                log.warning("skipping corrupt active alert %s of camera %s: %s", alert_id, camera_id, exc)
                continue
            data.pop("kind", None)
            active.append(data)
    return envelope(active)


# --------------------------------------------------------------------------- pipeline state


def masked_suffix(secret: str) -> str:
    """``…abcd``: the secret's last four characters, only for secrets of eight or more (as the live pool)."""
    return f"…{secret[-4:]}" if len(secret) >= 8 else "…"


def settings_key_status(config: Settings) -> dict[str, Any]:
    """The key pool as configured, shaped like the live view: ids, masked suffixes, limits; never a secret."""
    pool = config.keys
    return {
        "source": "settings",
        "strategy": pool.strategy,
        "keys": [
            {
                "keyId": k.key_id,
                "masked": masked_suffix(k.api_key),
                "enabled": k.enabled,
                "account": k.account,
                "priority": k.priority,
                "state": "unknown" if k.enabled else "off",
                "limits": {"qps": k.qps_limit, "rpm": k.rpm_limit, "maxConcurrency": k.max_concurrency},
            }
            for k in pool.keys
        ],
        "accounts": [
            {
                "accountId": a.account_id,
                "keys": [k.key_id for k in pool.keys if k.account == a.account_id],
                "limits": {"rpm": a.rpm_limit, "tpm": a.tpm_limit},
            }
            for a in pool.accounts
        ],
    }


def leaks_secret(status: object, config: Settings) -> bool:
    """Whether any configured API key (8+ characters) appears anywhere in ``status``."""
    dumped = json.dumps(status, default=str)
    return any(len(k.api_key) >= 8 and k.api_key in dumped for k in config.keys.keys)


@blueprint.get("/keys")
def key_pool() -> Any:
    """The key pool's status: live from the pool when available, else as configured."""
    config = settings()
    try:  # lazily: the live status comes with the key-pool module, written separately
        pool: Any = importlib.import_module("infra.key_pool")
    except ImportError:
        pool = None
    pool_status = getattr(pool, "pool_status", None)
    if pool_status is None:
        return envelope(settings_key_status(config))
    status = pool_status(store(), config)
    if leaks_secret(status, config):
        log.error("infra.key_pool.pool_status returned an API key; answering from settings instead")
        return envelope(settings_key_status(config))
    return envelope({"source": "live", **status})


@blueprint.get("/queues")
def queues() -> Any:
    """Queue depths now, frames awaiting their verdict, and dead letters."""
    pipe = store().pipeline(transaction=False)
    for name in QUEUES:
        pipe.llen(name)
    pipe.zcard(redis_keys.FRAMES_PENDING)
    pipe.llen(redis_keys.DLQ)
    *depths, pending, dead = pipe.execute()
    return envelope({"queues": dict(zip(QUEUES, depths, strict=True)), "framesPending": pending, "deadLetters": dead})
