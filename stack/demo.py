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


STREET_VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
"""Debian ``opencv-doc``'s street video: people walking on a pedestrian street, 768x576, 10 frames/s."""

STREET_GEOMETRY = """\
# Written by `traffic run` for the demo camera playing Debian opencv-doc's vtest.avi (768x576).
# A counting line down the middle of the street and the foreground as a zone; uncalibrated, so
# speeds are in px/s. Copy and edit it for a real camera (see config/README.md, "Geometry").
cameras:
  {camera_id}:
    image_size: [768, 576]
    lines:
      - name: middle
        points: [[384, 140], [384, 576]]
        directions: [leftward, rightward]
    zones:
      - name: foreground
        polygon: [[0, 330], [768, 330], [768, 576], [0, 576]]
"""


def demo_clip(directory: Path, *, street_video: Path = STREET_VIDEO) -> tuple[Path, bool]:
    """The demo camera's clip in ``directory`` and whether it is real footage: a copy of the street video
    when Debian's ``opencv-doc`` is installed (people walking: tracks, counts, trails), else the clip made
    from the sample photos."""
    if street_video.is_file():
        target = directory / street_video.name
        if not (target.is_file() and target.stat().st_size == street_video.stat().st_size):
            directory.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".part" + target.suffix)
            partial.write_bytes(street_video.read_bytes())
            partial.replace(target)
        return target, True
    return make_demo_clip(directory / "demo.avi"), False


def write_demo_geometry(path: Path, camera_id: str) -> Path:
    """Write the demo street's counting line and zone for ``camera_id`` (see ``STREET_GEOMETRY``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STREET_GEOMETRY.format(camera_id=camera_id), encoding="utf-8")
    return path
