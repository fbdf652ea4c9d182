"""The detector interface and its factory; backends live in their own modules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from traffic.imaging import Image
from traffic.models import Detection
from traffic.settings import DetectorSettings


class Detector(Protocol):
    """Finds objects in BGR images; loads its model lazily, on first use."""

    @property
    def model_type(self) -> str:
        """Short model name for ``modelType`` (e.g. ``yolo11n``)."""
        ...

    @property
    def backend(self) -> str:
        """The inference backend in use once loaded (``torch``, ``onnx``, ``openvino``, ``tensorrt``)."""
        ...

    @property
    def supported_classes(self) -> tuple[str, ...]:
        """Class names this detector can report, after renaming and the allowlist."""
        ...

    def load(self) -> None:
        """Load the model now (otherwise it loads on the first ``detect``)."""
        ...

    def detect(self, image: Image) -> list[Detection]:
        """Objects in one image, highest confidence first."""
        ...

    def detect_many(self, images: Sequence[Image]) -> list[list[Detection]]:
        """Objects in several images, run as one batch where the backend can."""
        ...


def build_detector(settings: DetectorSettings) -> Detector:
    """The detector for ``settings``; importing its backend is deferred until now."""
    from traffic.yolo_detector import UltralyticsDetector

    return UltralyticsDetector(settings)
