"""Surrogate safety measures of a pair of road users: time to collision and the cells a path crosses.

Pure math on ground coordinates (metres when calibrated, else pixels): no state, no thresholds. The
engine that applies the thresholds is ``traffic.analytics``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Vector = tuple[float, float]
FloatArray = npt.NDArray[np.float64]

GridSpan = tuple[int, int, float, float]
"""A grid cell ``(cx, cy)`` and the part ``[s_in, s_out]`` (0..1) of a segment that lies in it."""


def time_to_collision(dp: Vector, dv: Vector, radius: float) -> float | None:
    """The first time ``t >= 0`` at which ``|dp + dv·t| <= radius`` under constant velocities, or None.

    ``dp`` is B's position relative to A, ``dv`` B's velocity relative to A. Already within ``radius``:
    0 (whether closing or not; callers that need a closing pair check the closing speed themselves).
    Parallel (no relative motion), diverging, or passing wide of each other: None.
    """
    px, py = dp
    vx, vy = dv
    c = px * px + py * py - radius * radius
    if c <= 0.0:
        return 0.0
    b = px * vx + py * vy  # half the linear coefficient of |dp + dv t|² - r²
    a = vx * vx + vy * vy
    if a == 0.0 or b >= 0.0:
        return None  # no relative motion, or the distance is not shrinking
    disc = b * b - a * c
    if disc < 0.0:
        return None  # the closest approach stays wider than the radius
    return (-b - math.sqrt(disc)) / a


def times_to_collision(
    dpx: FloatArray, dpy: FloatArray, dvx: FloatArray, dvy: FloatArray, radius: FloatArray | float
) -> FloatArray:
    """``time_to_collision`` for many pairs at once (arrays of equal length); NaN where it is None."""
    c = dpx * dpx + dpy * dpy - np.asarray(radius, dtype=np.float64) ** 2
    b = dpx * dvx + dpy * dvy
    a = dvx * dvx + dvy * dvy
    disc = b * b - a * c
    ok = (a > 0.0) & (b < 0.0) & (disc >= 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(ok, (-b - np.sqrt(np.where(ok, disc, 0.0))) / np.where(ok, a, 1.0), np.nan)
    result: FloatArray = np.where(c <= 0.0, 0.0, t)
    return result


def closing_speed(dp: Vector, dv: Vector) -> float:
    """How fast the distance of the pair shrinks (negative: it grows); the relative speed when they coincide."""
    dist = math.hypot(dp[0], dp[1])
    if dist == 0.0:
        return math.hypot(dv[0], dv[1])
    return -(dp[0] * dv[0] + dp[1] * dv[1]) / dist


def grid_path(start: Vector, end: Vector, cell: float, max_cells: int) -> list[GridSpan] | None:
    """The square cells of side ``cell`` that the segment ``start → end`` passes through, in order, each with
    the fraction of the segment inside it; None when that is more than ``max_cells`` cells (a jump)."""
    x0, y0 = start[0] / cell, start[1] / cell
    x1, y1 = end[0] / cell, end[1] / cell
    cx, cy = math.floor(x0), math.floor(y0)
    ex, ey = math.floor(x1), math.floor(y1)
    nx, ny = abs(ex - cx), abs(ey - cy)
    if nx + ny + 1 > max_cells:
        return None
    dx, dy = x1 - x0, y1 - y0
    step_x = 1 if dx > 0 else -1
    step_y = 1 if dy > 0 else -1
    # Parameter (0..1 along the segment) of the next vertical / horizontal grid line, and between two of them.
    next_x = ((cx + 1 - x0) / dx if dx > 0 else (cx - x0) / dx) if nx else math.inf
    next_y = ((cy + 1 - y0) / dy if dy > 0 else (cy - y0) / dy) if ny else math.inf
    delta_x = abs(1.0 / dx) if nx else math.inf
    delta_y = abs(1.0 / dy) if ny else math.inf
    spans: list[GridSpan] = []
    s = 0.0
    while nx or ny:
        if ny == 0 or (nx and next_x < next_y):
            boundary = min(max(next_x, s), 1.0)
            spans.append((cx, cy, s, boundary))
            cx += step_x
            nx -= 1
            next_x += delta_x
        else:
            boundary = min(max(next_y, s), 1.0)
            spans.append((cx, cy, s, boundary))
            cy += step_y
            ny -= 1
            next_y += delta_y
        s = boundary
    spans.append((cx, cy, s, 1.0))
    return spans
