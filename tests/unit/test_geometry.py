"""Tests of the scene geometry helpers on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from traffic.errors import ConfigError
from traffic.geometry import (
    Calibration,
    CameraGeometry,
    CountingLine,
    Zone,
    anchor,
    empty_geometry,
    homography,
    point_in_polygon,
    polygon_area,
    segments_intersect,
    side_of_line,
    simple_polygon,
)

SQUARE = ((0.0, 0.0), (100.0, 0.0), (100.0, 100.0), (0.0, 100.0))


def test_an_affine_calibration_maps_points_by_hand() -> None:
    # Image square 100 px → ground 10 m wide, 20 m deep: x/10, y/5. (50, 50) → (5, 10); (20, 80) → (2, 16).
    cal = Calibration(SQUARE, ((0.0, 0.0), (10.0, 0.0), (10.0, 20.0), (0.0, 20.0)))
    assert cal.to_ground((50.0, 50.0)) == pytest.approx((5.0, 10.0))
    assert cal.to_ground((20.0, 80.0)) == pytest.approx((2.0, 16.0))
    assert cal.to_ground((100.0, 0.0)) == pytest.approx((10.0, 0.0))


def test_a_projective_calibration_is_the_homography_computed_by_hand() -> None:
    # H = [[1,0,0],[0,1,0],[0,0.01,1]]: (x, y) → (x, y) / (1 + 0.01 y).
    # The corners: (0,0)→(0,0); (100,0)→(100,0); (100,100)→(50,50); (0,100)→(0,50).
    ground = ((0.0, 0.0), (100.0, 0.0), (50.0, 50.0), (0.0, 50.0))
    cal = Calibration(SQUARE, ground)
    expected = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.01, 1.0))
    for row, want in zip(cal.matrix, expected, strict=True):
        assert row == pytest.approx(want, abs=1e-9)
    # (50, 50): w = 1.5 → (33.33, 33.33); (40, 20): w = 1.2 → (33.33, 16.67).
    assert cal.to_ground((50.0, 50.0)) == pytest.approx((100.0 / 3.0, 100.0 / 3.0))
    assert cal.to_ground((40.0, 20.0)) == pytest.approx((40.0 / 1.2, 20.0 / 1.2))
    # On the horizon (1 + 0.01 y = 0, y = -100) the ground point is at infinity.
    assert cal.to_ground((10.0, -100.0)) == (math.inf, math.inf)


@pytest.mark.parametrize(
    "image",
    [
        ((0.0, 0.0), (50.0, 0.0), (100.0, 0.0), (0.0, 100.0)),  # three on one line
        ((0.0, 0.0), (0.0, 0.0), (100.0, 100.0), (0.0, 100.0)),  # a repeated point
    ],
)
def test_degenerate_calibration_points_are_refused(image: tuple[tuple[float, float], ...]) -> None:
    with pytest.raises(ConfigError):
        homography(image, SQUARE)


def test_a_calibration_needs_four_points() -> None:
    with pytest.raises(ConfigError, match="exactly four"):
        homography(SQUARE[:3], SQUARE[:3])


def test_side_of_line_is_positive_on_the_left_with_y_down() -> None:
    # Line (0,0)→(10,0) points right; with y down its left is up the image (y < 0).
    # cross(start, end, p) = 10·py, side = -10·py / 10 = -py.
    line = CountingLine("l", (0.0, 0.0), (10.0, 0.0))
    assert side_of_line(line, (5.0, -3.0)) == pytest.approx(3.0)
    assert side_of_line(line, (5.0, 4.0)) == pytest.approx(-4.0)
    assert side_of_line(line, (50.0, 0.0)) == 0.0
    # A diagonal (0,0)→(3,4) (length 5): p = (4, 0): cross = 3·0 - 4·4 = -16 → side = 16/5 = 3.2.
    assert side_of_line(CountingLine("d", (0.0, 0.0), (3.0, 4.0)), (4.0, 0.0)) == pytest.approx(3.2)
    # A line of no length has no sides.
    assert side_of_line(CountingLine("z", (1.0, 1.0), (1.0, 1.0)), (5.0, 5.0)) == 0.0


@pytest.mark.parametrize(
    ("p1", "p2", "q1", "q2", "expected"),
    [
        ((0, 0), (10, 10), (0, 10), (10, 0), True),  # an X crossing at (5, 5)
        ((0, 0), (10, 0), (0, 1), (10, 1), False),  # parallel, one apart
        ((0, 0), (10, 0), (5, 0), (15, 0), True),  # collinear, overlapping
        ((0, 0), (4, 0), (5, 0), (15, 0), False),  # collinear, apart
        ((0, 0), (10, 0), (5, 0), (5, 10), True),  # a T: touching counts
        ((0, 0), (10, 0), (10, 0), (10, 5), True),  # sharing an end point
        ((0, 5), (4, 5), (5, 0), (5, 10), False),  # would cross beyond p2
        ((6, -5), (6, 5), (0, 0), (5, 0), False),  # crosses the line q extended, not the segment
    ],
)
def test_segments_intersect(
    p1: tuple[float, float], p2: tuple[float, float], q1: tuple[float, float], q2: tuple[float, float], expected: bool
) -> None:
    assert segments_intersect(p1, p2, q1, q2) is expected
    assert segments_intersect(q1, q2, p1, p2) is expected
    assert segments_intersect(p2, p1, q2, q1) is expected


L_SHAPE = ((0.0, 0.0), (100.0, 0.0), (100.0, 50.0), (50.0, 50.0), (50.0, 100.0), (0.0, 100.0))


@pytest.mark.parametrize(
    ("point", "polygon", "expected"),
    [
        ((50.0, 50.0), SQUARE, True),
        ((150.0, 50.0), SQUARE, False),
        ((-0.1, 50.0), SQUARE, False),
        ((100.0, 50.0), SQUARE, True),  # on the right edge
        ((50.0, 0.0), SQUARE, True),  # on the top edge
        ((0.0, 0.0), SQUARE, True),  # a corner
        ((100.0, 100.0), SQUARE, True),  # the opposite corner
        ((25.0, 75.0), L_SHAPE, True),  # the L's lower arm
        ((75.0, 25.0), L_SHAPE, True),  # the L's right arm
        ((75.0, 75.0), L_SHAPE, False),  # the notch
        ((75.0, 50.0), L_SHAPE, True),  # the notch's edge
    ],
)
def test_point_in_polygon(point: tuple[float, float], polygon: tuple[tuple[float, float], ...], expected: bool) -> None:
    assert point_in_polygon(point, polygon) is expected


def test_simple_polygon_and_area() -> None:
    assert simple_polygon(SQUARE)
    assert simple_polygon(L_SHAPE)
    bow_tie = ((0.0, 0.0), (100.0, 100.0), (100.0, 0.0), (0.0, 100.0))  # edges 1 and 3 cross at (50, 50)
    assert not simple_polygon(bow_tie)
    assert polygon_area(SQUARE) == pytest.approx(10_000.0)
    # The L: 100×100 minus the 50×50 notch = 7500.
    assert polygon_area(L_SHAPE) == pytest.approx(7_500.0)
    assert polygon_area(((0.0, 0.0), (4.0, 0.0), (0.0, 3.0))) == pytest.approx(6.0)


def test_anchor_is_the_bottom_centre() -> None:
    assert anchor((10.0, 20.0, 30.0, 60.0)) == (20.0, 60.0)


def test_scaled_geometry_maps_lines_zones_directions_and_keeps_the_ground() -> None:
    cal = Calibration(SQUARE, ((0.0, 0.0), (10.0, 0.0), (10.0, 20.0), (0.0, 20.0)))
    geo = CameraGeometry(
        "cam",
        (100, 100),
        lines=(CountingLine("l", (10.0, 50.0), (90.0, 50.0), "south", "north"),),
        zones=(Zone("z", ((0.0, 0.0), (50.0, 0.0), (50.0, 50.0)), (0.0, -1.0), 12.0),),
        calibration=cal,
    )
    assert geo.scaled(100, 100) is geo
    big = geo.scaled(200, 50)  # x doubles, y halves
    assert big.image_size == (200, 50)
    assert big.lines == (CountingLine("l", (20.0, 25.0), (180.0, 25.0), "south", "north"),)
    assert big.zones == (Zone("z", ((0.0, 0.0), (100.0, 0.0), (100.0, 25.0)), (0.0, -0.5), 12.0),)
    assert big.calibration is not None
    assert big.calibration.ground == cal.ground
    # The same scene point: (50, 50) at 100×100 is (100, 25) at 200×50; both are ground (5, 10).
    assert big.to_ground((100.0, 25.0)) == pytest.approx(geo.to_ground((50.0, 50.0)))
    assert big.to_ground((100.0, 25.0)) == pytest.approx((5.0, 10.0))
    assert big.unit == "m"


def test_an_empty_geometry_is_uncalibrated_pixels() -> None:
    geo = empty_geometry("cam", 640, 480)
    assert geo.image_size == (640, 480)
    assert geo.lines == () and geo.zones == ()
    assert geo.unit == "px"
    assert geo.to_ground((12.5, 7.0)) == (12.5, 7.0)
    assert geo.scaled(320, 240).image_size == (320, 240)
