"""The OpenAPI 3.1 description of the REST API, served at ``GET /api/openapi.json``.

Kept beside ``web.api`` and ``web.validation`` and checked against them by the tests: every route
under ``/api`` is described, the document validates, and fuzzing from it finds no undocumented
status, body or header.
"""

from __future__ import annotations

import copy
from typing import Any

import traffic
from infra.celery_names import QUEUES
from traffic.cameras import MAX_DETECT_FPS, MIN_DETECT_FPS
from web.validation import (
    CAMERA_ID_PATTERN,
    MAX_BODY_BYTES,
    MAX_JSON_INTEGER,
    MAX_NAME_LENGTH,
    MAX_QUERY_LENGTH,
    SINCE_PATTERN,
)

JSON = dict[str, Any]

MAX_URL_LENGTH = 2048
LEVELS = ["none", "low", "medium", "high"]
INCIDENT_KINDS = ["model", "near_miss", "wrong_way"]
INCIDENT_STATUSES = ["open", "acknowledged", "resolved", "false_positive"]
INCIDENT_ACTIONS = ["acknowledge", "resolve", "false_positive", "reopen"]
KEY_STATES = ["ready", "busy", "cooling", "disabled", "rejected", "off", "unknown"]
"""The live pool's key states, and ``unknown`` (enabled, state not known: the settings source)."""


def ref(name: str, kind: str = "schemas") -> JSON:
    """A ``$ref`` to a component."""
    return {"$ref": f"#/components/{kind}/{name}"}


def nullable(schema: JSON) -> JSON:
    """``schema`` or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: JSON, required: list[str] | None = None, *, extra: bool = False, **more: Any) -> JSON:
    """An object schema; ``required`` defaults to every property, unknown properties refused unless ``extra``."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": extra,
        **more,
    }


def array(items: JSON, **more: Any) -> JSON:
    """An array schema."""
    return {"type": "array", "items": items, **more}


def envelope(data: JSON, code: int) -> JSON:
    """The success envelope ``{code, msg, data}`` around ``data``."""
    return obj({"code": {"const": code}, "msg": {"type": "string", "minLength": 1}, "data": data})


def ok(description: str, data: JSON, code: int = 200) -> JSON:
    """A JSON success response."""
    return {"description": description, "content": {"application/json": {"schema": envelope(data, code)}}}


def errors(*codes: int) -> JSON:
    """The named error responses plus ``default`` (every other error, same envelope)."""
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        404: "NotFound",
        409: "Conflict",
        413: "PayloadTooLarge",
        415: "UnsupportedMediaType",
        503: "Unavailable",
    }
    return {**{str(c): ref(names[c], "responses") for c in codes}, "default": ref("OtherError", "responses")}


def body(schema: str, description: str) -> JSON:
    """A required JSON request body."""
    return {"required": True, "description": description, "content": {"application/json": {"schema": ref(schema)}}}


# --------------------------------------------------------------------------- schemas

ERROR_CODES = {
    "bad request": ["invalid_json", "invalid_body", "duplicate_field", "unknown_field", "missing_field"],
    "field values": ["invalid_type", "invalid_length", "invalid_value", "duplicate_parameter"],
    "cameras (traffic.cameras)": [
        "invalid_camera_id",
        "invalid_url",
        "scheme_not_allowed",
        "file_sources_disabled",
        "file_not_found",
    ],
    "not found": ["not_found", "camera_not_found", "no_result", "no_frame"],
    "other": [
        "method_not_allowed",
        "body_too_large",
        "unsupported_media_type",
        "unavailable",
        "internal_error",
    ],
}

WIRE_CAMERA_ID = {
    "description": "A camera id as the client spelled it: an integer, or 1-64 of A-Z a-z 0-9 _ . : -.",
    "oneOf": [
        {"type": "integer", "minimum": 0, "maximum": MAX_JSON_INTEGER},
        {"type": "string", "pattern": CAMERA_ID_PATTERN},
    ],
}
CAMERA_KEY = {"type": "string", "pattern": CAMERA_ID_PATTERN, "description": "The camera's id as a string."}
URL = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_URL_LENGTH,
    "description": (
        "Camera source: rtsp://, rtsps://, http:// or https:// with a host (and a valid port); file:// URLs "
        "and bare paths of existing files only when the server allows file sources. No whitespace or control "
        "characters. Sending back the masked URL a GET returned keeps the stored one (and its credentials)."
    ),
}
NAME = {"type": "string", "maxLength": MAX_NAME_LENGTH, "description": "Display name."}
RATE = (
    "Frames of this camera detected and tracked per second (its sampling interval is 1/detectFps); absent: the "
    "server's default, one frame every capture.frame_interval_s (TRAFFIC_FRAME_INTERVAL, 1.8 s). Model calls are "
    "paced apart from it, by the per-camera cooldown, the gate and the budget. Tracking wants 5-10 on GPU hosts. "
    "A change takes effect from the camera's next sample, without reconnecting."
)
DETECT_FPS = {"type": "number", "minimum": MIN_DETECT_FPS, "maximum": MAX_DETECT_FPS, "description": RATE}
TIMESTAMP = {"type": "string", "format": "date-time", "description": "ISO-8601 UTC with milliseconds and Z."}
BOX = array({"type": "integer"}, minItems=4, maxItems=4, description="[x1, y1, x2, y2] in pixels.")
BOX_NUMBERS = array({"type": "number"}, minItems=4, maxItems=4, description="[x1, y1, x2, y2] in pixels.")
LEVEL = {"type": "string", "enum": LEVELS}
ALERT_PROPERTIES: JSON = {
    "alertId": {
        "type": "string",
        "description": "Stable identity: camera:<groupKey> with tracking on (one incident, one alert), else "
        "camera:primaryType:CxR.",
    },
    "cameraId": CAMERA_KEY,
    "level": {"type": "string", "enum": LEVELS[1:]},
    "riskTypes": array({"type": "string"}),
    "description": {"type": "string"},
    "firstSeen": TIMESTAMP,
    "lastSeen": TIMESTAMP,
    "frameId": {"type": "string", "description": "The latest frame that saw it."},
    "bbox": BOX,
    "count": {"type": "integer", "minimum": 1, "description": "Frames that saw it."},
    "trackIds": array({"type": "integer"}, description="Track ids of the group in that frame (tracking on)."),
    "source": {
        "type": "string",
        "enum": ["model", "rule-based"],
        "description": "model: a verdict of the assessor; rule-based: a near miss or wrong-way movement from tracks.",
    },
    "llmModel": {"type": "string", "description": "The latest verdict's model (rules: the offline assessor)."},
    "keyId": nullable({"type": "string", "description": "The API key id of the latest verdict's call, never the key."}),
}

POINT = array({"type": "number"}, minItems=2, maxItems=2, description="[x, y] in pixels of imageSize.")
COUNTS_BY_CLASS = {
    "type": "object",
    "additionalProperties": {"type": "integer", "minimum": 0},
    "description": "Road users by class (COCO names).",
}
MOTION_EVENT_KINDS = ["line_crossing", "dwell", "wrong_way", "near_miss"]

SCHEMAS: JSON = {
    "ErrorData": obj(
        {
            "error": {
                "type": "string",
                "minLength": 1,
                "description": "Machine-readable reason: "
                + "; ".join(f"{group}: {', '.join(codes)}" for group, codes in ERROR_CODES.items())
                + "; http_<status> for other HTTP errors.",
            },
            "field": {"type": "string", "description": "The body field or parameter at fault."},
        },
        ["error"],
    ),
    "Error": obj(
        {
            "code": {"type": "integer", "minimum": 400, "maximum": 599, "description": "Equals the HTTP status."},
            "msg": {"type": "string", "minLength": 1, "description": "What was wrong, for people."},
            "data": ref("ErrorData"),
        }
    ),
    "Session": obj(
        {
            "authRequired": {"type": "boolean", "description": "Whether the server asks for the access token."},
            "authenticated": {"type": "boolean", "description": "Whether this request carried it (or the cookie)."},
        }
    ),
    "SessionLogin": obj({"token": {"type": "string", "maxLength": 4096}}, ["token"]),
    "Health": obj(
        {
            "status": {"type": "string", "enum": ["UP", "DEGRADED"], "description": "DEGRADED: Redis unreachable."},
            "service": {"const": "traffic"},
            "version": {"type": "string"},
        }
    ),
    "CameraStatus": obj(
        {
            "status": {"type": "integer", "enum": [0, 1], "description": "1 connected, 0 not."},
            "message": {"type": "string"},
            "since": {"type": "number", "description": "Epoch seconds of the last change."},
            "latencyMs": {"type": "integer"},
        },
        ["status", "message", "since"],
    ),
    "Camera": obj(
        {
            "cameraId": CAMERA_KEY,
            "wireId": WIRE_CAMERA_ID,
            "url": {"type": "string", "description": "Source URL with credentials masked as ***."},
            "name": {"type": "string"},
            "enabled": {"type": "boolean"},
            "detectFps": {**DETECT_FPS, "description": "Present only when the camera has its own rate. " + RATE},
            "status": {**nullable(ref("CameraStatus")), "description": "Null until the capture service reports."},
            "stats": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": (
                    "Counters: captured, dropped_superseded, dropped_inflight, dropped_age, detected, "
                    "samples_timed, final_<assessment>…"
                ),
            },
        },
        ["cameraId", "wireId", "url", "name", "enabled", "status", "stats"],
    ),
    "CameraCreate": obj(
        {
            "cameraId": WIRE_CAMERA_ID,
            "url": URL,
            "name": {**NAME, "default": ""},
            "enabled": {"type": "boolean"},
            "detectFps": DETECT_FPS,
        },
        ["cameraId", "url"],
        description="A whole camera; unknown fields are errors. enabled defaults to true; without detectFps the "
        "camera is sampled at the server's default rate (so replacing a camera without it clears its own rate).",
    ),
    "CameraPatch": obj(
        {
            "url": URL,
            "name": NAME,
            "enabled": {"type": "boolean"},
            "detectFps": {"oneOf": [DETECT_FPS, {"type": "null"}]},
        },
        [],
        description="The fields to change; unknown fields are errors. detectFps: null clears the camera's own "
        "rate (back to the server's default), as does replacing the camera without it.",
    ),
    "CameraDeleted": obj({"cameraId": WIRE_CAMERA_ID, "deleted": {"const": True}}),
    "DetectedObject": obj(
        {
            "class": {"type": "string"},
            "confidence": {"type": "number"},
            "bbox": BOX,
            "trackId": {
                "type": ["integer", "null"],
                "description": "The camera's track of this object (with tracking on; null until the track is "
                "confirmed). Unique within the frame's trackingEpoch.",
            },
        },
        required=["class", "confidence", "bbox"],
        extra=True,
    ),
    "TrafficGroup": obj(
        {
            "groupIndex": {"type": "integer", "minimum": 0},
            "objectCount": {"type": "integer", "minimum": 0},
            "bbox": BOX,
            "classes": array({"type": "string"}),
            "averageConfidence": {"type": "number"},
            "riskLevel": LEVEL,
            "memberIndices": array({"type": "integer", "minimum": 0}),
            "groupKey": {
                "type": ["string", "null"],
                "description": "With tracking on: stable across frames while the group's oldest tracked member "
                "stays in it (e<epoch>t<track id>); null while no member is tracked.",
            },
            "trackIds": array({"type": "integer"}, description="With tracking on: the members' track ids."),
            "assessed": {
                "type": "boolean",
                "description": "Whether the group has a verdict in this payload: riskLevel none with assessed true "
                "is judged no-risk; with assessed false it is not rated (pending, skipped, failed).",
            },
        },
        required=["groupIndex", "objectCount", "bbox", "classes", "averageConfidence", "riskLevel", "memberIndices"],
        extra=True,
    ),
    "DangerousDrivingResult": obj(
        {
            "groupIndex": {"type": "integer", "minimum": 0},
            "riskLevel": LEVEL,
            "confidence": {"type": "number"},
            "riskTypes": array({"type": "string"}),
            "type": {"type": "string", "description": "The first risk type, for old clients."},
            "description": {"type": "string"},
            "dangerObjectCount": {"type": "integer", "minimum": 0},
            "triggerObjectIds": array({"type": "integer"}),
            "llmModel": {"type": "string"},
        },
        ["groupIndex", "riskLevel", "confidence", "riskTypes", "description", "dangerObjectCount", "triggerObjectIds"],
        extra=True,
    ),
    "DetectionResult": obj(
        {
            "cameraId": WIRE_CAMERA_ID,
            "frameId": {"type": "string"},
            "timestamp": TIMESTAMP,
            "imageWidth": {"type": "integer", "minimum": 0},
            "imageHeight": {"type": "integer", "minimum": 0},
            "detectedObjects": array(ref("DetectedObject")),
            "trafficGroups": array(ref("TrafficGroup")),
            "dangerousDrivingResults": array(ref("DangerousDrivingResult")),
            "hasDangerousDriving": {"type": "boolean"},
            "maxRiskLevel": LEVEL,
            "processTime": {"type": "number", "description": "Seconds."},
            "llmLatency": {"type": "number", "description": "Seconds."},
            "llmModel": {"type": "string"},
            "modelType": {"type": "string"},
            "supportedClasses": array({"type": "string"}),
            "trackingEnabled": {"type": "boolean"},
            "trackingEpoch": {
                "type": "integer",
                "description": "With tracking on: the camera's tracking epoch. A new epoch means the camera's "
                "tracker started again (first frame, a long pause, its state lost) and track ids restarted.",
            },
            "assessment": {"type": "string", "enum": ["pending", "complete", "partial", "skipped", "unavailable"]},
            "frame": {"type": "string", "description": "Data URI of the frame (optional)."},
            "finalisedBy": {"type": "string", "description": "Which step finalised the frame (chord, sweeper)."},
        },
        [
            "cameraId",
            "frameId",
            "timestamp",
            "imageWidth",
            "imageHeight",
            "detectedObjects",
            "trafficGroups",
            "dangerousDrivingResults",
            "hasDangerousDriving",
            "maxRiskLevel",
            "processTime",
            "llmLatency",
            "llmModel",
            "modelType",
            "supportedClasses",
            "trackingEnabled",
            "assessment",
        ],
        extra=True,
        description="The final detection_result of the Socket.IO protocol (fields may be added, never removed).",
    ),
    "CountingLine": obj(
        {
            "name": {"type": "string"},
            "start": POINT,
            "end": POINT,
            "forward": nullable({"type": "string"}),
            "backward": nullable({"type": "string"}),
            "counts": {
                "type": "object",
                "additionalProperties": COUNTS_BY_CLASS,
                "description": "Crossings since `since`, by direction name (forward, backward), then by class.",
            },
            "totals": {
                "type": "object",
                "additionalProperties": {"type": "integer", "minimum": 0},
                "description": "Crossings since `since` by direction name, every class together.",
            },
        },
        ["name", "counts", "totals"],
        extra=True,
        description="A counting line and its crossings. A line since removed from the configuration keeps its "
        "counts but has no start/end and null direction names.",
    ),
    "CountingZone": obj(
        {
            "name": {"type": "string"},
            "polygon": array(POINT, minItems=3),
            "direction": {
                **nullable(array({"type": "number"}, minItems=2, maxItems=2)),
                "description": "The lane's direction of travel (a unit vector in image axes), null for none.",
            },
            "occupancy": {**COUNTS_BY_CLASS, "description": "Road users in the zone now, by class."},
            "total": {"type": "integer", "minimum": 0, "description": "Road users in the zone now."},
        },
        ["name", "polygon", "occupancy", "total"],
        extra=True,
        description="A zone (polygon) and who is in it now.",
    ),
    "TrackMotion": obj(
        {
            "trackId": {"type": "integer"},
            "class": {"type": "string"},
            "trail": array(POINT, description="The track's recent path, oldest first."),
            "speed": nullable({"type": "number"}),
            "speedUnit": {"type": "string", "description": "km/h on a calibrated camera, px/s otherwise."},
            "zones": array({"type": "string"}, description="Names of the zones the track is in."),
        },
        ["trackId", "class", "trail"],
        extra=True,
        description="One live track: its trail, speed (null until known) and zones.",
    ),
    "MotionEvent": obj(
        {
            "kind": {"type": "string", "description": "One of " + ", ".join(MOTION_EVENT_KINDS) + " (more may come)."},
            "at": TIMESTAMP,
            "where": {"type": "string", "description": "The line (line_crossing) or zone (dwell, wrong_way)."},
            "direction": {"type": "string", "description": "line_crossing: the direction's name."},
            "measure": {"type": "string", "description": "near_miss: what was measured (ttc, pet…)."},
            "value": nullable({"type": "number"}),
            "threshold": nullable({"type": "number"}),
            "trackIds": array({"type": "integer"}),
            "classes": array({"type": "string"}),
            "position": nullable(POINT),
            "phase": {"type": "string", "description": "near_miss: start or end of the encounter."},
            "rule": {"type": "string"},
        },
        ["kind", "at"],
        extra=True,
        description="A motion event: a line crossing, a dwell, a wrong-way run or a near miss (value: dwell "
        "seconds, wrong-way speed, near-miss measure).",
    ),
    "TrafficStats": obj(
        {
            "cameraId": WIRE_CAMERA_ID,
            "recorded": {
                "type": "boolean",
                "description": "REST only. false: nothing is recorded for the camera (analytics off, no frame "
                "analysed yet, or all of it expired); then timestamp, trackingEpoch, unit, calibrated and "
                "imageSize are null, since is the requested one (or null) and every list is empty.",
            },
            "timestamp": {**nullable(TIMESTAMP), "description": "Capture time of the frame the snapshot reflects."},
            "trackingEpoch": nullable({"type": "integer"}),
            "unit": {**nullable({"type": "string", "enum": ["m", "px"]}), "description": "m when calibrated."},
            "calibrated": nullable({"type": "boolean"}),
            "imageSize": {
                **nullable(array({"type": "integer", "minimum": 0}, minItems=2, maxItems=2)),
                "description": "[width, height]: the frame size every coordinate is in.",
            },
            "since": {
                **nullable(TIMESTAMP),
                "description": "Line counts are since this time: by default when counting began; over REST with "
                "a since, that time (rounded down to its minute when counting began before it).",
            },
            "lines": array(ref("CountingLine")),
            "zones": array(ref("CountingZone")),
            "tracks": array(ref("TrackMotion"), description="Live tracks (empty once the camera went quiet)."),
            "nearMisses": array(ref("MotionEvent"), description="Near-miss encounters in progress."),
            "events": array(
                ref("MotionEvent"),
                description="Recent motion events, newest last: the event carries up to 20, the REST answer up "
                "to 500 since `since`.",
            ),
        },
        [
            "cameraId",
            "timestamp",
            "unit",
            "calibrated",
            "imageSize",
            "since",
            "lines",
            "zones",
            "tracks",
            "nearMisses",
            "events",
        ],
        extra=True,
        description="A camera's traffic analytics: the payload of the traffic_stats Socket.IO event (about once "
        "a second, to the camera's room; also over /ws) and of GET /api/cameras/{cameraId}/stats. Fields may "
        "be added, never removed.",
    ),
    "AlertEvent": obj(
        {"kind": {"type": "string", "enum": ["new", "update", "end"]}, **ALERT_PROPERTIES},
        description="One lifecycle step of an alert, as the alert Socket.IO event carries it.",
    ),
    "ActiveAlert": obj(ALERT_PROPERTIES, description="An alert that has not ended."),
    "Incident": obj(
        {
            "incidentId": {"type": "integer", "minimum": 1},
            "alertId": {"type": "string", "description": "The alert whose life this incident records."},
            "cameraId": {"type": "string"},
            "kind": {
                "type": "string",
                "enum": INCIDENT_KINDS,
                "description": "model: judged by the model; near_miss, wrong_way: measured from tracks (rule-based).",
            },
            "level": {"type": "string", "enum": LEVELS[1:], "description": "The worst level the alert reached."},
            "riskTypes": array({"type": "string"}),
            "description": {"type": "string"},
            "firstSeen": TIMESTAMP,
            "lastSeen": TIMESTAMP,
            "endedAt": nullable(TIMESTAMP),
            "trackIds": array({"type": "integer"}),
            "llmModel": {"type": "string", "description": "The latest verdict's model; empty if rule-based."},
            "keyId": nullable({"type": "string", "description": "The API key id of the call, never the key."}),
            "frameIds": array({"type": "string"}, maxItems=50, description="The first and the latest frames."),
            "status": {"type": "string", "enum": INCIDENT_STATUSES},
            "updatedAt": TIMESTAMP,
            "evidence": obj(
                {
                    "snapshotUrl": nullable({"type": "string", "description": "The annotated snapshot (JPEG)."}),
                    "clipUrl": nullable(
                        {"type": "string", "description": "The clip (WebM); null until the capture process wrote it."}
                    ),
                },
                ["snapshotUrl", "clipUrl"],
                description="Where the incident's evidence is served (null: none kept, or not yet).",
            ),
            "actions": array(ref("IncidentActionEntry"), description="The audit log, oldest first (one incident)."),
            "action": ref("IncidentActionEntry"),
        },
        [
            "incidentId",
            "alertId",
            "cameraId",
            "kind",
            "level",
            "riskTypes",
            "description",
            "firstSeen",
            "lastSeen",
            "endedAt",
            "trackIds",
            "llmModel",
            "keyId",
            "frameIds",
            "status",
            "updatedAt",
            "evidence",
        ],
        description="One alert life, kept: what was seen, where and when, and where the operators' workflow stands.",
    ),
    "IncidentActionEntry": obj(
        {
            "action": {"type": "string", "enum": INCIDENT_ACTIONS},
            "who": {"type": "string"},
            "at": TIMESTAMP,
            "note": {"type": "string"},
            "statusBefore": {"type": "string", "enum": INCIDENT_STATUSES},
            "statusAfter": {"type": "string", "enum": INCIDENT_STATUSES},
        },
        ["action", "who", "at", "note", "statusBefore", "statusAfter"],
        description="One operator action: the append-only audit log.",
    ),
    "IncidentPage": obj(
        {
            "incidents": array(ref("Incident")),
            "nextOffset": nullable({"type": "integer", "description": "offset of the next page; null on the last."}),
        },
        ["incidents", "nextOffset"],
    ),
    "IncidentActionRequest": obj(
        {
            "action": {"type": "string", "enum": INCIDENT_ACTIONS},
            "who": {"type": "string", "minLength": 1, "maxLength": 128, "description": "Who acts (kept in the log)."},
            "note": {"type": "string", "maxLength": 2000},
        },
        ["action", "who"],
        description="acknowledge (open), resolve or false_positive (open, acknowledged), reopen (any other).",
    ),
    "KeyStatus": obj(
        {
            "keyId": {"type": "string"},
            "masked": {"type": "string", "description": "…abcd: the secret's last four characters (8+ only)."},
            "enabled": {"type": "boolean", "description": "As configured (settings source only)."},
            "account": nullable({"type": "string"}),
            "priority": {"type": "integer", "description": "1 is the highest."},
            "state": {"type": "string", "enum": KEY_STATES},
            "limits": obj(
                {
                    "qps": nullable({"type": "number"}),
                    "rpm": nullable({"type": "integer"}),
                    "maxConcurrency": nullable({"type": "integer"}),
                },
                extra=True,
            ),
        },
        ["keyId", "masked", "account", "priority", "state", "limits"],
        extra=True,
        description="One API key, never its secret. The live view adds counters, cooldown and last error.",
    ),
    "AccountStatus": obj(
        {
            "accountId": {"type": "string"},
            "keys": array({"type": "string"}, description="Ids of the account's keys."),
            "limits": obj({"rpm": nullable({"type": "integer"}), "tpm": nullable({"type": "integer"})}, extra=True),
        },
        extra=True,
        description="A provider account whose limits its keys share. The live view adds its state and counters.",
    ),
    "KeyPoolStatus": obj(
        {
            "source": {
                "type": "string",
                "enum": ["live", "settings"],
                "description": "live: the pool's state in Redis; settings: as configured (no live state).",
            },
            "strategy": {"type": "string", "enum": ["round_robin", "least_loaded", "priority"]},
            "keys": array(ref("KeyStatus")),
            "accounts": array(ref("AccountStatus")),
        },
        extra=True,
    ),
    "QueueDepths": obj(
        {
            "queues": obj({name: {"type": "integer", "minimum": 0} for name in QUEUES}),
            "framesPending": {"type": "integer", "minimum": 0, "description": "Frames in assessment, not yet final."},
            "deadLetters": {"type": "integer", "minimum": 0, "description": "Assessments that exhausted retries."},
        }
    ),
}

# --------------------------------------------------------------------------- parameters, responses


def error_response(description: str, codes: list[int] | None = None) -> JSON:
    """An error response in the envelope."""
    schema: JSON = ref("Error")
    if codes:
        schema = {"allOf": [ref("Error"), {"properties": {"code": {"enum": codes}}}]}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


PARAMETERS: JSON = {
    "CameraIdPath": {
        "name": "cameraId",
        "in": "path",
        "required": True,
        "description": "The camera's id (numeric ids as digits).",
        "schema": {"type": "string", "pattern": CAMERA_ID_PATTERN},
    },
    "CameraIdQuery": {
        "name": "cameraId",
        "in": "query",
        "required": False,
        "description": "Only this camera.",
        "schema": {"type": "string", "pattern": CAMERA_ID_PATTERN},
    },
    "Level": {
        "name": "level",
        "in": "query",
        "required": False,
        "description": "Minimum alert level.",
        "schema": {"type": "string", "enum": LEVELS[1:]},
    },
    "Since": {
        "name": "since",
        "in": "query",
        "required": False,
        "description": "Only events whose lastSeen is at or after this time: epoch seconds, or an ISO-8601 "
        "date-time with Z or ±hh:mm.",
        "schema": {"type": "string", "maxLength": MAX_QUERY_LENGTH, "pattern": SINCE_PATTERN},
    },
    "StatsSince": {
        "name": "since",
        "in": "query",
        "required": False,
        "description": "Count crossings (minute resolution) and list events from this time on: epoch seconds, or "
        "an ISO-8601 date-time with Z or ±hh:mm; at most 9999-12-31T23:59:59Z. Default: everything kept (24 h).",
        "schema": {"type": "string", "maxLength": MAX_QUERY_LENGTH, "pattern": SINCE_PATTERN},
    },
    "Limit": {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "At most this many events.",
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
    },
    "IncidentIdPath": {
        "name": "incidentId",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    },
}

RESPONSES: JSON = {
    "BadRequest": error_response(
        "Invalid input: malformed JSON, a body that is not an object, an unknown/missing/duplicate field, a value "
        "of the wrong type, size or format, or a query parameter given twice. data.field names the culprit.",
        [400],
    ),
    "Unauthorized": {
        "description": "A token is configured and the request did not carry it (Authorization: Bearer, "
        "X-Auth-Token or ?token=).",
        "headers": {"WWW-Authenticate": {"schema": {"const": "Bearer"}}},
        "content": {
            "application/json": {
                "schema": obj(
                    {
                        "code": {"const": 401},
                        "msg": {"type": "string", "minLength": 1},
                        "data": nullable(ref("ErrorData")),
                    }
                )
            }
        },
    },
    "NotFound": error_response("No such camera, result or frame (or no such path).", [404]),
    "Conflict": error_response(
        "The request does not fit the current state: an incident's status does not allow "
        "the action (invalid_transition), or the camera limit is reached.",
        [409],
    ),
    "PayloadTooLarge": error_response(f"The body is larger than {MAX_BODY_BYTES} bytes.", [413]),
    "UnsupportedMediaType": error_response("The body is not sent as application/json.", [415]),
    "Unavailable": {
        **error_response("Redis is unreachable; retry later.", [503]),
        "headers": {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds."}},
    },
    "OtherError": error_response("Any other error in the same envelope: 405 (with Allow), 500 (a server bug, logged)."),
}

# --------------------------------------------------------------------------- paths

CAMERA_PARAM = [ref("CameraIdPath", "parameters")]

PATHS: JSON = {
    "/api/health/health_check": {
        "get": {
            "operationId": "healthCheck",
            "tags": ["health"],
            "summary": "Liveness and Redis reachability (public).",
            "security": [],
            "responses": {"200": ok("The service is up.", ref("Health")), "default": ref("OtherError", "responses")},
        }
    },
    "/api/session": {
        "get": {
            "operationId": "sessionStatus",
            "tags": ["session"],
            "summary": "Whether a token is needed, and whether this request is signed in (public).",
            "security": [],
            "responses": {"200": ok("The session state.", ref("Session")), "default": ref("OtherError", "responses")},
        },
        "post": {
            "operationId": "signIn",
            "tags": ["session"],
            "summary": "Trade the access token for an HttpOnly, SameSite=Strict session cookie (public).",
            "description": "The dashboard signs in here so that the token never appears in a URL.",
            "security": [],
            "requestBody": body("SessionLogin", "The access token."),
            "responses": {"200": ok("Signed in; the cookie is set.", ref("Session")), **errors(401)},
        },
        "delete": {
            "operationId": "signOut",
            "tags": ["session"],
            "summary": "Forget the session cookie (public).",
            "security": [],
            "responses": {"200": ok("Signed out.", ref("Session")), "default": ref("OtherError", "responses")},
        },
    },
    "/api/openapi.json": {
        "get": {
            "operationId": "openApiDocument",
            "tags": ["meta"],
            "summary": "This document (public, not enveloped).",
            "security": [],
            "responses": {
                "200": {
                    "description": "The OpenAPI 3.1 document.",
                    "content": {"application/json": {"schema": {"type": "object", "required": ["openapi", "paths"]}}},
                },
                "default": ref("OtherError", "responses"),
            },
        }
    },
    "/api/cameras": {
        "get": {
            "operationId": "listCameras",
            "tags": ["cameras"],
            "summary": "Every camera, by id, with status and counters; URL credentials masked.",
            "responses": {"200": ok("The cameras.", array(ref("Camera"))), **errors(401, 503)},
        },
        "post": {
            "operationId": "putCamera",
            "tags": ["cameras"],
            "summary": "Create a camera, or replace the camera with this id.",
            "requestBody": body("CameraCreate", "The camera."),
            "responses": {
                "200": ok("Replaced.", ref("Camera")),
                "201": ok("Created.", ref("Camera"), 201),
                **errors(400, 401, 413, 415, 503),
            },
        },
    },
    "/api/cameras/{cameraId}": {
        "parameters": CAMERA_PARAM,
        "get": {
            "operationId": "getCamera",
            "tags": ["cameras"],
            "summary": "One camera.",
            "responses": {"200": ok("The camera.", ref("Camera")), **errors(400, 401, 404, 503)},
        },
        "patch": {
            "operationId": "patchCamera",
            "tags": ["cameras"],
            "summary": "Change a camera's url, name or enabled flag.",
            "requestBody": body("CameraPatch", "The fields to change."),
            "responses": {"200": ok("Updated.", ref("Camera")), **errors(400, 401, 404, 413, 415, 503)},
        },
        "delete": {
            "operationId": "deleteCamera",
            "tags": ["cameras"],
            "summary": "Remove a camera; the capture service stops it.",
            "responses": {"200": ok("Deleted.", ref("CameraDeleted")), **errors(400, 401, 404, 503)},
        },
    },
    "/api/cameras/{cameraId}/latest": {
        "parameters": CAMERA_PARAM,
        "get": {
            "operationId": "getLatestResult",
            "tags": ["cameras"],
            "summary": "The camera's latest final detection_result.",
            "responses": {"200": ok("The result.", ref("DetectionResult")), **errors(400, 401, 404, 503)},
        },
    },
    "/api/cameras/{cameraId}/frame.jpg": {
        "parameters": CAMERA_PARAM,
        "get": {
            "operationId": "getLatestFrame",
            "tags": ["cameras"],
            "summary": "The camera's most recently captured frame as JPEG (Cache-Control: no-store).",
            "responses": {
                "200": {
                    "description": "The JPEG.",
                    "headers": {"Cache-Control": {"schema": {"const": "no-store"}}},
                    "content": {"image/jpeg": {}},
                },
                **errors(400, 401, 404, 503),
            },
        },
    },
    "/api/cameras/{cameraId}/stats": {
        "parameters": CAMERA_PARAM,
        "get": {
            "operationId": "getTrafficStats",
            "tags": ["cameras"],
            "summary": "The camera's traffic stats: line counts and motion events since `since`, the latest "
            "tracks, zones and near misses.",
            "description": "The object the traffic_stats event carries, with counts and events since `since` "
            "(events: at most 500, newest last) and `recorded`. A registered camera with nothing recorded "
            "answers 200 with `recorded: false` and empty lists; an unknown camera is a 404.",
            "parameters": [ref("StatsSince", "parameters")],
            "responses": {
                "200": ok(
                    "The stats.",
                    {"allOf": [ref("TrafficStats"), {"required": ["recorded"]}]},
                ),
                **errors(400, 401, 404, 503),
            },
        },
    },
    "/api/frames/{frameId}/preview.jpg": {
        "parameters": [
            {
                "name": "frameId",
                "in": "path",
                "required": True,
                "description": "A frame id from a detection_result.",
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,100}$"},
            }
        ],
        "get": {
            "operationId": "getFramePreview",
            "tags": ["cameras"],
            "summary": "A small JPEG (at most 640 px wide) of one captured frame; frames live about 30 s.",
            "responses": {
                "200": {
                    "description": "The JPEG.",
                    "headers": {"Cache-Control": {"schema": {"const": "no-store"}}},
                    "content": {"image/jpeg": {}},
                },
                **errors(400, 401, 404, 503),
            },
        },
    },
    "/api/alerts": {
        "get": {
            "operationId": "listAlerts",
            "tags": ["alerts"],
            "summary": "Recent alert events (new/update/end), newest first; the server keeps the last 1,000.",
            "parameters": [
                ref("CameraIdQuery", "parameters"),
                ref("Level", "parameters"),
                ref("Since", "parameters"),
                ref("Limit", "parameters"),
            ],
            "responses": {"200": ok("The events.", array(ref("AlertEvent"), maxItems=500)), **errors(400, 401, 503)},
        },
    },
    "/api/alerts/active": {
        "get": {
            "operationId": "listActiveAlerts",
            "tags": ["alerts"],
            "summary": "Active alerts of one camera, or of every registered camera; by camera and alert id.",
            "parameters": [ref("CameraIdQuery", "parameters")],
            "responses": {"200": ok("The active alerts.", array(ref("ActiveAlert"))), **errors(400, 401, 503)},
        },
    },
    "/api/incidents": {
        "get": {
            "operationId": "listIncidents",
            "tags": ["incidents"],
            "summary": "Incidents by first sighting (newest first unless order=oldest), filtered, one page at a time. "
            "404 incidents_not_kept when the server keeps no history (no TRAFFIC_DATABASE_URL).",
            "parameters": [
                ref("CameraIdQuery", "parameters"),
                {
                    "name": "kind",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": INCIDENT_KINDS},
                },
                ref("Level", "parameters"),
                {
                    "name": "status",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": INCIDENT_STATUSES},
                },
                {
                    "name": "since",
                    "in": "query",
                    "required": False,
                    "description": "firstSeen at or after.",
                    "schema": {"type": "string", "maxLength": MAX_QUERY_LENGTH, "pattern": SINCE_PATTERN},
                },
                {
                    "name": "until",
                    "in": "query",
                    "required": False,
                    "description": "firstSeen before.",
                    "schema": {"type": "string", "maxLength": MAX_QUERY_LENGTH, "pattern": SINCE_PATTERN},
                },
                {
                    "name": "order",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["newest", "oldest"], "default": "newest"},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                },
                {
                    "name": "offset",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0, "maximum": 10_000_000, "default": 0},
                },
            ],
            "responses": {"200": ok("One page.", ref("IncidentPage")), **errors(400, 401, 404, 503)},
        },
    },
    "/api/incidents/{incidentId}": {
        "get": {
            "operationId": "getIncident",
            "tags": ["incidents"],
            "summary": "One incident with its audit log.",
            "parameters": [ref("IncidentIdPath", "parameters")],
            "responses": {"200": ok("The incident.", ref("Incident")), **errors(401, 404, 503)},
        },
    },
    "/api/incidents/{incidentId}/snapshot.jpg": {
        "get": {
            "operationId": "getIncidentSnapshot",
            "tags": ["incidents"],
            "summary": "The incident's annotated snapshot: every detection boxed, the group in its level's colour "
            "(people and plates blurred when the privacy setting is on). 404 no_evidence when none was kept.",
            "parameters": [ref("IncidentIdPath", "parameters")],
            "responses": {
                "200": {"description": "The JPEG.", "content": {"image/jpeg": {}}},
                **errors(401, 404, 503),
            },
        },
    },
    "/api/incidents/{incidentId}/clip.webm": {
        "get": {
            "operationId": "getIncidentClip",
            "tags": ["incidents"],
            "summary": "The incident's clip (WebM, VP8) from a few seconds before its first sighting to a few after; "
            "range requests are served (206). 404 no_evidence until it is written, or when none was kept.",
            "parameters": [ref("IncidentIdPath", "parameters")],
            "responses": {
                "200": {"description": "The clip.", "content": {"video/webm": {}}},
                "206": {"description": "Part of the clip (a Range request).", "content": {"video/webm": {}}},
                **errors(401, 404, 503),
            },
        },
    },
    "/api/incidents/{incidentId}/actions": {
        "post": {
            "operationId": "actOnIncident",
            "tags": ["incidents"],
            "summary": "Acknowledge, resolve, mark a false positive or reopen, with who and a note (kept in the audit "
            "log; every dashboard gets incident_updated). 409 invalid_transition when the status does not allow it.",
            "parameters": [ref("IncidentIdPath", "parameters")],
            "requestBody": body("IncidentActionRequest", "The action."),
            "responses": {
                "200": ok("The incident after the action, with the audit entry as action.", ref("Incident")),
                **errors(400, 401, 404, 409, 413, 415, 503),
            },
        },
    },
    "/api/keys": {
        "get": {
            "operationId": "getKeyPool",
            "tags": ["pipeline"],
            "summary": "The API-key pool: live state when the pool reports it, else as configured. Never a secret.",
            "responses": {"200": ok("The key pool.", ref("KeyPoolStatus")), **errors(401, 503)},
        },
    },
    "/api/queues": {
        "get": {
            "operationId": "getQueues",
            "tags": ["pipeline"],
            "summary": "Celery queue depths now, frames awaiting their verdict, dead letters.",
            "responses": {"200": ok("The depths.", ref("QueueDepths")), **errors(401, 503)},
        },
    },
}

DESCRIPTION = f"""\
REST API of the traffic-camera risk analytics backend (live events travel over Socket.IO).

Every JSON response is the envelope `{{code, msg, data}}` with `code` equal to the HTTP status. Errors
carry `data: {{error, field?}}`: `error` is a stable machine code, `field` the body field or query
parameter at fault, `msg` a sentence for people. Bad input is always a 4xx; an unreachable Redis a 503.

Bodies: one JSON object (UTF-8, `Content-Type: application/json`, at most {MAX_BODY_BYTES} bytes);
unknown, duplicate or missing fields are errors; `null` is never accepted. Query parameters: each at
most once and at most {MAX_QUERY_LENGTH} characters; parameters an operation does not define are ignored.

Authentication: when the server is configured with a token (`TRAFFIC_AUTH_TOKEN`), every operation
except the health check and this document needs it, as `Authorization: Bearer <token>`,
`X-Auth-Token: <token>` or `?token=<token>`; without a configured token no credentials are needed.
"""


def document() -> JSON:
    """The OpenAPI document (a fresh copy each call: callers may change it)."""
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "traffic REST API",
                "version": traffic.__version__,
                "description": DESCRIPTION,
                "license": {"name": "MIT", "identifier": "MIT"},
            },
            "tags": [
                {"name": "health", "description": "Liveness."},
                {"name": "meta", "description": "This description."},
                {"name": "cameras", "description": "The desired camera set, latest results and frames."},
                {"name": "alerts", "description": "Alert history and active alerts."},
                {"name": "incidents", "description": "The durable incident history and the operators' actions."},
                {"name": "pipeline", "description": "Key pool and queues."},
            ],
            "security": [{"bearerAuth": []}, {"tokenHeader": []}, {"tokenQuery": []}, {}],
            "paths": PATHS,
            "components": {
                "schemas": SCHEMAS,
                "parameters": PARAMETERS,
                "responses": RESPONSES,
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer"},
                    "tokenHeader": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
                    "tokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
                },
            },
        }
    )
