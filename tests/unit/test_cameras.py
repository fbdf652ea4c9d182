"""Camera ids, source URL validation, detection rates, credential masking and the reconnect policy."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from traffic.cameras import (
    Camera,
    local_path,
    make_camera,
    mask_url,
    next_tick,
    normalise_camera_id,
    parse_detect_fps,
    reconnect_delay,
    validate_camera_url,
)
from traffic.errors import CameraError, TrafficError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(1, ("1", 1)), (0, ("0", 0)), ("cam-01", ("cam-01", "cam-01")), ("a.b:c_d", ("a.b:c_d", "a.b:c_d"))],
)
def test_camera_ids_keep_the_wire_form(raw: object, expected: tuple[str, object]) -> None:
    assert normalise_camera_id(raw) == expected


@pytest.mark.parametrize("raw", [-1, True, None, 1.5, "", "x" * 65, "has space", "a/b", "ü", "a\n", 10**70, [1]])
def test_bad_camera_ids_are_rejected(raw: object) -> None:
    with pytest.raises(CameraError) as info:
        normalise_camera_id(raw)
    assert info.value.code == "invalid_camera_id"
    assert isinstance(info.value, TrafficError)


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://10.0.0.5:554/stream1",
        "rtsps://cam.example.com/live",
        "http://127.0.0.1:8080/snapshot.jpg",
        "https://cam.example.com/video.mjpg?x=1",
        "rtsp://admin:secret@10.0.0.5/ch1",
    ],
)
def test_network_urls_are_accepted(url: str) -> None:
    assert validate_camera_url(url, allow_files=False) == url


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("", "invalid_url"),
        (None, "invalid_url"),
        (42, "invalid_url"),
        ("rtsp://", "invalid_url"),
        ("http:///path", "invalid_url"),
        ("rtsp://host:99999/x", "invalid_url"),
        ("rtsp://host/a b", "invalid_url"),
        ("rtsp://host/a\x00b", "invalid_url"),
        ("rtsp://host/\t", "invalid_url"),
        ("http://[::1/x", "invalid_url"),
        ("rtsp://host/" + "a" * 2048, "invalid_url"),
        ("ftp://host/x", "scheme_not_allowed"),
        ("javascript:alert(1)", "scheme_not_allowed"),
        ("rtmp://host/live", "scheme_not_allowed"),
        ("file:///etc/hostname", "file_sources_disabled"),
        ("/tmp/video.mp4", "file_sources_disabled"),
        ("demo.avi", "file_sources_disabled"),
    ],
)
def test_bad_urls_are_rejected_with_a_code(url: object, code: str) -> None:
    with pytest.raises(CameraError) as info:
        validate_camera_url(url, allow_files=False)
    assert info.value.code == code


def test_file_sources_need_the_switch_and_an_existing_file(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    clip.write_bytes(b"x")
    for url in (str(clip), clip.as_uri()):
        assert validate_camera_url(url, allow_files=True) == url
        with pytest.raises(CameraError) as disabled:
            validate_camera_url(url, allow_files=False)
        assert disabled.value.code == "file_sources_disabled"
    for missing in (str(tmp_path / "nope.avi"), (tmp_path / "nope.avi").as_uri(), str(tmp_path)):
        with pytest.raises(CameraError) as info:
            validate_camera_url(missing, allow_files=True)
        assert info.value.code == "file_not_found"
    with pytest.raises(CameraError) as remote:
        validate_camera_url("file://otherhost/etc/hostname", allow_files=True)
    assert remote.value.code == "invalid_url"
    assert local_path(clip.as_uri()) == str(clip)
    assert local_path("rtsp://host/x") is None


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("rtsp://admin:s3cr3t@10.0.0.5:554/ch1", "rtsp://admin:***@10.0.0.5:554/ch1"),
        ("rtsp://admin:p@ss@cam/ch1", "rtsp://admin:***@cam/ch1"),
        ("http://tok3n@cam/snap.jpg", "http://***@cam/snap.jpg"),
        (
            "http://cam/snap.jpg?user=a&password=b&token=c&size=2",
            "http://cam/snap.jpg?user=a&password=***&token=***&size=2",
        ),
        ("rtsp://10.0.0.5/ch1", "rtsp://10.0.0.5/ch1"),
        ("/videos/demo.avi", "/videos/demo.avi"),
        ("http://[::1/x", "<malformed url>"),
    ],
)
def test_credentials_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_error_messages_never_hold_the_password() -> None:
    for url in ("rtsp://admin:hunter22@host:99999/x", "rtsp://admin:hunter22@/x"):
        with pytest.raises(CameraError) as info:
            validate_camera_url(url, allow_files=False)
        assert "hunter22" not in str(info.value)


def test_camera_json_round_trip_keeps_the_wire_id() -> None:
    old = make_camera(7, "rtsp://u:pw123456@cam/1", allow_files=False, name="gate")
    new = make_camera("north-1", "rtsp://cam/2", allow_files=False, enabled=False)
    assert (old.camera_id, old.wire_id) == ("7", 7)
    assert Camera.from_json(old.to_json()) == old
    assert Camera.from_json(new.to_json()) == new
    assert (old.to_json()["cameraId"], old.to_json()["wireId"]) == ("7", 7)
    assert Camera.from_json({"cameraId": "9", "url": "rtsp://cam/9"}).wire_id == "9"
    assert "pw123456" not in str(old.public_json())
    assert Camera("x", "rtsp://cam/1").wire_id == "x"
    with pytest.raises(CameraError):
        Camera.from_json({"cameraId": "x", "url": 5})
    with pytest.raises(CameraError):
        Camera.from_json({"cameraId": "x", "wireId": 8, "url": "rtsp://cam/x"})


def test_a_camera_detection_rate_round_trips_and_sets_its_interval() -> None:
    fast = make_camera("gpu-1", "rtsp://cam/1", allow_files=False, detect_fps=8)
    assert fast.detect_fps == 8.0 and isinstance(fast.detect_fps, float)
    assert fast.to_json()["detectFps"] == 8.0
    assert Camera.from_json(fast.to_json()) == fast
    assert fast.public_json()["detectFps"] == 8.0
    assert fast.detect_interval_s(1.8) == pytest.approx(0.125)

    plain = make_camera("cpu-1", "rtsp://cam/2", allow_files=False)
    assert plain.detect_fps is None and "detectFps" not in plain.to_json()  # stored form unchanged without one
    assert plain.detect_interval_s(1.8) == 1.8  # the global capture.frame_interval_s
    assert Camera.from_json({"cameraId": "old", "url": "rtsp://cam/3"}).detect_fps is None  # entries from before
    assert Camera.from_json({"cameraId": "n", "url": "rtsp://cam/3", "detectFps": None}).detect_fps is None
    assert Camera.from_json({"cameraId": "s", "url": "rtsp://cam/3", "detectFps": 0.05}).detect_interval_s(1) == 20


@pytest.mark.parametrize("value", [0.05, 0.5, 1, 5, 10, 29.99, 30])
def test_detection_rates_in_range_are_accepted(value: float) -> None:
    assert parse_detect_fps(value) == float(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "detectFps must be a number (frames detected per second), got a boolean"),
        (False, "got a boolean"),
        ("5", "got a string"),
        ([5], "got an array"),
        ({"fps": 5}, "got an object"),
        (0, "detectFps must be between 0.05 and 30 frames per second, got 0"),
        (0.049, "got 0.049"),
        (-1, "got -1"),
        (30.5, "got 30.5"),
        (31, "got 31"),
        (float("nan"), "got nan"),
        (float("inf"), "got inf"),
        (10**400, "got a larger number"),
    ],
)
def test_bad_detection_rates_are_rejected_with_a_clear_message(value: object, message: str) -> None:
    with pytest.raises(CameraError, match="^detectFps must be") as info:
        parse_detect_fps(value)
    assert info.value.code == "invalid_detect_fps" and message in str(info.value)
    with pytest.raises(CameraError) as made:
        make_camera("x", "rtsp://cam/x", allow_files=False, detect_fps=value)
    assert made.value.code == "invalid_detect_fps"
    with pytest.raises(CameraError) as stored:
        Camera.from_json({"cameraId": "x", "url": "rtsp://cam/x", "detectFps": value})
    assert stored.value.code == "invalid_camera" and message in str(stored.value)


def test_reconnect_delays_double_up_to_the_cap_with_jitter() -> None:
    rng = random.Random(1)
    for attempt, nominal in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (50, 30.0), (10**6, 30.0)]:
        for _ in range(50):
            assert nominal * 0.8 <= reconnect_delay(attempt, rng=rng) <= nominal * 1.2


def test_next_tick_is_drift_free_and_skips_missed_ticks() -> None:
    assert next_tick(10.0, 2.0, 5.0) == 10.0
    assert next_tick(10.0, 2.0, 10.0) == 12.0
    assert next_tick(10.0, 2.0, 11.9) == 12.0
    assert next_tick(10.0, 2.0, 17.5) == 18.0
