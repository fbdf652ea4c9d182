"""Shared helpers of the benchmarks: percentiles, the frame set, bare detection, the Socket.IO listener,
the closing machine-readable line."""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import redis

from infra.detector_loading import packaged_detector_settings
from infra.socketio_packets import read_emit
from stack.demo import demo_frames
from traffic import redis_keys
from traffic.imaging import Image, encode_jpeg, preview_jpeg
from traffic.settings import CaptureSettings, DetectorSettings
from traffic.yolo_detector import UltralyticsDetector


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval that holds the true median with at least ``confidence``: the order
    statistics ``j`` and ``n + 1 - j`` of the sample, ``j`` the largest rank with P(Binomial(n, 1/2) < j) at most
    half the miss (no resampling, so the same values give the same interval); NaNs when too few values."""
    n = len(values)
    miss = Fraction((1.0 - confidence) / 2.0)
    # Exact: the binomial counts as integers over 2**n (a float 2.0**n overflows past 1023 values).
    below, count, rank = 0, 1, 0  # count: C(n, rank)
    while rank < n and Fraction(below + count, 2**n) <= miss:
        below += count
        count = count * (n - rank) // (rank + 1)
        rank += 1
    if rank == 0:
        return math.nan, math.nan
    ordered = sorted(values)
    return ordered[rank - 1], ordered[n - rank]


def summary(name: str, values: Sequence[float], unit: str = "ms") -> str:
    """One human-readable line: p50, p90, mean, min, max."""
    if not values:
        return f"{name}: no samples"
    return (
        f"{name}: p50={percentile(values, 50):.2f}{unit} p90={percentile(values, 90):.2f}{unit} "
        f"mean={statistics.fmean(values):.2f}{unit} min={min(values):.2f}{unit} max={max(values):.2f}{unit} "
        f"n={len(values)}"
    )


def machine_line(pairs: Mapping[str, object]) -> str:
    """The closing ``name=value`` line."""
    return " ".join(f"{k}={_fmt(v)}" for k, v in pairs.items())


def finish(pairs: Mapping[str, object]) -> None:
    """Print the closing line; exit non-zero when a figure is missing (nan, None): nothing was measured."""
    print(machine_line(pairs), flush=True)
    missing = [k for k, v in pairs.items() if v is None or (isinstance(v, float) and math.isnan(v))]
    if missing:
        print(f"measured nothing for: {', '.join(missing)}", file=sys.stderr)
        raise SystemExit(1)


def _fmt(value: object) -> str:
    """Numbers with sensible precision."""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def frame_set(count: int, width: int = 1280, height: int = 720) -> list[tuple[Image, bytes]]:
    """``count`` demo frames (cycled), each with its JPEG."""
    frames = list(demo_frames(width, height, per_image=max(1, count // 2)))
    chosen = [frames[i % len(frames)] for i in range(count)]
    return [(image, encode_jpeg(image, 85)) for image in chosen]


def capture_preview(image: Image) -> bytes:
    """The frame's preview as the capture service stores it beside the JPEG (the detector decodes it instead)."""
    return preview_jpeg(image, CaptureSettings().jpeg_quality)


def cycle(values: Iterable[float]) -> list[float]:
    """A list copy (helper for typing)."""
    return list(values)


def bare_detect_s(
    images: Sequence[Image], device: str = "auto", *, backend: str = "auto", threads: int = 0, imgsz: int = 0
) -> tuple[str, list[float]]:
    """Seconds of each bare ``detect`` call of the packaged detector on ``images`` after a three-image
    warm-up, and the device it ran on (``imgsz`` 0: the default inference size)."""
    base = DetectorSettings(device=device, backend=backend, threads=threads)
    if imgsz:
        base = dataclasses.replace(base, imgsz=imgsz)
    detector = UltralyticsDetector(packaged_detector_settings(base))
    for image in images[:3]:
        detector.detect(image)
    times = []
    for image in images:
        started = time.perf_counter()
        detector.detect(image)
        times.append(time.perf_counter() - started)
    return detector.device, times


class DetectionResults:
    """Hands every ``detection_result`` published on the Socket.IO Redis channel to ``on_result``, from a
    thread; subclasses record what they need (set their fields before calling ``__init__``)."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._pubsub = self._client.pubsub()
        self._pubsub.subscribe(redis_keys.SOCKETIO_CHANNEL)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def on_result(self, data: dict[str, Any], arrival: float) -> None:
        """One ``detection_result`` payload and when it arrived (epoch s)."""

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.2)
            now = time.time()
            if not message or message["type"] != "message":
                continue
            packet = read_emit(message["data"])
            if packet is not None and packet.event == "detection_result":
                self.on_result(packet.data, now)

    def close(self) -> None:
        """Stop listening."""
        self._stop.set()
        self._thread.join(2)
        self._pubsub.close()
        self._client.close()
