"""Sizing of the detector's batches: which nodes batch, and the prefetch a batch needs."""

from __future__ import annotations

import pytest

from workers.batching import consumes_gpu, prefetch_multiplier


@pytest.mark.parametrize(
    ("queues", "expected"),
    [(None, True), ([], True), (["gpu"], True), (["llm", "gpu"], True), (["llm"], False), ({"default": 1}, False)],
)
def test_a_node_batches_when_it_serves_the_gpu_queue(queues: object, expected: bool) -> None:
    assert consumes_gpu(queues) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("batch", "concurrency", "current", "expected"),
    [(1, 1, 1, 1), (8, 1, 1, 8), (8, 2, 1, 4), (5, 2, 1, 3), (4, 1, 6, 6)],
)
def test_prefetch_lets_a_node_hold_a_whole_batch(batch: int, concurrency: int, current: int, expected: int) -> None:
    assert prefetch_multiplier(batch, concurrency, current) == expected
