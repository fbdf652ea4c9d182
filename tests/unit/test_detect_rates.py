"""Per-camera detection rates: a reader's sampling schedule, its change without a reconnect, the demo's rate."""

from __future__ import annotations

import dataclasses
import random

import pytest
import redis

from infra.camera_registry import CameraRegistry
from stack.supervisor import CPU_FRAME_S, demo_detect_fps
from traffic.cameras import Camera
from traffic.settings import Settings
from workers.capture import CaptureTimings
from workers.capture.reader import CameraReader, StatusReporter


class NoEvents:
    """An event sink that drops everything (the reader is never started)."""

    def to_camera(self, camera_id: str, event: str, data: dict[str, object]) -> None:
        """Drop the event."""


def reader_for(camera: Camera, settings: Settings) -> CameraReader:
    """A reader of ``camera``, not started (no thread, no connection)."""
    registry = CameraRegistry(redis.Redis())  # never used: nothing is reported before start
    return CameraReader(
        camera,
        StatusReporter(camera, registry, NoEvents()),
        settings=settings,
        timings=CaptureTimings(),
        rng=random.Random(0),
        guard=lambda url: None,
    )


def with_interval(interval_s: float) -> Settings:
    """Default settings with ``capture.frame_interval_s`` = ``interval_s``."""
    base = Settings()
    return dataclasses.replace(base, capture=dataclasses.replace(base.capture, frame_interval_s=interval_s))


def test_a_reader_samples_at_its_camera_rate_else_at_the_global_interval() -> None:
    settings = with_interval(1.8)
    plain = reader_for(Camera("a", "rtsp://cam/a"), settings)
    assert plain.interval == 1.8 and plain.next_sample == pytest.approx(plain.origin + 1.8)
    fast = reader_for(Camera("b", "rtsp://cam/b", detect_fps=5.0), settings)
    assert fast.interval == pytest.approx(0.2) and fast.next_sample == pytest.approx(fast.origin + 0.2)
    fast.advance(fast.origin + 0.25)  # sampled a little late: the next tick of the schedule, no drift
    assert fast.next_sample == pytest.approx(fast.origin + 0.4)
    fast.advance(fast.origin + 1.01)  # far behind: missed ticks are skipped, never caught up in a burst
    assert fast.next_sample == pytest.approx(fast.origin + 1.2)


def test_a_sample_timed_to_a_detector_turn_moves_the_schedule_earlier_never_later() -> None:
    reader = reader_for(Camera("t", "rtsp://cam/t"), with_interval(1.0))
    start = reader.origin
    reader.advance(start + 1.0, at=start + 1.6)  # within one interval: sampled then, and every 1 s after
    assert reader.next_sample == pytest.approx(start + 1.6)
    reader.advance(start + 1.6)
    assert reader.next_sample == pytest.approx(start + 2.6)
    reader.advance(start + 2.6, at=start + 3.7)  # more than one interval away: the regular tick instead
    assert reader.next_sample == pytest.approx(start + 3.6)
    reader.advance(start + 3.6, at=start + 3.5)  # already past
    assert reader.next_sample == pytest.approx(start + 4.6) and not reader.timed


def test_a_timed_sample_waits_for_a_late_turn_but_never_past_one_interval() -> None:
    reader = reader_for(Camera("t", "rtsp://cam/t"), with_interval(1.0))
    start = reader.origin
    reader.advance(start + 1.0, at=start + 1.6)
    assert reader.timed
    assert reader.postpone(start + 1.6, start + 1.8)  # the turn runs late: sample later
    assert reader.next_sample == pytest.approx(start + 1.8) and reader.timed
    assert not reader.postpone(start + 1.8, start + 1.805)  # close enough: sample now
    assert reader.postpone(start + 1.8, None)  # the turn went (or is beyond reach): the regular schedule
    assert reader.next_sample == pytest.approx(start + 2.0) and not reader.timed
    reader.advance(start + 2.0)
    assert not reader.postpone(start + 3.0, None)  # one interval since the last sample: sample now
    assert not reader.timed  # a regular sample, not one timed to a turn


def test_a_timed_sample_is_looked_at_again_one_pace_before_it() -> None:
    reader = reader_for(Camera("t", "rtsp://cam/t"), with_interval(1.0))
    start = reader.origin
    reader.advance(start + 1.0, at=start + 1.6, pace=0.2)
    assert reader.next_sample == pytest.approx(start + 1.4) and reader.origin == pytest.approx(start + 1.6)
    assert reader.postpone(start + 1.4, start + 1.5, pace=0.2)  # the queue ran early: one pace is too close
    assert reader.next_sample == pytest.approx(start + 1.5)
    assert not reader.postpone(start + 1.5, start + 1.5, pace=0.2)


def test_a_new_rate_applies_from_the_next_sample_without_a_new_reader() -> None:
    slow_camera = Camera("c", "rtsp://cam/c", detect_fps=0.1)
    reader = reader_for(slow_camera, with_interval(1.8))
    assert reader.interval == pytest.approx(10.0)
    due_slowly = reader.next_sample

    reader.retime(dataclasses.replace(slow_camera, detect_fps=5.0))
    assert reader.camera.detect_fps == 5.0 and reader.interval == pytest.approx(0.2)
    assert reader.next_sample <= reader.origin + 0.2 + 1e-9 < due_slowly  # not 10 s away any more
    reader.advance(reader.origin + 0.21)
    assert reader.next_sample == pytest.approx(reader.origin + 0.4)

    due_fast = reader.next_sample
    reader.retime(dataclasses.replace(slow_camera, detect_fps=None))  # back to the global interval
    assert reader.interval == 1.8
    assert reader.next_sample == due_fast  # the sample already due comes first, then every 1.8 s
    reader.advance(reader.origin + 0.5)
    assert reader.next_sample == pytest.approx(reader.origin + 1.8)


def test_the_demo_rate_on_a_cpu_follows_the_rule() -> None:
    settings = Settings()
    only = {"openvino", "onnxruntime", "onnx", "torch"}
    fps, why = demo_detect_fps(settings, cpus=2, cuda=False, installed=lambda name: name in only)
    assert fps == 5.0 and why.startswith("CPU rule: openvino")  # min(5, 0.5 / 0.09 s)
    fps, why = demo_detect_fps(settings, cpus=2, cuda=False, installed=lambda name: name == "torch")
    assert fps == round(0.5 / CPU_FRAME_S["torch"], 2) and "torch" in why
    fps, _ = demo_detect_fps(settings, cpus=1, cuda=False, installed=lambda name: name == "torch")
    assert fps == round(0.5 / (2 * CPU_FRAME_S["torch"]), 2)  # one CPU shared with every other process
    fps, _ = demo_detect_fps(settings, cpus=4, cuda=False, installed=lambda name: False)
    assert fps == round(0.5 / CPU_FRAME_S["torch"], 2)  # nothing installed: the slowest estimate


def test_the_demo_rate_is_never_below_the_global_rate_and_higher_on_cuda() -> None:
    fast_default = with_interval(0.05)  # an operator asking for 20 frames/s everywhere keeps them
    assert demo_detect_fps(fast_default, cpus=2, cuda=False)[0] == 20.0
    slow_host = with_interval(0.1)
    assert demo_detect_fps(slow_host, cpus=1, cuda=False, installed=lambda name: name == "torch")[0] == 10.0
    assert demo_detect_fps(Settings(), cuda=True) == (10.0, "CUDA host")
    cpu = dataclasses.replace(Settings(), detector=dataclasses.replace(Settings().detector, device="cpu"))
    assert demo_detect_fps(cpu, cpus=2)[1].startswith("CPU rule")
    cuda = dataclasses.replace(Settings(), detector=dataclasses.replace(Settings().detector, device="cuda:0"))
    assert demo_detect_fps(cuda)[0] == 10.0
