"""REST for incidents under ``/api/incidents``: a filtered, paginated list, one incident with its audit
log and evidence (snapshot, clip), and the operators' actions (announced to every dashboard as
``incident_updated``)."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Blueprint, current_app, request, send_file

from infra import outbox
from infra.emitter import Emitter
from infra.evidence_store import EvidenceStore
from infra.incident_db import IncidentDbError, IncidentQuery, IncidentStore, open_store
from traffic.incidents import (
    IncidentError,
    IncidentKind,
    IncidentStatus,
    action_to_json,
    checked_action,
    incident_to_json,
)
from traffic.models import RiskLevel
from web import api, validation
from web.api import envelope, settings
from web.validation import ApiError

log = logging.getLogger(__name__)

blueprint = Blueprint("incidents", __name__, url_prefix="/api")
# The API's envelope for every error, as under the rest of /api.
blueprint.register_error_handler(ApiError, api.api_error)
blueprint.register_error_handler(redis.ConnectionError, api.redis_unavailable)
blueprint.register_error_handler(redis.TimeoutError, api.redis_unavailable)
blueprint.register_error_handler(Exception, api.unexpected_error)

MAX_INCIDENT_ID = 2**31 - 1
"""Incident ids are the database's 32-bit integers: a larger one names no incident."""
LIMIT_DEFAULT = 50
LIMIT_MAX = 500
MAX_OFFSET = 10_000_000


def incident_store() -> IncidentStore:
    """The app's incident store (schema migrated on first use); 404 when no database is configured."""
    store: IncidentStore | None = current_app.extensions.get("traffic_incidents")
    if store is not None:
        return store
    url = settings().incidents.database_url
    if not url:
        raise ApiError(404, "incidents_not_kept", "this server keeps no incident history (set TRAFFIC_DATABASE_URL)")
    store = open_store(url)
    current_app.extensions["traffic_incidents"] = store
    return store


def _emitter() -> Emitter:
    """The app's emitter onto the Socket.IO message queue (created on first use)."""
    emitter: Emitter | None = current_app.extensions.get("traffic_emitter")
    if emitter is None:
        emitter = Emitter(settings().redis_url or "")
        current_app.extensions["traffic_emitter"] = emitter
    return emitter


@blueprint.errorhandler(IncidentDbError)
def incidents_unavailable(exc: IncidentDbError) -> Any:
    """The incident database is down: 503, retry later (incidents wait in Redis meanwhile)."""
    log.warning("%s %s: %s", request.method, request.path, exc)
    response = envelope({"error": "unavailable"}, 503, "the incident database is unavailable; try again shortly")
    response.headers["Retry-After"] = "5"
    return response


@blueprint.get("/incidents")
def list_incidents() -> Any:
    """Incidents by first sighting, newest first unless ``order=oldest``, filtered and paginated."""
    args = request.args
    kind = validation.query_choice(args, "kind", [k.value for k in IncidentKind])
    level = validation.query_choice(args, "level", [lv.value for lv in RiskLevel if lv is not RiskLevel.NONE])
    status = validation.query_choice(args, "status", [s.value for s in IncidentStatus])
    order = validation.query_choice(args, "order", ["newest", "oldest"]) or "newest"
    query = IncidentQuery(
        camera_id=validation.query_camera_id(args),
        kind=IncidentKind(kind) if kind else None,
        min_level=RiskLevel(level) if level else None,
        status=IncidentStatus(status) if status else None,
        since=validation.query_time(args, "since"),
        until=validation.query_time(args, "until"),
        newest_first=order == "newest",
        limit=validation.query_int(args, "limit", minimum=1, maximum=LIMIT_MAX, default=LIMIT_DEFAULT),
        offset=validation.query_int(args, "offset", minimum=0, maximum=MAX_OFFSET, default=0),
    )
    page = incident_store().query(query)
    return envelope({"incidents": [incident_to_json(i) for i in page.incidents], "nextOffset": page.next_offset})


@blueprint.get("/incidents/<int:incident_id>")
def get_incident(incident_id: int) -> Any:
    """One incident with its audit log."""
    found = incident_store().get(incident_id) if incident_id <= MAX_INCIDENT_ID else None
    if found is None:
        raise ApiError(404, "incident_not_found", f"no incident {incident_id}", "incidentId")
    incident, actions = found
    return envelope(incident_to_json(incident, actions))


@blueprint.get("/incidents/<int:incident_id>/snapshot.jpg")
def incident_snapshot(incident_id: int) -> Any:
    """The incident's annotated snapshot (JPEG)."""
    return _evidence_file(incident_id, "snapshot", "image/jpeg")


@blueprint.get("/incidents/<int:incident_id>/clip.webm")
def incident_clip(incident_id: int) -> Any:
    """The incident's clip (WebM, VP8), with range requests for seeking."""
    return _evidence_file(incident_id, "clip", "video/webm")


def _evidence_file(incident_id: int, which: str, mimetype: str) -> Any:
    """One evidence file of an incident; 404 (``no_evidence``) when it has none or the file is gone."""
    found = incident_store().get(incident_id) if incident_id <= MAX_INCIDENT_ID else None
    if found is None:
        raise ApiError(404, "incident_not_found", f"no incident {incident_id}", "incidentId")
    incident, _ = found
    relative = incident.snapshot_path if which == "snapshot" else incident.clip_path
    directory = settings().evidence.dir
    path = EvidenceStore(directory).resolve(relative) if directory and relative else None
    if path is None:
        raise ApiError(404, "no_evidence", f"incident {incident_id} has no {which} (yet)", "incidentId")
    response = send_file(path, mimetype=mimetype, conditional=True, max_age=0)
    response.headers["Cache-Control"] = "private, no-cache"
    return response


@blueprint.post("/incidents/<int:incident_id>/actions")
def act_on_incident(incident_id: int) -> Any:
    """Acknowledge, resolve, mark a false positive or reopen, with who and a note; kept in the audit log."""
    body = validation.json_object(request)
    validation.check_fields(body, required=("action", "who"), optional=("note",))
    try:
        action, who, note = checked_action(body["action"], body["who"], body.get("note"))
        if incident_id > MAX_INCIDENT_ID:
            raise IncidentError("not_found", f"no incident {incident_id}")
        incident, entry = incident_store().act(incident_id, action, who, note)
    except IncidentError as exc:
        status = {"not_found": 404, "invalid_transition": 409}.get(exc.code, 400)
        code = "incident_not_found" if exc.code == "not_found" else exc.code
        field = exc.field or ("incidentId" if exc.code == "not_found" else None)
        raise ApiError(status, code, str(exc), field) from None
    data = incident_to_json(incident)
    log.info("incident %d: %s by %s", incident_id, action.value, who)
    _emitter().incident(incident.camera_id, "incident_updated", data)
    try:
        outbox.push(api.store(), outbox.enabled_outputs(settings()), "incident_updated", data)
    except redis.RedisError as exc:  # the action is stored; only MQTT and webhooks miss this update
        log.error("incident %d: %s not handed to the outputs (Redis: %s)", incident_id, action.value, exc)
    return envelope({**data, "action": action_to_json(entry)}, 200, action.value)
