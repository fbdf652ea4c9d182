"""Detector throughput per inference backend: bare ``predict`` loops, micro-batching, the ``gpu`` worker, memory.

Self-contained: starts its own redis-server and Celery workers (gpu, llm, default; no provider, so
groups go to the offline rules assessor) and stops them. One run, the same frames, side by side for
every backend installed here (``torch``, ``onnx``, ``openvino``; ``tensorrt`` on CUDA):

- bare: ``UltralyticsDetector.detect`` in this process over N decoded 1280x720 demo frames, warmed up,
  with the threads a worker gets (the CPUs this process may use); run before and again after the
  backend's worker run, and the two averaged, so that the machine's speed drifting between them (seen on
  the 2-core CPU: OpenVINO's bare loop at 41-52 frames/s over one day) does not count for or against the
  worker (``<b>_bare_drift=``: the second run over the first).
- batching: ``detect_many`` over the same frames interleaved across 8 "cameras" (each batch holds
  frames of different sources), batch sizes 1, 2, 4, 8 (and 16 on a GPU).
- worker: the same N frames injected at once as a backlog (``Stack.inject_frame``, each JPEG with its
  preview, as the capture service stores them: the worker decodes the preview) into a real
  ``celery -A workers worker -Q gpu -P solo -c 1`` running that backend (``TRAFFIC_DETECTOR_BACKEND``)
  at the default batch size, one predict at a time (``TRAFFIC_DETECTOR_BATCH`` unset: 8 on CUDA, on a
  CPU 4 with OpenVINO and 1 otherwise) and the gate at its defaults (``--assess-every-frame``: every group of every
  frame goes to the assessor); frames/s is the rate at which it stamps frames ``detected``, first to
  last, after warm-up frames; its resident memory (VmRSS) and peak (VmHWM) after the backlog. The
  worker is compared with the bare one-frame loop (``ratio``) and with the bare loop at the worker's
  own batch size (``ratio_same_batch``: what the worker costs beyond the predicts it runs).
- worker batched: the backend ``auto`` picks once more, with ``TRAFFIC_DETECTOR_BATCH=--batch`` (default
  8): celery-batches hands the worker up to that many messages per predict.
- worker pipelined: the backend ``auto`` picks at its default batch with ``TRAFFIC_DETECTOR_PIPELINE=
  --pipeline`` (default 2): the last predict's frames routed while the next one runs.

The same command gives GPU figures on a GPU host (``--device auto`` picks CUDA when torch sees it);
cameras per GPU = the best batched frames/s over 5 detected frames/s per camera.

    python -m bench.detector [--quick] [--frames N] [--device auto|cpu|cuda:0] [--backends torch,onnx] [--batch 8]
        [--full-decode]   # workers decode every JPEG whole, to compare with the scaled decode
        [--assess-every-frame]   # the gate's reuse and cooldown off
        [--pipeline 2]   # predicts lined up in the pipelined worker run

Last line: ``backend=`` (what ``auto`` picks) ``speedup=`` (its bare frames/s over bare PyTorch's)
``ratio=`` (its worker over its bare loop), ``batched_ratio=`` (its batched worker over its bare loop),
``pipeline_ratio=`` (its pipelined worker over its worker at the default pipeline, 1),
then per backend ``<b>_bare_fps= <b>_bare_drift= <b>_worker_fps= <b>_ratio= <b>_default_batch=
<b>_ratio_same_batch= <b>_rss_mb= <b>_batch<N>_fps=``,
``<auto>_worker_batch<N>_fps=``, ``<auto>_worker_pipeline<N>_fps=`` and ``device= threads=``.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import capture_preview, finish, frame_set, summary
from infra.camera_registry import CameraRegistry
from infra.detector_loading import packaged_detector_settings
from infra.frame_store import FrameStore
from infra.host_cpus import visible_cpus
from stack.harness import Stack, stack_env
from stack.redis_server import LocalRedis
from traffic.detector_backends import BACKENDS, choose_backend, missing_packages
from traffic.imaging import Image, decode_jpeg
from traffic.settings import DetectorSettings, Settings
from traffic.yolo_detector import UltralyticsDetector, resolve_batch

BATCH_SIZES = (1, 2, 4, 8)
GPU_BATCH_SIZES = (1, 2, 4, 8, 16)
CAMERAS = 8
WARM_FRAMES = 3
BARE_WARM_FRAMES = 8
"""The bare loop warms up longer: measured, PyTorch's first dozen frames after loading run ~30 % slower."""


def device_name(device: str) -> str:
    """Human name of a torch device: ``cpu``, or the CUDA device's product name."""
    if not device.startswith("cuda"):
        return device
    import torch

    index = int(device.split(":", 1)[1]) if ":" in device else 0
    return str(torch.cuda.get_device_name(index))


def bare_fps(detector: UltralyticsDetector, images: Sequence[Image]) -> tuple[float, list[float]]:
    """Frames/s of ``detect`` one frame at a time (after warm-up) and the per-frame milliseconds."""
    for image in images[:BARE_WARM_FRAMES]:
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


def worker_fps(
    stack: Stack, stored: Sequence[tuple[bytes, bytes]], timeout: float
) -> tuple[float, dict[str, list[float]], int]:
    """Frames/s of the detector worker on a backlog of ``stored`` frames (each JPEG with its preview, as the
    capture service stores them); stage times and the frames it finished."""
    store = FrameStore(stack.redis)
    for jpeg, preview in stored[:WARM_FRAMES]:  # the worker loads its model on its first frame
        _wait_detected(store, [stack.inject_frame("warm", jpeg, preview=preview)], 180)
    frame_ids = [stack.inject_frame("bench", jpeg, preview=preview) for jpeg, preview in stored]
    _wait_detected(store, frame_ids, timeout)
    stamps = [store.timings(f) for f in frame_ids]
    done = sorted((s for s in stamps if "detected" in s), key=lambda s: s["received"])
    stages: dict[str, list[float]] = {"in_worker": [], "decode": [], "analyse": [], "between": [], "batch": []}
    for i, s in enumerate(done):
        stages["in_worker"].append((s["detected"] - s["received"]) * 1000)
        stages["decode"].append(s.get("decode_s", float("nan")) * 1000)
        stages["analyse"].append(s.get("analyse_s", float("nan")) * 1000)
        stages["batch"].append(s.get("batch", 1.0))
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
        # One read per poll while the worker is behind (a camera's frames are stamped in order): the
        # benchmark must not spend the CPU it measures on polling.
        while pending and "detected" in store.timings(pending[0]):
            pending.pop(0)
        if pending:
            time.sleep(0.1)
    if pending:
        print(f"warning: {len(pending)} frame(s) not detected within {timeout:.0f} s")


def run(
    frame_count: int,
    device: str,
    backends: Sequence[str] | None,
    batch: int = 8,
    scaled_decode: bool = True,
    assess_every_frame: bool = False,
    pipeline: int = 2,
) -> dict[str, object]:
    """Measure every backend and print; returns the closing line's figures."""
    frames = frame_set(frame_count)
    jpegs = [jpeg for _, jpeg in frames]
    images = [decode_jpeg(jpeg) for jpeg in jpegs]
    stored = [(jpeg, capture_preview(image)) for image, jpeg in frames]
    resolved = resolve_device(device)
    cuda = resolved.startswith("cuda")
    chosen = list(backends) if backends else installed_backends(cuda)
    auto = choose_backend("auto", cuda=cuda, installed=installed)
    if "torch" not in chosen or auto not in chosen:
        raise SystemExit(f"--backends must include torch and {auto} (what auto picks), the two the line compares")
    threads = visible_cpus()
    print(f"device: {device_name(resolved)} ({resolved}; TRAFFIC_DEVICE={device}); backends: {', '.join(chosen)}")
    print(
        f"frames: {frame_count} demo frames at 1280x720; runtime threads: {threads} (the CPUs this process may "
        f"use); cpus: {os.cpu_count()}; load average before: {os.getloadavg()[0]:.2f} (other work skews every figure)"
    )
    sizes = GPU_BATCH_SIZES if cuda else BATCH_SIZES
    gate = {"assess_every_frame": assess_every_frame}
    results: dict[str, BackendRun] = {}
    for backend in chosen:  # each backend's worker run between two bare loops
        results[backend] = measure_bare(backend, device, images, sizes)
        results[backend].worker = measure_worker(
            backend, device, stored, results[backend].bare_fps, scaled_decode=scaled_decode, **gate
        )
        results[backend].bare_after = bare_again(backend, device, images)
    batched = measure_worker(
        auto, device, stored, results[auto].bare_fps, batch=batch, scaled_decode=scaled_decode, **gate
    )
    piped = measure_worker(
        auto, device, stored, results[auto].bare_fps, pipeline=pipeline, scaled_decode=scaled_decode, **gate
    )
    report(results, sizes, cuda)
    print(
        f"\n[{auto}] worker at batch {batch}: {batched.fps:.2f} frames/s "
        f"({batched.fps / results[auto].bare_fps:.3f} of its bare loop; at the default batch "
        f"{results[auto].worker.fps:.2f}); resident {batched.rss_mb:.0f} MB"
    )
    print(summary(f"  frames per predict (batch {batch})", batched.stages.get("batch", []), unit=""))
    print(
        f"[{auto}] worker with {pipeline} predicts lined up: {piped.fps:.2f} frames/s "
        f"({piped.fps / results[auto].worker.fps:.3f} of the same worker without; "
        f"{piped.fps / results[auto].bare_fps:.3f} of its bare loop)"
    )
    torch_bare = results["torch"].bare_fps
    pairs: dict[str, object] = {
        "backend": auto,
        "speedup": results[auto].bare_fps / torch_bare,
        "ratio": results[auto].ratio,
        "batched_ratio": batched.fps / results[auto].bare_fps,
        "pipeline_ratio": piped.fps / results[auto].worker.fps,
    }
    for backend, r in results.items():
        pairs |= {
            f"{backend}_bare_fps": r.bare_fps,
            f"{backend}_bare_drift": r.bare_after / r.bare_before,
            f"{backend}_worker_fps": r.worker.fps,
            f"{backend}_ratio": r.ratio,
            f"{backend}_default_batch": r.default_batch,
            f"{backend}_ratio_same_batch": r.ratio_same_batch,
            f"{backend}_rss_mb": r.worker.rss_mb,
            **{f"{backend}_batch{size}_fps": fps for size, fps in r.batches.items()},
        }
    pairs[f"{auto}_worker_batch{batch}_fps"] = batched.fps
    pairs[f"{auto}_worker_pipeline{pipeline}_fps"] = piped.fps
    if cuda:
        pairs["cameras_per_gpu_at_5fps"] = max(max(r.batches.values()) for r in results.values()) / 5.0
    pairs |= {"device": resolved, "threads": threads}
    return pairs


@dataclass
class WorkerRun:
    """The gpu worker on one backend."""

    fps: float
    frames: int
    rss_mb: float
    peak_mb: float
    stages: dict[str, list[float]]
    stats: dict[str, Any]


@dataclass
class BackendRun:
    """Every figure of one backend."""

    backend: str
    load_s: float
    exported: bool
    bare_before: float
    """Frames/s of the bare loop before the worker ran."""
    bare_ms: list[float]
    batches: dict[int, float]
    worker: WorkerRun = field(default_factory=lambda: WorkerRun(math.nan, 0, math.nan, math.nan, {}, {}))

    default_batch: int = 1
    bare_after: float = math.nan
    """Frames/s of the bare loop after the worker ran."""

    @property
    def bare_fps(self) -> float:
        """The bare loop's frames/s: the mean of the runs before and after the worker (before alone if that
        is all there is)."""
        runs = [f for f in (self.bare_before, self.bare_after) if math.isfinite(f)]
        return sum(runs) / len(runs) if runs else math.nan

    @property
    def ratio(self) -> float:
        """The worker's frames/s over the bare one-frame loop's."""
        return self.worker.fps / self.bare_fps

    @property
    def ratio_same_batch(self) -> float:
        """The worker's frames/s over the bare loop's at the worker's batch size (NaN where not measured)."""
        fps = self.bare_fps if self.default_batch == 1 else self.batches.get(self.default_batch, math.nan)
        return self.worker.fps / fps


def measure_bare(backend: str, device: str, images: Sequence[Image], sizes: Sequence[int]) -> BackendRun:
    """Load ``backend`` in this process (exporting it if the cache lacks it) and time the bare loops."""
    started = time.perf_counter()
    detector = UltralyticsDetector(packaged_detector_settings(DetectorSettings(device=device, backend=backend)))
    detector.load()
    load_s = time.perf_counter() - started
    bare, bare_ms = bare_fps(detector, images)
    interleaved = across_cameras(images, CAMERAS)
    batches = {size: batch_fps(detector, interleaved, size) for size in sizes}
    exported = detector.artefact is not None and detector.artefact.exported
    print(f"[{backend}] loaded in {load_s:.1f} s{' (exported now)' if exported else ''}; bare {bare:.2f} frames/s")
    del detector  # free its memory before the worker loads its own copy
    default_batch = resolve_batch(DetectorSettings(device=device, backend=backend))
    return BackendRun(backend, load_s, exported, bare, bare_ms, batches, default_batch=default_batch)


def bare_again(backend: str, device: str, images: Sequence[Image]) -> float:
    """The bare one-frame loop of ``backend`` once more (after its worker ran): frames/s."""
    detector = UltralyticsDetector(packaged_detector_settings(DetectorSettings(device=device, backend=backend)))
    detector.load()
    fps, _ = bare_fps(detector, images)
    print(f"[{backend}] bare again after its worker: {fps:.2f} frames/s")
    return fps


def gate_env(*, every_frame: bool) -> dict[str, str]:
    """The gate's settings for the workers: the product's defaults (the tests' stack turns the unchanged-
    scene reuse and the cooldown off), or off, so that every group of every frame is assessed."""
    if every_frame:
        return {"TRAFFIC_DEDUPE_WINDOW": "0", "TRAFFIC_LLM_COOLDOWN": "0"}
    defaults = Settings()
    return {
        "TRAFFIC_DEDUPE_WINDOW": repr(defaults.pipeline.dedupe_window_s),
        "TRAFFIC_LLM_COOLDOWN": repr(defaults.llm.cooldown_s),
    }


def measure_worker(
    backend: str,
    device: str,
    stored: Sequence[tuple[bytes, bytes]],
    bare: float,
    *,
    batch: int = 0,
    pipeline: int = 1,
    scaled_decode: bool = True,
    assess_every_frame: bool = False,
) -> WorkerRun:
    """A real gpu worker on ``backend`` draining a backlog of ``stored`` frames (``batch`` 0: the default size;
    ``pipeline``: predicts lined up per delivery)."""
    with tempfile.TemporaryDirectory(prefix="bench-detector-") as tmp, LocalRedis(Path(tmp) / "redis") as server:
        env = stack_env(
            server.url,
            Path(tmp),
            None,
            TRAFFIC_LOG_LEVEL="WARNING",
            TRAFFIC_DEVICE=device,
            TRAFFIC_DETECTOR_BACKEND=backend,
            TRAFFIC_DETECTOR_BATCH=str(batch),
            TRAFFIC_DETECTOR_PIPELINE=str(pipeline),
            TRAFFIC_DETECTOR_SCALED_DECODE=str(scaled_decode).lower(),
            **gate_env(every_frame=assess_every_frame),
        )
        stack = Stack(server.url, Path(tmp), env)
        try:
            stack.start("gpu", "llm", "default")
            fps, stages, done = worker_fps(stack, stored, timeout=60 + 10 * len(stored) / max(bare, 0.1))
            rss, peak = resident_mb(stack.group.pid("gpu"))
            stats = CameraRegistry(stack.redis).stats("bench")
        finally:
            stack.stop()
    size = batch or "default"
    print(
        f"[{backend}] worker (batch {size}, pipeline {pipeline}) {fps:.2f} frames/s ({done} frames), "
        f"{rss:.0f} MB (peak {peak:.0f} MB)"
    )
    return WorkerRun(fps, done, rss, peak, stages, stats)


def resident_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB, from /proc (NaN where unreadable)."""
    fields: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return fields.get("VmRSS", math.nan), fields.get("VmHWM", math.nan)


def report(results: dict[str, BackendRun], sizes: Sequence[int], cuda: bool) -> None:
    """The side-by-side table, then each backend's details."""
    torch_bare = results["torch"].bare_fps
    print()
    columns = ("bare fps", "vs torch", "worker fps", "worker/bare", "batch", "/same batch", "RSS MB", "peak MB")
    print(f"{'backend':<10} " + " ".join(f"{c:>11}" for c in columns))
    for backend, r in results.items():
        w = r.worker
        print(
            f"{backend:<10} {r.bare_fps:11.2f} {r.bare_fps / torch_bare:10.2f}x {w.fps:11.2f} {r.ratio:11.3f} "
            f"{r.default_batch:11d} {r.ratio_same_batch:11.3f} {w.rss_mb:11.0f} {w.peak_mb:11.0f}"
        )
    print()
    print("micro-batching (detect_many, frames interleaved across 8 cameras), frames/s:")
    print(f"{'backend':<10} " + " ".join(f"{'batch ' + str(s):>9}" for s in sizes))
    for backend, r in results.items():
        print(f"{backend:<10} " + " ".join(f"{r.batches[s]:9.2f}" for s in sizes))
    if cuda:
        best = max(max(r.batches.values()) for r in results.values())
        print(f"cameras per GPU at 5 detected frames/s each: {best / 5.0:.0f}")
    for backend, r in results.items():
        w = r.worker
        print(f"\n[{backend}]")
        print(f"  bare frames/s before the worker {r.bare_before:.2f}, after {r.bare_after:.2f}: {r.bare_fps:.2f}")
        print(summary("  bare per frame (before)", r.bare_ms))
        print(
            summary(
                "  worker received -> detected (decode, detect, group, gate, crops, store, emit)",
                w.stages.get("in_worker", []),
            )
        )
        print(summary("    of which decode", w.stages.get("decode", [])))
        print(summary("    of which detect + group", w.stages.get("analyse", [])))
        print(summary("  detected -> next frame received (ack, chord send, broker fetch)", w.stages.get("between", [])))
        print(f"  camera stats: {w.stats}")


def resolve_device(device: str) -> str:
    """``auto`` as the detector resolves it (the first CUDA device if torch sees one, else cpu)."""
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def installed(package: str) -> bool:
    """Whether ``package`` can be imported here."""
    return importlib.util.find_spec(package) is not None


def installed_backends(cuda: bool) -> list[str]:
    """The backends whose packages are installed (TensorRT only on CUDA)."""
    return [b for b in BACKENDS if (cuda or b != "tensorrt") and not missing_packages(b, installed)]


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="96 frames instead of 240 (fewer make the worker's rate depend on its first deliveries)",
    )
    parser.add_argument("--frames", type=int, help="frames per measurement (a multiple of 8 is best)")
    parser.add_argument("--device", default="auto", help="TRAFFIC_DEVICE for both loops (default: auto)")
    parser.add_argument("--backends", help="comma-separated backends to compare (default: every installed one)")
    parser.add_argument("--batch", type=int, default=8, help="batch size of the batched worker run (default 8)")
    parser.add_argument(
        "--pipeline", type=int, default=2, help="predicts lined up in the pipelined worker run (default 2)"
    )
    parser.add_argument(
        "--full-decode",
        action="store_true",
        help="workers decode every JPEG whole (TRAFFIC_DETECTOR_SCALED_DECODE=false)",
    )
    parser.add_argument(
        "--assess-every-frame",
        action="store_true",
        help="turn the gate's reuse and cooldown off: every group of every frame goes to the assessor",
    )
    args = parser.parse_args()
    count = args.frames or (96 if args.quick else 240)
    backends = [b.strip() for b in args.backends.split(",")] if args.backends else None
    finish(
        run(
            max(count, CAMERAS),
            args.device,
            backends,
            max(1, args.batch),
            not args.full_decode,
            args.assess_every_frame,
            max(2, args.pipeline),
        )
    )


if __name__ == "__main__":
    main()
