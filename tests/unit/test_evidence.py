"""Incident evidence in the domain: the ring buffer's bounds, names, the annotated snapshot, privacy blur,
clip requests on the wire, and a clip OpenCV writes and reads back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stack.harness import bus_jpeg
from traffic.errors import ImageError
from traffic.evidence import (
    LEVEL_COLORS,
    ClipRequest,
    ClipWindow,
    ClipWritten,
    FrameRing,
    PrivacyBoxes,
    annotated_snapshot,
    blur_for_privacy,
    camera_folder,
    clip_window,
    evidence_frame,
    evidence_name,
)
from traffic.imaging import blur_boxes, decode_jpeg, write_clip
from traffic.models import Detection, RiskLevel


def _textured(width: int = 320, height: int = 240, seed: int = 1) -> np.ndarray:
    """A noisy image: any blur shows as lost variance."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_the_ring_keeps_its_rate_its_span_and_its_memory_bound() -> None:
    ring = FrameRing(fps=5.0, span_s=2.0, max_bytes=10_000)
    for k in range(100):  # 25 frames a second offered for 4 s
        at = 100.0 + k * 0.04
        if ring.wants(at):
            ring.add(at, b"x" * 100)
    kept = ring.window(ClipWindow(0.0, 1e9))
    assert 9 <= len(kept) <= 12  # 5 a second over the last 2 s
    assert kept[-1].at > 103.96 - 0.25 and kept[0].at >= kept[-1].at - 2.0 - 1e-9
    assert all(b.at > a.at for a, b in zip(kept, kept[1:], strict=False))
    ring.add(200.0, b"y" * 9_950)  # over the memory bound: the oldest go, the newest stays
    assert ring.size_bytes <= 10_000 and len(ring) == 1
    ring.add(199.0, b"z")  # out of order: ignored
    assert [f.at for f in ring.window(ClipWindow(0.0, 1e9))] == [200.0]


def test_a_clip_window_and_evidence_names() -> None:
    assert clip_window(100.0, 4.0, 3.0) == ClipWindow(96.0, 103.0)
    name = evidence_name("cam/1:g2@1700000000123")
    assert "/" not in name and name.startswith("cam-1-g2-1700000000123-")
    assert evidence_name("a b") != evidence_name("a/b")  # made alike by the cleaning, kept apart by the digest
    assert camera_folder("..") not in ("..", ".", "")


def test_the_snapshot_boxes_the_group_in_its_level_colour_and_blurs_people_when_asked() -> None:
    image = decode_jpeg(bus_jpeg())
    person = Detection("person", 0.9, (50.0, 400.0, 250.0, 900.0), 3)
    group = (40.0, 390.0, 400.0, 910.0)
    plain = decode_jpeg(annotated_snapshot(image, [person], group, RiskLevel.HIGH, "HIGH jaywalking"))
    assert plain.shape == image.shape
    edge = plain[650, 40].astype(int)  # on the group's left edge, 3 px wide
    assert np.abs(edge - np.array(LEVEL_COLORS[RiskLevel.HIGH])).max() < 60
    private = decode_jpeg(annotated_snapshot(image, [person], group, RiskLevel.HIGH, "HIGH", blur_classes=("person",)))
    inside = (slice(500, 800), slice(80, 220))
    assert private[inside].std() < plain[inside].std() * 0.8  # the person's pixels lost their detail
    outside = (slice(100, 300), slice(500, 700))
    assert np.abs(private[outside].astype(int) - plain[outside].astype(int)).mean() < 2  # the rest untouched


def test_blurring_pixelates_inside_the_box_only() -> None:
    image = _textured()
    out = blur_boxes(image, [(100.0, 50.0, 200.0, 150.0)], margin=0.0)
    assert out[60:140, 110:190].std() < image[60:140, 110:190].std() * 0.5
    assert np.array_equal(out[:40], image[:40]) and np.array_equal(out[:, 220:], image[:, 220:])
    assert np.array_equal(image, _textured())  # the input is not changed


def test_clip_frames_are_blurred_by_nearby_detections_or_wholly() -> None:
    image = _textured()
    detected = [PrivacyBoxes(10.0, (640, 480), ((200.0, 100.0, 400.0, 300.0),))]  # twice the clip frame's size
    near = blur_for_privacy(image, 10.5, detected)
    assert near[60:140, 110:190].std() < image[60:140, 110:190].std() * 0.5  # the box, scaled to 320x240
    assert np.array_equal(near[200:], image[200:])
    far = blur_for_privacy(image, 20.0, detected)  # no detected frame within reach: nothing is shown sharp
    assert far.std() < image.std() * 0.5
    nobody = blur_for_privacy(image, 10.2, [PrivacyBoxes(10.0, (320, 240), ())])
    assert np.array_equal(nobody, image)


def test_clip_requests_and_results_survive_the_wire_and_refuse_junk() -> None:
    request = ClipRequest("cam:g1@1", "cam", ClipWindow(1.0, 9.0))
    assert ClipRequest.from_json(request.to_json()) == request
    written = ClipWritten("cam:g1@1", "cam", "cam/x.webm", 40)
    assert ClipWritten.from_json(written.to_json()) == written
    for junk in ([], {"naturalKey": "k", "cameraId": "c", "start": 5, "end": 1}, {"naturalKey": 1}):
        with pytest.raises(ValueError):
            ClipRequest.from_json(junk)
    with pytest.raises(ValueError):
        ClipWritten.from_json({"naturalKey": "k", "cameraId": "c", "clip": 3})


def test_a_clip_is_written_as_webm_and_reads_back(tmp_path: Path) -> None:
    frames = [evidence_frame(_textured(1280, 720, seed=k)) for k in range(12)]
    assert frames[0].shape == (540, 960, 3)  # scaled to the evidence width
    path = tmp_path / "clip.webm"
    write_clip(str(path), frames, 5.0)
    capture = cv2.VideoCapture(str(path))
    try:
        count = 0
        while capture.read()[0]:
            count += 1
        assert count == 12
        assert capture.get(cv2.CAP_PROP_FRAME_WIDTH) == 960
    finally:
        capture.release()
    with pytest.raises(ImageError):
        write_clip(str(tmp_path / "none.webm"), [], 5.0)
