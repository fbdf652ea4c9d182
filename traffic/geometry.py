"""Per-camera scene geometry: counting lines, zones, and the image-to-ground calibration (a homography).

Coordinates are image pixels of the camera's frames at ``image_size``; frames of another size are
mapped by ``CameraGeometry.scaled``. Ground coordinates are metres when the camera is calibrated, else
the image pixels themselves (and every speed or distance is then labelled ``px``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from traffic.errors import ConfigError

Point = tuple[float, float]


@dataclass(frozen=True)
class CountingLine:
    """A line from ``start`` to ``end``; crossing it from its left to its right (seen from ``start``
    towards ``end``, image y pointing down) counts as ``forward``, the other way as ``backward``."""

    name: str
    start: Point
    end: Point
    forward: str = "in"
    """The name of the left-to-right direction."""
    backward: str = "out"
    """The name of the right-to-left direction."""


@dataclass(frozen=True)
class Zone:
    """A polygon of the image; with ``direction`` it is a lane whose traffic moves that way."""

    name: str
    polygon: tuple[Point, ...]
    direction: Point | None = None
    """The lane's direction of travel as an image vector (e.g. ``(0, -1)``: up the image); None: any."""
    max_dwell_s: float | None = None
    """A road user stopped in the zone longer than this raises a ``dwell`` event; None: the camera default."""


@dataclass(frozen=True)
class Calibration:
    """Four image points and the ground points (metres) they show: a homography from image to ground."""

    image: tuple[Point, Point, Point, Point]
    ground: tuple[Point, Point, Point, Point]
    matrix: tuple[tuple[float, float, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "matrix", homography(self.image, self.ground))

    def to_ground(self, point: Point) -> Point:
        """The ground position (metres) of an image point."""
        h = self.matrix
        x, y = point
        w = h[2][0] * x + h[2][1] * y + h[2][2]
        if abs(w) < 1e-12:
            return (math.inf, math.inf)  # on the horizon line
        return ((h[0][0] * x + h[0][1] * y + h[0][2]) / w, (h[1][0] * x + h[1][1] * y + h[1][2]) / w)


@dataclass(frozen=True)
class CameraGeometry:
    """One camera's lines, zones and optional calibration, in pixels of frames ``image_size`` wide and high."""

    camera_id: str
    image_size: tuple[int, int]
    lines: tuple[CountingLine, ...] = ()
    zones: tuple[Zone, ...] = ()
    calibration: Calibration | None = None

    @property
    def unit(self) -> str:
        """``m`` when calibrated, else ``px``."""
        return "m" if self.calibration is not None else "px"

    def to_ground(self, point: Point) -> Point:
        """The ground position of an image point (the point itself when uncalibrated)."""
        return self.calibration.to_ground(point) if self.calibration is not None else point

    def scaled(self, width: int, height: int) -> CameraGeometry:
        """The same geometry for frames ``width`` × ``height`` (the calibration's ground side stays); built
        once per geometry and size (a worker asks for every frame)."""
        if (width, height) == self.image_size:
            return self
        return _scaled(self, width, height)

    def _rescaled(self, width: int, height: int) -> CameraGeometry:
        """``scaled`` without the cache."""
        sx, sy = width / self.image_size[0], height / self.image_size[1]

        def s(p: Point) -> Point:
            return (p[0] * sx, p[1] * sy)

        lines = tuple(CountingLine(ln.name, s(ln.start), s(ln.end), ln.forward, ln.backward) for ln in self.lines)
        zones = tuple(
            Zone(
                z.name,
                tuple(s(p) for p in z.polygon),
                None if z.direction is None else s(z.direction),
                z.max_dwell_s,
            )
            for z in self.zones
        )
        calibration = None
        if self.calibration is not None:
            img = self.calibration.image
            calibration = Calibration((s(img[0]), s(img[1]), s(img[2]), s(img[3])), self.calibration.ground)
        return CameraGeometry(self.camera_id, (width, height), lines, zones, calibration)


@functools.lru_cache(maxsize=256)
def _scaled(geometry: CameraGeometry, width: int, height: int) -> CameraGeometry:
    """``CameraGeometry.scaled``, remembered (a scaled calibration solves its homography again)."""
    return geometry._rescaled(width, height)


def empty_geometry(camera_id: str, width: int, height: int) -> CameraGeometry:
    """A camera with no lines, zones or calibration: tracks, speeds in pixels and near misses still work."""
    return CameraGeometry(camera_id, (width, height))


def anchor(bbox: tuple[float, float, float, float]) -> Point:
    """Where a road user stands: the bottom centre of its box ``(x1, y1, x2, y2)``."""
    return ((bbox[0] + bbox[2]) / 2.0, bbox[3])


def homography(image: Sequence[Point], ground: Sequence[Point]) -> tuple[tuple[float, float, float], ...]:
    """The 3×3 projective map taking four image points to four ground points; ``ConfigError`` when the
    points are degenerate (three in a line, or repeated)."""
    if len(image) != 4 or len(ground) != 4:
        raise ConfigError("a calibration needs exactly four image points and four ground points")
    for label, pts in (("image", image), ("ground", ground)):
        for i in range(4):
            for j in range(i + 1, 4):
                for k in range(j + 1, 4):
                    if abs(_cross(pts[i], pts[j], pts[k])) < 1e-9:
                        raise ConfigError(f"calibration {label} points {i + 1}, {j + 1} and {k + 1} lie on one line")
    rows, rhs = [], []
    for (x, y), (u, v) in zip(image, ground, strict=True):
        rows.append([x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y])
        rows.append([0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y])
        rhs.extend([u, v])
    try:
        h = np.linalg.solve(np.array(rows, dtype=np.float64), np.array(rhs, dtype=np.float64))
    except np.linalg.LinAlgError as exc:
        raise ConfigError("calibration points do not define a homography") from exc
    m = [*h.tolist(), 1.0]
    return ((m[0], m[1], m[2]), (m[3], m[4], m[5]), (m[6], m[7], m[8]))


def _cross(a: Point, b: Point, c: Point) -> float:
    """Twice the signed area of triangle ``abc`` (positive: ``c`` left of ``a→b`` with y up)."""
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def side_of_line(line: CountingLine, point: Point) -> float:
    """Signed distance (pixels) of ``point`` from the line: positive on its left (image y down), where
    crossings to the right count ``forward``."""
    (x1, y1), (x2, y2) = line.start, line.end
    length = math.hypot(x2 - x1, y2 - y1)
    return -_cross(line.start, line.end, point) / length if length else 0.0


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """Whether segment ``p1p2`` meets segment ``q1q2`` (touching counts)."""
    d1, d2 = _cross(q1, q2, p1), _cross(q1, q2, p2)
    d3, d4 = _cross(p1, p2, q1), _cross(p1, p2, q2)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    return any(
        abs(d) < 1e-12 and _on_segment(a, b, c)
        for d, a, b, c in ((d1, q1, q2, p1), (d2, q1, q2, p2), (d3, p1, p2, q1), (d4, p1, p2, q2))
    )


def _on_segment(a: Point, b: Point, c: Point) -> bool:
    """Whether ``c``, collinear with ``a`` and ``b``, lies between them."""
    return (
        min(a[0], b[0]) - 1e-9 <= c[0] <= max(a[0], b[0]) + 1e-9
        and min(a[1], b[1]) - 1e-9 <= c[1] <= max(a[1], b[1]) + 1e-9
    )


def point_in_polygon(point: Point, polygon: Sequence[Point]) -> bool:
    """Whether ``point`` is inside ``polygon`` (even-odd rule; points on an edge count as inside)."""
    x, y = point
    inside = False
    n = len(polygon)
    for i in range(n):
        a, b = polygon[i], polygon[(i + 1) % n]
        if abs(_cross(a, b, point)) < 1e-9 and _on_segment(a, b, point):
            return True
        if (a[1] > y) != (b[1] > y):
            xi = a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
            if x < xi:
                inside = not inside
    return inside


def polygon_area(polygon: Sequence[Point]) -> float:
    """The polygon's unsigned area (shoelace)."""
    n = len(polygon)
    twice = sum(polygon[i][0] * polygon[(i + 1) % n][1] - polygon[(i + 1) % n][0] * polygon[i][1] for i in range(n))
    return abs(twice) / 2.0


def simple_polygon(polygon: Sequence[Point]) -> bool:
    """Whether no two non-adjacent edges of the polygon meet (it does not cross itself)."""
    n = len(polygon)
    edges = [(polygon[i], polygon[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue
            if segments_intersect(*edges[i], *edges[j]):
                return False
    return True
