"""Image decoding, encoding and cropping: the only module that imports OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from traffic.errors import ImageError
from traffic.models import BBox

Image = npt.NDArray[np.uint8]
"""An H x W x 3 BGR image, as OpenCV and Ultralytics use."""


def decode_jpeg(data: bytes) -> Image:
    """Decode JPEG (or PNG) bytes into a BGR image."""
    if not data:
        raise ImageError("empty image data")
    array = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(array, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"cannot decode {len(data)} bytes as an image")
    return np.ascontiguousarray(image, dtype=np.uint8)


def encode_jpeg(image: Image, quality: int = 85) -> bytes:
    """Encode a BGR image as JPEG bytes."""
    ok, buffer = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ImageError("JPEG encoding failed")
    return bytes(buffer.tobytes())


def read_image(path: str) -> Image:
    """Read an image file into a BGR image."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"cannot read an image from {path!r}")
    return np.ascontiguousarray(image, dtype=np.uint8)


def image_size(image: Image) -> tuple[int, int]:
    """(width, height) of an image."""
    return int(image.shape[1]), int(image.shape[0])


def crop(image: Image, bbox: BBox) -> Image:
    """The part of ``image`` inside ``bbox``, clipped to the image; never empty."""
    width, height = image_size(image)
    x1 = min(max(int(bbox[0]), 0), width - 1)
    y1 = min(max(int(bbox[1]), 0), height - 1)
    x2 = min(max(int(round(bbox[2])), x1 + 1), width)
    y2 = min(max(int(round(bbox[3])), y1 + 1), height)
    return image[y1:y2, x1:x2]


def crop_jpeg(image: Image, bbox: BBox, quality: int = 85) -> bytes:
    """JPEG bytes of the part of ``image`` inside ``bbox``."""
    return encode_jpeg(np.ascontiguousarray(crop(image, bbox)), quality)


def resize(image: Image, width: int, height: int) -> Image:
    """``image`` scaled to exactly width x height."""
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))


PREVIEW_WIDTH = 640
"""Dashboard tiles get this width: a camera wall never shows a 1280-wide tile, so events stay small."""
PREVIEW_QUALITY = 70


def preview_jpeg(image: Image) -> bytes:
    """A small JPEG of the frame for dashboard tiles (at most ``PREVIEW_WIDTH`` wide)."""
    width, height = image_size(image)
    if width > PREVIEW_WIDTH:
        image = resize(image, PREVIEW_WIDTH, max(1, round(height * PREVIEW_WIDTH / width)))
    return encode_jpeg(image, PREVIEW_QUALITY)
