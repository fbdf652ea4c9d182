"""A frame's JPEG decoded as small as the detector allows, and at full size only when something needs it."""

from __future__ import annotations

from traffic.errors import ImageError
from traffic.imaging import Image, decode_jpeg, decode_jpeg_at_least, image_size, jpeg_size, scaled_decode_size

ASPECT_TOLERANCE = 0.02
"""How far a preview's width/height ratio may stray from its frame's (relative) and still be the same picture
(a 640-wide preview of a 1280x721 frame rounds its height)."""


class FrameImage:
    """A frame's JPEG decoded for the detector, and at full size only when something needs it (crops, blur).

    Most frames never need the full image: the gate sends few of them to the model.
    """

    def __init__(self, jpeg: bytes, for_detection: Image, size: tuple[int, int]) -> None:
        self._jpeg = jpeg
        self.for_detection = for_detection
        self.size = size
        """The frame's full (width, height): the coordinates of every box."""
        self._full = for_detection if image_size(for_detection) == size else None

    @classmethod
    def decode(cls, jpeg: bytes, longest_side: int, preview: bytes | None = None) -> FrameImage:
        """Decode ``jpeg`` as small as a detector letterboxing to ``longest_side`` allows (0: full size); the
        frame's ``preview`` is decoded instead where it is that small already (``preview_for_detection``)."""
        if longest_side <= 0:
            image = decode_jpeg(jpeg)
            return cls(jpeg, image, image_size(image))
        if preview:
            decoded = preview_for_detection(jpeg, preview, longest_side)
            if decoded is not None:
                return cls(jpeg, *decoded)
        image, size = decode_jpeg_at_least(jpeg, longest_side)
        return cls(jpeg, image, size)

    @property
    def full(self) -> Image:
        """The frame at full size (decoded on first use)."""
        if self._full is None:
            self._full = decode_jpeg(self._jpeg)
        return self._full


def preview_for_detection(jpeg: bytes, preview: bytes, longest_side: int) -> tuple[Image, tuple[int, int]] | None:
    """The frame's preview decoded, and the frame's (width, height), where the preview serves a detector
    letterboxing to ``longest_side``: its longer side reaches ``longest_side``, it is smaller than the frame
    and has no more pixels than the frame's own scaled decode would, and it shows the same picture (the same
    aspect, the same turn). Else None: the frame itself is decoded. A preview costs half the frame's scaled
    decode: a 640x360 JPEG against the whole 1280x720 bitstream, which libjpeg reads in full at any scale.
    """
    full, small = jpeg_size(jpeg), jpeg_size(preview)
    if full is None or small is None or max(small) < longest_side or max(small) >= max(full):
        return None  # too small for the detector, or the frame's own size (a small camera's): the frame itself
    scaled = scaled_decode_size(full, longest_side)
    if small[0] * small[1] > scaled[0] * scaled[1]:
        return None
    if abs(small[0] * full[1] - small[1] * full[0]) > ASPECT_TOLERANCE * small[1] * full[0]:
        return None
    try:
        image = decode_jpeg(preview)
    except ImageError:
        return None
    if image_size(image) != small:  # turned by an EXIF orientation: not known to match the frame's turn
        return None
    return image, full
