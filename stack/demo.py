"""Offline demo input: sample images that Ultralytics ships, and a clip made from them."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from traffic.imaging import Image, read_image, resize

log = logging.getLogger(__name__)


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
