"""Evidence of an incident: an annotated snapshot of the frame that raised it, and a short clip from a
camera's recent frames (a bounded ring buffer kept by the capture process), with people and plates
blurred when the privacy setting asks for it."""

from __future__ import annotations

import hashlib
import re
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from traffic.imaging import Color, Image, blur_boxes, draw_box, encode_jpeg, image_size, resize
from traffic.models import BBox, Detection, RiskLevel, scale_bbox

LEVEL_COLORS: dict[RiskLevel, Color] = {
    RiskLevel.NONE: (120, 160, 60),
    RiskLevel.LOW: (0, 200, 255),
    RiskLevel.MEDIUM: (0, 140, 255),
    RiskLevel.HIGH: (40, 40, 230),
}
"""BGR colour of a group's box by its level (the dashboard's palette)."""
OTHER_BOX: Color = (200, 200, 200)
EVIDENCE_WIDTH = 960
"""Ring-buffer frames (and so clips) are scaled down to at most this width."""
RING_JPEG_QUALITY = 75
SNAPSHOT_QUALITY = 85
SNAPSHOT_SUFFIX = ".jpg"


@dataclass(frozen=True)
class ClipWindow:
    """The stretch of a camera's video an incident's clip covers (epoch s)."""

    start: float
    end: float


def clip_window(first_seen: float, before_s: float, after_s: float) -> ClipWindow:
    """From ``before_s`` before the first sighting to ``after_s`` after it."""
    return ClipWindow(first_seen - before_s, first_seen + after_s)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def evidence_name(natural_key: str) -> str:
    """A file name stem for an incident's evidence: readable, safe on every file system, unique per key."""
    digest = hashlib.sha256(natural_key.encode()).hexdigest()[:12]
    readable = _UNSAFE.sub("-", natural_key).strip("-.")[:80]
    return f"{readable}-{digest}"


def camera_folder(camera_id: str) -> str:
    """A folder name for a camera's evidence (ids may hold characters no file system allows)."""
    return evidence_name(camera_id)


def private(image: Image, detections: Iterable[Detection], blur_classes: Iterable[str]) -> Image:
    """``image`` with every detection of ``blur_classes`` blurred (the same image when none is)."""
    wanted = set(blur_classes)
    boxes = [d.bbox for d in detections if d.cls in wanted]
    return blur_boxes(image, boxes) if boxes else image


def annotated_snapshot(
    image: Image,
    detections: Iterable[Detection],
    group_box: BBox,
    level: RiskLevel,
    caption: str,
    *,
    blur_classes: Iterable[str] = (),
) -> bytes:
    """The incident's snapshot: every detection boxed thin, the group boxed in its level's colour with
    ``caption``, people (and plates) blurred first when ``blur_classes`` names them."""
    shown = list(detections)
    canvas = private(image, shown, blur_classes)
    if canvas is image:
        canvas = image.copy()
    for detection in shown:
        label = detection.cls if detection.track_id is None else f"{detection.cls} #{detection.track_id}"
        draw_box(canvas, detection.bbox, OTHER_BOX, thickness=1, label=label)
    draw_box(canvas, group_box, LEVEL_COLORS.get(level, OTHER_BOX), thickness=3, label=caption)
    return encode_jpeg(canvas, SNAPSHOT_QUALITY)


def evidence_frame(image: Image) -> Image:
    """A frame as the ring buffer keeps it: at most ``EVIDENCE_WIDTH`` wide."""
    width, height = image_size(image)
    if width <= EVIDENCE_WIDTH:
        return image
    return resize(image, EVIDENCE_WIDTH, max(1, round(height * EVIDENCE_WIDTH / width)))


@dataclass(frozen=True)
class RingFrame:
    """One frame kept for clips: when it was captured and its JPEG."""

    at: float
    jpeg: bytes


class FrameRing:
    """A camera's recent frames for clips: at most ``fps`` a second, ``span_s`` long and ``max_bytes`` of
    JPEG, the oldest dropped first. The capture thread offers frames; the clip writer reads a window."""

    def __init__(self, *, fps: float, span_s: float, max_bytes: int) -> None:
        self._gap = 1.0 / fps
        self._span_s = span_s
        self._max_bytes = max_bytes
        self._frames: deque[RingFrame] = deque()
        self._bytes = 0
        self._lock = threading.Lock()

    def wants(self, at: float) -> bool:
        """Whether a frame captured at ``at`` would be kept (so the caller encodes only those)."""
        with self._lock:
            return not self._frames or at - self._frames[-1].at >= self._gap * 0.9

    def add(self, at: float, jpeg: bytes) -> None:
        """Keep a frame (in capture order); drop what falls out of the span or the memory bound."""
        with self._lock:
            if self._frames and at <= self._frames[-1].at:
                return
            self._frames.append(RingFrame(at, jpeg))
            self._bytes += len(jpeg)
            while self._frames and (
                self._frames[0].at < at - self._span_s or (self._bytes > self._max_bytes and len(self._frames) > 1)
            ):
                self._bytes -= len(self._frames.popleft().jpeg)

    def window(self, window: ClipWindow) -> list[RingFrame]:
        """The kept frames captured within ``window``, oldest first."""
        with self._lock:
            return [f for f in self._frames if window.start <= f.at <= window.end]

    @property
    def size_bytes(self) -> int:
        """JPEG bytes held."""
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)


@dataclass(frozen=True)
class ClipRequest:
    """A clip the capture process owning the camera cuts from its ring buffer once ``window.end`` passed."""

    natural_key: str
    camera_id: str
    window: ClipWindow

    def to_json(self) -> dict[str, object]:
        """As queued in Redis."""
        return {
            "naturalKey": self.natural_key,
            "cameraId": self.camera_id,
            "start": self.window.start,
            "end": self.window.end,
        }

    @staticmethod
    def from_json(data: object) -> ClipRequest:
        """Read back (``ValueError`` when it is not a request)."""
        if not isinstance(data, dict):
            raise ValueError("a clip request is an object")
        key, camera, start, end = data.get("naturalKey"), data.get("cameraId"), data.get("start"), data.get("end")
        if not isinstance(key, str) or not isinstance(camera, str):
            raise ValueError("a clip request names its incident and camera")
        if not isinstance(start, int | float) or not isinstance(end, int | float) or end < start:
            raise ValueError("a clip request has a start and a later end")
        return ClipRequest(key, camera, ClipWindow(float(start), float(end)))


@dataclass(frozen=True)
class ClipWritten:
    """What came of a clip request: the clip's path (relative to the evidence directory), or why none."""

    natural_key: str
    camera_id: str
    clip_path: str | None
    frames: int
    reason: str = ""

    def to_json(self) -> dict[str, object]:
        """As queued in Redis."""
        return {
            "naturalKey": self.natural_key,
            "cameraId": self.camera_id,
            "clip": self.clip_path,
            "frames": self.frames,
            "reason": self.reason,
        }

    @staticmethod
    def from_json(data: object) -> ClipWritten:
        """Read back (``ValueError`` when it is not one)."""
        if not isinstance(data, dict):
            raise ValueError("a written clip is an object")
        key, camera, clip = data.get("naturalKey"), data.get("cameraId"), data.get("clip")
        frames, reason = data.get("frames", 0), data.get("reason", "")
        if not isinstance(key, str) or not isinstance(camera, str) or not (clip is None or isinstance(clip, str)):
            raise ValueError("a written clip names its incident, camera and file")
        if not isinstance(frames, int) or not isinstance(reason, str):
            raise ValueError("a written clip counts its frames")
        return ClipWritten(key, camera, clip, frames, reason)


@dataclass(frozen=True)
class PrivacyBoxes:
    """The boxes to blur in one detected frame, in that frame's pixels."""

    at: float
    size: tuple[int, int]
    boxes: tuple[BBox, ...]

    def scaled(self, width: int, height: int) -> list[BBox]:
        """The boxes in an image of ``width`` x ``height`` (the same scene, scaled)."""
        return [scale_bbox(box, self.size, (width, height)) for box in self.boxes]


PRIVACY_REACH_S = 1.5
"""A clip frame is blurred by the boxes of the detected frames within this long before and after it; with
none that near, the whole frame is blurred (nothing unseen is shown)."""


def blur_for_privacy(image: Image, at: float, detected: list[PrivacyBoxes]) -> Image:
    """A clip frame blurred by the boxes of the nearest detected frames (``detected``, oldest first) before
    and after it (their union, so a walker is covered along its way); wholly blurred when no detected frame
    is within reach."""
    before = [d for d in detected if at - PRIVACY_REACH_S <= d.at <= at]
    after = [d for d in detected if at < d.at <= at + PRIVACY_REACH_S]
    near = ([before[-1]] if before else []) + ([after[0]] if after else [])
    width, height = image_size(image)
    if not near:
        return blur_boxes(image, [(0.0, 0.0, float(width), float(height))], margin=0.0)
    boxes = [box for d in near for box in d.scaled(width, height)]
    return blur_boxes(image, boxes, margin=0.25) if boxes else image
