"""Generated traffic scenes with ground truth: road users on known paths, seen by a noisy detector.

Tracking quality is measured on these (``tests/unit/test_tracking_quality.py``, ``bench/tracking.py``):
every road user follows a path defined in continuous time (straight lanes both ways, turns, pedestrians
crossing), so the same scene can be sampled at any detection rate. The "detector" then adds what a real
one does: box noise proportional to the box, missed boxes, an occluder that hides whatever passes behind
it, and the odd false positive. Deterministic for a seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from traffic.models import BBox, Detection

WIDTH, HEIGHT = 1280, 720


@dataclass(frozen=True)
class RoadUser:
    """One road user's path: where its box's bottom centre is at time ``t`` (seconds), and its box size."""

    user_id: int
    cls: str
    size: tuple[float, float]
    start: float
    end: float
    origin: tuple[float, float]
    velocity: tuple[float, float]
    turn_rate: float = 0.0
    """Radians per second the heading turns (0: a straight path)."""

    def anchor(self, t: float) -> tuple[float, float]:
        """Bottom centre of the box at time ``t`` (constant speed, constant turn rate)."""
        dt = t - self.start
        vx, vy = self.velocity
        if abs(self.turn_rate) < 1e-9:
            return self.origin[0] + vx * dt, self.origin[1] + vy * dt
        speed, heading = math.hypot(vx, vy), math.atan2(vy, vx)
        w = self.turn_rate
        x = self.origin[0] + speed / w * (math.sin(heading + w * dt) - math.sin(heading))
        y = self.origin[1] - speed / w * (math.cos(heading + w * dt) - math.cos(heading))
        return x, y

    def box(self, t: float) -> BBox:
        """The true box at time ``t``."""
        x, y = self.anchor(t)
        w, h = self.size
        return (x - w / 2, y - h, x + w / 2, y)


@dataclass(frozen=True)
class SceneFrame:
    """One sampled frame: its time, the truth, and what the detector reported."""

    t: float
    truth: tuple[tuple[int, str, BBox], ...]
    detections: tuple[Detection, ...]


@dataclass(frozen=True)
class Scene:
    """Road users over ``duration`` seconds, an occluder band, and the detector's noise."""

    users: tuple[RoadUser, ...]
    duration: float
    occluder: tuple[float, float] = (600.0, 640.0)
    """x range of a post: a road user whose anchor is behind it is not detected."""
    box_noise: float = 0.03
    """Standard deviation of box edges, as a fraction of the box's size."""
    miss_rate: float = 0.05
    false_positives: float = 0.05
    """Expected false boxes per frame."""
    seed: int = 0

    def frames(self, fps: float) -> Iterator[SceneFrame]:
        """The scene sampled ``fps`` times a second (same paths whatever the rate; noise from the seed)."""
        rng = random.Random(f"{self.seed}-{fps}")
        for k in range(int(self.duration * fps)):
            t = k / fps
            truth = []
            detections = []
            for user in self.users:
                if not user.start <= t < user.end:
                    continue
                box = user.box(t)
                if not _on_screen(box):
                    continue
                truth.append((user.user_id, user.cls, box))
                x = (box[0] + box[2]) / 2
                hidden = self.occluder[0] <= x <= self.occluder[1]
                if hidden or rng.random() < self.miss_rate:
                    continue
                detections.append(Detection(user.cls, round(rng.uniform(0.45, 0.95), 3), _noisy(box, self, rng)))
            if rng.random() < self.false_positives:
                x, y = rng.uniform(0, WIDTH - 60), rng.uniform(0, HEIGHT - 60)
                detections.append(Detection("car", round(rng.uniform(0.36, 0.5), 3), (x, y, x + 60, y + 40)))
            yield SceneFrame(t, tuple(truth), tuple(detections))


def _noisy(box: BBox, scene: Scene, rng: random.Random) -> BBox:
    """The box with each edge moved by noise proportional to the box's width or height."""
    w, h = box[2] - box[0], box[3] - box[1]
    sx, sy = scene.box_noise * w, scene.box_noise * h
    return (
        box[0] + rng.gauss(0, sx),
        box[1] + rng.gauss(0, sy),
        box[2] + rng.gauss(0, sx),
        box[3] + rng.gauss(0, sy),
    )


def _on_screen(box: BBox) -> bool:
    """Whether most of the box is inside the image."""
    x = (box[0] + box[2]) / 2
    return 0 <= x <= WIDTH and box[1] >= -20 and box[3] <= HEIGHT + 20


def crossroads(seed: int = 0, duration: float = 60.0, users: int = 40) -> Scene:
    """A junction: cars on four lanes (both ways, some turning), pedestrians crossing, staggered entries.

    Speeds at about 25 px per metre: cars 6-14 m/s (150-350 px/s), pedestrians 1.1-1.7 m/s.
    """
    rng = random.Random(seed)
    made: list[RoadUser] = []
    for user_id in range(users):
        start = rng.uniform(0, duration * 0.85)
        kind = rng.random()
        if kind < 0.7:
            speed = rng.uniform(150, 350)
            lane = rng.choice([(-1, 330.0), (-1, 390.0), (1, 470.0), (1, 530.0)])
            direction, y = lane
            x0 = -60.0 if direction > 0 else WIDTH + 60.0
            turn = rng.choice([0.0, 0.0, 0.0, 0.35 * direction, -0.35 * direction])
            length = rng.uniform(4.0, 5.0) * 25
            made.append(
                RoadUser(
                    user_id,
                    "car",
                    (length, length * 0.55),
                    start,
                    start + 12.0,
                    (x0, y),
                    (direction * speed, 0.0),
                    turn,
                )
            )
        else:
            speed = rng.uniform(28, 42)
            x = rng.uniform(200, 1080)
            down = rng.random() < 0.5
            y0, vy = (250.0, speed) if down else (700.0, -speed)
            made.append(RoadUser(user_id, "person", (30.0, 80.0), start, start + 14.0, (x, y0), (0.0, vy)))
    return Scene(tuple(made), duration, seed=seed)
