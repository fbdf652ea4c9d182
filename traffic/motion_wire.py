"""The ``traffic_stats`` payload: a camera's geometry, counts, occupancy, tracks and motion events (JSON-safe)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from traffic.analytics import MotionEvent, MotionUpdate
from traffic.geometry import CameraGeometry
from traffic.wire import iso_timestamp

JSON = dict[str, Any]
CountKey = tuple[str, str, str]
"""(line, direction, class)."""

RECENT_EVENTS = 20
"""Motion events a live ``traffic_stats`` event carries (newest last)."""


def count_field(line: str, direction: str, cls: str) -> str:
    """The Redis hash field of one count: ``line|direction|class`` (names cannot hold ``|``: escaped)."""
    return "|".join(part.replace("\\", "\\\\").replace("|", "\\p") for part in (line, direction, cls))


def parse_count_field(field: str) -> CountKey | None:
    """The (line, direction, class) of a ``count_field``; None when it is not one."""
    parts = field.split("|")
    if len(parts) != 3:
        return None
    a, b, c = (p.replace("\\p", "|").replace("\\\\", "\\") for p in parts)
    return a, b, c


def event_json(event: MotionEvent) -> JSON:
    """One motion event on the wire: the analytics' form with ``at`` as ISO-8601 UTC."""
    data = event.to_json()
    data["at"] = iso_timestamp(event.at)
    return data


def motion_snapshot(
    wire_id: str | int,
    captured_at: float,
    epoch: int | None,
    geometry: CameraGeometry,
    update: MotionUpdate,
) -> JSON:
    """What a frame's analytics show now: the geometry (in the frame's pixels), occupancy, tracks, near misses."""
    occupancy: dict[str, dict[str, int]] = {}
    for zone, cls, count in update.occupancy:
        occupancy.setdefault(zone, {})[cls] = count
    return {
        "cameraId": wire_id,
        "timestamp": iso_timestamp(captured_at),
        "trackingEpoch": epoch,
        "unit": update.unit,
        "calibrated": geometry.calibration is not None,
        "imageSize": list(geometry.image_size),
        "lines": [
            {
                "name": line.name,
                "start": _point(line.start),
                "end": _point(line.end),
                "forward": line.forward,
                "backward": line.backward,
            }
            for line in geometry.lines
        ],
        "zones": [
            {
                "name": zone.name,
                "polygon": [_point(p) for p in zone.polygon],
                "direction": None if zone.direction is None else _point(zone.direction, 3),
                "occupancy": occupancy.get(zone.name, {}),
                "total": sum(occupancy.get(zone.name, {}).values()),
            }
            for zone in geometry.zones
        ],
        "tracks": [track.to_json() for track in update.tracks],
        "nearMisses": [event_json(e) for e in update.active_near_misses],
    }


def stats_payload(
    snapshot: Mapping[str, Any], counts: Mapping[CountKey, int], since: float, events: Sequence[JSON]
) -> JSON:
    """The ``traffic_stats`` event (and REST body): the snapshot with each line's counts since ``since``
    and the given events (newest last)."""
    payload = dict(snapshot)
    lines = [dict(line) for line in snapshot.get("lines", [])]
    named = {line.get("name") for line in lines}
    for line_name in sorted({k[0] for k in counts} - named):
        lines.append({"name": line_name, "forward": None, "backward": None})  # a line since removed from config
    for line in lines:
        per: dict[str, dict[str, int]] = {}
        for direction in (line.get("forward"), line.get("backward")):
            if isinstance(direction, str):
                per[direction] = {}
        for (name, direction, cls), count in sorted(counts.items()):
            if name == line["name"] and count > 0:
                per.setdefault(direction, {})[cls] = count
        line["counts"] = per
        line["totals"] = {direction: sum(by_class.values()) for direction, by_class in per.items()}
    payload["lines"] = lines
    payload["since"] = iso_timestamp(since)
    payload["events"] = list(events)
    return payload


def sum_counts(hashes: Iterable[Mapping[str, int]]) -> dict[CountKey, int]:
    """Counts summed over several ``field → count`` maps (fields from ``count_field``; others skipped)."""
    total: dict[CountKey, int] = {}
    for counts in hashes:
        for field, count in counts.items():
            key = parse_count_field(field)
            if key is not None:
                total[key] = total.get(key, 0) + count
    return total


def _point(p: tuple[float, float], digits: int = 1) -> list[float]:
    """A point as a JSON pair, rounded."""
    return [round(p[0], digits), round(p[1], digits)]
