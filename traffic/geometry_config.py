"""Per-camera geometry from a YAML document: counting lines, zones and calibrations, validated.

Pure: :func:`geometry_from_mapping` checks an already-loaded (and ``${VAR}``-expanded) document. Reading
the file is ``traffic.config``'s job (``load_settings(geometry=...)`` or ``TRAFFIC_GEOMETRY_FILE``).
The format is described in ``config/README.md`` and ``config/geometry.example.yaml``::

    cameras:
      cam-1:
        image_size: [1280, 720]
        lines: [{name: stop-line, points: [[100, 500], [900, 520]], directions: [in, out]}]
        zones: [{name: crossing, polygon: [[200, 400], [600, 400], [600, 700]], direction: [0, -1],
                 max_dwell_s: 20}]
        calibration: {image: [[x, y] x4], ground: [[x, y] x4]}

Every error is a :class:`~traffic.errors.ConfigError` that names the file and the path in it, e.g.
``geometry.yaml:cameras.cam-1.lines[0].points: a counting line needs 2 points, got 1``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from traffic.cameras import normalise_camera_id
from traffic.errors import CameraError, ConfigError
from traffic.geometry import (
    Calibration,
    CameraGeometry,
    CountingLine,
    Point,
    Zone,
    polygon_area,
    simple_polygon,
)

TOP_KEYS = ("cameras",)
CAMERA_KEYS = ("image_size", "lines", "zones", "calibration")
LINE_KEYS = ("name", "points", "directions")
ZONE_KEYS = ("name", "polygon", "direction", "max_dwell_s")
CALIBRATION_KEYS = ("image", "ground")
DEFAULT_DIRECTIONS = ("in", "out")
"""Names of a counting line's forward and backward crossings when it gives none."""
MAX_DWELL_S = 86400.0
"""A zone's ``max_dwell_s`` is at most a day (the bound of ``analytics.dwell_s`` too)."""
MAX_NAME_LENGTH = 64
_MIN_AREA_PX2 = 1e-6
"""A polygon with less area than this (square pixels) has none: its points lie on one line."""


@dataclass(frozen=True)
class _At:
    """A place in the document: the file and the dotted path inside it."""

    source: str
    path: str = ""

    def key(self, name: object) -> _At:
        """The place of mapping key ``name`` below this one."""
        return _At(self.source, f"{self.path}.{name}" if self.path else str(name))

    def index(self, i: int) -> _At:
        """The place of list item ``i`` below this one."""
        return _At(self.source, f"{self.path}[{i}]")

    def error(self, problem: str) -> ConfigError:
        """A ConfigError naming this place."""
        return ConfigError(f"{self.source}:{self.path}: {problem}" if self.path else f"{self.source}: {problem}")


def geometry_from_mapping(doc: object, source: str) -> tuple[CameraGeometry, ...]:
    """The cameras' geometry in a loaded geometry document (``None``, an empty file, gives none).

    ``source`` names the document in errors (the file's path). Raises ``ConfigError``.
    """
    top_at = _At(source)
    top = _mapping(doc, top_at, "a mapping with a cameras: section")
    _check_keys(top, TOP_KEYS, top_at)
    cameras_at = top_at.key("cameras")
    cameras = _mapping(top.get("cameras"), cameras_at, "a mapping of camera ids to their geometry", any_keys=True)
    out: list[CameraGeometry] = []
    seen: dict[str, object] = {}
    for raw_id, node in cameras.items():
        at = cameras_at.key(raw_id)
        camera_id = _camera_id(raw_id, at)
        if camera_id in seen:
            raise at.error(f"camera {camera_id} is given twice (as {seen[camera_id]!r} and {raw_id!r})")
        seen[camera_id] = raw_id
        out.append(_camera(camera_id, node, at))
    return tuple(out)


# --------------------------------------------------------------------------- one camera


def _camera_id(raw: object, at: _At) -> str:
    """The camera's key string, as ``normalise_camera_id`` gives it."""
    try:
        return normalise_camera_id(raw)[0]
    except CameraError as exc:
        raise at.error(f"invalid camera id {_show(raw)}: {exc}") from None


def _camera(camera_id: str, node: object, at: _At) -> CameraGeometry:
    """One camera's entry."""
    item = _mapping(node, at, "a mapping with image_size, lines, zones and calibration")
    _check_keys(item, CAMERA_KEYS, at)
    if item.get("image_size") is None:
        raise at.key("image_size").error("missing: the [width, height] of the frames the coordinates are in")
    size = _image_size(item["image_size"], at.key("image_size"))
    calibration = None
    if item.get("calibration") is not None:
        calibration = _calibration(item["calibration"], size, at.key("calibration"))
    names: dict[str, str] = {}
    lines = tuple(
        _line(node, size, calibration, entry_at, names)
        for node, entry_at in _entries(item.get("lines"), at.key("lines"))
    )
    zones = tuple(
        _zone(node, size, calibration, entry_at, names)
        for node, entry_at in _entries(item.get("zones"), at.key("zones"))
    )
    return CameraGeometry(camera_id, size, lines, zones, calibration)


def _image_size(raw: object, at: _At) -> tuple[int, int]:
    """``[width, height]``: two positive integers."""
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise at.error(f"expected [width, height], two positive integers{_got(raw)}")
    width, height = (_positive_int(value, at.index(i)) for i, value in enumerate(raw))
    return width, height


def _line(
    node: object, size: tuple[int, int], calibration: Calibration | None, at: _At, names: dict[str, str]
) -> CountingLine:
    """One counting line."""
    item = _mapping(node, at, "a mapping with name, points and directions")
    _check_keys(item, LINE_KEYS, at)
    name = _entry_name(item, at, names)
    points_at = at.key("points")
    raw_points = _list(item.get("points"), points_at, "a counting line needs 2 points, [[x, y], [x, y]]")
    if len(raw_points) != 2:
        raise points_at.error(f"a counting line needs 2 points, got {len(raw_points)}")
    start, end = (_image_point(raw, size, calibration, points_at.index(i)) for i, raw in enumerate(raw_points))
    if start == end:
        raise points_at.error("the two points are the same: a counting line needs a length")
    forward, backward = DEFAULT_DIRECTIONS
    if item.get("directions") is not None:
        forward, backward = _directions(item["directions"], at.key("directions"))
    return CountingLine(name, start, end, forward, backward)


def _directions(raw: object, at: _At) -> tuple[str, str]:
    """``[forward, backward]``: two different names."""
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise at.error(f"expected [forward, backward], the names of the two crossing directions{_got(raw)}")
    forward, backward = (_name(value, at.index(i)) for i, value in enumerate(raw))
    if forward == backward:
        raise at.error(f"the two directions need different names (both are {forward!r})")
    return forward, backward


def _zone(node: object, size: tuple[int, int], calibration: Calibration | None, at: _At, names: dict[str, str]) -> Zone:
    """One zone (a lane when it has a direction)."""
    item = _mapping(node, at, "a mapping with name, polygon, direction and max_dwell_s")
    _check_keys(item, ZONE_KEYS, at)
    name = _entry_name(item, at, names)
    polygon = _polygon(item.get("polygon"), size, calibration, at.key("polygon"))
    direction = None
    if item.get("direction") is not None:
        direction = _direction(item["direction"], at.key("direction"))
    max_dwell_s = None
    if item.get("max_dwell_s") is not None:
        max_dwell_s = _number(item["max_dwell_s"], at.key("max_dwell_s"))
        if not 0 < max_dwell_s <= MAX_DWELL_S:
            raise at.key("max_dwell_s").error(f"must be > 0 and <= {MAX_DWELL_S:g} seconds{_got(item['max_dwell_s'])}")
    return Zone(name, polygon, direction, max_dwell_s)


def _polygon(raw: object, size: tuple[int, int], calibration: Calibration | None, at: _At) -> tuple[Point, ...]:
    """A simple polygon of at least three distinct points with an area."""
    raw_points = _list(raw, at, "a zone needs a polygon of at least 3 points, [[x, y], ...]")
    if len(raw_points) < 3:
        raise at.error(f"a zone needs at least 3 points, got {len(raw_points)}")
    points = tuple(_image_point(p, size, calibration, at.index(i)) for i, p in enumerate(raw_points))
    first: dict[Point, int] = {}
    for i, point in enumerate(points):
        if point in first:
            raise at.index(i).error(f"repeats point {first[point]} ({_xy(point)})")
        first[point] = i
    if _on_one_line(points) or (polygon_area(points) < _MIN_AREA_PX2 and simple_polygon(points)):
        raise at.error("the polygon has no area (its points lie on one line)")
    if not simple_polygon(points):
        raise at.error("the polygon crosses itself (list its points in order around its edge)")
    return points


def _on_one_line(points: tuple[Point, ...]) -> bool:
    """Whether all the (distinct) points lie on the line through the first two."""
    (x0, y0), (x1, y1) = points[0], points[1]
    return all(abs((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)) < 1e-9 for x, y in points[2:])


def _direction(raw: object, at: _At) -> Point:
    """A lane direction: an image vector ``[dx, dy]`` that is not zero."""
    dx, dy = _pair(raw, at, "expected [dx, dy], the lane's direction of travel in the image")
    if dx == 0 and dy == 0:
        raise at.error("a lane direction must not be [0, 0]")
    return (dx, dy)


def _calibration(node: object, size: tuple[int, int], at: _At) -> Calibration:
    """Four image points and the ground points (metres) they show."""
    item = _mapping(node, at, "a mapping with image and ground, four points each")
    _check_keys(item, CALIBRATION_KEYS, at)
    sides: dict[str, tuple[Point, ...]] = {}
    for side in CALIBRATION_KEYS:
        side_at = at.key(side)
        raw_points = _list(item.get(side), side_at, f"a calibration needs 4 {side} points, [[x, y] x4]")
        if len(raw_points) != 4:
            raise side_at.error(f"a calibration needs 4 {side} points, got {len(raw_points)}")
        sides[side] = tuple(
            _image_point(p, size, None, side_at.index(i)) if side == "image" else _pair(p, side_at.index(i))
            for i, p in enumerate(raw_points)
        )
    image, ground = sides["image"], sides["ground"]
    try:
        calibration = Calibration(
            (image[0], image[1], image[2], image[3]), (ground[0], ground[1], ground[2], ground[3])
        )
    except ConfigError as exc:
        raise at.error(str(exc)) from None
    signs = {_horizon_side(calibration, point) for point in image}
    if len(signs) != 1:
        raise at.error(
            "the image and ground points are not listed in the same order around their quadrilateral "
            "(the mapping would fold the ground over the horizon)"
        )
    return calibration


def _horizon_side(calibration: Calibration, point: Point) -> int:
    """Which side of the calibration's horizon line an image point is on: 1, -1, or 0 on it."""
    h = calibration.matrix[2]
    w = h[0] * point[0] + h[1] * point[1] + h[2]
    return 0 if abs(w) < 1e-12 else (1 if w > 0 else -1)


# --------------------------------------------------------------------------- points, names, numbers


def _image_point(raw: object, size: tuple[int, int], calibration: Calibration | None, at: _At) -> Point:
    """A point inside the ``size`` frame (edges included), on the ground side of the calibration's horizon."""
    x, y = _pair(raw, at)
    width, height = size
    if not (0 <= x <= width and 0 <= y <= height):
        raise at.error(f"point {_xy((x, y))} lies outside the {width}x{height} image")
    if calibration is not None:
        ground_side = _horizon_side(calibration, calibration.image[0])
        if _horizon_side(calibration, (x, y)) != ground_side:
            raise at.error(
                f"point {_xy((x, y))} lies on or beyond the calibration's horizon (it shows no ground point)"
            )
    return (x, y)


def _pair(raw: object, at: _At, expected: str = "expected a point [x, y]") -> Point:
    """Two finite numbers."""
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise at.error(f"{expected}{_got(raw)}")
    x, y = (_number(value, at.index(i)) for i, value in enumerate(raw))
    return (x, y)


def finite_number(raw: object) -> float | None:
    """A finite number from an int or a float (not a bool), or a string holding one (from ``${VAR}``);
    None when ``raw`` is none of those."""
    value: float | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    return value if value is not None and math.isfinite(value) else None


def _number(raw: object, at: _At) -> float:
    """A finite number (see ``finite_number``)."""
    value = finite_number(raw)
    if value is None:
        raise at.error(f"expected a number{_got(raw)}")
    return value


def _positive_int(raw: object, at: _At) -> int:
    """An integer > 0 (an int, or a decimal string from ``${VAR}``)."""
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str):
        try:
            value = int(raw.strip())
        except ValueError:
            value = None
    if value is None or value <= 0:
        raise at.error(f"expected a positive integer{_got(raw)}")
    return value


def _name(raw: object, at: _At) -> str:
    """A non-empty name of at most 64 characters."""
    if not isinstance(raw, str) or not raw.strip():
        raise at.error(f"expected a non-empty name{_got(raw)}")
    name = raw.strip()
    if len(name) > MAX_NAME_LENGTH or any(not ch.isprintable() for ch in name):
        raise at.error(f"a name is at most {MAX_NAME_LENGTH} printable characters{_got(raw)}")
    return name


def _entry_name(item: Mapping[object, object], at: _At, names: dict[str, str]) -> str:
    """A line's or zone's name, distinct from every other line and zone name of the camera."""
    if item.get("name") is None:
        raise at.key("name").error("missing: every line and zone needs a name")
    name = _name(item["name"], at.key("name"))
    if name in names:
        raise at.key("name").error(f"duplicate name {name!r} (also {names[name]}); lines and zones share names")
    names[name] = at.path
    return name


# --------------------------------------------------------------------------- structure


def _mapping(node: object, at: _At, expected: str, *, any_keys: bool = False) -> dict[object, object]:
    """``node`` as a mapping (``None`` reads as empty); keys must be strings unless ``any_keys``."""
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        raise at.error(f"expected {expected}{_got(node)}")
    if not any_keys:
        for key in node:
            if not isinstance(key, str):
                raise at.error(f"keys must be strings (found {key!r})")
    return dict(node)


def _check_keys(item: Mapping[object, object], known: tuple[str, ...], at: _At) -> None:
    """Raise for the first key not in ``known``, suggesting the closest one."""
    for key in item:
        if key not in known:
            raise at.key(key).error(f"unknown key{_suggest(str(key), known)}")


def _list(raw: object, at: _At, missing: str) -> list[object]:
    """A YAML list; ``missing`` is the problem when there is none."""
    if raw is None:
        raise at.error(f"missing: {missing}")
    if not isinstance(raw, list | tuple):
        raise at.error(f"expected a list{_got(raw)}")
    return list(raw)


def _entries(raw: object, at: _At) -> list[tuple[object, _At]]:
    """The items of an optional list, each with its place."""
    if raw is None:
        return []
    if not isinstance(raw, list | tuple):
        raise at.error(f"expected a list{_got(raw)}")
    return [(item, at.index(i)) for i, item in enumerate(raw)]


def _suggest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest known name, if any is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _show(raw: object) -> str:
    """``raw`` as a short repr."""
    text = repr(raw)
    return f"{text[:60]}{'…' if len(text) > 60 else ''}"


def _got(raw: object) -> str:
    """`` (got X)`` for an error message."""
    return f" (got {_show(raw)})"


def _xy(point: Point) -> str:
    """``(x, y)`` with compact numbers."""
    return f"({point[0]:g}, {point[1]:g})"
