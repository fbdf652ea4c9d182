"""The demo camera's detection rate, measured: the rule's first guess is replaced by what the detector
worker takes on this host, once it has detected a few of the demo camera's frames."""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
from collections.abc import Sequence

import redis

from infra.camera_registry import CameraRegistry
from traffic import redis_keys
from traffic.cameras import MAX_DETECT_FPS

log = logging.getLogger(__name__)

WARM_UP_FRAMES = 3
"""Frames left out of the measurement: the first predictions also load and compile the model."""
SAMPLES = 8
"""Frames measured before the rate is set."""
CHANGE_SHARE = 0.2
"""The measured rate replaces the current one only when they differ by more than this share."""


def sustained_fps(process_times_s: Sequence[float], *, share: float, ceiling: float, floor: float) -> float:
    """Frames a second the detector sustains for one camera taking ``share`` of its time, from the
    median decode + detect time of a frame; within ``floor`` .. ``ceiling`` (and ``MAX_DETECT_FPS``)."""
    if not process_times_s:
        raise ValueError("no frame times to measure a rate from")
    frame_s = max(statistics.median(process_times_s), 1e-3)
    return round(min(MAX_DETECT_FPS, max(floor, min(ceiling, share / frame_s))), 2)


@dataclasses.dataclass
class DemoRateTuner:
    """Reads the demo camera's final results as they come; after ``WARM_UP_FRAMES`` + ``SAMPLES`` distinct
    frames it sets the camera's ``detectFps`` to the measured rate, once, unless someone changed it meanwhile."""

    client: redis.Redis
    camera_id: str
    initial_fps: float
    share: float
    ceiling: float
    floor: float
    seen: dict[str, float] = dataclasses.field(default_factory=dict)
    done: bool = False

    def poll(self) -> str | None:
        """Take the latest result; returns a line for the person at the console when the rate was decided."""
        if self.done:
            return None
        try:
            raw = self.client.get(redis_keys.camera_latest(self.camera_id))
            if raw is not None:
                result = json.loads(raw)
                frame_id, process_s = str(result["frameId"]), float(result["processTime"])
                if frame_id not in self.seen and process_s > 0:
                    self.seen[frame_id] = process_s
            if len(self.seen) < WARM_UP_FRAMES + SAMPLES:
                return None
            return self._decide()
        except (redis.RedisError, ValueError, KeyError, TypeError) as exc:
            log.warning("demo rate: could not read the demo camera's results: %s", exc)
            return None

    def _decide(self) -> str | None:
        """Set the measured rate (when it differs enough and nobody changed the camera); say what happened."""
        self.done = True
        times = list(self.seen.values())[WARM_UP_FRAMES:]
        median_ms = statistics.median(times) * 1000
        fps = sustained_fps(times, share=self.share, ceiling=self.ceiling, floor=self.floor)
        registry = CameraRegistry(self.client)
        camera = registry.get(self.camera_id)
        if camera is None or camera.detect_fps != self.initial_fps:
            return None  # removed or changed by someone: theirs to decide
        measured = f"demo camera: detector measured at {median_ms:.0f} ms a frame"
        if abs(fps - self.initial_fps) <= CHANGE_SHARE * self.initial_fps:
            return f"{measured}; keeping {self.initial_fps:g} frames/s"
        registry.add(dataclasses.replace(camera, detect_fps=fps))
        return f"{measured}; now {fps:g} frames/s (was {self.initial_fps:g})"
