"""Tests of the track analytics engine on hand-computed scenes.

Every box is built from its anchor (bottom centre): ``det(tid, x, y)`` is a box ``w`` wide and ``h`` high whose
bottom centre is ``(x, y)``. Frames are 1000×1000 unless said otherwise. Uncalibrated cameras measure in
pixels; the calibrated one maps 10 image pixels to 1 m (an affine square).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from traffic import analytics as an
from traffic.analytics import CameraAnalytics, MotionEvent, MotionUpdate, TrackView
from traffic.errors import TrackerStateError
from traffic.geometry import Calibration, CameraGeometry, CountingLine, Zone
from traffic.models import Detection
from traffic.settings import AnalyticsSettings
from traffic.surrogate_safety import closing_speed, grid_path, time_to_collision, times_to_collision

SIZE = (1000, 1000)
SETTINGS = AnalyticsSettings()
TEN_PX_PER_M = Calibration(
    ((0.0, 0.0), (1000.0, 0.0), (1000.0, 1000.0), (0.0, 1000.0)),
    ((0.0, 0.0), (100.0, 0.0), (100.0, 100.0), (0.0, 100.0)),
)
Frame = tuple[float, list[Detection]]


def det(tid: int | None, x: float, y: float, cls: str = "car", w: float = 40.0, h: float = 20.0) -> Detection:
    """A detection whose anchor is ``(x, y)``."""
    return Detection(cls, 0.9, (x - w / 2, y - h, x + w / 2, y), tid)


def geo(
    lines: Sequence[CountingLine] = (), zones: Sequence[Zone] = (), calibration: Calibration | None = None
) -> CameraGeometry:
    """A 1000×1000 camera."""
    return CameraGeometry("cam", SIZE, tuple(lines), tuple(zones), calibration)


def feed(a: CameraAnalytics, frames: Sequence[Frame], size: tuple[int, int] = SIZE) -> list[MotionUpdate]:
    """Every frame's update."""
    return [a.update(dets, t, size) for t, dets in frames]


def rounded(event: MotionEvent) -> MotionEvent:
    """``event`` with its value to 6 decimals (hand-computed values compare exactly)."""
    return replace(event, value=None if event.value is None else round(event.value, 6))


def kinds(updates: Sequence[MotionUpdate], kind: str, measure: str = "") -> list[MotionEvent]:
    """The events of ``kind`` (and ``measure``) over all updates, values to 6 decimals."""
    return [rounded(e) for u in updates for e in u.events if e.kind == kind and (not measure or e.measure == measure)]


def view(update: MotionUpdate, tid: int) -> TrackView:
    """Track ``tid``'s view in ``update``."""
    return next(t for t in update.tracks if t.track_id == tid)


def path(tid: int, points: Sequence[tuple[float, float, float]], **kw: Any) -> dict[float, Detection]:
    """Track ``tid`` at ``(t, x, y)`` points."""
    return {t: det(tid, x, y, **kw) for t, x, y in points}


def merge(*tracks: dict[float, Detection]) -> list[Frame]:
    """Frames (ascending time) of the tracks present at each time."""
    times = sorted({t for tr in tracks for t in tr})
    return [(t, [tr[t] for tr in tracks if t in tr]) for t in times]


# ---------------------------------------------------------------------- surrogate safety math


def test_ttc_head_on() -> None:
    # B 10 m ahead closing at 4 m/s, radius 2: |10 - 4t| = 2 → t = 2.
    assert time_to_collision((10.0, 0.0), (-4.0, 0.0), 2.0) == pytest.approx(2.0)
    assert closing_speed((10.0, 0.0), (-4.0, 0.0)) == pytest.approx(4.0)


def test_ttc_perpendicular_crossing() -> None:
    # A at (-8, 0) going +x at 2, B at (0, -8) going +y at 2: dp = (8, -8), dv = (-2, 2);
    # |dp + dv t| = √2·(8 - 2t) = r = √2 → t = 3.5.
    assert time_to_collision((8.0, -8.0), (-2.0, 2.0), math.sqrt(2.0)) == pytest.approx(3.5)
    # Passing wide: closest approach 5 > 2 → None.
    assert time_to_collision((10.0, 5.0), (-4.0, 0.0), 2.0) is None


def test_ttc_parallel_diverging_and_overlapping() -> None:
    assert time_to_collision((0.0, 3.0), (0.0, 0.0), 2.0) is None  # same velocity
    assert time_to_collision((10.0, 0.0), (4.0, 0.0), 2.0) is None  # moving apart
    assert time_to_collision((1.0, 0.0), (5.0, 0.0), 2.0) == 0.0  # already within the radius
    assert closing_speed((10.0, 0.0), (4.0, 0.0)) == pytest.approx(-4.0)
    assert closing_speed((0.0, 0.0), (3.0, 4.0)) == pytest.approx(5.0)  # coincident: the relative speed


def test_vectorised_ttc_matches_the_scalar_one() -> None:
    rnd = random.Random(7)
    cases = [
        ((rnd.uniform(-20, 20), rnd.uniform(-20, 20)), (rnd.uniform(-5, 5), rnd.uniform(-5, 5)), rnd.uniform(0.5, 3))
        for _ in range(500)
    ]
    cases += [((0.0, 3.0), (0.0, 0.0), 2.0), ((1.0, 0.0), (5.0, 0.0), 2.0)]
    dp = np.array([c[0] for c in cases])
    dv = np.array([c[1] for c in cases])
    radius = np.array([c[2] for c in cases])
    many = times_to_collision(dp[:, 0], dp[:, 1], dv[:, 0], dv[:, 1], radius)
    for (p, v, r), got in zip(cases, many.tolist(), strict=True):
        want = time_to_collision(p, v, r)
        assert (math.isnan(got) and want is None) or got == pytest.approx(want)


def test_grid_path_by_hand() -> None:
    # (0.5, 0.5) → (2.5, 0.5), cells of 1: x = 1 at s = 0.25, x = 2 at s = 0.75.
    assert grid_path((0.5, 0.5), (2.5, 0.5), 1.0, 10) == [
        (0, 0, 0.0, 0.25),
        (1, 0, 0.25, 0.75),
        (2, 0, 0.75, 1.0),
    ]
    # Leftwards and downwards across negative cells: (0.5, 0.5) → (-0.5, -1.5), cells of 1:
    # x = 0 at s = 0.5; y = 0 at s = 0.25, y = -1 at s = 0.75.
    assert grid_path((0.5, 0.5), (-0.5, -1.5), 1.0, 10) == [
        (0, 0, 0.0, 0.25),
        (0, -1, 0.25, 0.5),
        (-1, -1, 0.5, 0.75),
        (-1, -2, 0.75, 1.0),
    ]
    assert grid_path((10.0, 10.0), (12.0, 12.0), 40.0, 10) == [(0, 0, 0.0, 1.0)]  # within one cell
    assert grid_path((0.0, 0.0), (1000.0, 0.0), 1.0, 64) is None  # a jump


# ---------------------------------------------------------------------- counting lines

STOP = CountingLine("stop", (0.0, 500.0), (1000.0, 500.0), "south", "north")
# The line points right; with y down its left (positive side) is above it: side = -(y - 500).


def test_a_line_is_crossed_forward_once() -> None:
    # y = 400, 450, 520 → side +100, +50, -20: + → - between the last two, and (300,450)→(300,520) meets the line.
    a = CameraAnalytics(geo([STOP]), SETTINGS)
    updates = feed(a, merge(path(1, [(0, 300, 400), (1, 300, 450), (2, 300, 520), (3, 300, 600)])))
    crossings = kinds(updates, "line_crossing")
    assert crossings == [
        MotionEvent("line_crossing", 2.0, (1,), ("car",), where="stop", direction="south", position=(300.0, 520.0))
    ]
    assert updates[2].events == tuple(crossings)


def test_a_line_is_crossed_backward() -> None:
    # y = 600, 550, 480 → side -100, -50, +20: - → + is backward ("north").
    a = CameraAnalytics(geo([STOP]), SETTINGS)
    crossings = kinds(feed(a, merge(path(1, [(0, 300, 600), (1, 300, 550), (2, 300, 480)]))), "line_crossing")
    assert [(e.at, e.direction) for e in crossings] == [(2.0, "north")]


def test_jitter_and_u_turns_count_once() -> None:
    # y = 490 (+10), 497 (+3: inside the 4 px margin, side stays +), 503 (-3: stays +), 510 (-10: crossed, from the
    # anchor where + was last confirmed, (300, 490)); then back and forth, drifting sideways: never again.
    a = CameraAnalytics(geo([STOP]), SETTINGS)
    ys = [490, 497, 503, 510, 490, 510, 490, 512]
    updates = feed(a, merge(path(1, [(i, 300 + 20 * i, y) for i, y in enumerate(ys)])))
    assert [(e.at, e.direction) for e in kinds(updates, "line_crossing")] == [(3.0, "south")]


def test_staying_inside_the_margin_never_counts() -> None:
    # |side| = 2, 2, 3, 3, 4: never beyond the 4 px margin, so no side is ever confirmed.
    a = CameraAnalytics(geo([STOP]), SETTINGS)
    ys = [498, 502, 497, 503, 504]
    assert kinds(feed(a, merge(path(1, [(i, 300, y) for i, y in enumerate(ys)]))), "line_crossing") == []


def test_passing_beyond_the_line_end_is_not_a_crossing() -> None:
    # The line ends at x = 400. At x = 600, y 400 → 600 changes side but (600,400)→(600,600) misses the segment.
    # Then the track goes left to (200, 600) (side -, reference updated) and up to (200, 400): - → + across the
    # segment at (200, 500): backward.
    short = CountingLine("short", (0.0, 500.0), (400.0, 500.0))
    a = CameraAnalytics(geo([short]), SETTINGS)
    updates = feed(a, merge(path(1, [(0, 600, 400), (1, 600, 600), (2, 200, 600), (3, 200, 400)])))
    assert [(e.at, e.direction) for e in kinds(updates, "line_crossing")] == [(3.0, "out")]


def test_two_lines_crossed_in_one_frame_come_in_config_order() -> None:
    # "v" runs down x = 500: side = x - 500 (its left, facing down the image, is +x). (400,400)→(600,600) goes
    # from - to + on "v" (backward) and from + to - on "stop" (forward); "v" is configured first.
    v = CountingLine("v", (500.0, 0.0), (500.0, 1000.0), "west", "east")
    a = CameraAnalytics(geo([v, STOP]), SETTINGS)
    updates = feed(a, merge(path(4, [(0, 400, 400), (1, 600, 600)])))
    assert [(e.where, e.direction) for e in updates[1].events] == [("v", "east"), ("stop", "south")]


def test_detections_without_a_track_take_no_part() -> None:
    a = CameraAnalytics(geo([STOP]), SETTINGS)
    updates = feed(a, [(0.0, [det(None, 300, 400)]), (1.0, [det(None, 300, 600)])])
    assert all(u.events == () and u.tracks == () for u in updates)


# ---------------------------------------------------------------------- zones

WEST = Zone("west", ((100.0, 100.0), (300.0, 100.0), (300.0, 300.0), (100.0, 300.0)))
EAST = Zone("east", ((200.0, 100.0), (400.0, 100.0), (400.0, 300.0), (200.0, 300.0)))


def test_zone_occupancy_by_class_in_config_order() -> None:
    # west = x 100..300, east = x 200..400 (y 100..300). Car 1 (150,200): west. Car 2 (250,200): both.
    # Person 3 (300,250): on west's edge (inside) and in east. Truck 4 (500,200): neither.
    a = CameraAnalytics(geo(zones=[WEST, EAST]), SETTINGS)
    frame = [det(1, 150, 200), det(2, 250, 200), det(3, 300, 250, "person"), det(4, 500, 200, "truck")]
    update = a.update(frame, 0.0, SIZE)
    assert update.occupancy == (("west", "car", 2), ("west", "person", 1), ("east", "car", 1), ("east", "person", 1))
    assert [t.zones for t in update.tracks] == [("west",), ("west", "east"), ("west", "east"), ()]


def test_dwell_is_raised_once_per_stay_after_the_limit() -> None:
    # Stop threshold uncalibrated: 0.05 × 20 px box height = 1 px/s. Stationary at (200,200) from t = 0, every
    # 0.5 s: speed unknown at t = 0, 0 at t = 0.5 → stopped since 0.5. Limit 2 s: 2.5 - 0.5 = 2.0 is not more,
    # 3.0 - 0.5 = 2.5 is → one event at 3.0 (value 2.5). At 5.5 it is at (500,200), outside (the stay is over);
    # back at 6.0, where it was 1 s before (speed 0: stopped), but at 6.5 the speed is measured from 5.5:
    # 300 / 1 px/s, moving; from 7.0 (measured from 6.0) stopped again → next event at 9.5 (value 2.5).
    bay = Zone("bay", WEST.polygon, max_dwell_s=2.0)
    a = CameraAnalytics(geo(zones=[bay]), SETTINGS)
    points = [(i * 0.5, 200.0, 200.0) for i in range(11)] + [(5.5, 500.0, 200.0)]
    points += [(6.0 + i * 0.5, 200.0, 200.0) for i in range(8)]
    dwell = kinds(feed(a, merge(path(1, points))), "dwell")
    assert [(e.at, e.where, e.value, e.threshold) for e in dwell] == [(3.0, "bay", 2.5, 2.0), (9.5, "bay", 2.5, 2.0)]


def test_a_slow_mover_dwells_only_below_the_stop_speed() -> None:
    # 1 px per 0.5 s = 2 px/s ≥ 1 px/s: moving, never stopped. 0.4 px per 0.5 s = 0.8 px/s: stopped.
    bay = Zone("bay", WEST.polygon, max_dwell_s=2.0)
    crawl = merge(path(1, [(i * 0.5, 150.0 + i, 200.0) for i in range(12)]))
    creep = merge(path(1, [(i * 0.5, 150.0 + 0.4 * i, 200.0) for i in range(12)]))
    assert kinds(feed(CameraAnalytics(geo(zones=[bay]), SETTINGS), crawl), "dwell") == []
    assert len(kinds(feed(CameraAnalytics(geo(zones=[bay]), SETTINGS), creep), "dwell")) == 1


def test_calibrated_dwell_uses_metres_and_the_camera_default() -> None:
    # 10 px = 1 m. 2 px per 0.5 s = 0.4 m/s < 0.5 m/s: stopped from t = 0.5. dwell_s = 1: 1.5 - 0.5 = 1.0 is not
    # more, 2.0 - 0.5 = 1.5 is.
    a = CameraAnalytics(geo(zones=[WEST], calibration=TEN_PX_PER_M), replace(SETTINGS, dwell_s=1.0))
    dwell = kinds(feed(a, merge(path(1, [(i * 0.5, 150.0 + 2 * i, 200.0) for i in range(8)]))), "dwell")
    assert [(e.at, e.value, e.threshold) for e in dwell] == [(2.0, 1.5, 1.0)]


# ---------------------------------------------------------------------- speed and trails


def test_speed_uses_the_newest_point_older_than_the_window() -> None:
    # x = 100 at 0, 160 at 0.6, 170 at 1.2. At 1.2 the window (1 s) starts at 0.2; the newest point at least that
    # old is t = 0 → (170 - 100) / 1.2 = 58.33 px/s. At 0.6 none is old enough: the oldest, t = 0 → 60 / 0.6 = 100.
    a = CameraAnalytics(None, SETTINGS)
    updates = feed(a, merge(path(1, [(0.0, 100, 500), (0.6, 160, 500), (1.2, 170, 500)])))
    assert view(updates[0], 1).speed is None
    assert view(updates[1], 1).speed == pytest.approx(100.0)
    assert view(updates[2], 1).speed == pytest.approx(70.0 / 1.2)
    assert view(updates[2], 1).speed_unit == "px/s"
    assert updates[2].unit == "px"


def test_no_speed_until_a_quarter_second_is_spanned() -> None:
    a = CameraAnalytics(None, SETTINGS)
    updates = feed(a, merge(path(1, [(0.0, 100, 500), (0.2, 110, 500), (0.3, 115, 500)])))
    # 0.2 s < 0.25 s: unknown; at 0.3: (115 - 100) / 0.3 = 50 px/s.
    assert [view(u, 1).speed for u in updates[:2]] == [None, None]
    assert view(updates[2], 1).speed == pytest.approx(50.0)


def test_speed_of_a_steady_track_at_thirty_fps() -> None:
    # 20 px/s whatever points the history kept.
    a = CameraAnalytics(None, SETTINGS)
    updates = feed(a, merge(path(1, [(i / 30, 100 + 20 * i / 30, 500) for i in range(120)])))
    assert view(updates[-1], 1).speed == pytest.approx(20.0, abs=0.1)


def test_calibrated_speed_in_km_per_hour() -> None:
    # 50 px/s at 10 px per metre = 5 m/s = 18 km/h.
    a = CameraAnalytics(geo(calibration=TEN_PX_PER_M), SETTINGS)
    updates = feed(a, merge(path(1, [(i * 0.5, 100 + 25 * i, 500) for i in range(5)])))
    assert view(updates[-1], 1).speed == pytest.approx(18.0)
    assert view(updates[-1], 1).speed_unit == "km/h"
    assert updates[-1].unit == "m"


def test_the_trail_covers_trail_s_rounded_to_a_tenth() -> None:
    # trail_s = 4: at t = 6 the points of t = 2..6, x = 100.04 + 10 t rounded to 0.1.
    a = CameraAnalytics(None, SETTINGS)
    updates = feed(a, merge(path(1, [(t, 100.04 + 10 * t, 500.0) for t in range(7)])))
    assert view(updates[-1], 1).trail == (
        (120.0, 500.0),
        (130.0, 500.0),
        (140.0, 500.0),
        (150.0, 500.0),
        (160.0, 500.0),
    )


def test_history_stays_bounded() -> None:
    # 20 s at 30 fps: the history keeps at most MAX_HISTORY_POINTS points spanning about trail_s.
    a = CameraAnalytics(None, SETTINGS)
    updates = feed(a, merge(path(1, [(i / 30, 100 + i * 0.5, 500) for i in range(600)])))
    trail = view(updates[-1], 1).trail
    assert len(trail) <= an.MAX_HISTORY_POINTS
    assert len(trail) >= 10
    saved = json.loads(a.state())
    assert len(saved["tracks"][0][1]) <= an.MAX_HISTORY_POINTS
    assert len(a.state()) < 2000


def test_tracks_unseen_for_long_are_forgotten() -> None:
    # Forget after max(5, 3 × 1 s) = 5 s unseen: track 1 seen last at t = 1 is kept at 6.0 (5 s), gone at 6.5.
    a = CameraAnalytics(None, SETTINGS)
    feed(a, merge(path(1, [(0, 100, 100), (1, 110, 100)]), path(2, [(t * 0.5, 500, 500) for t in range(13)])))
    assert [t[0] for t in json.loads(a.state())["tracks"]] == [1, 2]
    a.update([det(2, 500, 500)], 6.5, SIZE)
    assert [t[0] for t in json.loads(a.state())["tracks"]] == [2]


# ---------------------------------------------------------------------- wrong way

LANE = Zone("lane", ((100.0, 100.0), (900.0, 100.0), (900.0, 900.0), (100.0, 900.0)), direction=(0.0, -1.0))


def test_driving_against_the_lane_is_raised_once_after_wrong_way_s() -> None:
    # Down the image at 20 px/s (every 0.5 s) in a lane going up: cos = -1 < -0.5, moving (20 ≥ 1 px/s).
    # Velocity known from t = 0.5 → against since 0.5; 1.5 - 0.5 = 1.0 ≥ wrong_way_s → one event at 1.5, value 20.
    a = CameraAnalytics(geo(zones=[LANE]), SETTINGS)
    wrong = kinds(feed(a, merge(path(1, [(i * 0.5, 500.0, 200.0 + 10 * i) for i in range(8)]))), "wrong_way")
    assert [(e.at, e.where, e.value, e.track_ids) for e in wrong] == [(1.5, "lane", 20.0, (1,))]


@pytest.mark.parametrize(
    ("dx", "dy", "expected"),
    [
        (0.0, -10.0, 0),  # with the lane
        (10.0, 0.0, 0),  # across it: cos = 0
        (10.0, 10.0, 1),  # 135° from the lane: cos = -0.71
        (0.0, 0.05, 0),  # against it, but 0.1 px/s: stopped
    ],
)
def test_only_moving_against_the_lane_counts(dx: float, dy: float, expected: int) -> None:
    a = CameraAnalytics(geo(zones=[LANE]), SETTINGS)
    updates = feed(a, merge(path(1, [(i * 0.5, 300.0 + dx * i, 500.0 + dy * i) for i in range(8)])))
    assert len(kinds(updates, "wrong_way")) == expected


def test_calibrated_wrong_way_speed_in_km_per_hour() -> None:
    # 20 px/s = 2 m/s = 7.2 km/h.
    a = CameraAnalytics(geo(zones=[LANE], calibration=TEN_PX_PER_M), SETTINGS)
    wrong = kinds(feed(a, merge(path(1, [(i * 0.5, 500.0, 200.0 + 10 * i) for i in range(8)]))), "wrong_way")
    assert [e.value for e in wrong] == [7.2]


# ---------------------------------------------------------------------- near misses: time to collision


def _head_on() -> list[Frame]:
    """Car 7 going right from x = 100 and truck 3 going left from x = 500 at 100 px/s on y = 500; the truck is
    not seen at 1.5."""
    car = path(7, [(t, 100 + 100 * t, 500) for t in (0.0, 0.5, 1.0, 1.5)])
    truck = path(3, [(t, 500 - 100 * t, 500) for t in (0.0, 0.5, 1.0)], cls="truck")
    return merge(car, truck)


def test_a_head_on_encounter_starts_keeps_its_minimum_and_ends() -> None:
    # Pair (3, 7): dp = car - truck. t = 0.5: truck 450, car 150, v = -100 / +100 → dp = -300, dv = 200,
    # R = (40 + 40) / 2 = 40 → TTC = (300 - 40) / 200 = 1.3 < 1.5; closing 200 ≥ 0.2 × 20 = 4 px/s → start.
    # t = 1.0: 400 / 200 → TTC = (200 - 40) / 200 = 0.8. t = 1.5: the truck is gone → end with 0.8, at the
    # last midpoint of the two, ((200 + 400) / 2, 500).
    a = CameraAnalytics(None, SETTINGS)
    updates = feed(a, _head_on())
    near = kinds(updates, "near_miss")
    assert near == [
        MotionEvent(
            "near_miss", 0.5, (3, 7), ("truck", "car"), measure="ttc", value=1.3, threshold=1.5,
            position=(300.0, 500.0), phase="start",
        ),
        MotionEvent(
            "near_miss", 1.5, (3, 7), ("truck", "car"), measure="ttc", value=0.8, threshold=1.5,
            position=(300.0, 500.0), phase="end",
        ),
    ]  # fmt: skip
    assert updates[0].active_near_misses == ()
    assert [rounded(e) for e in updates[2].active_near_misses] == [replace(near[0], value=0.8)]
    assert updates[3].active_near_misses == ()


def test_two_pedestrians_never_nearly_collide() -> None:
    frames = [(t, [replace(d, cls="person") for d in dets]) for t, dets in _head_on()]
    assert kinds(feed(CameraAnalytics(None, SETTINGS), frames), "near_miss") == []


def test_an_encounter_ends_when_the_pair_stops_closing_and_a_new_one_may_start() -> None:
    # Truck 3 parked at x = 500 (width 40); car 7 (width 40, R = 40) approaches, backs off, approaches again.
    # t = 0.5: car 350, v = (350 - 300) / 0.5 = 100 → dp = -150, TTC = (150 - 40) / 100 = 1.1 → start.
    # t = 1.0: car 300, v = (300 - 300) / 1 = 0 → not closing → end (min 1.1).
    # t = 1.5: car 250, v = (250 - 350) / 1 = -100: diverging. t = 2.0: car 300, v = 0.
    # t = 2.5: car 350, v = (350 - 250) / 1 = 100 → TTC 1.1 → a new start.
    car = path(
        7, [(0.0, 300, 500), (0.5, 350, 500), (1.0, 300, 500), (1.5, 250, 500), (2.0, 300, 500), (2.5, 350, 500)]
    )
    truck = path(3, [(t * 0.5, 500, 500) for t in range(6)], cls="truck")
    near = kinds(feed(CameraAnalytics(None, SETTINGS), merge(car, truck)), "near_miss")
    assert [(e.at, e.phase, e.value) for e in near] == [
        (0.5, "start", 1.1),
        (1.0, "end", 1.1),
        (2.5, "start", 1.1),
    ]


def test_a_frame_without_one_of_the_pair_does_not_split_the_encounter() -> None:
    # Frames 0.2 s apart. Car 7 from x = 300 at 100 px/s towards truck 3 parked at x = 500 (R = 40): TTC =
    # (200 - 100 t - 40) / 100 = 1.6 - t once the car's speed is known (t = 0.4: 1.2 → start). The truck is
    # not seen at t = 0.8: under ENCOUNTER_GRACE_S (0.5 s) later it is back, so the encounter goes on, with
    # its minimum at t = 1.4 (0.2), and no second start.
    times = [round(0.2 * k, 1) for k in range(8)]
    car = path(7, [(t, 300 + 100 * t, 500) for t in times])
    truck = path(3, [(t, 500, 500) for t in times if t != 0.8], cls="truck")
    updates = feed(CameraAnalytics(None, SETTINGS), merge(car, truck))
    near = kinds(updates, "near_miss")
    assert [(e.at, e.phase, e.value) for e in near] == [(0.4, "start", 1.2)]
    assert [e.track_ids for e in updates[4].active_near_misses] == [(3, 7)]  # t = 0.8, the truck unseen
    assert [round(e.value or 0.0, 3) for e in updates[-1].active_near_misses] == [0.2]


def test_parallel_movers_and_slow_closers_are_not_on_a_collision_course() -> None:
    # Same velocity, 30 px apart: dv = 0 → no TTC.
    side_by_side = merge(
        path(1, [(t * 0.5, 100 + 50 * t, 500) for t in range(5)]),
        path(2, [(t * 0.5, 100 + 50 * t, 530) for t in range(5)]),
    )
    assert kinds(feed(CameraAnalytics(None, SETTINGS), side_by_side), "near_miss") == []
    # Car 1 parked at x = 100; car 2 from 143.5 to 142 in 0.5 s: v = -3 px/s, dp = 42, R = 40 → TTC 0.67 s, but
    # closing 3 < 0.2 × 20 = 4 px/s → not a near miss. From 144.5 to 142: closing 5 ≥ 4 → TTC (42 - 40) / 5 = 0.4.
    parked = path(1, [(0.0, 100, 500), (0.5, 100, 500)])
    slow = merge(parked, path(2, [(0.0, 143.5, 500), (0.5, 142, 500)]))
    assert kinds(feed(CameraAnalytics(None, SETTINGS), slow), "near_miss") == []
    faster = merge(parked, path(2, [(0.0, 144.5, 500), (0.5, 142, 500)]))
    assert [e.value for e in kinds(feed(CameraAnalytics(None, SETTINGS), faster), "near_miss")] == [0.4]


def test_calibrated_ttc_in_metres() -> None:
    # 10 px = 1 m. Car 1 at 10 m/s towards person 2 standing at 30 m. t = 0.5: car at 15 m → dp = 15, dv = -10,
    # R = 1.5 m → TTC = (15 - 1.5) / 10 = 1.35 < 1.5; closing 10 ≥ 1 m/s.
    car = path(1, [(t, 100 + 100 * t, 500) for t in (0.0, 0.5)])
    person = path(2, [(t, 300, 500) for t in (0.0, 0.5)], cls="person", w=20.0)
    near = kinds(feed(CameraAnalytics(geo(calibration=TEN_PX_PER_M), SETTINGS), merge(car, person)), "near_miss")
    assert [(e.at, e.classes, e.value, e.phase) for e in near] == [(0.5, ("car", "person"), 1.35, "start")]


# ---------------------------------------------------------------------- near misses: post-encroachment time


def _pet_scene(person_at_2: float = 220.0, first: str = "car") -> list[Frame]:
    """Car 1 along y = 220 (cell row 5 of 40 px), x 20 → 100 → 180 at t = 0, 1, 2; person 2 down x = 60."""
    car = path(1, [(0.0, 20, 220), (1.0, 100, 220), (2.0, 180, 220)], cls=first)
    person = path(2, [(0.0, 60, 140), (1.0, 60, 180), (2.0, 60, person_at_2)], cls="person", w=20.0)
    return merge(car, person)


def test_pet_of_a_person_crossing_behind_a_car() -> None:
    # Cells of 40 px. The car's move 0 → 1 s, x 20 → 100, crosses x = 40 at s = 0.25 and x = 80 at s = 0.75: it is in
    # cell (1, 5) (x 40..80, y 200..240) from t = 0.25 to t = 0.75. The person's move 1 → 2 s, y 180 → 220, crosses
    # y = 200 at s = 0.5: it enters cell (1, 5) at t = 1.5, at (60, 200). PET = 1.5 - 0.75 = 0.75 < 1.0 s.
    # (No TTC: at t = 1 and 2 the pair is moving apart, dp·dv > 0.)
    updates = feed(CameraAnalytics(None, SETTINGS), _pet_scene())
    assert kinds(updates, "near_miss") == [
        MotionEvent(
            "near_miss", 2.0, (1, 2), ("car", "person"), measure="pet", value=0.75, threshold=1.0,
            position=(60.0, 200.0), phase="end",
        )
    ]  # fmt: skip


def test_no_pet_above_the_threshold_or_between_pedestrians() -> None:
    # The person only reaches y = 205 at t = 2: y = 200 at s = 20 / 25 = 0.8 → enters at 1.8: PET 1.05 ≥ 1.0.
    assert kinds(feed(CameraAnalytics(None, SETTINGS), _pet_scene(205.0)), "near_miss") == []
    assert kinds(feed(CameraAnalytics(None, SETTINGS), _pet_scene(first="person")), "near_miss") == []


def test_no_pet_while_the_cell_is_still_occupied_or_for_a_new_track() -> None:
    # Car 1 parked in cell (1, 5) at (60, 230); the person enters that cell at 1.5 while it is there: no PET.
    parked = path(1, [(t, 60, 230) for t in (0.0, 1.0, 2.0)])
    person = path(2, [(0.0, 60, 140), (1.0, 60, 180), (2.0, 60, 210)], cls="person", w=20.0)
    assert kinds(feed(CameraAnalytics(None, SETTINGS), merge(parked, person)), "near_miss", "pet") == []
    # The car leaves cell (1, 5) at 0.75; track 3 first appears in it at t = 1: a new track measures nothing.
    car = path(1, [(0.0, 20, 220), (1.0, 100, 220)])
    newcomer = path(3, [(1.0, 60, 225)], cls="motorcycle")
    assert kinds(feed(CameraAnalytics(None, SETTINGS), merge(car, newcomer)), "near_miss") == []


def test_a_car_following_another_through_a_cell_is_a_headway_not_a_near_miss() -> None:
    # Car 1 x 60 → 140 → 220 and car 3, 60 px behind, x 0 → 80 → 160, both along y = 220 at 80 px/s. Car 1
    # leaves cell (2, 5) (x 80..120) at t = 0.75 (x = 120); car 3 enters it at t = 1.0 (x = 80): 0.25 s later,
    # under pet_s — but both head the same way (cos = 1 > FOLLOWING_COS), so it is no crossing conflict.
    lead = path(1, [(0.0, 60, 220), (1.0, 140, 220), (2.0, 220, 220)])
    follower = path(3, [(0.0, 0, 220), (1.0, 80, 220), (2.0, 160, 220)])
    assert kinds(feed(CameraAnalytics(None, SETTINGS), merge(lead, follower)), "near_miss") == []


def test_pet_is_said_once_per_pair_per_ten_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    # After the first conflict (t = 2, 0.75 s), the car cuts back left and down, (180,220) → (20,300) by t = 3:
    # x = 180 - 160 s, y = 220 + 80 s; cell (1, 7) (x 40..80, y 280..320) from s = 0.75 (y = 280) to s = 0.875
    # (x = 40): t 2.75..2.875. The person, (60,260) at 3 → (60,300) at 4, enters (1, 7) at y = 280, t = 3.5:
    # PET = 3.5 - 2.875 = 0.625 s — the same pair within 10 s, so not said again.
    frames = _pet_scene() + [
        (3.0, [det(1, 20, 300), det(2, 60, 260, "person", w=20.0)]),
        (4.0, [det(1, 20, 340), det(2, 60, 300, "person", w=20.0)]),
    ]
    assert [(e.at, e.value) for e in kinds(feed(CameraAnalytics(None, SETTINGS), frames), "near_miss")] == [(2.0, 0.75)]
    monkeypatch.setattr(an, "PET_REPEAT_S", 0.0)
    assert [(e.at, e.value) for e in kinds(feed(CameraAnalytics(None, SETTINGS), frames), "near_miss")] == [
        (2.0, 0.75),
        (4.0, 0.625),
    ]


def test_calibrated_pet_cells_are_the_conflict_radius() -> None:
    # 10 px = 1 m, cells of 1.5 m. Car: ground (0.5, 2) → (8.5, 2) in 0..1 s at 8 m/s: in cell x 1.5..3.0 from
    # s = 0.125 to 0.3125 (t 0.125..0.3125). Person: (2, -1) at 1 → (2, 2) at 2: enters row y 1.5..3.0 at
    # s = 2.5 / 3, t = 1.8333. PET = 1.8333 - 0.3125 = 1.52 ≥ 1.0: none; with pet_s = 2: one, 1.52 s.
    car = path(1, [(0.0, 5, 20), (1.0, 85, 20), (2.0, 165, 20)])
    person = path(2, [(1.0, 20, -10), (2.0, 20, 20)], cls="person", w=20.0)
    geometry = geo(calibration=TEN_PX_PER_M)
    assert kinds(feed(CameraAnalytics(geometry, SETTINGS), merge(car, person)), "near_miss") == []
    wide = replace(SETTINGS, pet_s=2.0)
    near = kinds(feed(CameraAnalytics(geometry, wide), merge(car, person)), "near_miss")
    assert [(e.measure, e.value) for e in near] == [("pet", round(11 / 6 - 0.3125, 6))]


# ---------------------------------------------------------------------- determinism, sizes, clocks


def _busy_scene() -> tuple[CameraGeometry, list[Frame]]:
    """A scene with every kind of event: a line, a parking bay, a one-way lane, a head-on pair, a crossing."""
    geometry = geo(
        [STOP],
        [
            Zone("bay", WEST.polygon, max_dwell_s=2.0),
            Zone("lane", ((600, 0), (900, 0), (900, 1000), (600, 1000)), (0, -1)),
        ],
    )
    wrong = path(1, [(t * 0.5, 700, 100 + 30 * t) for t in range(30)])  # down a lane going up, across "stop"
    parked = path(2, [(t * 0.5, 200, 200) for t in range(30)])
    car = path(3, [(t * 0.5, 100 + 50 * t, 800) for t in range(12)])
    truck = path(4, [(t * 0.5, 900 - 30 * t, 800) for t in range(10)], cls="truck")
    walker = path(5, [(t * 0.5, 450, 300 + 20 * t) for t in range(30)], cls="person", w=20.0)
    crosser = path(6, [(t * 0.5, 50 + 50 * (t - 6), 600) for t in range(6, 30)])
    return geometry, merge(wrong, parked, car, truck, walker, crosser)


def test_the_busy_scene_raises_every_kind_of_event() -> None:
    geometry, frames = _busy_scene()
    updates = feed(CameraAnalytics(geometry, SETTINGS), frames)
    assert {e.kind for u in updates for e in u.events} == {"line_crossing", "dwell", "wrong_way", "near_miss"}
    assert {e.measure for e in kinds(updates, "near_miss")} == {"ttc", "pet"}


def test_results_do_not_depend_on_the_order_of_detections() -> None:
    geometry, frames = _busy_scene()
    shuffled = []
    rnd = random.Random(3)
    for t, dets in frames:
        dets = list(dets)
        rnd.shuffle(dets)
        shuffled.append((t, dets))
    assert feed(CameraAnalytics(geometry, SETTINGS), frames) == feed(CameraAnalytics(geometry, SETTINGS), shuffled)


def test_a_repeated_track_id_keeps_its_most_confident_box() -> None:
    a = CameraAnalytics(None, SETTINGS)
    update = a.update([det(1, 100, 100), replace(det(1, 300, 300, "truck"), confidence=0.95)], 0.0, SIZE)
    assert [(t.cls, t.trail) for t in update.tracks] == [("truck", ((300.0, 300.0),))]


def test_frames_of_another_size_use_the_scaled_geometry() -> None:
    # The line at y = 500 of 1000×1000 frames is y = 250 at 500×500: (150,200) → (150,260) crosses it.
    a = CameraAnalytics(geo([STOP]), SETTINGS)
    updates = feed(a, merge(path(1, [(0, 150, 200), (1, 150, 260)])), size=(500, 500))
    assert [(e.where, e.position) for e in kinds(updates, "line_crossing")] == [("stop", (150.0, 260.0))]


def test_without_geometry_there_are_tracks_and_pixels() -> None:
    a = CameraAnalytics(None, SETTINGS)
    updates = feed(a, merge(path(1, [(0.0, 10, 10), (1.0, 20, 10)])), size=(640, 480))
    assert updates[-1].unit == "px"
    assert updates[-1].occupancy == ()
    assert view(updates[-1], 1) == TrackView(1, "car", ((10.0, 10.0), (20.0, 10.0)), 10.0, "px/s", ())


def test_a_late_frame_is_ignored_and_a_clock_reset_starts_over() -> None:
    a = CameraAnalytics(geo([STOP]), SETTINGS)
    feed(a, merge(path(1, [(100.0, 300, 400), (101.0, 300, 600)])))
    before = a.state()
    late = a.update([det(1, 300, 300)], 100.5, SIZE)
    assert late.events == () and late.tracks == ()
    assert a.state() == before
    # Back by more than a minute: everything is forgotten, so the same track crossing again is counted again.
    again = feed(a, merge(path(1, [(10.0, 300, 400), (11.0, 300, 600)])))
    assert len(kinds(again, "line_crossing")) == 1


def test_a_new_frame_size_starts_over() -> None:
    a = CameraAnalytics(geo([STOP]), SETTINGS)
    feed(a, merge(path(1, [(0.0, 300, 400), (1.0, 300, 450)])))
    a.update([det(1, 150, 230)], 2.0, (500, 500))
    assert json.loads(a.state())["tracks"][0][1] == [[2.0, 150.0, 230.0]]


def test_reset_forgets_everything() -> None:
    a = CameraAnalytics(geo([STOP]), SETTINGS)
    fresh = a.state()
    feed(a, _head_on())
    a.reset()
    assert a.state() == fresh


# ---------------------------------------------------------------------- wire format


def test_event_and_track_json() -> None:
    near = MotionEvent(
        "near_miss", 12.5, (3, 7), ("truck", "car"), measure="ttc", value=0.81234, threshold=1.5,
        position=(300.04, 499.96), phase="start",
    )  # fmt: skip
    assert near.to_json() == {
        "kind": "near_miss",
        "at": 12.5,
        "trackIds": [3, 7],
        "classes": ["truck", "car"],
        "measure": "ttc",
        "value": 0.812,
        "threshold": 1.5,
        "position": [300.0, 500.0],
        "phase": "start",
        "rule": "rule-based",
    }
    crossing = MotionEvent("line_crossing", 1.0, (1,), ("car",), where="stop", direction="south")
    assert crossing.to_json() == {
        "kind": "line_crossing",
        "at": 1.0,
        "trackIds": [1],
        "classes": ["car"],
        "where": "stop",
        "direction": "south",
        "value": None,
        "threshold": None,
        "position": None,
    }
    assert MotionEvent("wrong_way", 1.0, (1,), ("car",), where="lane", value=20.0).to_json()["rule"] == "rule-based"
    track = TrackView(4, "bus", ((1.0, 2.0), (3.0, 4.0)), 36.04, "km/h", ("lane",))
    assert track.to_json() == {
        "trackId": 4,
        "class": "bus",
        "trail": [[1.0, 2.0], [3.0, 4.0]],
        "speed": 36.0,
        "speedUnit": "km/h",
        "zones": ["lane"],
    }
    json.dumps([near.to_json(), track.to_json()])


# ---------------------------------------------------------------------- state


@pytest.mark.parametrize("calibrated", [False, True])
def test_a_restored_state_continues_exactly(calibrated: bool) -> None:
    geometry, frames = _busy_scene()
    if calibrated:
        geometry = replace(geometry, calibration=TEN_PX_PER_M)
    through = CameraAnalytics(geometry, SETTINGS)
    carried = CameraAnalytics(geometry, SETTINGS).state()
    seen_events = 0
    for t, dets in frames:
        expected = through.update(dets, t, SIZE)
        worker = CameraAnalytics(geometry, SETTINGS)  # a fresh worker each frame
        worker.restore(carried)
        assert worker.update(dets, t, SIZE) == expected
        carried = worker.state()
        assert carried == through.state()
        seen_events += len(expected.events)
    assert seen_events > 5
    assert b"pickle" not in carried and json.loads(carried)["v"] == an.STATE_VERSION


def test_restore_drops_lines_and_zones_no_longer_configured() -> None:
    geometry, frames = _busy_scene()
    a = CameraAnalytics(geometry, SETTINGS)
    feed(a, frames[:14])  # track 1 is in the lane; 2 in the bay; some have a side of "stop"
    fewer = replace(geometry, lines=(), zones=geometry.zones[:1])
    b = CameraAnalytics(fewer, SETTINGS)
    b.restore(a.state())
    saved = json.loads(b.state())
    assert all(track[2] == {} and track[3] == [] for track in saved["tracks"])
    assert {name for track in saved["tracks"] for name in track[4]} <= {"bay"}
    b.update(frames[14][1], frames[14][0], SIZE)


def _mutations() -> list[tuple[str, Any]]:
    """Ways to spoil a valid state."""

    def track(k: int, v: Any) -> Any:
        return lambda s: s["tracks"][0].__setitem__(k, v)

    return [
        ("version", lambda s: s.__setitem__("v", 99)),
        ("missing key", lambda s: s.pop("cells")),
        ("extra key", lambda s: s.__setitem__("x", 1)),
        ("size", lambda s: s.__setitem__("size", [0, 100])),
        ("size type", lambda s: s.__setitem__("size", "big")),
        ("no size", lambda s: s.__setitem__("size", None)),
        ("now", lambda s: s.__setitem__("now", "soon")),
        ("tracks", lambda s: s.__setitem__("tracks", {})),
        ("track id", track(0, "1")),
        ("track id bool", track(0, True)),
        ("history", track(1, [[0.0, 1.0]])),
        ("empty history", track(1, [])),
        ("history order", track(1, [[5.0, 1.0, 1.0], [4.0, 1.0, 1.0]])),
        ("history nan", track(1, [[float("nan"), 1.0, 1.0]])),
        ("line side", track(2, {"stop": [2, 1.0, 1.0]})),
        ("lines", track(2, [])),
        ("counted", track(3, [1])),
        ("zone stay", track(4, {"bay": [None, 1, None, False]})),
        ("duplicate track", lambda s: s["tracks"].append(s["tracks"][0])),
        ("encounter", lambda s: s.__setitem__("encounters", [[5, 5, "car", "car", 0.0, 1.0, 0.0, 0.0]])),
        ("cell", lambda s: s.__setitem__("cells", [[0, 0, 1, "car"]])),
        ("pet", lambda s: s.__setitem__("pet", [[1, 2, None]])),
    ]


@pytest.mark.parametrize(("what", "spoil"), _mutations(), ids=[m[0] for m in _mutations()])
def test_a_spoilt_state_is_refused_and_changes_nothing(what: str, spoil: Any) -> None:
    geometry, frames = _busy_scene()
    a = CameraAnalytics(geometry, SETTINGS)
    feed(a, frames[:6])
    good = a.state()
    data = json.loads(good)
    spoil(data)
    with pytest.raises(TrackerStateError):
        a.restore(json.dumps(data).encode())
    assert a.state() == good


@pytest.mark.parametrize("data", [b"", b"garbage", b"\xff\xfe", b"[]", b"null", b'{"v": 1}', b"\x80\x04K\x01."])
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(TrackerStateError):
        CameraAnalytics(None, SETTINGS).restore(data)
