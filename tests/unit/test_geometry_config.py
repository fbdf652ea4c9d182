"""Tests of traffic.geometry_config and the geometry file's way into Settings (traffic.config)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from traffic import config
from traffic.config import describe_settings, load_settings
from traffic.errors import ConfigError
from traffic.geometry import Calibration, CameraGeometry, CountingLine, Zone
from traffic.geometry_config import geometry_from_mapping
from traffic.settings import Settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "geometry.example.yaml"

GEOMETRY_YAML = """
cameras:
  cam-1:
    image_size: [1280, 720]
    lines:
      - name: stop-line
        points: [[100, 500], [900, 520]]
        directions: [northbound, southbound]
      - name: kerb
        points: [[0, 400], [0, 720]]
    zones:
      - name: crossing
        polygon: [[200, 400], [600, 400], [600, 700], [200, 700]]
        direction: [0, -1]
        max_dwell_s: 20
      - name: corner
        polygon: [[1000, 600], [1280, 600], [1280, 720]]
    calibration:
      image: [[420, 380], [860, 380], [1180, 700], [100, 700]]
      ground: [[0, 30], [7, 30], [7, 0], [0, 0]]
  7:
    image_size: [640, 480]
"""

CAM_1 = CameraGeometry(
    "cam-1",
    (1280, 720),
    lines=(
        CountingLine("stop-line", (100.0, 500.0), (900.0, 520.0), "northbound", "southbound"),
        CountingLine("kerb", (0.0, 400.0), (0.0, 720.0)),
    ),
    zones=(
        Zone("crossing", ((200.0, 400.0), (600.0, 400.0), (600.0, 700.0), (200.0, 700.0)), (0.0, -1.0), 20.0),
        Zone("corner", ((1000.0, 600.0), (1280.0, 600.0), (1280.0, 720.0))),
    ),
    calibration=Calibration(
        ((420.0, 380.0), (860.0, 380.0), (1180.0, 700.0), (100.0, 700.0)),
        ((0.0, 30.0), (7.0, 30.0), (7.0, 0.0), (0.0, 0.0)),
    ),
)
CAM_7 = CameraGeometry("7", (640, 480))


def write(tmp_path: Path, name: str, text: str) -> Path:
    """Write ``text`` to ``tmp_path/name`` and return the path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- valid files


def test_a_valid_file_lands_in_settings(tmp_path: Path) -> None:
    path = write(tmp_path, "geometry.yaml", GEOMETRY_YAML)
    settings = load_settings({}, geometry=path)
    assert settings.geometry == (CAM_1, CAM_7)
    assert settings.geometry_of("cam-1") == CAM_1
    assert settings.geometry_of("7") == CAM_7
    assert settings.geometry_of("cam-2") is None
    cam = settings.geometry_of("cam-1")
    assert cam is not None and cam.unit == "m"
    assert cam.to_ground((1180.0, 700.0)) == pytest.approx((7.0, 0.0))
    assert cam.lines[1].forward == "in" and cam.lines[1].backward == "out"  # the default directions
    assert settings.geometry_of("7") is not None and CAM_7.unit == "px"
    # everything else is untouched
    assert settings == Settings(geometry=(CAM_1, CAM_7))


def test_the_file_named_in_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "geometry.yaml", GEOMETRY_YAML)
    assert load_settings({"TRAFFIC_GEOMETRY_FILE": str(path)}).geometry == (CAM_1, CAM_7)
    assert load_settings({"ALGO_GEOMETRY_FILE": str(path)}).geometry == (CAM_1, CAM_7)


def test_explicit_file_argument_beats_the_environment(tmp_path: Path) -> None:
    env_file = write(tmp_path, "env.yaml", "cameras: {a: {image_size: [10, 10]}}\n")
    given = write(tmp_path, "given.yaml", "cameras: {b: {image_size: [20, 20]}}\n")
    settings = load_settings({"TRAFFIC_GEOMETRY_FILE": str(env_file)}, geometry=given)
    assert settings.geometry == (CameraGeometry("b", (20, 20)),)


def test_no_file_reads_nothing() -> None:
    assert load_settings({}).geometry == ()
    assert load_settings({"TRAFFIC_GEOMETRY_FILE": "  "}).geometry == ()
    assert Settings().geometry_of("cam-1") is None


@pytest.mark.parametrize("text", ["", "# only comments\n", "cameras:\n", "cameras: {}\n"])
def test_an_empty_file_configures_no_camera(tmp_path: Path, text: str) -> None:
    assert load_settings({}, geometry=write(tmp_path, "g.yaml", text)).geometry == ()


def test_the_example_loads() -> None:
    settings = load_settings({}, geometry=EXAMPLE)
    demo = settings.geometry_of("demo")
    assert demo is not None
    assert demo.image_size == (1280, 720)
    assert [line.name for line in demo.lines] == ["stop-line", "kerb"]
    assert (demo.lines[0].forward, demo.lines[0].backward) == ("southbound", "northbound")
    assert [zone.name for zone in demo.zones] == ["crossing", "northbound-lane"]
    assert demo.zones[1].direction == (0.0, -1.0)
    assert demo.calibration is not None
    assert demo.to_ground((100.0, 700.0)) == pytest.approx((0.0, 0.0), abs=1e-9)


def test_the_example_with_the_other_examples() -> None:
    settings = load_settings(
        {"TRAFFIC_GEOMETRY_FILE": str(EXAMPLE)}, model_config=REPO / "config" / "model_config.example.yaml"
    )
    assert settings == Settings(geometry=settings.geometry)
    assert len(settings.geometry) == 1


def test_the_geometry_variable_is_known() -> None:
    assert "TRAFFIC_GEOMETRY_FILE" in config.known_env_vars()
    assert "ALGO_GEOMETRY_FILE" in config.known_env_vars()


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TRAFFIC_GEOMETRY_FILE: file not found"):
        load_settings({"TRAFFIC_GEOMETRY_FILE": str(tmp_path / "nope.yaml")})


def test_environment_references_are_expanded(tmp_path: Path) -> None:
    text = """
cameras:
  cam-1:
    image_size: ["${WIDTH}", 720]
    lines: [{name: "${LINE}", points: [["${X:-100}", 500], [900, 520]]}]
"""
    path = write(tmp_path, "g.yaml", text)
    settings = load_settings({"WIDTH": "1280", "LINE": "entry"}, geometry=path)
    assert settings.geometry == (
        CameraGeometry("cam-1", (1280, 720), lines=(CountingLine("entry", (100.0, 500.0), (900.0, 520.0)),)),
    )


def test_an_unset_reference_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "g.yaml", "cameras: {cam-1: {image_size: ['${WIDTH}', 720]}}\n")
    with pytest.raises(ConfigError, match=r"g\.yaml:cameras\.cam-1\.image_size\[0\]: environment variable WIDTH"):
        load_settings({}, geometry=path)


def test_describe_settings_shows_the_geometry_as_json() -> None:
    described = describe_settings(Settings(geometry=(CAM_1,)))
    text = json.dumps(described)
    assert "matrix" not in text  # derived from image and ground, not a setting
    geometry = described["geometry"]
    assert isinstance(geometry, list)
    assert geometry[0]["camera_id"] == "cam-1"
    assert geometry[0]["image_size"] == [1280, 720]
    assert geometry[0]["lines"][0] == {
        "name": "stop-line",
        "start": [100.0, 500.0],
        "end": [900.0, 520.0],
        "forward": "northbound",
        "backward": "southbound",
    }
    assert geometry[0]["zones"][1]["direction"] is None
    assert geometry[0]["calibration"]["ground"][0] == [0.0, 30.0]
    assert "***" not in text


def test_geometry_from_mapping_is_pure() -> None:
    doc: dict[str, Any] = {"cameras": {"cam-1": {"image_size": [1280, 720], "lines": []}}}
    before = copy.deepcopy(doc)
    assert geometry_from_mapping(doc, "g.yaml") == (CameraGeometry("cam-1", (1280, 720)),)
    assert doc == before
    assert geometry_from_mapping(None, "g.yaml") == ()


def test_numeric_and_string_ids_of_one_camera_in_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, "g.yaml", "cameras:\n  7: {image_size: [10, 10]}\n  '7': {image_size: [10, 10]}\n")
    with pytest.raises(ConfigError, match=r"g\.yaml:3:3: invalid YAML: duplicate key '7'"):
        load_settings({}, geometry=path)


def test_an_error_names_the_file(tmp_path: Path) -> None:
    text = "cameras:\n  cam-1:\n    image_size: [1280, 720]\n    lines: [{name: a, points: [[1, 2]]}]\n"
    path = write(tmp_path, "geometry.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_settings({}, geometry=path)
    assert str(info.value) == f"{path}:cameras.cam-1.lines[0].points: a counting line needs 2 points, got 1"


# --------------------------------------------------------------------------- errors


def cam(**entry: Any) -> dict[str, Any]:
    """A document with one camera ``cam-1`` of 1280x720 frames, plus ``entry``."""
    return {"cameras": {"cam-1": {"image_size": [1280, 720], **entry}}}


def line(points: Any = ((100, 500), (900, 520)), **extra: Any) -> dict[str, Any]:
    """A counting line entry."""
    return {"name": "l", "points": [list(p) if isinstance(p, tuple) else p for p in points], **extra}


def zone(polygon: Any = ((200, 400), (600, 400), (600, 700)), **extra: Any) -> dict[str, Any]:
    """A zone entry."""
    return {"name": "z", "polygon": [list(p) if isinstance(p, tuple) else p for p in polygon], **extra}


IMAGE = [[420, 380], [860, 380], [1180, 700], [100, 700]]
GROUND = [[0, 30], [7, 30], [7, 0], [0, 0]]
C = "g.yaml:cameras.cam-1"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        # the document
        ([1, 2], "g.yaml: expected a mapping with a cameras: section (got [1, 2])"),
        ("cameras", "g.yaml: expected a mapping with a cameras: section (got 'cameras')"),
        ({"camera": {}}, "g.yaml:camera: unknown key (did you mean cameras?)"),
        ({"cameras": [{"image_size": [1, 1]}]}, "g.yaml:cameras: expected a mapping of camera ids to their geometry"),
        # camera ids
        ({"cameras": {"bad id": {}}}, "g.yaml:cameras.bad id: invalid camera id 'bad id': camera id must be"),
        ({"cameras": {True: {}}}, "g.yaml:cameras.True: invalid camera id True"),
        ({"cameras": {-1: {}}}, "g.yaml:cameras.-1: invalid camera id -1: a numeric camera id must be"),
        ({"cameras": {1.5: {}}}, "g.yaml:cameras.1.5: invalid camera id 1.5"),
        (
            {"cameras": {7: {"image_size": [1, 1]}, "7": {"image_size": [1, 1]}}},
            "g.yaml:cameras.7: camera 7 is given twice (as 7 and '7')",
        ),
        # a camera
        ({"cameras": {"cam-1": [1]}}, f"{C}: expected a mapping with image_size, lines, zones and calibration"),
        ({"cameras": {"cam-1": None}}, f"{C}.image_size: missing: the [width, height]"),
        ({"cameras": {"cam-1": {"lines": []}}}, f"{C}.image_size: missing"),
        (cam(line=[]), f"{C}.line: unknown key (did you mean lines?)"),
        (cam(calibrations={}), f"{C}.calibrations: unknown key (did you mean calibration?)"),
        # image_size
        ({"cameras": {"cam-1": {"image_size": [1280]}}}, f"{C}.image_size: expected [width, height]"),
        ({"cameras": {"cam-1": {"image_size": "1280x720"}}}, f"{C}.image_size: expected [width, height]"),
        ({"cameras": {"cam-1": {"image_size": [0, 720]}}}, f"{C}.image_size[0]: expected a positive integer (got 0)"),
        ({"cameras": {"cam-1": {"image_size": [1280, -1]}}}, f"{C}.image_size[1]: expected a positive integer"),
        ({"cameras": {"cam-1": {"image_size": [1280.5, 720]}}}, f"{C}.image_size[0]: expected a positive integer"),
        ({"cameras": {"cam-1": {"image_size": [True, 720]}}}, f"{C}.image_size[0]: expected a positive integer"),
        # lines
        (cam(lines={"l": {}}), f"{C}.lines: expected a list"),
        (cam(lines=[[1, 2]]), f"{C}.lines[0]: expected a mapping with name, points and directions"),
        (cam(lines=[line(point=[])]), f"{C}.lines[0].point: unknown key (did you mean points?)"),
        (cam(lines=[{1: "x"}]), f"{C}.lines[0]: keys must be strings (found 1)"),
        (cam(lines=[{"points": [[1, 1], [2, 2]]}]), f"{C}.lines[0].name: missing: every line and zone needs a name"),
        (cam(lines=[line(name="  ")]), f"{C}.lines[0].name: expected a non-empty name"),
        (cam(lines=[line(name=5)]), f"{C}.lines[0].name: expected a non-empty name (got 5)"),
        (cam(lines=[line(name="x" * 65)]), f"{C}.lines[0].name: a name is at most 64 printable characters"),
        (cam(lines=[{"name": "l"}]), f"{C}.lines[0].points: missing: a counting line needs 2 points"),
        (cam(lines=[line([(1, 2)])]), f"{C}.lines[0].points: a counting line needs 2 points, got 1"),
        (cam(lines=[line([(1, 2), (3, 4), (5, 6)])]), f"{C}.lines[0].points: a counting line needs 2 points, got 3"),
        (cam(lines=[{"name": "l", "points": "a"}]), f"{C}.lines[0].points: expected a list (got 'a')"),
        (
            cam(lines=[line([(5, 5), (5.0, 5)])]),
            f"{C}.lines[0].points: the two points are the same: a counting line needs a length",
        ),
        # points
        (cam(lines=[line([[100], (2, 2)])]), f"{C}.lines[0].points[0]: expected a point [x, y] (got [100])"),
        (cam(lines=[line([{"x": 1}, (2, 2)])]), f"{C}.lines[0].points[0]: expected a point [x, y]"),
        (cam(lines=[line([(True, 5), (2, 2)])]), f"{C}.lines[0].points[0][0]: expected a number (got True)"),
        (cam(lines=[line([(1, 1), (2, "a")])]), f"{C}.lines[0].points[1][1]: expected a number (got 'a')"),
        (cam(lines=[line([(1, 1), (2, None)])]), f"{C}.lines[0].points[1][1]: expected a number (got None)"),
        (cam(lines=[line([(float("nan"), 1), (2, 2)])]), f"{C}.lines[0].points[0][0]: expected a number"),
        (
            cam(lines=[line([(100, 500), (1300, 500)])]),
            f"{C}.lines[0].points[1]: point (1300, 500) lies outside the 1280x720 image",
        ),
        (
            cam(lines=[line([(100, -0.5), (100, 500)])]),
            f"{C}.lines[0].points[0]: point (100, -0.5) lies outside the 1280x720 image",
        ),
        (cam(lines=[line([(1, 1), (2, 721)])]), f"{C}.lines[0].points[1]: point (2, 721) lies outside"),
        # directions
        (cam(lines=[line(directions=["in"])]), f"{C}.lines[0].directions: expected [forward, backward]"),
        (cam(lines=[line(directions="in,out")]), f"{C}.lines[0].directions: expected [forward, backward]"),
        (
            cam(lines=[line(directions=["in", "in"])]),
            f"{C}.lines[0].directions: the two directions need different names (both are 'in')",
        ),
        (cam(lines=[line(directions=["in", ""])]), f"{C}.lines[0].directions[1]: expected a non-empty name"),
        # zones
        (cam(zones=[zone(polygon=[(1, 1), (2, 2)])]), f"{C}.zones[0].polygon: a zone needs at least 3 points, got 2"),
        (cam(zones=[{"name": "z"}]), f"{C}.zones[0].polygon: missing: a zone needs a polygon of at least 3 points"),
        (cam(zones=[zone(polygn=[])]), f"{C}.zones[0].polygn: unknown key (did you mean polygon?)"),
        (
            cam(zones=[zone(polygon=[(0, 0), (10, 10), (20, 20)])]),
            f"{C}.zones[0].polygon: the polygon has no area (its points lie on one line)",
        ),
        (
            cam(zones=[zone(polygon=[(0, 0), (10, 0), (0, 10), (10, 10)])]),
            f"{C}.zones[0].polygon: the polygon crosses itself",
        ),
        (
            cam(zones=[zone(polygon=[(0, 0), (10, 0), (5, 0), (5, 5)])]),
            f"{C}.zones[0].polygon: the polygon crosses itself",
        ),
        (
            cam(zones=[zone(polygon=[(0, 0), (10, 10), (30, 30), (20, 20)])]),
            f"{C}.zones[0].polygon: the polygon has no area (its points lie on one line)",
        ),
        (
            cam(zones=[zone(polygon=[(0, 0), (10, 0), (10, 10), (0, 0)])]),
            f"{C}.zones[0].polygon[3]: repeats point 0 ((0, 0))",
        ),
        (
            cam(zones=[zone(polygon=[(0, 0), (10, 0), (10, 800)])]),
            f"{C}.zones[0].polygon[2]: point (10, 800) lies outside the 1280x720 image",
        ),
        (cam(zones=[zone(polygon=[(0, 0), (10, 0), (10, False)])]), f"{C}.zones[0].polygon[2][1]: expected a number"),
        (cam(zones=[zone(direction=[0, 0])]), f"{C}.zones[0].direction: a lane direction must not be [0, 0]"),
        (cam(zones=[zone(direction=[0.0, -0.0])]), f"{C}.zones[0].direction: a lane direction must not be [0, 0]"),
        (cam(zones=[zone(direction=[1])]), f"{C}.zones[0].direction: expected [dx, dy], the lane's direction"),
        (cam(zones=[zone(direction=["up", 1])]), f"{C}.zones[0].direction[0]: expected a number (got 'up')"),
        (cam(zones=[zone(max_dwell_s=0)]), f"{C}.zones[0].max_dwell_s: must be > 0 and <= 86400 seconds (got 0)"),
        (cam(zones=[zone(max_dwell_s=-5)]), f"{C}.zones[0].max_dwell_s: must be > 0"),
        (cam(zones=[zone(max_dwell_s=86401)]), f"{C}.zones[0].max_dwell_s: must be > 0 and <= 86400"),
        (cam(zones=[zone(max_dwell_s=True)]), f"{C}.zones[0].max_dwell_s: expected a number (got True)"),
        (cam(zones=[zone(max_dwell_s="long")]), f"{C}.zones[0].max_dwell_s: expected a number (got 'long')"),
        # names
        (
            cam(lines=[line(), line()]),
            f"{C}.lines[1].name: duplicate name 'l' (also cameras.cam-1.lines[0]); lines and zones share names",
        ),
        (cam(zones=[zone(), zone()]), f"{C}.zones[1].name: duplicate name 'z' (also cameras.cam-1.zones[0])"),
        (cam(lines=[line(name="x")], zones=[zone(name="x")]), f"{C}.zones[0].name: duplicate name 'x'"),
        # calibration
        (cam(calibration=[1]), f"{C}.calibration: expected a mapping with image and ground, four points each"),
        (
            cam(calibration={"images": IMAGE, "ground": GROUND}),
            f"{C}.calibration.images: unknown key (did you mean image?)",
        ),
        (cam(calibration={"image": IMAGE}), f"{C}.calibration.ground: missing: a calibration needs 4 ground points"),
        (
            cam(calibration={"image": IMAGE[:3], "ground": GROUND}),
            f"{C}.calibration.image: a calibration needs 4 image points, got 3",
        ),
        (
            cam(calibration={"image": IMAGE, "ground": [*GROUND, [1, 1]]}),
            f"{C}.calibration.ground: a calibration needs 4 ground points, got 5",
        ),
        (
            cam(calibration={"image": [[0, 0], [10, 10], [20, 20], [0, 100]], "ground": GROUND}),
            f"{C}.calibration: calibration image points 1, 2 and 3 lie on one line",
        ),
        (
            cam(calibration={"image": IMAGE, "ground": [[0, 0], [7, 30], [7, 0], [0, 0]]}),
            f"{C}.calibration: calibration ground points 1, 2 and 4 lie on one line",
        ),
        (
            cam(calibration={"image": [[420, 380], [860, 380], [1180, 700], [1300, 700]], "ground": GROUND}),
            f"{C}.calibration.image[3]: point (1300, 700) lies outside the 1280x720 image",
        ),
        (
            cam(calibration={"image": IMAGE, "ground": [[0, 30], [7, 30], [0, 0], [7, 0]]}),
            f"{C}.calibration: the image and ground points are not listed in the same order",
        ),
        (
            cam(calibration={"image": IMAGE, "ground": [[0, 30], [7, "far"], [7, 0], [0, 0]]}),
            f"{C}.calibration.ground[1][1]: expected a number (got 'far')",
        ),
        (
            cam(lines=[line([(100, 100), (900, 520)])], calibration={"image": IMAGE, "ground": GROUND}),
            f"{C}.lines[0].points[0]: point (100, 100) lies on or beyond the calibration's horizon",
        ),
        (
            cam(zones=[zone([(600, 50), (700, 500), (500, 500)])], calibration={"image": IMAGE, "ground": GROUND}),
            f"{C}.zones[0].polygon[0]: point (600, 50) lies on or beyond the calibration's horizon",
        ),
    ],
)
def test_invalid_geometry(doc: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        geometry_from_mapping(doc, "g.yaml")
    assert message in str(info.value)


def test_points_on_the_image_edge_are_inside() -> None:
    doc = cam(lines=[line([(0, 0), (1280, 720)])], zones=[zone([(0, 0), (1280, 0), (1280, 720), (0, 720)])])
    (geometry,) = geometry_from_mapping(doc, "g.yaml")
    assert geometry.lines[0].end == (1280.0, 720.0)


def test_a_concave_zone_is_fine() -> None:
    arrow = [(0, 0), (100, 50), (0, 100), (30, 50)]
    (geometry,) = geometry_from_mapping(cam(zones=[zone(arrow)]), "g.yaml")
    assert geometry.zones[0].polygon == tuple((float(x), float(y)) for x, y in arrow)


def test_a_mirrored_calibration_is_fine() -> None:
    """Ground points listed the other way round (a reflection) still correspond one to one."""
    mirrored = [[7, 30], [0, 30], [0, 0], [7, 0]]
    (geometry,) = geometry_from_mapping(cam(calibration={"image": IMAGE, "ground": mirrored}), "g.yaml")
    assert geometry.to_ground((420.0, 380.0)) == pytest.approx((7.0, 30.0))
