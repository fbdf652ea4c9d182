"""Incidents: the durable record of an alert's life, and the operator's workflow on it.

An alert (``traffic.alerts``) lives while it is seen; an incident keeps it afterwards: what was seen,
where, when, by which model, and what operators did about it. An incident is one alert life: its
natural key is the alert id and the time the alert was first seen, so writing the same alert event
twice (a redelivered task) changes nothing, and an alert raised again after it ended starts a new
incident. Operators act on incidents (acknowledge, resolve, mark a false positive, reopen); every
action is kept, append-only, with who, when and a note.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from traffic.alerts import RULE_BASED, Alert, AlertEvent, AlertKind
from traffic.errors import TrafficError
from traffic.models import RiskLevel
from traffic.wire import iso_timestamp, wire_millis

MAX_NOTE_CHARS = 2000
MAX_WHO_CHARS = 128
EVIDENCE_URL = "/api/incidents"
"""Evidence files are served under ``/api/incidents/<id>/snapshot.jpg`` and ``…/clip.webm``."""
MAX_FRAME_IDS = 50
"""Frame ids kept per incident: the first ones and the latest (a long incident sees thousands)."""


class IncidentError(TrafficError):
    """An incident action that cannot be done; ``code`` is a stable machine-readable reason."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


class IncidentKind(enum.StrEnum):
    """What raised it: the model's judgement of a group, or a rule measured from tracks."""

    MODEL = "model"
    NEAR_MISS = "near_miss"
    WRONG_WAY = "wrong_way"


class IncidentStatus(enum.StrEnum):
    """Where the operators' workflow stands."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    FALSE_POSITIVE = "false_positive"


class IncidentAction(enum.StrEnum):
    """What an operator does to an incident."""

    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    FALSE_POSITIVE = "false_positive"
    REOPEN = "reopen"


_TRANSITIONS: dict[tuple[IncidentStatus, IncidentAction], IncidentStatus] = {
    (IncidentStatus.OPEN, IncidentAction.ACKNOWLEDGE): IncidentStatus.ACKNOWLEDGED,
    (IncidentStatus.OPEN, IncidentAction.RESOLVE): IncidentStatus.RESOLVED,
    (IncidentStatus.OPEN, IncidentAction.FALSE_POSITIVE): IncidentStatus.FALSE_POSITIVE,
    (IncidentStatus.ACKNOWLEDGED, IncidentAction.RESOLVE): IncidentStatus.RESOLVED,
    (IncidentStatus.ACKNOWLEDGED, IncidentAction.FALSE_POSITIVE): IncidentStatus.FALSE_POSITIVE,
    (IncidentStatus.ACKNOWLEDGED, IncidentAction.REOPEN): IncidentStatus.OPEN,
    (IncidentStatus.RESOLVED, IncidentAction.REOPEN): IncidentStatus.OPEN,
    (IncidentStatus.FALSE_POSITIVE, IncidentAction.REOPEN): IncidentStatus.OPEN,
}


def next_status(current: IncidentStatus, action: IncidentAction) -> IncidentStatus:
    """The status after ``action``; ``IncidentError`` (``invalid_transition``) when it does not apply."""
    try:
        return _TRANSITIONS[(current, action)]
    except KeyError:
        allowed = sorted(a.value for (s, a) in _TRANSITIONS if s is current)
        raise IncidentError(
            "invalid_transition",
            f"cannot {action.value} an incident that is {current.value} (allowed: {', '.join(allowed)})",
        ) from None


@dataclass(frozen=True)
class OperatorAction:
    """One entry of an incident's audit log."""

    action: IncidentAction
    who: str
    at: float
    note: str = ""
    status_before: IncidentStatus = IncidentStatus.OPEN
    status_after: IncidentStatus = IncidentStatus.OPEN


def checked_action(action: object, who: object, note: object) -> tuple[IncidentAction, str, str]:
    """An operator's action, name and note from client input; ``IncidentError`` (``invalid_action``)."""
    if not isinstance(action, str) or action not in {a.value for a in IncidentAction}:
        choices = ", ".join(a.value for a in IncidentAction)
        raise IncidentError("invalid_action", f"action must be one of {choices}", "action")
    chosen = IncidentAction(str(action))
    if not isinstance(who, str) or not who.strip() or len(who) > MAX_WHO_CHARS:
        raise IncidentError("invalid_action", f"who must be a name of 1-{MAX_WHO_CHARS} characters", "who")
    if note is None:
        note = ""
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        raise IncidentError("invalid_action", f"note must be text of at most {MAX_NOTE_CHARS} characters", "note")
    return chosen, who.strip(), note


@dataclass(frozen=True)
class IncidentSighting:
    """What one alert event says about its incident: written with ``natural_key`` as the identity."""

    natural_key: str
    kind: IncidentKind
    ended: bool
    alert: Alert
    """The alert as this event left it (its level is this event's; the incident keeps the worst)."""


@dataclass(frozen=True)
class Incident:
    """An incident as stored: one alert life and where the operators' workflow stands."""

    incident_id: int
    natural_key: str
    alert_id: str
    camera_id: str
    kind: IncidentKind
    level: RiskLevel
    """The worst level the alert reached."""
    risk_types: tuple[str, ...]
    description: str
    first_seen: float
    last_seen: float
    ended_at: float | None
    track_ids: tuple[int, ...]
    model: str
    """``llmModel`` of the latest verdict behind it; empty for rule-based incidents."""
    key_id: str | None
    """The API key id of the call (never the key), when known."""
    frame_ids: tuple[str, ...]
    status: IncidentStatus
    updated_at: float
    snapshot_path: str | None = None
    """The annotated snapshot, relative to the evidence directory (None: none was kept)."""
    clip_path: str | None = None
    """The clip, relative to the evidence directory (None: not written yet, or none was kept)."""


def natural_key(alert_id: str, first_seen: float) -> str:
    """The identity of one alert life: its id and when it was first seen (to the millisecond, as the wire
    has it: the same for an alert and for its event read back)."""
    return f"{alert_id}@{wire_millis(first_seen)}"


def kind_of(event: AlertEvent) -> IncidentKind:
    """The incident kind of an alert: rule-based ones by their risk type, the rest the model's."""
    alert = event.alert
    if alert.source == RULE_BASED:
        return IncidentKind.WRONG_WAY if "wrong_way" in alert.risk_types else IncidentKind.NEAR_MISS
    return IncidentKind.MODEL


def sighting_of(event: AlertEvent) -> IncidentSighting:
    """The incident sighting an alert event (new, update or end) carries."""
    alert = event.alert
    return IncidentSighting(
        natural_key(alert.alert_id, alert.first_seen), kind_of(event), event.kind is AlertKind.END, alert
    )


def retention_days(
    kind: IncidentKind,
    level: RiskLevel,
    *,
    default: float,
    by_level: tuple[tuple[str, float], ...] = (),
    by_kind: tuple[tuple[str, float], ...] = (),
) -> float | None:
    """Days incidents of this kind and level are kept, None for ever (0 days anywhere that applies): the
    level's or the kind's days (the longer where both apply), else ``default``."""
    applicable = [d for d in (dict(by_level).get(level.value), dict(by_kind).get(kind.value)) if d is not None]
    days = applicable or [default]
    return None if 0 in days else max(days)


def retention_cutoffs(
    now: float,
    *,
    default: float,
    by_level: tuple[tuple[str, float], ...] = (),
    by_kind: tuple[tuple[str, float], ...] = (),
) -> dict[tuple[IncidentKind, RiskLevel], float]:
    """For every kind and level kept for a limited time: incidents first seen before this are expired."""
    cutoffs = {}
    for kind in IncidentKind:
        for level in (RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH):
            days = retention_days(kind, level, default=default, by_level=by_level, by_kind=by_kind)
            if days is not None:
                cutoffs[(kind, level)] = now - days * 86_400.0
    return cutoffs


def worse(a: RiskLevel, b: RiskLevel) -> RiskLevel:
    """The higher of two levels."""
    return a if a.rank >= b.rank else b


def kept_frame_ids(frame_ids: tuple[str, ...], new: str) -> tuple[str, ...]:
    """``frame_ids`` with ``new`` added once, at most ``MAX_FRAME_IDS``: the first half and the latest."""
    if new in frame_ids:
        return frame_ids
    added = (*frame_ids, new)
    if len(added) <= MAX_FRAME_IDS:
        return added
    head = MAX_FRAME_IDS // 2
    return (*added[:head], *added[len(added) - (MAX_FRAME_IDS - head) :])


def incident_to_json(incident: Incident, actions: tuple[OperatorAction, ...] | None = None) -> dict[str, object]:
    """An incident as the REST API and the ``incident`` events send it; times ISO-8601 UTC; with its audit
    log when ``actions`` is given."""
    data: dict[str, object] = {
        "incidentId": incident.incident_id,
        "alertId": incident.alert_id,
        "cameraId": incident.camera_id,
        "kind": incident.kind.value,
        "level": incident.level.value,
        "riskTypes": list(incident.risk_types),
        "description": incident.description,
        "firstSeen": iso_timestamp(incident.first_seen),
        "lastSeen": iso_timestamp(incident.last_seen),
        "endedAt": iso_timestamp(incident.ended_at) if incident.ended_at is not None else None,
        "trackIds": list(incident.track_ids),
        "llmModel": incident.model,
        "keyId": incident.key_id,
        "frameIds": list(incident.frame_ids),
        "status": incident.status.value,
        "updatedAt": iso_timestamp(incident.updated_at),
        "evidence": {
            "snapshotUrl": f"{EVIDENCE_URL}/{incident.incident_id}/snapshot.jpg" if incident.snapshot_path else None,
            "clipUrl": f"{EVIDENCE_URL}/{incident.incident_id}/clip.webm" if incident.clip_path else None,
        },
    }
    if actions is not None:
        data["actions"] = [action_to_json(a) for a in actions]
    return data


def action_to_json(action: OperatorAction) -> dict[str, object]:
    """One audit entry as sent."""
    return {
        "action": action.action.value,
        "who": action.who,
        "at": iso_timestamp(action.at),
        "note": action.note,
        "statusBefore": action.status_before.value,
        "statusAfter": action.status_after.value,
    }
