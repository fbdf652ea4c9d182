"""Pipeline latency: frame → first ``detection_result`` against bare inference, and chord → final emit.

Self-contained: starts its own redis-server, provider simulator and Celery workers (gpu, llm,
default) and stops them. Frames are sent one at a time (no queueing), so the figures are the
pipeline's own overhead: Celery delivery, Redis reads/writes, JPEG decode, grouping, the emit.

The bare loop (``detect`` in this process on the decoded frames) runs with the stack up and idle, in
blocks of ten frames alternating with the same ten frames sent through the pipeline: a frame's
overhead is its first ``detection_result`` latency minus its own bare time of the block just before,
so a drift of the machine's speed over the run (other load, CPU frequency) does not count as overhead.

The bare loop runs back to back, but the worker's model waits between the frames sent one at a time
(for the previous frame's final result), and an inference backend's threads are slower to start after
a wait (OpenVINO on this 2-core CPU: 21 ms a predict back to back, 32-34 ms after 100 ms idle). So a
second bare block after each pipeline block runs each frame after the same wait as the worker's model
had before it (its ``received`` stamp minus the previous frame's ``detected``; at most
``IDLE_REPLAY_CAP_S``): the overhead over that loop is the queue's own, without the backend's wake-up
(``overhead_idle_matched_ms_*``).

    python -m bench.pipeline [--quick] [--frames N]

A frame's overhead is the difference of two predicts of the same frame; where a predict takes ~200 ms and
its p90 is 50-70 ms above its p50 (a 2-core CPU), the p50 of 60 such differences moves by several ms from
run to run. So each overhead's p50 comes with a 95 % interval of the median (``…_lo``/``…_hi``: order
statistics of the sample, no resampling): a target is met when the interval's top is under it.

Last line: ``overhead_ms_p50=… overhead_idle_matched_ms_p50=… chord_emit_ms_p50=… frames=…
overhead_ms_p50_lo=… overhead_ms_p50_hi=…``
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    DetectionResults,
    capture_preview,
    finish,
    frame_set,
    median_interval,
    percentile,
    summary,
)
from infra.detector_loading import packaged_detector_settings
from infra.frame_store import FrameStore
from stack.harness import API_KEY, Stack, stack_env
from stack.provider_sim import ProviderSimulator, SimConfig, SimKey
from stack.redis_server import LocalRedis
from traffic.imaging import Image, decode_jpeg
from traffic.settings import DetectorSettings
from traffic.yolo_detector import UltralyticsDetector


class Listener(DetectionResults):
    """Records when each frame's first and final ``detection_result`` reach the Socket.IO queue."""

    def __init__(self, url: str) -> None:
        self.first: dict[str, float] = {}
        self.final: dict[str, float] = {}
        self.process_ms: dict[str, float] = {}
        self._cond = threading.Condition()
        super().__init__(url)

    def on_result(self, data: dict[str, Any], arrival: float) -> None:
        with self._cond:
            self.first.setdefault(data["frameId"], arrival)
            self.process_ms.setdefault(data["frameId"], float(data.get("processTime", 0.0)) * 1000)
            if data.get("assessment") != "pending":
                self.final[data["frameId"]] = arrival
            self._cond.notify_all()

    def wait_final(self, frame_id: str, timeout: float) -> bool:
        """True once the frame's final result arrived."""
        with self._cond:
            return self._cond.wait_for(lambda: frame_id in self.final, timeout)


BLOCK = 10
"""Frames per alternating block of bare loop and pipeline."""

IDLE_REPLAY_CAP_S = 1.0
"""Longest idle time replayed before an idle-matched bare predict. A block's first frame waits for the
bench's own loops of the block before; replayed in full, that wait would make the next block's first
wait longer still, growing block by block (27 s by the sixth block, measured). The cost of a wait was
measured growing up to 100 ms of it (OpenVINO: 21 ms a predict back to back, 32-34 ms after 100 ms
idle); a second is well past that."""


def bare_detector() -> UltralyticsDetector:
    """The packaged detector as a worker loads it (default backend and threads), warmed up."""
    detector = UltralyticsDetector(packaged_detector_settings(DetectorSettings()))
    detector.load()
    return detector


def bare_inference_ms(
    detector: UltralyticsDetector, images: Sequence[Image], idle_s: Sequence[float] | None = None
) -> list[float]:
    """Per-frame time of ``detector.detect`` alone on decoded frames (after a one-frame warm-up); with
    ``idle_s``, each frame's detect starts that long after the previous one ended."""
    detector.detect(images[0])
    times = []
    for i, image in enumerate(images):
        if idle_s is not None:
            time.sleep(max(0.0, idle_s[i]))
        started = time.perf_counter()
        detector.detect(image)
        times.append((time.perf_counter() - started) * 1000)
    return times


def run(frame_count: int) -> dict[str, object]:
    """Measure and print; returns the figures of the closing line."""
    frames = frame_set(frame_count)
    print(f"frames: {frame_count} demo frames at 1280x720")
    detector = bare_detector()
    images = [decode_jpeg(jpeg) for _, jpeg in frames]
    alone = bare_inference_ms(detector, images)
    print(summary("bare inference, before the stack starts", alone))
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp, LocalRedis(Path(tmp) / "redis") as server:
        with ProviderSimulator(SimConfig(keys={API_KEY: SimKey(key_id="k1")})) as sim:
            stack = Stack(server.url, Path(tmp), stack_env(server.url, Path(tmp), sim, TRAFFIC_LOG_LEVEL="WARNING"))
            try:
                stack.start("gpu", "llm", "default")
                measured = _measure(stack, frames, detector, images)
                return measured | {"bare_alone_ms_p50": statistics.median(alone)}
            finally:
                stack.stop()


def _measure(
    stack: Stack, frames: Sequence[tuple[Image, bytes]], detector: UltralyticsDetector, images: Sequence[Image]
) -> dict[str, object]:
    """Alternate blocks of bare inference and frames sent one by one (each stored with its preview, as the
    capture service stores it); collect the latencies."""
    listener = Listener(stack.redis_url)
    previews = [capture_preview(image) for image, _ in frames]
    bare: list[float] = []
    idle: dict[int, float] = {}
    """Frame index → seconds the worker's model was idle before it (the frame's received stamp minus the
    previous frame's detected stamp)."""
    over_matched: list[float] = []
    matched: list[float] = []
    previous_detected = 0.0
    try:
        for (_, jpeg), preview in zip(frames[:3], previews, strict=False):  # the worker loads its model first
            warm = stack.inject_frame("warm", jpeg, preview=preview)
            listener.wait_final(warm, 120)
            previous_detected = _timings(stack, warm).get("detected", 0.0)
        overhead, first_ms, chord_emit, queue_ms, worker_ms, own, track_ms = [], [], [], [], [], [], []
        firsts: dict[int, float] = {}
        for i, (_, jpeg) in enumerate(frames):
            if i % BLOCK == 0:
                bare += bare_inference_ms(detector, images[i : i + BLOCK])
            sent = time.time()
            frame_id = stack.inject_frame("bench", jpeg, preview=previews[i])
            if listener.wait_final(frame_id, 60):
                first = (listener.first[frame_id] - sent) * 1000
                firsts[i] = first
                first_ms.append(first)
                worker_ms.append(listener.process_ms[frame_id])
                overhead.append(first - bare[i])
                stamps = _timings(stack, frame_id)
                queue_ms.append((stamps["received"] - sent) * 1000)
                track_ms.append(stamps.get("track_s", 0.0) * 1000)
                own.append(first - stamps["analyse_s"] * 1000)
                if previous_detected:
                    idle[i] = stamps["received"] - previous_detected
                previous_detected = stamps.get("detected", 0.0)
                timings = {k: v for k, v in stamps.items() if k.startswith("assessed:")}
                if timings:
                    chord_emit.append((listener.final[frame_id] - max(timings.values())) * 1000)
            else:
                print(f"frame {frame_id}: no final result within 60 s")
                previous_detected = 0.0
            if i % BLOCK == BLOCK - 1 or i == len(frames) - 1:
                block = [j for j in range(i - i % BLOCK, i + 1) if j in idle]
                if block:
                    waits = [min(idle[j], IDLE_REPLAY_CAP_S) for j in block]
                    times = bare_inference_ms(detector, [images[j] for j in block], waits)
                    matched += times
                    over_matched += [firsts[j] - t for j, t in zip(block, times, strict=True)]
    finally:
        listener.close()
    print(summary("bare inference, in blocks beside the idle stack", bare))
    print(summary("frame -> first detection_result", first_ms))
    print(summary("overhead over bare inference", overhead))
    print(summary("the worker's model idle before each frame", [t * 1000 for t in idle.values()]))
    print(summary("bare inference, each after the same idle time", matched))
    print(summary("overhead over bare inference after the same idle time", over_matched))
    print(summary("  in the worker: decode + detect + group (processTime)", worker_ms))
    print(summary("overhead over the worker's own detect + group time", own))
    print(summary("  of which: sent -> detector received the frame", queue_ms))
    print(summary("  of which: tracking (the camera's lock, update, state in Redis)", track_ms))
    print(summary("last group verdict -> final emit", chord_emit))
    print(f"frames with groups (chord): {len(chord_emit)} of {len(first_ms)}")
    intervals = {
        "overhead_ms_p50": median_interval(overhead),
        "overhead_idle_matched_ms_p50": median_interval(over_matched),
        "overhead_excl_worker_inference_ms_p50": median_interval(own),
    }
    for name, (low, high) in intervals.items():
        print(f"{name}: 95 % interval of the median {low:.2f} - {high:.2f} ms")
    bounds: dict[str, object] = {
        f"{name}_{end}": value
        for name, pair in intervals.items()
        for end, value in zip(("lo", "hi"), pair, strict=True)
        if not math.isnan(value)
    }
    return {
        "overhead_ms_p50": percentile(overhead, 50),
        "overhead_ms_p90": percentile(overhead, 90),
        "overhead_idle_matched_ms_p50": percentile(over_matched, 50),
        "overhead_idle_matched_ms_p90": percentile(over_matched, 90),
        "idle_ms_p50": percentile([t * 1000 for t in idle.values()], 50),
        "overhead_excl_worker_inference_ms_p50": percentile(own, 50),
        "track_ms_p50": percentile(track_ms, 50),
        "chord_emit_ms_p50": percentile(chord_emit, 50),
        "chord_emit_ms_p90": percentile(chord_emit, 90),
        "bare_ms_p50": statistics.median(bare),
        "frames": len(first_ms),
    } | bounds


def _timings(stack: Stack, frame_id: str) -> dict[str, float]:
    """The stage times the pipeline recorded for a frame."""
    return FrameStore(stack.redis).timings(frame_id)


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="20 frames instead of 60 (10 made the p50 swing by 5 ms between runs)"
    )
    parser.add_argument("--frames", type=int, help="number of measured frames")
    args = parser.parse_args()
    count = args.frames or (20 if args.quick else 60)
    finish(run(count))


if __name__ == "__main__":
    main()
