"""Traffic analytics of one camera's tracks: line counts, zone occupancy and dwell, speed, wrong-way driving
and near misses (time to collision and post-encroachment time).

Pure domain code. ``CameraAnalytics`` is fed the camera's tracked detections in capture order and answers a
``MotionUpdate`` per frame; between frames it keeps only what later frames need, and ``state``/``restore``
carry that between workers as JSON. Positions are anchors (bottom centre of the box) in image pixels; the
ground positions behind speeds and near misses are metres on a calibrated camera, else the pixels themselves.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from traffic import json_codec
from traffic.errors import TrackerStateError
from traffic.geometry import (
    CameraGeometry,
    Point,
    Zone,
    anchor,
    empty_geometry,
    point_in_polygon,
    segments_intersect,
    side_of_line,
)
from traffic.models import Detection
from traffic.settings import AnalyticsSettings
from traffic.surrogate_safety import grid_path, times_to_collision

log = logging.getLogger(__name__)

VEHICLES = frozenset({"bicycle", "car", "motorcycle", "bus", "truck"})
"""Classes that make a pair a candidate near miss (two pedestrians never are)."""

FORGET_MIN_S = 5.0
"""A track unseen for max(this, ``FORGET_SPEED_WINDOWS`` × speed window) seconds is forgotten."""
FORGET_SPEED_WINDOWS = 3.0
MIN_SPEED_SPAN_S = 0.25
"""A speed needs two points at least this far apart in time."""
MAX_HISTORY_POINTS = 64
"""At most this many points of each track are kept."""
MIN_POINT_GAP_S = 0.25
"""Kept points are at least this far apart (but the newest, which replaces a too-recent one): a fast camera
does not fill the history with near-duplicates."""
ANCHOR_DECIMALS = 1
"""Anchors are rounded to this many decimals of a pixel when they are taken (far below box jitter; keeps the
state short and exactly restorable, and is the trail's precision)."""
UNCALIBRATED_STOP_HEIGHTS = 0.05
"""Uncalibrated: slower than this many box heights per second is stopped."""
UNCALIBRATED_CLOSING_HEIGHTS = 0.2
"""Uncalibrated: a pair must close faster than this many (mean) box heights per second to be on a collision course."""
UNCALIBRATED_CELL_PX = 40.0
"""Uncalibrated: side (pixels) of the post-encroachment cells; calibrated they are ``conflict_radius_m`` wide."""
WRONG_WAY_COS = -0.5
"""Moving against a lane: the cosine between the track's motion and the lane's direction is below this."""
PET_REPEAT_S = 10.0
"""A pair raises at most one post-encroachment near miss in this many seconds."""
PET_KEEP_FACTOR = 2.0
"""Cell occupants older than this many ``pet_s`` are forgotten."""
MAX_PATH_CELLS = 64
"""A move across more cells than this between two frames is a jump (no path is traced, no PET measured)."""
LATE_FRAME_S = 60.0
"""A frame older than the last by at most this is ignored; by more, the camera's clock was reset: start over."""
KMH_PER_MPS = 3.6
FOLLOWING_COS = 0.7
"""Two road users whose headings differ by less than about 45° through one cell follow each other: no PET."""
ENCOUNTER_GRACE_S = 0.5
"""A near miss in progress ends only after this long without its pair below the TTC threshold (box jitter
around the threshold, or a frame the detector missed one of them, does not split one encounter in two)."""
STATE_VERSION = 3

_HistoryPoint = tuple[float, float, float, float, float]
"""``(t, image x, image y, ground x, ground y)``."""
_Pair = tuple[int, int]
_Cell = tuple[int, int]
_IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class MotionEvent:
    """Something a frame's tracks did: crossed a line, dwelt or drove the wrong way in a zone, or nearly collided."""

    kind: str
    """``line_crossing``, ``dwell``, ``wrong_way`` or ``near_miss``."""
    at: float
    """Timestamp (seconds) of the frame that raised it (of an active near miss: when it started)."""
    track_ids: tuple[int, ...]
    classes: tuple[str, ...]
    where: str = ""
    """The line or zone ("" for near misses)."""
    direction: str = ""
    """``line_crossing``: the line's forward or backward name."""
    measure: str = ""
    """``near_miss``: ``ttc`` or ``pet``."""
    value: float | None = None
    """``near_miss``: the least TTC/PET reached (s); ``dwell``: seconds stopped; ``wrong_way``: the speed."""
    threshold: float | None = None
    position: Point | None = None
    """Image pixels: the track's anchor (TTC near miss: midpoint of the pair's anchors; PET near miss: where the
    second road user entered the cell the first had left)."""
    phase: str = ""
    """``near_miss``: ``start`` when the pair first goes below the threshold, ``end`` when the encounter ends."""

    def to_json(self) -> dict[str, Any]:
        """The event as sent on the wire (camelCase; empty strings left out)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "at": self.at,
            "trackIds": list(self.track_ids),
            "classes": list(self.classes),
        }
        for key, text in (("where", self.where), ("direction", self.direction), ("measure", self.measure)):
            if text:
                out[key] = text
        out["value"] = None if self.value is None else round(self.value, 3)
        out["threshold"] = self.threshold
        out["position"] = None if self.position is None else [round(self.position[0], 1), round(self.position[1], 1)]
        if self.phase:
            out["phase"] = self.phase
        if self.kind in ("near_miss", "wrong_way"):
            out["rule"] = "rule-based"
        return out


@dataclass(frozen=True)
class TrackView:
    """One track as the dashboard draws it this frame."""

    track_id: int
    cls: str
    trail: tuple[Point, ...]
    """Image-pixel anchors over the last ``trail_s``, oldest first, rounded to 0.1 px."""
    speed: float | None
    """None until two points span at least ``MIN_SPEED_SPAN_S``."""
    speed_unit: str
    """``km/h`` when calibrated, else ``px/s``."""
    zones: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The track as sent on the wire."""
        return {
            "trackId": self.track_id,
            "class": self.cls,
            "trail": [[x, y] for x, y in self.trail],
            "speed": None if self.speed is None else round(self.speed, 1),
            "speedUnit": self.speed_unit,
            "zones": list(self.zones),
        }


@dataclass(frozen=True)
class MotionUpdate:
    """Everything one frame adds: its events, its tracks, zone occupancy and the near misses in progress."""

    events: tuple[MotionEvent, ...]
    tracks: tuple[TrackView, ...]
    occupancy: tuple[tuple[str, str, int], ...]
    """``(zone, class, count)`` for every zone and class with a count above zero (zones in config order)."""
    active_near_misses: tuple[MotionEvent, ...]
    """Encounters in progress (phase ``start``, value the least TTC so far)."""
    unit: str
    """``m`` or ``px``: the unit of ground distances."""


@dataclass(slots=True)
class _LineMemo:
    """A track's last confirmed side of a line and where it was last confirmed."""

    side: int
    ref: Point


@dataclass(slots=True)
class _Stay:
    """A track's current stay in a zone."""

    stopped_since: float | None = None
    dwell_done: bool = False
    wrong_since: float | None = None
    wrong_done: bool = False


@dataclass(slots=True)
class _Track:
    """What is remembered of one track between frames."""

    history: list[_HistoryPoint] = field(default_factory=list)
    lines: dict[str, _LineMemo] = field(default_factory=dict)
    counted: set[str] = field(default_factory=set)
    zones: dict[str, _Stay] = field(default_factory=dict)


@dataclass(slots=True)
class _Encounter:
    """A time-to-collision near miss in progress."""

    classes: tuple[str, str]
    start: float
    minimum: float
    position: Point
    last_below: float = 0.0
    """When the pair was last below the threshold."""

    def event(self, pair: _Pair, at: float, threshold: float, phase: str) -> MotionEvent:
        """The encounter as a ``near_miss`` event (value: the least TTC so far)."""
        return MotionEvent(
            "near_miss",
            at,
            pair,
            self.classes,
            measure="ttc",
            value=self.minimum,
            threshold=threshold,
            position=self.position,
            phase=phase,
        )


_Occupant = tuple[int, str, float, float, float]
"""The last road user in a post-encroachment cell: ``(track id, class, last time in the cell, its ground heading
x, y)`` (the heading is (0, 0) when its velocity was not known yet)."""

_Pass = tuple[float, float, int, float]
"""One track's passage through a cell since its previous frame: ``(time in, time out, index into the frame's
tracks, fraction of its move done on entry)``; the fraction is negative for the cell it was already in."""


@dataclass(slots=True)
class _Seen:
    """A track as seen in the current frame."""

    track_id: int
    cls: str
    image: Point
    ground: Point
    width: float
    height: float
    previous: _HistoryPoint | None
    velocity: Point | None = None
    """Ground units per second."""
    image_velocity: Point | None = None
    speed: float | None = None
    """Ground units per second."""


@dataclass(frozen=True)
class _Scene:
    """A geometry at one frame size, with what is precomputed from it."""

    geometry: CameraGeometry
    zone_boxes: tuple[tuple[float, float, float, float], ...]

    @property
    def calibrated(self) -> bool:
        """Whether ground units are metres."""
        return self.geometry.calibration is not None


class CameraAnalytics:
    """One camera's analytics, fed its tracked detections in capture order."""

    def __init__(self, geometry: CameraGeometry | None, settings: AnalyticsSettings) -> None:
        self._geometry = geometry
        self._settings = settings
        self._scene: _Scene | None = None
        self._pair_cache: tuple[int, _IntArray, _IntArray] | None = None
        self._now: float | None = None
        self._size: tuple[int, int] | None = None
        self._tracks: dict[int, _Track] = {}
        self._encounters: dict[_Pair, _Encounter] = {}
        self._cells: dict[_Cell, _Occupant] = {}
        self._pet_said: dict[_Pair, float] = {}

    # ------------------------------------------------------------------ public

    def reset(self) -> None:
        """Forget every track, encounter and cell (counts start again)."""
        self._now = None
        self._size = None
        self._tracks.clear()
        self._encounters.clear()
        self._cells.clear()
        self._pet_said.clear()

    def update(self, detections: Sequence[Detection], timestamp: float, image_size: tuple[int, int]) -> MotionUpdate:
        """Take one frame's detections (only those with a track take part) and return what it adds."""
        now = float(timestamp)
        size = (int(image_size[0]), int(image_size[1]))
        if self._now is not None and now < self._now:
            if self._now - now <= LATE_FRAME_S:
                log.debug("analytics: frame at %.3f is older than the last (%.3f); ignored", now, self._now)
                return MotionUpdate((), (), (), self._active_listing(), self._scene_for(size).geometry.unit)
            log.info("analytics: the camera clock went back from %.3f to %.3f; starting over", self._now, now)
            self.reset()
        if self._size is not None and size != self._size:
            log.info("analytics: frame size changed from %s to %s; starting over", self._size, size)
            self.reset()
        scene = self._scene_for(size)
        self._size = size
        self._now = now
        seen = self._observe(detections, scene, now)
        events: list[MotionEvent] = []
        occupancy: dict[str, dict[str, int]] = {z.name: {} for z in scene.geometry.zones}
        views: list[TrackView] = []
        unit = "km/h" if scene.calibrated else "px/s"
        for s in seen:
            track = self._tracks[s.track_id]
            self._count_lines(scene, track, s, now, events)
            zones = self._zones(scene, track, s, now, events)
            for name in zones:
                occupancy[name][s.cls] = occupancy[name].get(s.cls, 0) + 1
            views.append(
                TrackView(s.track_id, s.cls, self._trail(track, now), self._reported(s.speed, scene), unit, zones)
            )
        self._near_misses(seen, scene, now, events)
        self._post_encroachment(seen, scene, now, events)
        self._forget(now)
        return MotionUpdate(
            tuple(events),
            tuple(views),
            tuple((zone, cls, n) for zone, counts in occupancy.items() for cls, n in sorted(counts.items()) if n > 0),
            self._active_listing(),
            scene.geometry.unit,
        )

    def state(self) -> bytes:
        """What later frames need, as compact UTF-8 JSON (never pickle)."""
        tracks = []
        for tid in sorted(self._tracks):
            track = self._tracks[tid]
            tracks.append(
                [
                    tid,
                    [p[:3] for p in track.history],
                    {name: [m.side, m.ref[0], m.ref[1]] for name, m in track.lines.items()},
                    sorted(track.counted),
                    {
                        name: [z.stopped_since, z.dwell_done, z.wrong_since, z.wrong_done]
                        for name, z in track.zones.items()
                    },
                ]
            )
        data = {
            "v": STATE_VERSION,
            "now": self._now,
            "size": None if self._size is None else list(self._size),
            "tracks": tracks,
            "encounters": [
                [a, b, e.classes[0], e.classes[1], e.start, e.minimum, e.position[0], e.position[1], e.last_below]
                for (a, b), e in sorted(self._encounters.items())
            ],
            "cells": [[cx, cy, *occupant] for (cx, cy), occupant in sorted(self._cells.items())],
            "pet": [[a, b, t] for (a, b), t in sorted(self._pet_said.items())],
        }
        return json_codec.dumps(data)

    def restore(self, data: bytes) -> None:
        """Continue from ``state()``'s output, dropping unconfigured lines and zones; else ``TrackerStateError``."""
        try:
            raw = json_codec.loads(data)
        except json_codec.JsonError as exc:
            raise TrackerStateError(f"analytics state is not JSON: {exc}") from exc
        if not isinstance(raw, dict) or set(raw) != {"v", "now", "size", "tracks", "encounters", "cells", "pet"}:
            raise TrackerStateError("analytics state has the wrong shape")
        if raw["v"] != STATE_VERSION or isinstance(raw["v"], bool):
            raise TrackerStateError(f"analytics state of version {raw['v']!r}, expected {STATE_VERSION}")
        now = _opt_num(raw["now"], "now")
        size: tuple[int, int] | None = None
        if raw["size"] is not None:
            w, h = _items(raw["size"], 2, "size")
            size = (_int(w, "size"), _int(h, "size"))
            if size[0] <= 0 or size[1] <= 0:
                raise TrackerStateError("analytics state has a bad frame size")
        tracks_raw = _items(raw["tracks"], None, "tracks")
        if tracks_raw and (size is None or now is None):
            raise TrackerStateError("analytics state has tracks but no frame")
        scene = self._scene_for(size) if size is not None else None
        line_names = {ln.name for ln in scene.geometry.lines} if scene is not None else set()
        zone_names = {z.name for z in scene.geometry.zones} if scene is not None else set()
        tracks: dict[int, _Track] = {}
        for item in tracks_raw:
            tid_raw, history_raw, lines_raw, counted_raw, zones_raw = _items(item, 5, "track")
            tid = _int(tid_raw, "track id")
            if tid in tracks:
                raise TrackerStateError(f"analytics state repeats track {tid}")
            assert scene is not None
            tracks[tid] = _restore_track(
                tid, history_raw, lines_raw, counted_raw, zones_raw, scene, line_names, zone_names
            )
        encounters: dict[_Pair, _Encounter] = {}
        for item in _items(raw["encounters"], None, "encounters"):
            a_raw, b_raw, ca, cb, start, minimum, px, py, last = _items(item, 9, "encounter")
            pair = (_int(a_raw, "encounter"), _int(b_raw, "encounter"))
            if pair[0] >= pair[1] or pair in encounters:
                raise TrackerStateError("analytics state has a bad encounter pair")
            encounters[pair] = _Encounter(
                (_str(ca, "class"), _str(cb, "class")),
                _num(start, "encounter"),
                _num(minimum, "encounter"),
                (_num(px, "encounter"), _num(py, "encounter")),
                _num(last, "encounter"),
            )
        cells: dict[_Cell, _Occupant] = {}
        for item in _items(raw["cells"], None, "cells"):
            cx, cy, tid_raw, cls, left, hx, hy = _items(item, 7, "cell")
            key = (_int(cx, "cell"), _int(cy, "cell"))
            if key in cells:
                raise TrackerStateError("analytics state repeats a cell")
            heading = (_num(hx, "cell"), _num(hy, "cell"))
            cells[key] = (_int(tid_raw, "cell"), _str(cls, "class"), _num(left, "cell"), *heading)
        pet_said: dict[_Pair, float] = {}
        for item in _items(raw["pet"], None, "pet"):
            a_raw, b_raw, t = _items(item, 3, "pet")
            pet_said[(_int(a_raw, "pet"), _int(b_raw, "pet"))] = _num(t, "pet")
        self._now, self._size = now, size
        self._tracks, self._encounters, self._cells, self._pet_said = tracks, encounters, cells, pet_said

    # ------------------------------------------------------------------ frame stages

    def _scene_for(self, size: tuple[int, int]) -> _Scene:
        """The geometry for frames of ``size`` (cached: frames rarely change size)."""
        if self._scene is not None and self._scene.geometry.image_size == size:
            return self._scene
        if self._geometry is None:
            geometry = empty_geometry("", size[0], size[1])
        else:
            geometry = self._geometry.scaled(size[0], size[1])
        boxes = tuple(_bounds(z) for z in geometry.zones)
        self._scene = _Scene(geometry, boxes)
        return self._scene

    def _observe(self, detections: Sequence[Detection], scene: _Scene, now: float) -> list[_Seen]:
        """This frame's tracks (one detection each, the most confident), ascending by id, histories updated."""
        best: dict[int, Detection] = {}
        for d in detections:
            tid = d.track_id
            if tid is None:
                continue
            if not all(math.isfinite(v) for v in d.bbox):
                log.debug("analytics: track %d has a non-finite box; ignored", tid)
                continue
            held = best.get(tid)
            if held is None or d.confidence > held.confidence:
                best[tid] = d
        seen: list[_Seen] = []
        window = self._settings.speed_window_s
        horizon = max(window, self._settings.trail_s)
        geometry = scene.geometry
        for tid in sorted(best):
            d = best[tid]
            ax, ay = anchor(d.bbox)
            image = (float(round(ax, ANCHOR_DECIMALS)), float(round(ay, ANCHOR_DECIMALS)))
            ground = geometry.to_ground(image)
            track = self._tracks.get(tid)
            if track is None:
                track = self._tracks[tid] = _Track()
            previous = track.history[-1] if track.history else None
            _remember(track.history, (now, image[0], image[1], ground[0], ground[1]), horizon)
            s = _Seen(tid, d.cls, image, ground, float(d.bbox[2] - d.bbox[0]), float(d.bbox[3] - d.bbox[1]), previous)
            motion = _motion(track.history, window)
            if motion is not None:
                s.velocity, s.image_velocity = motion
                s.speed = math.hypot(*s.velocity)
            seen.append(s)
        return seen

    def _count_lines(self, scene: _Scene, track: _Track, s: _Seen, now: float, events: list[MotionEvent]) -> None:
        """Count the track on every line it has just crossed (once per line, ever)."""
        margin = self._settings.line_margin_px
        for line in scene.geometry.lines:
            if line.name in track.counted:
                continue
            distance = side_of_line(line, s.image)
            if abs(distance) <= margin:
                continue  # too close to tell: the confirmed side stays
            side = 1 if distance > 0 else -1
            memo = track.lines.get(line.name)
            if memo is None:
                track.lines[line.name] = _LineMemo(side, s.image)
                continue
            if memo.side != side and segments_intersect(memo.ref, s.image, line.start, line.end):
                del track.lines[line.name]
                track.counted.add(line.name)
                events.append(
                    MotionEvent(
                        "line_crossing",
                        now,
                        (s.track_id,),
                        (s.cls,),
                        where=line.name,
                        direction=line.forward if memo.side > 0 else line.backward,
                        position=s.image,
                    )
                )
                continue
            memo.side, memo.ref = side, s.image

    def _zones(self, scene: _Scene, track: _Track, s: _Seen, now: float, events: list[MotionEvent]) -> tuple[str, ...]:
        """The zones the track is in (config order); dwell and wrong-way events of its stays."""
        settings = self._settings
        x, y = s.image
        inside: list[str] = []
        if s.speed is None:
            stopped: bool | None = None
        elif scene.calibrated:
            stopped = s.speed < settings.stop_speed_mps
        else:
            stopped = s.speed < UNCALIBRATED_STOP_HEIGHTS * s.height
        for zone, (x1, y1, x2, y2) in zip(scene.geometry.zones, scene.zone_boxes, strict=True):
            if not (x1 <= x <= x2 and y1 <= y <= y2 and point_in_polygon(s.image, zone.polygon)):
                track.zones.pop(zone.name, None)  # a stay ends when the track is seen outside
                continue
            inside.append(zone.name)
            stay = track.zones.get(zone.name)
            if stay is None:
                stay = track.zones[zone.name] = _Stay()
            if stopped:
                if stay.stopped_since is None:
                    stay.stopped_since = now
                limit = settings.dwell_s if zone.max_dwell_s is None else zone.max_dwell_s
                stopped_for = now - stay.stopped_since
                if not stay.dwell_done and stopped_for > limit:
                    stay.dwell_done = True
                    events.append(
                        MotionEvent(
                            "dwell",
                            now,
                            (s.track_id,),
                            (s.cls,),
                            where=zone.name,
                            value=stopped_for,
                            threshold=limit,
                            position=s.image,
                        )
                    )
            else:
                stay.stopped_since = None
            if zone.direction is None:
                continue
            if stopped is False and _against(s.image_velocity, zone.direction):
                if stay.wrong_since is None:
                    stay.wrong_since = now
                if not stay.wrong_done and now - stay.wrong_since >= settings.wrong_way_s:
                    stay.wrong_done = True
                    events.append(
                        MotionEvent(
                            "wrong_way",
                            now,
                            (s.track_id,),
                            (s.cls,),
                            where=zone.name,
                            value=self._reported(s.speed, scene),
                            position=s.image,
                        )
                    )
            else:
                stay.wrong_since = None
        return tuple(inside)

    def _near_misses(self, seen: list[_Seen], scene: _Scene, now: float, events: list[MotionEvent]) -> None:
        """Start, follow and end time-to-collision encounters."""
        below = self._pairs_below_ttc(seen, scene)
        by_id = {s.track_id: s for s in seen}
        ttc_s = self._settings.ttc_s
        for pair in sorted(self._encounters):
            a, b = by_id.get(pair[0]), by_id.get(pair[1])
            enc = self._encounters[pair]
            if a is not None and b is not None:
                enc.position = _midpoint(a.image, b.image)
            if pair in below:
                enc.minimum = min(enc.minimum, below[pair])
                enc.last_below = now
                continue
            if now - enc.last_below < ENCOUNTER_GRACE_S:
                continue
            del self._encounters[pair]
            events.append(enc.event(pair, now, ttc_s, "end"))
        for pair in sorted(below):
            if pair in self._encounters:
                continue
            a, b = by_id[pair[0]], by_id[pair[1]]
            enc = _Encounter((a.cls, b.cls), now, below[pair], _midpoint(a.image, b.image), now)
            self._encounters[pair] = enc
            events.append(enc.event(pair, now, ttc_s, "start"))

    def _pairs_below_ttc(self, seen: list[_Seen], scene: _Scene) -> dict[_Pair, float]:
        """The pairs (with a vehicle, both moving with a known velocity) on a collision course within ``ttc_s``."""
        settings = self._settings
        movers = [s for s in seen if s.velocity is not None]
        n = len(movers)
        if n < 2:
            return {}
        vehicle = np.fromiter((s.cls in VEHICLES for s in movers), dtype=bool, count=n)
        if not vehicle.any():
            return {}
        cols = np.array(
            [(s.ground[0], s.ground[1], *s.velocity, s.width, s.height) for s in movers if s.velocity is not None],
            dtype=np.float64,
        )
        px, py, vx, vy, w, h = cols.T
        i, j = self._pair_index(n)
        keep = vehicle[i] | vehicle[j]
        i, j = i[keep], j[keep]
        dpx, dpy = px[j] - px[i], py[j] - py[i]
        dist = np.hypot(dpx, dpy)
        speed = np.hypot(vx, vy)
        radius: npt.NDArray[np.float64] | float
        if scene.calibrated:
            radius = settings.conflict_radius_m
        else:
            radius = (w[i] + w[j]) / 2.0
        # Cheap bound first: the gap cannot shrink faster than the two speeds summed.
        near = dist - radius <= (speed[i] + speed[j]) * settings.ttc_s
        i, j, dpx, dpy, dist = i[near], j[near], dpx[near], dpy[near], dist[near]
        if not isinstance(radius, float):
            radius = radius[near]
        if i.size == 0:
            return {}
        dvx, dvy = vx[j] - vx[i], vy[j] - vy[i]
        with np.errstate(divide="ignore", invalid="ignore"):
            closing = np.where(dist > 0.0, -(dpx * dvx + dpy * dvy) / dist, np.hypot(dvx, dvy))
        if scene.calibrated:
            min_closing: npt.NDArray[np.float64] | float = settings.min_closing_speed_mps
        else:
            min_closing = UNCALIBRATED_CLOSING_HEIGHTS * (h[i] + h[j]) / 2.0
        ttc = times_to_collision(dpx, dpy, dvx, dvy, radius)
        hit = (closing >= min_closing) & (ttc < settings.ttc_s)
        return {
            (movers[a].track_id, movers[b].track_id): t
            for a, b, t in zip(i[hit].tolist(), j[hit].tolist(), ttc[hit].tolist(), strict=True)
        }

    def _pair_index(self, n: int) -> tuple[_IntArray, _IntArray]:
        """Indices ``i < j`` of every pair of ``n`` tracks (cached for the last ``n``)."""
        if self._pair_cache is None or self._pair_cache[0] != n:
            i, j = np.triu_indices(n, 1)
            self._pair_cache = (n, i, j)
        return self._pair_cache[1], self._pair_cache[2]

    def _post_encroachment(self, seen: list[_Seen], scene: _Scene, now: float, events: list[MotionEvent]) -> None:
        """Post-encroachment times: a track entering a ground cell soon after another left it.

        The ground is cut into square cells (``conflict_radius_m`` wide when calibrated, ``UNCALIBRATED_CELL_PX``
        pixels otherwise) and each track's move since its previous frame is traced through them, with times
        interpolated along it, so that sparse frames still see paths cross. Each cell remembers its last
        occupant; a track entering it after that occupant left (their stays do not overlap) measures
        PET = its entry time − the occupant's last time there, at the point (image px) where it entered.
        """
        settings = self._settings
        cell = settings.conflict_radius_m if scene.calibrated else UNCALIBRATED_CELL_PX
        keep_s = PET_KEEP_FACTOR * settings.pet_s
        passes: dict[_Cell, list[_Pass]] = {}
        for index, s in enumerate(seen):
            gx, gy = s.ground
            if not (math.isfinite(gx) and math.isfinite(gy)):
                continue
            prev = s.previous
            spans = None
            if prev is not None and now - prev[0] <= keep_s and math.isfinite(prev[3]) and math.isfinite(prev[4]):
                spans = grid_path((prev[3], prev[4]), s.ground, cell, MAX_PATH_CELLS)
            if prev is None or spans is None:
                _add_pass(passes, (math.floor(gx / cell), math.floor(gy / cell)), (now, now, index, -1.0))
                continue
            t0, dt = prev[0], now - prev[0]
            for k, (cx, cy, s_in, s_out) in enumerate(spans):
                t_out = now if s_out >= 1.0 else t0 + s_out * dt
                _add_pass(passes, (cx, cy), (t0 + s_in * dt, t_out, index, s_in if k else -1.0))
        found: dict[_Pair, tuple[float, tuple[str, str], _Pass]] = {}
        cells = self._cells
        for key, here in passes.items():
            stored = cells.get(key)
            if len(here) == 1:  # the common case: one track in the cell this frame
                b = here[0]
                b_id = seen[b[2]].track_id
                if b[3] >= 0.0 and stored is not None and stored[0] != b_id and stored[2] < b[0]:
                    self._pet_candidate(found, seen, b, stored)
                if stored is None or b[1] >= stored[2]:
                    cells[key] = (b_id, seen[b[2]].cls, b[1], *_heading(seen[b[2]]))
                continue
            present = {seen[x[2]].track_id for x in here}
            for b in here:
                if b[3] < 0.0:
                    continue  # the cell it was in the frame before: not an entry
                last: _Occupant | None = None
                if stored is not None and stored[2] < b[0] and stored[0] not in present:
                    last = stored
                for x in here:
                    if x[1] < b[0] and (last is None or x[1] > last[2]):
                        last = (seen[x[2]].track_id, seen[x[2]].cls, x[1], *_heading(seen[x[2]]))
                if last is not None:
                    self._pet_candidate(found, seen, b, last)
            newest = here[0]
            for x in here:
                if x[1] > newest[1] or (x[1] == newest[1] and seen[x[2]].track_id > seen[newest[2]].track_id):
                    newest = x
            if stored is None or newest[1] >= stored[2]:
                cells[key] = (seen[newest[2]].track_id, seen[newest[2]].cls, newest[1], *_heading(seen[newest[2]]))
        for pair in sorted(found):
            said = self._pet_said.get(pair)
            if said is not None and now - said < PET_REPEAT_S:
                continue
            self._pet_said[pair] = now
            pet, classes, b = found[pair]
            entering = seen[b[2]]
            start = entering.previous
            assert start is not None  # an entry lies on a traced move
            position = _lerp((start[1], start[2]), entering.image, b[3])
            events.append(
                MotionEvent(
                    "near_miss",
                    now,
                    pair,
                    classes,
                    measure="pet",
                    value=pet,
                    threshold=settings.pet_s,
                    position=position,
                    phase="end",
                )
            )
        for key in [k for k, o in cells.items() if now - o[2] > keep_s]:
            del cells[key]
        for pair in [p for p, t in self._pet_said.items() if now - t >= PET_REPEAT_S]:
            del self._pet_said[pair]

    def _pet_candidate(
        self, found: dict[_Pair, tuple[float, tuple[str, str], _Pass]], seen: list[_Seen], b: _Pass, last: _Occupant
    ) -> None:
        """Note the PET of track pass ``b`` entering the cell ``last`` left, if it is a near miss (least per pair)."""
        entering = seen[b[2]]
        if last[0] == entering.track_id:
            return
        pet = b[0] - last[2]
        if pet >= self._settings.pet_s or (entering.cls not in VEHICLES and last[1] not in VEHICLES):
            return
        if _following(entering, (last[3], last[4])):
            return
        if entering.track_id < last[0]:
            pair, classes = (entering.track_id, last[0]), (entering.cls, last[1])
        else:
            pair, classes = (last[0], entering.track_id), (last[1], entering.cls)
        held = found.get(pair)
        if held is None or pet < held[0]:
            found[pair] = (pet, classes, b)

    def _forget(self, now: float) -> None:
        """Drop the tracks unseen for too long."""
        forget_s = max(FORGET_MIN_S, FORGET_SPEED_WINDOWS * self._settings.speed_window_s)
        for tid in [t for t, tr in self._tracks.items() if now - tr.history[-1][0] > forget_s]:
            del self._tracks[tid]

    def _trail(self, track: _Track, now: float) -> tuple[Point, ...]:
        """The track's anchors over the last ``trail_s``, oldest first, to 0.1 px."""
        history = track.history
        start = bisect_left(history, now - self._settings.trail_s, key=_history_time)
        return tuple((p[1], p[2]) for p in history[start:])  # anchors are taken to 0.1 px already

    def _reported(self, speed: float | None, scene: _Scene) -> float | None:
        """A ground speed in the unit the dashboard shows (km/h calibrated, px/s otherwise)."""
        if speed is None:
            return None
        return speed * KMH_PER_MPS if scene.calibrated else speed

    def _active_listing(self) -> tuple[MotionEvent, ...]:
        """The encounters in progress, as ``start`` events carrying the least TTC so far."""
        ttc_s = self._settings.ttc_s
        return tuple(e.event(pair, e.start, ttc_s, "start") for pair, e in sorted(self._encounters.items()))


# ---------------------------------------------------------------------- helpers


def _history_time(point: _HistoryPoint) -> float:
    """A history point's timestamp."""
    return point[0]


def _heading(s: _Seen) -> Point:
    """A track's ground velocity as seen in this frame, (0, 0) while unknown."""
    return s.velocity if s.velocity is not None else (0.0, 0.0)


def _following(entering: _Seen, earlier: Point) -> bool:
    """Whether ``entering`` moves the way the cell's earlier occupant moved through it (within
    ``FOLLOWING_COS``): one road user following another through a cell is a headway, not a crossing."""
    if entering.velocity is None:
        return False
    (ax, ay), (bx, by) = entering.velocity, earlier
    norm = math.hypot(ax, ay) * math.hypot(bx, by)
    return norm > 0 and (ax * bx + ay * by) / norm > FOLLOWING_COS


def _remember(history: list[_HistoryPoint], point: _HistoryPoint, horizon: float) -> None:
    """Add ``point`` and trim: one point at least ``horizon`` old is kept (a speed's far end), spacing ≥
    ``MIN_POINT_GAP_S`` but for the newest, at most ``MAX_HISTORY_POINTS``."""
    if len(history) >= 2 and history[-1][0] - history[-2][0] < MIN_POINT_GAP_S:
        history[-1] = point
    else:
        history.append(point)
    cutoff = point[0] - horizon
    drop = 0
    while drop + 1 < len(history) and history[drop + 1][0] <= cutoff:
        drop += 1
    drop = max(drop, len(history) - MAX_HISTORY_POINTS)
    if drop:
        del history[:drop]


def _motion(history: list[_HistoryPoint], window: float) -> tuple[Point, Point] | None:
    """Ground and image velocity (per second) from the newest point at least ``window`` old (else the oldest)
    to the newest; None when those span less than ``MIN_SPEED_SPAN_S`` or the ground is not finite."""
    newest = history[-1]
    k = bisect_right(history, newest[0] - window, key=_history_time) - 1
    ref = history[k] if k >= 0 else history[0]
    span = newest[0] - ref[0]
    if span < MIN_SPEED_SPAN_S:
        return None
    gx, gy = (newest[3] - ref[3]) / span, (newest[4] - ref[4]) / span
    if not (math.isfinite(gx) and math.isfinite(gy)):
        return None
    return (gx, gy), ((newest[1] - ref[1]) / span, (newest[2] - ref[2]) / span)


def _against(velocity: Point | None, direction: Point) -> bool:
    """Whether ``velocity`` points against ``direction`` (cosine below ``WRONG_WAY_COS``)."""
    if velocity is None:
        return False
    norm = math.hypot(*velocity) * math.hypot(*direction)
    if norm == 0.0:
        return False
    return (velocity[0] * direction[0] + velocity[1] * direction[1]) / norm < WRONG_WAY_COS


def _bounds(zone: Zone) -> tuple[float, float, float, float]:
    """The zone's bounding box ``(x1, y1, x2, y2)``."""
    xs = [p[0] for p in zone.polygon]
    ys = [p[1] for p in zone.polygon]
    if not xs:
        return (math.inf, math.inf, -math.inf, -math.inf)
    return (min(xs), min(ys), max(xs), max(ys))


def _add_pass(passes: dict[_Cell, list[_Pass]], key: _Cell, item: _Pass) -> None:
    """Append ``item`` to the passes through cell ``key``."""
    here = passes.get(key)
    if here is None:
        passes[key] = [item]
    else:
        here.append(item)


def _midpoint(a: Point, b: Point) -> Point:
    """The point halfway between ``a`` and ``b``."""
    return ((a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0)


def _lerp(a: Point, b: Point, s: float) -> Point:
    """The point ``s`` of the way from ``a`` to ``b``, to ``ANCHOR_DECIMALS`` (as anchors are)."""
    return (round(a[0] + (b[0] - a[0]) * s, ANCHOR_DECIMALS), round(a[1] + (b[1] - a[1]) * s, ANCHOR_DECIMALS))


# ---------------------------------------------------------------------- state validation


def _restore_track(
    tid: int,
    history_raw: object,
    lines_raw: object,
    counted_raw: object,
    zones_raw: object,
    scene: _Scene,
    line_names: set[str],
    zone_names: set[str],
) -> _Track:
    """One track of a saved state, validated; ground positions recomputed from the image anchors."""
    track = _Track()
    last_t = -math.inf
    for point in _items(history_raw, None, "history"):
        t_raw, x_raw, y_raw = _items(point, 3, "history point")
        t, x, y = _num(t_raw, "history"), _num(x_raw, "history"), _num(y_raw, "history")
        if t < last_t:
            raise TrackerStateError(f"analytics state: track {tid}'s history is out of order")
        last_t = t
        g = scene.geometry.to_ground((x, y))
        track.history.append((t, x, y, g[0], g[1]))
    if not track.history:
        raise TrackerStateError(f"analytics state: track {tid} has no history")
    del track.history[: max(0, len(track.history) - MAX_HISTORY_POINTS)]
    for name, memo in _mapping(lines_raw, "lines").items():
        side_raw, rx, ry = _items(memo, 3, "line memo")
        side = _int(side_raw, "line side")
        if side not in (-1, 1):
            raise TrackerStateError("analytics state has a bad line side")
        if name in line_names:
            track.lines[name] = _LineMemo(side, (_num(rx, "line memo"), _num(ry, "line memo")))
    for name in _items(counted_raw, None, "counted"):
        if _str(name, "counted") in line_names:
            track.counted.add(name)
    for name, stay_raw in _mapping(zones_raw, "zones").items():
        stopped, dwell_done, wrong, wrong_done = _items(stay_raw, 4, "zone stay")
        stay = _Stay(
            _opt_num(stopped, "zone stay"),
            _bool(dwell_done, "zone stay"),
            _opt_num(wrong, "zone stay"),
            _bool(wrong_done, "zone stay"),
        )
        if name in zone_names:
            track.zones[name] = stay
    return track


def _items(value: object, n: int | None, what: str) -> list[Any]:
    """``value`` as a list (of ``n`` items when given), else ``TrackerStateError``."""
    if not isinstance(value, list) or (n is not None and len(value) != n):
        raise TrackerStateError(f"analytics state: bad {what}")
    return value


def _mapping(value: object, what: str) -> dict[str, Any]:
    """``value`` as a JSON object, else ``TrackerStateError``."""
    if not isinstance(value, dict):
        raise TrackerStateError(f"analytics state: bad {what}")
    return value


def _num(value: object, what: str) -> float:
    """``value`` as a finite number, else ``TrackerStateError``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TrackerStateError(f"analytics state: bad number in {what}")
    return float(value)


def _opt_num(value: object, what: str) -> float | None:
    """``value`` as a finite number or None, else ``TrackerStateError``."""
    return None if value is None else _num(value, what)


def _int(value: object, what: str) -> int:
    """``value`` as an integer, else ``TrackerStateError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TrackerStateError(f"analytics state: bad integer in {what}")
    return value


def _str(value: object, what: str) -> str:
    """``value`` as a string, else ``TrackerStateError``."""
    if not isinstance(value, str):
        raise TrackerStateError(f"analytics state: bad text in {what}")
    return value


def _bool(value: object, what: str) -> bool:
    """``value`` as a boolean, else ``TrackerStateError``."""
    if not isinstance(value, bool):
        raise TrackerStateError(f"analytics state: bad flag in {what}")
    return value
