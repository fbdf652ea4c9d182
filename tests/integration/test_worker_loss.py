"""Lost workers and lost chords: a redelivered task or the deadline sweeper still finalises every frame."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.harness import API_KEY, EventClient, Stack, bus_jpeg, result_for, stack_env
from stack.processes import ProcessSpec
from stack.provider_sim import ProviderSimulator, SimConfig, SimKey
from stack.redis_server import LocalRedis
from traffic import redis_keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def sim() -> Iterator[ProviderSimulator]:
    with ProviderSimulator(SimConfig(keys={API_KEY: SimKey(key_id="k1")})) as simulator:
        yield simulator


@pytest.fixture
def make_stack(tmp_path: Path, sim: ProviderSimulator) -> Iterator[object]:
    stacks: list[Stack] = []
    servers: list[LocalRedis] = []

    def make(**env: str) -> Stack:
        server = LocalRedis(tmp_path / "redis").start()
        servers.append(server)
        stack = Stack(server.url, tmp_path, stack_env(server.url, tmp_path, sim, **env))
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
    for server in servers:
        server.stop()


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_of_an_llm_worker_mid_request_another_worker_finishes(make_stack, sim: ProviderSimulator) -> None:  # type: ignore[no-untyped-def]
    # Short redelivery for the drill: tasks are limited to 3 s, Redis redelivers after 5 s.
    stack = make_stack(TRAFFIC_VISIBILITY_TIMEOUT="5", TRAFFIC_ASSESS_TIME_LIMIT="3")
    stack.start("web", "gpu", "llm", "default")
    client = EventClient(stack.web_url)
    client.call("subscribe", {"cameraIds": ["kill-cam"]})
    sim.update(latency_ms=2500)
    frame_id = stack.inject_frame("kill-cam", bus_jpeg())
    _wait(lambda: sim.stats()["in_flight"] >= 1, 60, "the LLM request to be in flight")
    stack.group.kill("llm", signal.SIGKILL)
    killed_at = time.monotonic()
    sim.update(latency_ms=0)
    stack.start("llm2")
    _, final = client.wait_for(result_for(frame_id, "complete", "partial", "unavailable"), 40)
    client.close()
    assert final["assessment"] == "complete", "the redelivered assessment answered, not the sweeper"
    assert final["finalisedBy"] == "chord" and final["llmModel"] == "qwen-vl-plus"
    assert sim.stats()["total"] >= 2, "the request was made again by the second worker"
    assert time.monotonic() - killed_at < 30


def test_frames_whose_assessment_never_ends_are_finalised_by_the_deadline_sweeper(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    stack.start("web", "gpu", "default")  # no llm worker: the chord can never complete
    schedule = str(stack.tmp / "beat-schedule")
    stack.group.start(ProcessSpec("beat", (sys.executable, "-m", "celery", "-A", "workers", "beat", "-s", schedule)))
    client = EventClient(stack.web_url)
    client.call("subscribe", {"cameraIds": ["sweep-cam"]})
    frame_id = stack.inject_frame("sweep-cam", bus_jpeg(), deadline_s=6)
    _, pending = client.wait_for(result_for(frame_id, "pending"), 60)
    _, final = client.wait_for(result_for(frame_id, "unavailable", "partial", "complete"), 30)
    client.close()
    assert final["assessment"] == "unavailable" and final["finalisedBy"] == "deadline"
    assert final["trafficGroups"] == pending["trafficGroups"] or all(
        g["riskLevel"] == "none" for g in final["trafficGroups"]
    )
    # The result is published before the frame leaves the sweeper's set (at-least-once finalisation).
    _wait(
        lambda: stack.redis.zscore(redis_keys.FRAMES_PENDING, frame_id) is None,
        30,
        f"frame {frame_id} to leave {redis_keys.FRAMES_PENDING} after its final result",
    )
