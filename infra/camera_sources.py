"""Frame sources behind one interface: OpenCV streams, polled HTTP snapshots, looped local files.

``open_source(url)`` picks the kind; ``read()`` blocks for the next frame and raises ``SourceError``
with a short reason that is safe to show (never the URL's credentials).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import cv2
import numpy as np
import requests

from traffic.cameras import local_path, mask_url
from traffic.errors import ImageError, TrafficError
from traffic.imaging import Image, decode_jpeg, read_image

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0
"""Open and read timeout of network sources."""
STILL_IMAGE_FPS = 5.0
"""How often a single-image file source repeats its image."""
DEFAULT_FILE_FPS = 25.0
SNAPSHOT_TYPES = ("image/jpeg", "image/png")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


class SourceError(TrafficError):
    """A frame source cannot open or read; ``reason`` is short and free of credentials."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FrameSource(Protocol):
    """Something that yields frames one at a time."""

    def read(self) -> Image:
        """The next frame (blocking); raises ``SourceError``."""
        ...

    def close(self) -> None:
        """Release the source; call from the thread that reads."""
        ...


def quiet_native_logs() -> None:
    """Silence FFmpeg's and OpenCV's own stderr logging (it bypasses log filters and may print stream URLs).

    Call once at process start, before the first stream opens; ``OPENCV_FFMPEG_LOGLEVEL`` set by the
    operator wins.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def open_source(
    url: str, *, poll_interval_s: float = 1.0, stop: threading.Event | None = None, timeout_s: float = TIMEOUT_S
) -> FrameSource:
    """Open ``url`` as the right kind of source (blocking up to ``timeout_s``); raises ``SourceError``."""
    stop = stop or threading.Event()
    path = local_path(url)
    if path is not None:
        return _open_file(path, stop)
    if urlsplit(url).scheme in ("http", "https") and _is_snapshot(url, timeout_s):
        return SnapshotSource(url, poll_interval_s=poll_interval_s, timeout_s=timeout_s, stop=stop)
    return StreamSource(url, timeout_s=timeout_s)


class _Pacer:
    """Spaces calls ``period`` seconds apart on a drift-free schedule; a stop request interrupts the wait."""

    def __init__(self, period: float, stop: threading.Event) -> None:
        self._period = period
        self._stop = stop
        self._next: float | None = None

    def wait(self) -> None:
        """Sleep until the next tick; raises ``SourceError("stopped")`` if stopped meanwhile."""
        now = time.monotonic()
        if self._next is None or now - self._next > 1.0:
            self._next = now  # first call, or far behind (e.g. a slow consumer): restart the schedule
        delay = self._next - now
        stopped = self._stop.wait(delay) if delay > 0 else self._stop.is_set()
        if stopped:
            raise SourceError("stopped")
        self._next += self._period


# --------------------------------------------------------------------------- local files


def _open_file(path: str, stop: threading.Event) -> FrameSource:
    """A looping source of a local video or a repeating still image."""
    if not Path(path).is_file():
        raise SourceError("cannot open stream (file not found)")
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        try:
            return StillImageSource(read_image(path), stop=stop)
        except ImageError:
            raise SourceError("cannot open stream (unreadable image)") from None
    return LoopingFileSource(path, stop=stop)


class StillImageSource:
    """One image, repeated at ``fps``."""

    def __init__(self, image: Image, *, stop: threading.Event, fps: float = STILL_IMAGE_FPS) -> None:
        self._image = image
        self._pacer = _Pacer(1.0 / fps, stop)

    def read(self) -> Image:
        """The image again, at the next tick."""
        self._pacer.wait()
        return self._image

    def close(self) -> None:
        """Nothing to release."""


class LoopingFileSource:
    """A local video played at its own fps and rewound at the end, forever."""

    def __init__(self, path: str, *, stop: threading.Event) -> None:
        self._path = path
        self._capture = self._open()
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self._pacer = _Pacer(1.0 / (fps if math.isfinite(fps) and 0 < fps <= 240 else DEFAULT_FILE_FPS), stop)

    def _open(self) -> cv2.VideoCapture:
        """The file opened with OpenCV."""
        capture = cv2.VideoCapture(self._path)
        if not capture.isOpened():
            capture.release()
            raise SourceError("cannot open stream (unreadable video file)")
        return capture

    def read(self) -> Image:
        """The next frame at the file's pace; rewinds at the end."""
        self._pacer.wait()
        ok, frame = self._capture.read()
        if not ok:
            self._capture.release()
            self._capture = self._open()  # reopening rewinds reliably for every container
            ok, frame = self._capture.read()
        if not ok or frame is None:
            raise SourceError("end of stream")
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def close(self) -> None:
        """Release the file."""
        self._capture.release()


# --------------------------------------------------------------------------- HTTP snapshots


def _describe(exc: requests.RequestException) -> str:
    """A short reason for a request failure; never the exception text (it holds the URL)."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return type(exc).__name__


def _content_type(response: requests.Response) -> str:
    """The response's media type, lowercase, without parameters."""
    return response.headers.get("Content-Type", "").split(";")[0].strip().lower()


def _is_snapshot(url: str, timeout_s: float) -> bool:
    """Whether ``url`` answers with a single JPEG/PNG image (HEAD, else GET); raises ``SourceError``."""
    try:
        with requests.head(url, timeout=timeout_s, allow_redirects=True) as response:
            if response.status_code < 400:
                return _content_type(response) in SNAPSHOT_TYPES
        with requests.get(url, timeout=timeout_s, stream=True) as response:  # some cameras refuse HEAD
            if response.status_code >= 400:
                raise SourceError(f"cannot open stream (HTTP {response.status_code})")
            return _content_type(response) in SNAPSHOT_TYPES
    except requests.RequestException as exc:
        raise SourceError(f"cannot open stream ({_describe(exc)})") from None


class SnapshotSource:
    """An HTTP(S) URL that answers one JPEG/PNG per GET, polled every ``poll_interval_s``."""

    def __init__(self, url: str, *, poll_interval_s: float, timeout_s: float, stop: threading.Event) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._pacer = _Pacer(poll_interval_s, stop)
        self._session = requests.Session()
        log.debug("polling snapshots from %s", mask_url(url))

    def read(self) -> Image:
        """The next snapshot, fetched at the next poll tick."""
        self._pacer.wait()
        try:
            response = self._session.get(self._url, timeout=self._timeout_s)
        except requests.RequestException as exc:
            raise SourceError(f"read failed ({_describe(exc)})") from None
        if response.status_code != 200:
            raise SourceError(f"read failed (HTTP {response.status_code})")
        try:
            return decode_jpeg(response.content)
        except ImageError:
            raise SourceError("read failed (not an image)") from None

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()


# --------------------------------------------------------------------------- video streams


class StreamSource:
    """An rtsp/rtsps/http(s) video stream decoded by OpenCV's FFmpeg backend."""

    def __init__(self, url: str, *, timeout_s: float = TIMEOUT_S) -> None:
        timeout_ms = int(timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        self._capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        if not self._capture.isOpened():
            self._capture.release()
            raise SourceError("cannot open stream")
        log.debug("opened stream %s", mask_url(url))

    def read(self) -> Image:
        """The next decoded frame; raises ``SourceError("read failed")`` on error or timeout."""
        ok, frame = self._capture.read()
        if not ok or frame is None:
            raise SourceError("read failed")
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def close(self) -> None:
        """Release the stream."""
        self._capture.release()
