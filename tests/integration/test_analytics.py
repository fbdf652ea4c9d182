"""Traffic analytics through a real detector worker: people walk across a counting line, are counted once,
and browsers get ``traffic_stats`` with the line, its count and the tracks' trails.

The packaged person model sees the people of the bus photo; each frame pastes the photo 40 px further
right on a wider grey canvas, captured 0.2 s after the previous one (5 detected frames/s), so everyone
walks right at 200 px/s. A vertical counting line stands where the leftmost people start well to its
left and end well to its right. The camera's geometry comes from a ``TRAFFIC_GEOMETRY_FILE``. Frames come
faster than one ``traffic_stats`` a second, so the last counts reach the browser from the beat.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from infra.frame_store import FrameStore
from infra.traffic_stats import TrafficStats
from stack.harness import EventClient, Stack, bus_jpeg, running_stack, wait_until
from traffic.imaging import decode_jpeg, encode_jpeg

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CAMERA = "cam-m"
CANVAS = (1440, 1080)
STEP_PX = 40
FRAMES = 16
LINE_X = 560
GEOMETRY = f"""
cameras:
  {CAMERA}:
    image_size: [{CANVAS[0]}, {CANVAS[1]}]
    lines:
      - name: kerb
        points: [[{LINE_X}, 0], [{LINE_X}, {CANVAS[1]}]]
        directions: [westbound, eastbound]
    zones:
      - name: pavement
        polygon: [[0, 0], [{CANVAS[0]}, 0], [{CANVAS[0]}, {CANVAS[1]}], [0, {CANVAS[1]}]]
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("analytics")
    geometry = tmp / "geometry.yaml"
    geometry.write_text(GEOMETRY, encoding="utf-8")
    processes = ("web", "gpu", "llm", "default", "beat")
    with running_stack(tmp, None, *processes, TRAFFIC_GEOMETRY_FILE=str(geometry)) as running:
        yield running


def shifted(photo: np.ndarray[Any, Any], dx: int) -> bytes:
    """The photo pasted ``dx`` px from the left of a grey canvas."""
    canvas = np.full((CANVAS[1], CANVAS[0], 3), 114, dtype=np.uint8)
    height, width = photo.shape[:2]
    canvas[:height, dx : dx + width] = photo
    return encode_jpeg(canvas, 90)


def test_people_walking_across_a_line_are_counted_once_and_browsers_see_it(stack: Stack) -> None:
    photo = decode_jpeg(bus_jpeg())
    client = EventClient(stack.web_url)
    try:
        client.call("subscribe", {"cameraIds": [CAMERA]})
        store = FrameStore(stack.redis)
        at = time.time()
        for k in range(FRAMES):
            at += 0.2
            frame_id = stack.inject_frame(CAMERA, shifted(photo, STEP_PX * k), captured_at=at, deadline_s=300.0)
            wait_until(lambda f=frame_id: "final" in store.timings(f), 120, f"frame {frame_id} to be final")

        stats = TrafficStats(stack.redis).live(CAMERA)
        assert stats is not None
        (kerb,) = stats["lines"]
        # Everyone walks right (east), which is right to left seen from the line's top end: backward.
        assert kerb["totals"]["westbound"] == 0 and kerb["totals"]["eastbound"] >= 1
        crossings = [e for e in stats["events"] if e["kind"] == "line_crossing"]
        assert len(crossings) == kerb["totals"]["eastbound"]
        assert len({tuple(e["trackIds"]) for e in crossings}) == len(crossings)  # each track counted once
        assert all(e["classes"] == ["person"] and e["direction"] == "eastbound" for e in crossings)

        _, live = client.wait_for(
            lambda name, data: name == "traffic_stats" and data["lines"][0]["totals"]["eastbound"] >= 1, 30
        )
        assert live["cameraId"] == CAMERA and live["unit"] == "px" and live["calibrated"] is False
        assert live["zones"][0]["name"] == "pavement"
        assert any(len(t["trail"]) >= 2 and t["speedUnit"] == "px/s" for t in live["tracks"])
    finally:
        client.close()
