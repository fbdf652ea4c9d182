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


_SCALED_READS = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
_START_OF_FRAME = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""JPEG markers that carry the frame's size (every SOFn; not DHT, JPG or DAC, which share the range)."""


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header without decoding it; None for anything else."""
    if data[:2] != b"\xff\xd8":
        return None
    i, end = 2, len(data)
    while i + 4 <= end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
            continue
        if marker in _START_OF_FRAME:
            if i + 9 > end:
                return None
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return (width, height) if width and height else None
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def decode_jpeg_at_least(data: bytes, longest_side: int) -> tuple[Image, tuple[int, int]]:
    """Decode at the smallest JPEG scale (1/8, 1/4, 1/2 or full) whose longer side still reaches ``longest_side``.

    libjpeg scales in the DCT, so a 1/2-scale decode of a 1280x720 frame costs about two thirds of a full one;
    a detector that letterboxes to ``longest_side`` sees the same pixels either way. Returns the image and
    the full (width, height) its coordinates scale back to; other formats decode at full size.
    """
    size = jpeg_size(data)
    if size is not None:
        factor, flag = _scaled_read(size, longest_side)
        if flag is not None:
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
            if image is not None:
                width, height = size
                if image.shape[0] > image.shape[1] and width > height:  # turned by its EXIF orientation
                    width, height = height, width
                return np.ascontiguousarray(image, dtype=np.uint8), (width, height)
    image = decode_jpeg(data)
    return image, image_size(image)


def scaled_decode_size(size: tuple[int, int], longest_side: int) -> tuple[int, int]:
    """The (width, height) ``decode_jpeg_at_least`` gives a JPEG of ``size`` (libjpeg rounds a scaled side up)."""
    factor, _ = _scaled_read(size, longest_side)
    return -(-size[0] // factor), -(-size[1] // factor)


def _scaled_read(size: tuple[int, int], longest_side: int) -> tuple[int, int | None]:
    """The smallest JPEG scale whose longer side still reaches ``longest_side``, and its OpenCV read flag
    (None: full size)."""
    for factor, flag in _SCALED_READS:
        if max(size) // factor >= longest_side:
            return factor, flag
    return 1, None


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
"""The quality of a preview no detector reads (a blurred one); capture encodes its previews at the frame's own
quality, as the detector reads them (``traffic.frame_image``)."""


def preview_jpeg(image: Image, quality: int = PREVIEW_QUALITY) -> bytes:
    """A small JPEG of the frame for dashboard tiles (at most ``PREVIEW_WIDTH`` wide)."""
    width, height = image_size(image)
    if width > PREVIEW_WIDTH:
        image = resize(image, PREVIEW_WIDTH, max(1, round(height * PREVIEW_WIDTH / width)))
    return encode_jpeg(image, quality)


def blur_boxes(image: Image, boxes: list[BBox], *, margin: float = 0.1) -> Image:
    """A copy of ``image`` with each box (grown by ``margin`` of its size) pixelated past recognition."""
    out = image.copy()
    width, height = image_size(image)
    for x1, y1, x2, y2 in boxes:
        grow_x, grow_y = (x2 - x1) * margin, (y2 - y1) * margin
        left, top = max(0, int(x1 - grow_x)), max(0, int(y1 - grow_y))
        right, bottom = min(width, int(round(x2 + grow_x))), min(height, int(round(y2 + grow_y)))
        if right - left < 2 or bottom - top < 2:
            continue
        region = out[top:bottom, left:right]
        # Down to blocks of about 1/8 of the box's shorter side (at least 6 px), then back up: a face or a
        # plate becomes a few flat tiles, which no sharpening recovers (a Gaussian blur can be partly undone).
        block = max(6, min(right - left, bottom - top) // 8)
        small = cv2.resize(
            region, (max(1, (right - left) // block), max(1, (bottom - top) // block)), interpolation=cv2.INTER_AREA
        )
        out[top:bottom, left:right] = cv2.resize(small, (right - left, bottom - top), interpolation=cv2.INTER_NEAREST)
    return out


Color = tuple[int, int, int]
"""A BGR colour."""


def draw_box(image: Image, bbox: BBox, color: Color, *, thickness: int = 2, label: str = "") -> None:
    """Draw ``bbox`` (and a filled label above it) on ``image`` in place."""
    x1, y1, x2, y2 = (int(round(v)) for v in bbox)
    cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
    if not label:
        return
    scale = max(0.4, min(image.shape[:2]) / 1200)
    (text_w, text_h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    top = max(0, y1 - text_h - base - 4)
    cv2.rectangle(image, (x1, top), (x1 + text_w + 6, top + text_h + base + 4), color, -1)
    luminance = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(image, label, (x1 + 3, top + text_h + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, 1, cv2.LINE_AA)


CLIP_SUFFIX = ".webm"
"""Clips are WebM (VP8): every browser plays it, and OpenCV's bundled FFmpeg writes it."""


def write_clip(path: str, frames: list[Image], fps: float) -> None:
    """Encode ``frames`` (all of the first one's size; others are scaled to it) as a WebM clip at ``path``."""
    if not frames:
        raise ImageError("a clip needs at least one frame")
    width, height = image_size(frames[0])
    writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*"VP80"), fps, (width, height))
    if not writer.isOpened():
        raise ImageError(f"cannot write a VP8 clip to {path!r} (OpenCV's FFmpeg lacks the encoder?)")
    try:
        for frame in frames:
            writer.write(frame if image_size(frame) == (width, height) else resize(frame, width, height))
    finally:
        writer.release()
