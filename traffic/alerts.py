"""Alert lifecycle (new → update* → end) keyed by a stable identity, not the per-frame group index.

Identity, with tracking on: ``camera:<group key>`` (``e<epoch>t<oldest member track id>``, see
``traffic.tracking.keyed_groups``): one incident is one alert while its oldest member stays in the
group, whatever its risk type, place or group index; a keyed sighting whose key has no alert joins the
active alert of the same epoch that shares most of its tracks (the oldest member left), else starts
one. Without tracks: ``camera:primary_type:CxR`` where the primary type is the verdict's first risk type (or
``unspecified``) and C, R the column and row of the group box centre on a coarse ``grid``×``grid``
(default 4×4) of the image. A sighting first joins the active alert with exactly that identity; else
the nearest active alert of the same camera and primary type whose latest box centre is less than
one grid cell away on both axes (so a group drifting over a cell line keeps its alert); else it
starts a new alert under its own identity.

A sighting is an OK verdict with a level of at least ``min_level`` (never ``none``) whose group is
known. Per ``update_alerts`` call:

- several sightings of one identity in the frame merge: the highest level wins (then lower index);
- an identity not active → a ``new`` event;
- an active identity → last_seen, frame, box and count refresh; an ``update`` event only when the
  level, risk types or description changed;
- an active alert not seen for ``end_after_s`` or more (``now - last_seen``) → an ``end`` event.
  Ends are decided on time only, so a PARTIAL or UNAVAILABLE frame, which has no verdict for some
  groups, never ends their alerts early.

Idempotency: the caller finalises a frame once (a set-once Redis flag), and ``update_alerts`` is
idempotent on its own for a frame it has already applied: an alert whose ``frame_id`` is the frame's
id is left exactly as it is and gives no event, so a redelivered chord body emits no second ``new``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from traffic.analytics import MotionEvent, MotionUpdate
from traffic.codec import CodecError, JsonReader
from traffic.models import BBox, FrameVerdict, GroupVerdict, RiskLevel, TrafficGroup
from traffic.wire import iso_timestamp

JSON = dict[str, Any]

ALERT_GRID = 4
"""Cells per image side of the identity grid."""

UNSPECIFIED = "unspecified"
"""Primary type of a verdict that names no risk type."""


class AlertKind(enum.StrEnum):
    """Lifecycle step reported by an ``alert`` event."""

    NEW = "new"
    UPDATE = "update"
    END = "end"


@dataclass(frozen=True)
class Alert:
    """One active (or just ended) alert of a camera."""

    alert_id: str
    camera_id: str
    level: RiskLevel
    risk_types: tuple[str, ...]
    description: str
    first_seen: float
    last_seen: float
    frame_id: str
    """The latest frame that saw it."""
    bbox: BBox
    """The group box in that frame."""
    count: int
    """Frames that saw it."""
    tracks: tuple[int, ...] = ()
    """Track ids of the group in that frame (with tracking on)."""
    source: str = "model"
    """``model`` (a verdict of the assessor) or ``rule-based`` (a near miss or wrong-way movement measured
    from tracks, raised with or without a model)."""
    model: str = ""
    """``llmModel`` of the latest verdict behind it (``rules`` for the offline assessor); empty when
    rule-based."""
    key_id: str | None = None
    """The API key id of the latest verdict's call (never the key), when a key made it."""


@dataclass(frozen=True)
class AlertEvent:
    """A lifecycle step of one alert, as sent in the ``alert`` Socket.IO event."""

    kind: AlertKind
    alert: Alert


@dataclass(frozen=True)
class _Sighting:
    """An alert-worthy verdict of one group of the frame, with its resolved identity."""

    alert_id: str
    verdict: GroupVerdict
    group: TrafficGroup


def _centre(bbox: BBox) -> tuple[float, float]:
    """Centre of a box."""
    return ((bbox[0] + bbox[2]) / 2.0, (bbox[1] + bbox[3]) / 2.0)


def _primary_type(verdict: GroupVerdict) -> str:
    """The verdict's first risk type, or ``unspecified``."""
    return verdict.risk_types[0] if verdict.risk_types else UNSPECIFIED


def alert_identity(
    camera_id: str, verdict: GroupVerdict, group: TrafficGroup, image_size: tuple[int, int], *, grid: int = ALERT_GRID
) -> str:
    """``camera:<group key>`` for a group with tracked members (one incident, one alert, whatever its risk
    type or place); else ``camera:primary_type:CxR`` with the group centre's column C and row R on the grid."""
    if group.key is not None:
        return f"{camera_id}:{group.key}"
    width, height = image_size
    cx, cy = _centre(group.bbox)
    column = min(grid - 1, max(0, math.floor(cx / width * grid)))
    row = min(grid - 1, max(0, math.floor(cy / height * grid)))
    return f"{camera_id}:{_primary_type(verdict)}:{column}x{row}"


def _nearby(alert: Alert, bbox: BBox, image_size: tuple[int, int], grid: int) -> float | None:
    """Normalised distance (in cells) from the alert's box centre to ``bbox``'s, if under one cell."""
    (ax, ay), (bx, by) = _centre(alert.bbox), _centre(bbox)
    dx, dy = abs(ax - bx) / image_size[0] * grid, abs(ay - by) / image_size[1] * grid
    return max(dx, dy) if dx < 1.0 and dy < 1.0 else None


def _resolve(
    active: Mapping[str, Alert],
    camera_id: str,
    verdict: GroupVerdict,
    group: TrafficGroup,
    image_size: tuple[int, int],
    grid: int,
) -> str:
    """The identity a sighting belongs to: exact, else the nearest active alert of its type, else its own."""
    own = alert_identity(camera_id, verdict, group, image_size, grid=grid)
    if own in active:
        return own
    if group.key is not None:
        return _sharing_tracks(active, camera_id, group) or own
    prefix = f"{camera_id}:{_primary_type(verdict)}:"
    near = [
        (distance, alert.alert_id)
        for alert in active.values()
        if alert.camera_id == camera_id
        and alert.alert_id.startswith(prefix)
        and (distance := _nearby(alert, group.bbox, image_size, grid)) is not None
    ]
    return min(near)[1] if near else own


def _sharing_tracks(active: Mapping[str, Alert], camera_id: str, group: TrafficGroup) -> str | None:
    """The active alert of the same tracking epoch sharing most tracks with ``group`` (its oldest member
    left, the others stayed), if any."""
    epoch = f"{camera_id}:{(group.key or '').split('t', 1)[0]}t"
    members = set(group.tracks)
    shared = [
        (len(members & set(alert.tracks)), alert.alert_id)
        for alert in active.values()
        if alert.camera_id == camera_id and alert.alert_id.startswith(epoch) and members & set(alert.tracks)
    ]
    return max(shared)[1] if shared else None


def _sightings(
    active: Mapping[str, Alert],
    camera_id: str,
    frame: FrameVerdict,
    groups: Mapping[int, TrafficGroup],
    image_size: tuple[int, int],
    min_level: RiskLevel,
    grid: int,
) -> list[_Sighting]:
    """One sighting per identity (highest level, then lowest group index), in group order."""
    floor = max(min_level.rank, RiskLevel.LOW.rank)
    best: dict[str, _Sighting] = {}
    ranked = sorted(frame.verdicts, key=lambda v: (-v.risk_level.rank, v.group_index))
    for verdict in ranked:
        group = groups.get(verdict.group_index)
        if not verdict.ok or verdict.risk_level.rank < floor or group is None:
            continue
        alert_id = _resolve(active, camera_id, verdict, group, image_size, grid)
        best.setdefault(alert_id, _Sighting(alert_id, verdict, group))
    return sorted(best.values(), key=lambda s: s.verdict.group_index)


def _apply(
    current: Alert | None, sighting: _Sighting, camera_id: str, frame_id: str, now: float
) -> tuple[Alert, AlertEvent | None]:
    """The alert after one sighting and the event it raises, if any."""
    verdict = sighting.verdict
    if current is None:
        alert = Alert(
            alert_id=sighting.alert_id,
            camera_id=camera_id,
            level=verdict.risk_level,
            risk_types=verdict.risk_types,
            description=verdict.description,
            first_seen=now,
            last_seen=now,
            frame_id=frame_id,
            bbox=sighting.group.bbox,
            count=1,
            tracks=sighting.group.tracks,
            model=verdict.model,
            key_id=verdict.key_id,
        )
        return alert, AlertEvent(AlertKind.NEW, alert)
    if current.frame_id == frame_id:
        return current, None
    changed = (current.level, current.risk_types, current.description) != (
        verdict.risk_level,
        verdict.risk_types,
        verdict.description,
    )
    alert = dataclasses.replace(
        current,
        level=verdict.risk_level,
        risk_types=verdict.risk_types,
        description=verdict.description,
        last_seen=max(now, current.last_seen),
        frame_id=frame_id,
        bbox=sighting.group.bbox,
        count=current.count + 1,
        tracks=sighting.group.tracks,
        model=verdict.model,
        key_id=verdict.key_id,
    )
    return alert, AlertEvent(AlertKind.UPDATE, alert) if changed else None


def update_alerts(
    active: Mapping[str, Alert],
    *,
    camera_id: str,
    frame: FrameVerdict,
    groups: Mapping[int, TrafficGroup],
    image_size: tuple[int, int],
    now: float,
    min_level: RiskLevel,
    end_after_s: float,
    grid: int = ALERT_GRID,
) -> tuple[dict[str, Alert], list[AlertEvent]]:
    """Fold one frame verdict into the active alerts; returns the new active set and the events.

    Events come as: new/update in group order, then ends by alert id. Rules in the module docstring.
    """
    alerts = dict(active)
    events: list[AlertEvent] = []
    for sighting in _sightings(active, camera_id, frame, groups, image_size, min_level, grid):
        alert, event = _apply(alerts.get(sighting.alert_id), sighting, camera_id, frame.frame_id, now)
        alerts[sighting.alert_id] = alert
        if event is not None:
            events.append(event)
    remaining, ended = expire_alerts(alerts, now, end_after_s)
    return remaining, events + ended


def expire_alerts(
    active: Mapping[str, Alert], now: float, end_after_s: float
) -> tuple[dict[str, Alert], list[AlertEvent]]:
    """End every alert not seen for ``end_after_s`` or more; returns the rest and the end events."""
    remaining: dict[str, Alert] = {}
    ended: list[AlertEvent] = []
    for alert_id in sorted(active):
        alert = active[alert_id]
        if now - alert.last_seen >= end_after_s:
            ended.append(AlertEvent(AlertKind.END, alert))
        else:
            remaining[alert_id] = alert
    return remaining, ended


def alert_to_json(event: AlertEvent) -> JSON:
    """The ``alert`` event payload; times are ISO-8601 UTC (ms), the box integer pixels."""
    alert = event.alert
    return {
        "kind": event.kind.value,
        "alertId": alert.alert_id,
        "cameraId": alert.camera_id,
        "level": alert.level.value,
        "riskTypes": list(alert.risk_types),
        "description": alert.description,
        "firstSeen": iso_timestamp(alert.first_seen),
        "lastSeen": iso_timestamp(alert.last_seen),
        "frameId": alert.frame_id,
        "bbox": [int(round(v)) for v in alert.bbox],
        "count": alert.count,
        "trackIds": list(alert.tracks),
        "source": alert.source,
        "llmModel": alert.model,
        "keyId": alert.key_id,
    }


def alert_from_json(data: object, where: str = "alert") -> AlertEvent:
    """Decode ``alert_to_json``'s output (as stored in Redis); exact to the millisecond and pixel."""
    r = JsonReader(data, where)
    count = r.integer("count")
    if count < 1:
        raise CodecError(f"{r.path('count')}: expected a positive count, got {count}")
    alert = Alert(
        alert_id=r.text("alertId"),
        camera_id=r.text("cameraId"),
        level=r.choice("level", RiskLevel),
        risk_types=r.texts("riskTypes"),
        description=r.text("description"),
        first_seen=r.timestamp("firstSeen"),
        last_seen=r.timestamp("lastSeen"),
        frame_id=r.text("frameId"),
        bbox=r.box("bbox"),
        count=count,
        tracks=r.integers("trackIds") if r.has("trackIds") else (),
        source=r.text("source") if r.has("source") else "model",
        model=r.text("llmModel") if r.has("llmModel") else "",
        key_id=r.optional_text("keyId") if r.has("keyId") else None,
    )
    return AlertEvent(r.choice("kind", AlertKind), alert)


RULE_BASED = "rule-based"
"""``Alert.source`` of alerts raised from tracks by rule."""


def motion_alert_id(camera_id: str, epoch: int, event: MotionEvent) -> str | None:
    """Identity of the alert a motion event belongs to: ``camera:nm:e<epoch>t<a>-t<b>`` for a near miss
    between tracks a < b, ``camera:ww:e<epoch>t<id>:<zone>`` for wrong-way movement; None for other kinds."""
    if event.kind == "near_miss" and len(event.track_ids) == 2:
        a, b = sorted(event.track_ids)
        return f"{camera_id}:nm:e{epoch}t{a}-t{b}"
    if event.kind == "wrong_way" and event.track_ids:
        return f"{camera_id}:ww:e{epoch}t{event.track_ids[0]}:{event.where}"
    return None


def _motion_level(event: MotionEvent) -> RiskLevel:
    """High for wrong-way movement and for a near miss at half its threshold or less, else medium."""
    if event.kind == "near_miss" and event.value is not None and event.threshold:
        return RiskLevel.HIGH if event.value <= event.threshold / 2 else RiskLevel.MEDIUM
    return RiskLevel.HIGH


def _motion_description(event: MotionEvent, unit: str) -> str:
    """A one-line account of the event, marked rule-based."""
    who = " and ".join(f"{cls} {tid}" for cls, tid in zip(event.classes, event.track_ids, strict=False))
    if event.kind == "near_miss":
        measure = "time to collision" if event.measure == "ttc" else "post-encroachment time"
        return f"near miss between {who}: {measure} {event.value or 0.0:.2f} s (rule-based)"
    speed = "" if event.value is None else f" at {event.value:.1f} {'km/h' if unit == 'm' else 'px/s'}"
    return f"{who} moving against the direction of {event.where}{speed} (rule-based)"


def _motion_box(event: MotionEvent, boxes: Mapping[int, BBox]) -> BBox:
    """The union of the event's road users' boxes in the frame (else a point box at its position)."""
    found = [boxes[t] for t in event.track_ids if t in boxes]
    if not found:
        x, y = event.position or (0.0, 0.0)
        return (x, y, x, y)
    return (
        min(b[0] for b in found),
        min(b[1] for b in found),
        max(b[2] for b in found),
        max(b[3] for b in found),
    )


def motion_alerts(
    active: Mapping[str, Alert],
    *,
    camera_id: str,
    epoch: int,
    update: MotionUpdate,
    boxes: Mapping[int, BBox],
    frame_id: str,
    now: float,
    end_after_s: float,
) -> tuple[dict[str, Alert], list[AlertEvent]]:
    """Fold a frame's near misses and wrong-way movements into the camera's rule-based alerts.

    A near miss in progress keeps its alert alive (``update`` when its level or minimum changes); an
    encounter's ``end`` reports the minimum reached; wrong-way movement raises one alert per track and
    zone. Rule-based alerts not refreshed for ``end_after_s`` end; other alerts are left alone.
    """
    alerts = dict(active)
    events: list[AlertEvent] = []
    raised = [*update.events, *update.active_near_misses]
    for event in raised:
        alert_id = motion_alert_id(camera_id, epoch, event)
        if alert_id is None:
            continue
        current = alerts.get(alert_id)
        level, description = _motion_level(event), _motion_description(event, update.unit)
        if current is not None and current.frame_id == frame_id and current.level.rank >= level.rank:
            continue  # several events of one identity in a frame: the worst stays
        if current is None:
            alert = Alert(
                alert_id=alert_id,
                camera_id=camera_id,
                level=level,
                risk_types=(event.kind,),
                description=description,
                first_seen=now,
                last_seen=now,
                frame_id=frame_id,
                bbox=_motion_box(event, boxes),
                count=1,
                tracks=tuple(sorted(event.track_ids)),
                source=RULE_BASED,
            )
            alerts[alert_id] = alert
            events.append(AlertEvent(AlertKind.NEW, alert))
            continue
        worse = level.rank > current.level.rank or (
            event.kind == "near_miss" and current.description != description and level.rank >= current.level.rank
        )
        alert = dataclasses.replace(
            current,
            level=max(level, current.level, key=lambda lv: lv.rank),
            description=description if worse else current.description,
            last_seen=max(now, current.last_seen),
            frame_id=frame_id,
            bbox=_motion_box(event, boxes),
            count=current.count + (0 if current.frame_id == frame_id else 1),
        )
        alerts[alert_id] = alert
        if worse:
            events.append(AlertEvent(AlertKind.UPDATE, alert))
    own = {k: v for k, v in alerts.items() if v.source == RULE_BASED and v.camera_id == camera_id}
    remaining, ended = expire_alerts(own, now, end_after_s)
    for alert_id in own.keys() - remaining.keys():
        del alerts[alert_id]
    return alerts, events + ended
