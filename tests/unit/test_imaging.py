"""Image decoding, encoding and cropping through the OpenCV adapter."""

from __future__ import annotations

import numpy as np
import pytest

from traffic.errors import ImageError
from traffic.imaging import crop, crop_jpeg, decode_jpeg, encode_jpeg, image_size


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
