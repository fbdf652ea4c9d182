"""The worker's loop watch (``workers.consumer.LoopWatch``): a stalled event loop is reported with its stack, once."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from workers.consumer import LoopWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_loop_that_stops_turning_is_reported_once_with_where_its_thread_waits() -> None:
    clock = Clock()
    watch = LoopWatch(stall_s=20.0, clock=clock)
    assert watch.check() is None  # never turned: nothing to say yet
    release = threading.Event()

    def loop() -> None:
        watch.tick()
        release.wait(10)  # what a stuck loop does: wait on something

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        while watch._thread_id is None:
            time.sleep(0.001)
        clock.now += 19.0
        assert watch.check() is None
        clock.now += 2.0
        report = watch.check()
        assert report is not None and "has not turned for 21 s" in report
        assert "release.wait(10)" in report and "in loop" in report  # the stuck thread's own stack
        assert watch.check() is None  # reported once per stall
    finally:
        release.set()
        thread.join()


def test_a_loop_that_turns_again_or_is_paused_to_reconnect_is_no_stall(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    watch = LoopWatch(stall_s=20.0, clock=clock)
    watch.tick()
    clock.now += 30.0
    assert watch.check() is not None
    with caplog.at_level(logging.WARNING, logger="workers.consumer"):
        watch.tick()
    assert "turns again" in caplog.text
    clock.now += 30.0
    assert watch.check() is not None  # a new stall is reported again
    watch.tick()
    watch.pause()  # the consumer retries a lost broker: its errors say why the loop is not turning
    clock.now += 60.0
    assert watch.check() is None
    watch.tick()
    assert watch.check() is None
