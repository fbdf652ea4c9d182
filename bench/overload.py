"""Overload: frames offered at twice the detector's capacity; queue length, frame age, drops.

Self-contained: starts its own redis-server, Celery workers (gpu, llm, default; no provider, so
groups go to the offline rules assessor) and the real capture service (``python -m workers.capture``)
on a looping demo clip, and stops them.

1. Capacity: a short bare ``UltralyticsDetector.detect`` loop gives the per-frame time t.
2. Offer: one file camera sampled every t/2 (``TRAFFIC_FRAME_INTERVAL``), i.e. at 2x capacity, with
   ``TRAFFIC_MAX_IN_FLIGHT=2``; the clip plays at >= 2 frames per sampling interval, so every sample
   finds a new frame.
3. For a fixed time: ``LLEN gpu`` sampled every 20 ms; each frame's first ``detection_result`` taken
   off the Socket.IO Redis channel, its age = arrival - capture time (the payload's ``timestamp``,
   millisecond precision); the camera's counters (captured, dropped_inflight, dropped_age, detected).

Frames count for the window when they were captured inside it; ``offered`` = captured +
dropped_inflight (every sampling tick that found a new frame), ``processed`` = detected. On a fast GPU
one capture process (clip decode, a JPEG encode per frame) may not reach 2x; the output says so.

    python -m bench.overload [--quick] [--seconds S] [--device auto|cpu|cuda:0]

Last line: ``age_p95_s=… queue_max=… dropped=… offered=… processed=…``
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from bench.common import DetectionResults, bare_detect_s, finish, frame_set, percentile, summary
from infra import celery_names
from infra.camera_registry import CameraRegistry
from infra.frame_store import FrameStore
from stack.demo import make_demo_clip
from stack.harness import Stack, stack_env
from stack.redis_server import LocalRedis
from traffic import redis_keys
from traffic.cameras import Camera
from traffic.imaging import decode_jpeg

CAMERA = "overload"
MAX_IN_FLIGHT = 2
QUEUE_SAMPLE_S = 0.02


class FirstResults(DetectionResults):
    """Arrival time and capture time of each frame's first ``detection_result`` on the Socket.IO channel."""

    def __init__(self, url: str) -> None:
        self.first: dict[str, tuple[float, float, str]] = {}
        """frame id → (arrival, capture time, assessment of that first result)."""
        super().__init__(url)

    def on_result(self, data: dict[str, Any], arrival: float) -> None:
        if data.get("frameId") and data["frameId"] not in self.first:
            self.first[data["frameId"]] = (arrival, _epoch(data["timestamp"]), str(data.get("assessment")))


class QueueSampler:
    """``LLEN gpu`` every ``QUEUE_SAMPLE_S`` seconds, in a thread."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.time(), int(self._client.llen(celery_names.GPU_QUEUE))))
            next_at += QUEUE_SAMPLE_S
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(2)
        self._client.close()


def _epoch(iso: str) -> float:
    """Epoch seconds of the wire's ISO-8601 UTC timestamp (``2024-01-01T00:00:00.123Z``)."""
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def capacity(device: str, count: int) -> float:
    """Median seconds per frame of a bare, warmed-up ``detect`` loop on decoded 1280x720 demo frames."""
    on, times = bare_detect_s([decode_jpeg(jpeg) for _, jpeg in frame_set(count)], device)
    print(summary(f"bare detect on {on}", [t * 1000 for t in times]))
    return statistics.median(times)


def run(seconds: float, device: str, bare_frames: int) -> dict[str, object]:
    """Measure and print; returns the closing line's figures."""
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus (other work on the host skews it)")
    per_frame = capacity(device, bare_frames)
    interval = round(per_frame / 2, 4)
    clip_fps = min(240.0, max(25.0, math.ceil(2 / interval)))
    print(
        f"capacity {1 / per_frame:.2f} frames/s; offering every {interval * 1000:.1f} ms "
        f"({1 / interval:.2f} frames/s, 2x) for {seconds:.0f} s; clip at {clip_fps:.0f} fps; "
        f"max in flight {MAX_IN_FLIGHT}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp, LocalRedis(Path(tmp) / "redis") as server:
        clip = make_demo_clip(Path(tmp) / "overload.avi", fps=clip_fps)
        env = stack_env(
            server.url,
            Path(tmp),
            None,
            TRAFFIC_LOG_LEVEL="WARNING",
            TRAFFIC_DEVICE=device,
            TRAFFIC_FRAME_INTERVAL=repr(interval),
            TRAFFIC_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT),
        )
        stack = Stack(server.url, Path(tmp), env)
        try:
            stack.start("gpu", "llm", "default")
            return _measure(stack, clip, seconds, per_frame, interval)
        finally:
            stack.stop()


def _measure(stack: Stack, clip: Path, seconds: float, per_frame: float, interval: float) -> dict[str, object]:
    """Warm the detector up, run the capture service for ``seconds``, collect the figures."""
    store = FrameStore(stack.redis)
    warm = stack.inject_frame("warm", frame_set(1)[0][1])  # the worker loads its model on its first frame
    _wait(lambda: "detected" in store.timings(warm), 180, "the warm-up frame was not detected")
    registry = CameraRegistry(stack.redis)
    results = FirstResults(stack.redis_url)
    queue = QueueSampler(stack.redis_url)
    try:
        registry.add(Camera(camera_id=CAMERA, url=str(clip), wire_id=CAMERA))
        stack.start("capture")
        _wait(lambda: registry.stats(CAMERA).get("captured", 0) > 0, 90, stack.group.tail("capture"))
        t0, before = time.time(), registry.stats(CAMERA)
        time.sleep(seconds)
        t1, after = time.time(), registry.stats(CAMERA)
        stack.group.stop("capture")
        # Frames still in flight finish within a couple of detector times.
        _wait(lambda: stack.redis.zcard(redis_keys.camera_inflight(CAMERA)) == 0, 10 + 4 * per_frame, "")
        time.sleep(0.5)
    finally:
        queue.close()
        results.close()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    in_window = [first for first in results.first.values() if t0 <= first[1] <= t1]
    ages = [arrived - captured for arrived, captured, _ in in_window]
    first_kinds = dict(Counter(kind for _, _, kind in in_window))
    depths = [n for t, n in queue.samples if t0 <= t <= t1]
    offered = delta.get("captured", 0) + delta.get("dropped_inflight", 0)
    processed = delta.get("detected", 0)
    dropped = delta.get("dropped_inflight", 0) + delta.get("dropped_age", 0)
    span = t1 - t0
    print(f"window: {span:.1f} s; camera counters over it: {dict(sorted(delta.items()))}")
    print(
        f"offered {offered} frames ({offered / span:.2f}/s), processed {processed} ({processed / span:.2f}/s = "
        f"{processed / span * per_frame:.2f}x bare capacity), dropped {dropped} "
        f"(in-flight cap {delta.get('dropped_inflight', 0)}, past deadline {delta.get('dropped_age', 0)})"
    )
    if offered / span < 0.9 / interval:
        print(
            f"note: offered only {offered / span:.2f} frames/s of the nominal {1 / interval:.2f}: the capture "
            "process (clip decode, JPEG encode per frame) could not keep up, so this is not a 2x overload"
        )
    print(
        f"gpu queue (LLEN every {QUEUE_SAMPLE_S * 1000:.0f} ms, {len(depths)} samples): max {max(depths, default=0)}, "
        f"mean {statistics.fmean(depths) if depths else float('nan'):.2f}, "
        + ", ".join(f"{n}: {depths.count(n)}" for n in sorted(set(depths)))
    )
    print(f"first detection_result per frame captured in the window: {len(ages)} ({first_kinds})")
    print(summary("frame age at its first detection_result (capture -> Socket.IO queue)", ages, "s"))
    return {
        "age_p95_s": percentile(ages, 95),
        "queue_max": max(depths, default=0),
        "dropped": dropped,
        "offered": offered,
        "processed": processed,
        "age_p50_s": percentile(ages, 50),
        "results": len(ages),
    }


def _wait(condition: Callable[[], object], timeout: float, failure: str) -> None:
    """Poll ``condition`` until true; raise with ``failure`` after ``timeout`` (when ``failure`` is set)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    if failure:
        raise RuntimeError(f"timed out after {timeout:.0f} s: {failure}")


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 s instead of 120 s")
    parser.add_argument("--seconds", type=float, help="length of the overload window")
    parser.add_argument("--device", default="auto", help="TRAFFIC_DEVICE for the bare loop and the worker")
    args = parser.parse_args()
    seconds = args.seconds or (30.0 if args.quick else 120.0)
    finish(run(seconds, args.device, 10 if args.quick else 20))


if __name__ == "__main__":
    main()
