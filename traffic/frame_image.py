"""A frame's JPEG decoded as small as the detector allows, and at full size only when something needs it."""

from __future__ import annotations

from traffic.imaging import Image, decode_jpeg, decode_jpeg_at_least, image_size


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
    def decode(cls, jpeg: bytes, longest_side: int) -> FrameImage:
        """Decode ``jpeg`` as small as a detector letterboxing to ``longest_side`` allows (0: full size)."""
        if longest_side <= 0:
            image = decode_jpeg(jpeg)
            return cls(jpeg, image, image_size(image))
        image, size = decode_jpeg_at_least(jpeg, longest_side)
        return cls(jpeg, image, size)

    @property
    def full(self) -> Image:
        """The frame at full size (decoded on first use)."""
        if self._full is None:
            self._full = decode_jpeg(self._jpeg)
        return self._full
