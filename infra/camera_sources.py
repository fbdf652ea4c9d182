"""Frame sources behind one interface: OpenCV streams, polled HTTP snapshots, looped local files.

``open_source(url)`` picks the kind; ``read()`` blocks for the next frame and raises ``SourceError``
with a short reason that is safe to show (never the URL's credentials). A ``guard`` (the camera URL
policy) is asked before every connection is opened and before every HTTP redirect is followed.
Snapshot bodies are read with a byte cap and an overall deadline, so a server that drips bytes or
sends an endless body cannot hold a reader.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import cv2
import numpy as np
import requests

from traffic.bounded_read import BodyBroken, BodyTooLarge, BodyTooSlow, read_bounded
from traffic.cameras import local_path, mask_url
from traffic.errors import CameraError, ImageError, TrafficError
from traffic.imaging import Image, decode_jpeg, read_image

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0
"""Open and read timeout of network sources."""
STILL_IMAGE_FPS = 5.0
"""How often a single-image file source repeats its image."""
DEFAULT_FILE_FPS = 25.0
SNAPSHOT_TYPES = ("image/jpeg", "image/png")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024
"""A snapshot larger than this is refused (a 4K JPEG is a few MB)."""
MAX_REDIRECTS = 5

Guard = Callable[[str], object]
"""Raises ``CameraError`` when the URL may not be opened (``traffic.url_policy``)."""
Period = float | Callable[[], float]
"""Seconds between paced reads, fixed or asked again before every read."""


def _allow_all(url: str) -> None:
    """The guard of callers that checked nothing (tests of the sources themselves)."""


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
    url: str,
    *,
    poll_interval_s: Period = 1.0,
    stop: threading.Event | None = None,
    timeout_s: float = TIMEOUT_S,
    guard: Guard = _allow_all,
) -> FrameSource:
    """Open ``url`` as the right kind of source (blocking up to ``timeout_s``); raises ``SourceError``.

    ``poll_interval_s`` paces snapshot cameras; a callable is asked before every poll (a camera whose
    detection rate changes keeps its connection).
    """
    stop = stop or threading.Event()
    _ask(guard, url)
    path = local_path(url)
    if path is not None:
        return _open_file(path, stop)
    if urlsplit(url).scheme in ("http", "https"):
        snapshot_url = _snapshot_url(url, timeout_s, guard)
        if snapshot_url is not None:
            return SnapshotSource(snapshot_url, poll_interval_s=poll_interval_s, timeout_s=timeout_s, stop=stop)
    return StreamSource(url, timeout_s=timeout_s)


def _ask(guard: Guard, url: str) -> None:
    """Ask the guard; its refusal becomes a ``SourceError`` naming the rule, never the address."""
    try:
        guard(url)
    except CameraError as exc:
        raise SourceError(f"not allowed: {exc}") from None


def _fixed(seconds: float) -> Callable[[], float]:
    """A period that never changes."""
    return lambda: seconds


class _Pacer:
    """Spaces calls ``period`` seconds apart on a drift-free schedule; a stop request interrupts the wait."""

    def __init__(self, period: Period, stop: threading.Event) -> None:
        self._period: Callable[[], float] = period if callable(period) else _fixed(period)
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
        self._next += self._period()


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


def _get(
    session: requests.Session, method: str, url: str, *, timeout_s: float, guard: Guard
) -> tuple[str, requests.Response]:
    """(final URL, response) of ``method url``, following redirects one by one, each allowed by ``guard``."""
    for _ in range(MAX_REDIRECTS + 1):
        response = session.request(method, url, timeout=timeout_s, stream=True, allow_redirects=False)
        if not response.is_redirect:
            return url, response
        location = response.headers.get("Location", "")
        response.close()
        url = urljoin(url, location)
        _ask(guard, url)
    raise SourceError("cannot open stream (too many redirects)")


def _snapshot_url(url: str, timeout_s: float, guard: Guard) -> str | None:
    """Where ``url`` answers with a single JPEG/PNG image (HEAD, else GET), after redirects; None for a
    stream; raises ``SourceError``."""
    try:
        with requests.Session() as session:
            final, response = _get(session, "HEAD", url, timeout_s=timeout_s, guard=guard)
            with response:
                if response.status_code < 400:
                    return final if _content_type(response) in SNAPSHOT_TYPES else None
            final, response = _get(session, "GET", url, timeout_s=timeout_s, guard=guard)  # some refuse HEAD
            with response:
                if response.status_code >= 400:
                    raise SourceError(f"cannot open stream (HTTP {response.status_code})")
                return final if _content_type(response) in SNAPSHOT_TYPES else None
    except requests.RequestException as exc:
        raise SourceError(f"cannot open stream ({_describe(exc)})") from None


class SnapshotSource:
    """An HTTP(S) URL that answers one JPEG/PNG per GET, polled every ``poll_interval_s``."""

    def __init__(self, url: str, *, poll_interval_s: Period, timeout_s: float, stop: threading.Event) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._pacer = _Pacer(poll_interval_s, stop)
        self._session = requests.Session()
        log.debug("polling snapshots from %s", mask_url(url))

    def read(self) -> Image:
        """The next snapshot, fetched at the next poll tick (the whole fetch within ``timeout_s``)."""
        self._pacer.wait()
        deadline = time.monotonic() + self._timeout_s
        try:
            with self._session.get(self._url, timeout=self._timeout_s, stream=True, allow_redirects=False) as response:
                if response.status_code != 200:
                    raise SourceError(f"read failed (HTTP {response.status_code})")
                body = read_bounded(response, max_bytes=MAX_SNAPSHOT_BYTES, deadline=deadline)
        except requests.RequestException as exc:
            raise SourceError(f"read failed ({_describe(exc)})") from None
        except BodyTooLarge:
            raise SourceError(f"read failed (larger than {MAX_SNAPSHOT_BYTES // (1024 * 1024)} MB)") from None
        except BodyTooSlow:
            raise SourceError("read failed (too slow)") from None
        except BodyBroken as exc:
            raise SourceError(f"read failed ({exc})") from None
        try:
            return decode_jpeg(body)
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
