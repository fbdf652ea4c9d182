"""Detector throughput: the ``gpu`` worker's frames/s against a bare ``predict`` loop, and micro-batching.

Self-contained: starts its own redis-server and Celery workers (gpu, llm, default; no provider, so
groups go to the offline rules assessor) and stops them.

- bare: ``UltralyticsDetector.detect`` in this process over N decoded 1280x720 demo frames, warmed up.
- worker: the same N frames injected at once as a backlog (``Stack.inject_frame``) into a real
  ``celery -A workers worker -Q gpu -P solo -c 1``; frames/s is the rate at which the worker stamps
  frames ``detected`` (``FrameStore.timings``), first to last, after warm-up frames.
- batching: ``detect_many`` over the same frames interleaved across 8 "cameras" (each batch holds
  frames of different sources), batch sizes 1, 2, 4, 8.

The same command gives GPU figures on a GPU host (``--device auto`` picks CUDA when torch sees it).

    python -m bench.detector [--quick] [--frames N] [--device auto|cpu|cuda:0]

Last line: ``worker_fps=… bare_fps=… ratio=… batch1_fps=… … batch8_fps=… device=…``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import finish, frame_set, summary
from infra.camera_registry import CameraRegistry
from infra.detector_loading import packaged_detector_settings
from infra.frame_store import FrameStore
from stack.harness import Stack, stack_env
from stack.redis_server import LocalRedis
from traffic.imaging import Image, decode_jpeg
from traffic.settings import DetectorSettings
from traffic.yolo_detector import UltralyticsDetector

BATCH_SIZES = (1, 2, 4, 8)
CAMERAS = 8
WARM_FRAMES = 3


def device_name(device: str) -> str:
    """Human name of a torch device: ``cpu``, or the CUDA device's product name."""
    if not device.startswith("cuda"):
        return device
    import torch

    index = int(device.split(":", 1)[1]) if ":" in device else 0
    return str(torch.cuda.get_device_name(index))


def bare_fps(detector: UltralyticsDetector, images: Sequence[Image]) -> tuple[float, list[float]]:
    """Frames/s of ``detect`` one frame at a time (after warm-up) and the per-frame milliseconds."""
    for image in images[:WARM_FRAMES]:
        detector.detect(image)
    times = []
    started = time.perf_counter()
    for image in images:
        t = time.perf_counter()
        detector.detect(image)
        times.append((time.perf_counter() - t) * 1000)
    return len(images) / (time.perf_counter() - started), times


def across_cameras(images: Sequence[Image], cameras: int) -> list[Image]:
    """The frames reordered so that consecutive frames come from different "cameras".

    Camera ``c`` plays the frame list from offset ``c * len / cameras``; frames are taken round-robin,
    one per camera, so any run of up to ``cameras`` consecutive frames holds frames of different sources.
    """
    n = len(images)
    rounds = n // cameras
    return [images[(c * n // cameras + r) % n] for r in range(rounds) for c in range(cameras)]


def batch_fps(detector: UltralyticsDetector, images: Sequence[Image], size: int) -> float:
    """Frames/s of ``detect_many`` in batches of ``size`` consecutive frames (one warm-up batch first)."""
    detector.detect_many(images[:size])
    started = time.perf_counter()
    for i in range(0, len(images), size):
        detector.detect_many(images[i : i + size])
    return len(images) / (time.perf_counter() - started)


def worker_fps(stack: Stack, jpegs: Sequence[bytes], timeout: float) -> tuple[float, dict[str, list[float]], int]:
    """Frames/s of the detector worker on a backlog of ``jpegs``; stage times and the frames it finished."""
    store = FrameStore(stack.redis)
    for jpeg in jpegs[:WARM_FRAMES]:  # the worker loads its model on its first frame
        _wait_detected(store, [stack.inject_frame("warm", jpeg)], 180)
    frame_ids = [stack.inject_frame("bench", jpeg) for jpeg in jpegs]
    _wait_detected(store, frame_ids, timeout)
    stamps = [store.timings(f) for f in frame_ids]
    done = sorted((s for s in stamps if "detected" in s), key=lambda s: s["received"])
    stages: dict[str, list[float]] = {"in_worker": [], "decode": [], "analyse": [], "between": []}
    for i, s in enumerate(done):
        stages["in_worker"].append((s["detected"] - s["received"]) * 1000)
        stages["decode"].append(s.get("decode_s", float("nan")) * 1000)
        stages["analyse"].append(s.get("analyse_s", float("nan")) * 1000)
        if i:
            stages["between"].append((s["received"] - done[i - 1]["detected"]) * 1000)
    if len(done) < 2:
        return float("nan"), stages, len(done)
    span = done[-1]["detected"] - done[0]["detected"]
    return (len(done) - 1) / span, stages, len(done)


def _wait_detected(store: FrameStore, frame_ids: Sequence[str], timeout: float) -> None:
    """Block until every frame is stamped ``detected`` (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    pending = list(frame_ids)
    while pending and time.monotonic() < deadline:
        pending = [f for f in pending if "detected" not in store.timings(f)]
        if pending:
            time.sleep(0.1)
    if pending:
        print(f"warning: {len(pending)} frame(s) not detected within {timeout:.0f} s")


def run(frame_count: int, device: str) -> dict[str, object]:
    """Measure and print; returns the closing line's figures."""
    frames = frame_set(frame_count)
    jpegs = [jpeg for _, jpeg in frames]
    images = [decode_jpeg(jpeg) for jpeg in jpegs]
    detector = UltralyticsDetector(packaged_detector_settings(DetectorSettings(device=device)))
    detector.load()
    resolved = detector.device
    print(f"device: {device_name(resolved)} ({resolved}; TRAFFIC_DEVICE={device}); model {detector.model_type}")
    print(
        f"frames: {frame_count} demo frames at 1280x720; torch threads: {_torch_threads()}; cpus: {os.cpu_count()}; "
        f"load average before: {os.getloadavg()[0]:.2f} (other work on the host skews every figure)"
    )

    bare, bare_ms = bare_fps(detector, images)
    print(f"bare detect loop: {bare:.2f} frames/s")
    print(summary("  per frame", bare_ms))

    interleaved = across_cameras(images, CAMERAS)
    batches = {size: batch_fps(detector, interleaved, size) for size in BATCH_SIZES}
    print(f"micro-batching (detect_many, {len(interleaved)} frames interleaved across {CAMERAS} cameras):")
    for size, fps in batches.items():
        print(f"  batch {size}: {fps:.2f} frames/s ({fps / batches[1]:.2f}x batch 1, {1000 * size / fps:.1f} ms/batch)")
    del detector  # free its memory before the worker loads its own copy

    with tempfile.TemporaryDirectory(prefix="bench-detector-") as tmp, LocalRedis(Path(tmp) / "redis") as server:
        env = stack_env(server.url, Path(tmp), None, TRAFFIC_LOG_LEVEL="WARNING", TRAFFIC_DEVICE=device)
        stack = Stack(server.url, Path(tmp), env)
        try:
            stack.start("gpu", "llm", "default")
            fps, stages, done = worker_fps(stack, jpegs, timeout=60 + 10 * frame_count / max(bare, 0.1))
            stats = CameraRegistry(stack.redis).stats("bench")
        finally:
            stack.stop()
    print(f"worker (celery -Q gpu -P solo -c 1, backlog of {frame_count}): {fps:.2f} frames/s, {done} frames detected")
    print(summary("  received -> detected (decode, detect, group, gate, crops, store, emit)", stages["in_worker"]))
    print(summary("    of which decode", stages["decode"]))
    print(summary("    of which detect + group (compare: bare per frame)", stages["analyse"]))
    print(summary("  detected -> next frame received (ack, chord send, broker fetch)", stages["between"]))
    print(f"  camera stats: {stats}")
    print(f"worker / bare: {fps / bare:.3f}")
    return {
        "worker_fps": fps,
        "bare_fps": bare,
        "ratio": fps / bare,
        **{f"batch{size}_fps": value for size, value in batches.items()},
        "frames": done,
        "device": resolved,
    }


def _torch_threads() -> int:
    """torch's intra-op thread count in this process."""
    import torch

    return int(torch.get_num_threads())


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="24 frames instead of 120")
    parser.add_argument("--frames", type=int, help="frames per measurement (a multiple of 8 is best)")
    parser.add_argument("--device", default="auto", help="TRAFFIC_DEVICE for both loops (default: auto)")
    args = parser.parse_args()
    count = args.frames or (24 if args.quick else 120)
    finish(run(max(count, CAMERAS), args.device))


if __name__ == "__main__":
    main()
