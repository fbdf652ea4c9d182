"""Image decoding, encoding and cropping through the OpenCV adapter."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from traffic.analysis import scaled
from traffic.errors import ImageError
from traffic.frame_image import FrameImage, preview_for_detection
from traffic.imaging import (
    crop,
    crop_jpeg,
    decode_jpeg,
    decode_jpeg_at_least,
    encode_jpeg,
    image_size,
    jpeg_size,
    preview_jpeg,
    scaled_decode_size,
)
from traffic.models import Detection


def test_round_trip_keeps_size_and_roughly_the_pixels() -> None:
    image = np.zeros((72, 128, 3), dtype=np.uint8)
    image[:, 64:] = (0, 0, 255)
    decoded = decode_jpeg(encode_jpeg(image, 95))
    assert image_size(decoded) == (128, 72)
    assert abs(int(decoded[36, 100, 2]) - 255) < 10


@pytest.mark.parametrize("data", [b"", b"not an image", b"\xff\xd8\xff\xe0broken"])
def test_garbage_is_a_typed_error(data: bytes) -> None:
    with pytest.raises(ImageError):
        decode_jpeg(data)


def test_crop_is_clipped_and_never_empty() -> None:
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    assert crop(image, (-10, -10, 50, 40)).shape == (40, 50, 3)
    assert crop(image, (190, 90, 400, 400)).shape == (10, 10, 3)
    assert crop(image, (250, 150, 260, 160)).shape[:2] == (1, 1)
    assert image_size(decode_jpeg(crop_jpeg(image, (10, 10, 60, 30)))) == (50, 20)


def _jpeg(width: int, height: int) -> bytes:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, width // 2 :] = (0, 0, 255)
    return encode_jpeg(image, 90)


@pytest.mark.parametrize("size", [(1280, 720), (641, 17), (1, 1), (4000, 3000)])
def test_a_jpegs_size_is_read_from_its_header(size: tuple[int, int]) -> None:
    assert jpeg_size(_jpeg(*size)) == size


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8",
        b"\xff\xd8\xff\xe0\x00\x10JFIF",
        b"GIF89a",
        b"\xff\xd8\x00\x00\x00\x00",
        b"\xff\xd8\xff\xda\x00\x02",
    ],
)
def test_anything_without_a_frame_header_has_no_jpeg_size(data: bytes) -> None:
    assert jpeg_size(data) is None


def test_a_png_has_no_jpeg_size_and_decodes_whole() -> None:
    ok, png = cv2.imencode(".png", np.zeros((720, 1280, 3), dtype=np.uint8))
    assert ok and jpeg_size(png.tobytes()) is None
    image, size = decode_jpeg_at_least(png.tobytes(), 640)
    assert image_size(image) == size == (1280, 720)


@pytest.mark.parametrize(
    ("size", "longest", "decoded"),
    [
        ((1280, 720), 640, (640, 360)),  # half: the detector's letterbox size exactly
        ((1280, 720), 641, (1280, 720)),  # half would be smaller than the detector needs
        ((1920, 1080), 640, (960, 540)),  # a quarter (480) would be too small
        ((2560, 1440), 640, (640, 360)),
        ((5120, 2880), 640, (640, 360)),  # an eighth
        ((1281, 721), 640, (641, 361)),  # libjpeg rounds the scaled size up
        ((640, 360), 640, (640, 360)),
        ((720, 1280), 640, (360, 640)),  # portrait
    ],
)
def test_a_jpeg_decodes_at_the_smallest_scale_that_still_reaches_the_size(
    size: tuple[int, int], longest: int, decoded: tuple[int, int]
) -> None:
    image, full = decode_jpeg_at_least(_jpeg(*size), longest)
    assert image_size(image) == decoded
    assert full == size
    assert abs(int(image[decoded[1] // 2, decoded[0] * 3 // 4, 2]) - 255) < 10  # the same picture, smaller


def test_a_broken_jpeg_is_a_typed_error_at_any_scale() -> None:
    broken = _jpeg(1280, 720)[:300]
    with pytest.raises(ImageError):
        decode_jpeg_at_least(broken, 640)


def test_a_frame_image_decodes_the_full_frame_once_and_only_when_asked() -> None:
    jpeg = _jpeg(1280, 720)
    image = FrameImage.decode(jpeg, 640)
    assert image_size(image.for_detection) == (640, 360) and image.size == (1280, 720)
    full = image.full
    assert image_size(full) == (1280, 720) and image.full is full
    whole = FrameImage.decode(jpeg, 0)
    assert whole.full is whole.for_detection and whole.size == (1280, 720)


def test_boxes_found_on_a_smaller_decode_are_scaled_to_the_full_frame() -> None:
    found = [Detection("car", 0.9, (10.0, 20.0, 30.0, 40.0), track_id=3)]
    (back,) = scaled(found, (641, 361), (1281, 721))
    assert back.bbox == pytest.approx((10 * 1281 / 641, 20 * 721 / 361, 30 * 1281 / 641, 40 * 721 / 361))
    assert (back.cls, back.confidence, back.track_id) == ("car", 0.9, 3)


def _camera_jpeg() -> bytes:
    """A demo frame as the capture service encodes it (1280x720, quality 85)."""
    from stack.demo import demo_frames

    return encode_jpeg(next(iter(demo_frames(1280, 720, per_image=1))), 85)


def test_a_grayscale_jpeg_decodes_to_three_equal_channels() -> None:
    gray = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    ok, buffer = cv2.imencode(".jpg", gray)
    assert ok
    image = decode_jpeg(buffer.tobytes())
    assert image.shape == (64, 256, 3)
    assert np.array_equal(image[..., 0], image[..., 2])
    assert np.array_equal(image, cv2.imdecode(buffer, cv2.IMREAD_COLOR))


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an APP1 EXIF block right after its start marker that holds only an orientation tag."""
    ifd = (1).to_bytes(2, "little") + (0x0112).to_bytes(2, "little") + (3).to_bytes(2, "little")
    ifd += (1).to_bytes(4, "little") + orientation.to_bytes(2, "little") + bytes(2) + bytes(4)
    tiff = b"II*\x00" + (8).to_bytes(4, "little") + ifd
    body = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


def test_a_jpeg_turned_by_its_exif_orientation_decodes_turned() -> None:
    turned = _with_exif_orientation(_jpeg(1280, 720), 6)  # 6: turned 90 degrees clockwise to view
    assert jpeg_size(turned) == (1280, 720)
    assert image_size(decode_jpeg(turned)) == (720, 1280)
    image, size = decode_jpeg_at_least(turned, 640)
    assert image_size(image) == (360, 640) and size == (720, 1280)


def test_a_camera_frame_cut_short_is_a_typed_error_at_any_scale() -> None:
    jpeg = _camera_jpeg()  # cut inside its scan data: libjpeg's "premature end" is an error, not a grey rest
    cut = jpeg[: len(jpeg) * 6 // 10]
    with pytest.raises(ImageError):
        decode_jpeg(cut)
    with pytest.raises(ImageError):
        decode_jpeg_at_least(cut, 640)


@pytest.mark.parametrize(
    ("size", "longest"),
    [
        ((1280, 720), 640),
        ((1281, 721), 640),
        ((1920, 1080), 640),
        ((5120, 2880), 640),
        ((640, 360), 640),
        ((720, 1280), 640),
    ],
)
def test_the_scaled_decode_size_is_the_size_the_scaled_decode_gives(size: tuple[int, int], longest: int) -> None:
    image, _ = decode_jpeg_at_least(_jpeg(*size), longest)
    assert scaled_decode_size(size, longest) == image_size(image)


def _blue(width: int, height: int) -> bytes:
    """A JPEG unlike ``_jpeg``'s: which of a frame and its preview was decoded shows in the pixels."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:] = (255, 0, 0)
    return encode_jpeg(image, 90)


def _is_blue(image: np.ndarray) -> bool:
    return bool(abs(int(image[..., 0].mean()) - 255) < 10 and image[..., 2].mean() < 10)


@pytest.mark.parametrize(
    ("size", "preview"),
    [((1280, 720), (640, 360)), ((1920, 1080), (640, 360)), ((1281, 721), (640, 360)), ((810, 1080), (640, 853))],
)
def test_a_frame_is_detected_on_its_preview_where_that_is_no_larger_than_its_own_scaled_decode(
    size: tuple[int, int], preview: tuple[int, int]
) -> None:
    image = FrameImage.decode(_jpeg(*size), 640, _blue(*preview))
    assert image_size(image.for_detection) == preview and _is_blue(image.for_detection)
    assert image.size == size  # boxes are given in the frame's coordinates
    assert image_size(image.full) == size and not _is_blue(image.full)  # crops come from the frame itself


@pytest.mark.parametrize(
    ("size", "preview", "longest", "why"),
    [
        ((1280, 720), (640, 360), 1280, "too small for the detector"),
        ((1280, 720), (640, 480), 640, "another aspect: not the same picture"),
        ((720, 1280), (640, 1138), 640, "more pixels than the frame's half-scale decode"),
        ((640, 360), (640, 360), 320, "no smaller than the frame's quarter-scale decode"),
        ((640, 360), (640, 360), 640, "the frame's own size: crops would come from a copy"),
    ],
)
def test_a_preview_that_would_not_serve_the_detector_as_well_is_passed_over(
    size: tuple[int, int], preview: tuple[int, int], longest: int, why: str
) -> None:
    image = FrameImage.decode(_jpeg(*size), longest, _blue(*preview))
    assert not _is_blue(image.for_detection), why
    assert image_size(image.for_detection) == scaled_decode_size(size, longest) and image.size == size


@pytest.mark.parametrize(
    "preview",
    [
        b"",
        b"not a jpeg",
        _blue(640, 360)[:400],  # cut inside its scan data
        _with_exif_orientation(_blue(360, 640), 6),  # turned by its EXIF orientation: 640x360 to view
    ],
    ids=["none", "garbage", "cut-short", "exif-turned"],
)
def test_a_missing_or_broken_preview_falls_back_to_the_frame(preview: bytes) -> None:
    assert preview_for_detection(_jpeg(1280, 720), preview, 640) is None
    image = FrameImage.decode(_jpeg(1280, 720), 640, preview)
    assert image_size(image.for_detection) == (640, 360) and not _is_blue(image.for_detection)


def test_a_captured_preview_is_detected_on_and_looks_like_the_frame() -> None:
    frame = decode_jpeg(_camera_jpeg())
    preview = preview_jpeg(frame, 85)
    decoded, size = decode_jpeg_at_least(_camera_jpeg(), 640)
    image = FrameImage.decode(_camera_jpeg(), 640, preview)
    assert image.size == size == (1280, 720) and image_size(image.for_detection) == image_size(decoded)
    difference = np.abs(image.for_detection.astype(np.int16) - decoded.astype(np.int16))
    assert float(difference.mean()) < 3.0  # the same picture, within JPEG noise
