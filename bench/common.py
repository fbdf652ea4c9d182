"""Shared helpers of the benchmarks: percentiles, the frame set, the closing machine-readable line."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence

from stack.demo import demo_frames
from traffic.imaging import Image, encode_jpeg


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


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


def cycle(values: Iterable[float]) -> list[float]:
    """A list copy (helper for typing)."""
    return list(values)
