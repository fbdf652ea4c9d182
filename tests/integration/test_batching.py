"""Batches across cameras on the ``gpu`` queue: a real detector worker with ``TRAFFIC_DETECTOR_BATCH=4``
and ``TRAFFIC_DETECTOR_PIPELINE=2`` (two predicts lined up per delivery).

To put several messages in one batch without timing anything, the worker stops consuming the ``gpu``
queue (Celery's ``cancel_consumer``) while the test queues them, then starts again (``add_consumer``):
it finds them all waiting and buffers up to four before its first flush. The batch timer is set far
longer than any test waits: a batch starts when it is full or when nothing more waits in the queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from infra import celery_names
from infra.frame_store import FrameStore
from stack.harness import API_KEY, Stack, bus_jpeg, running_stack, wait_until
from stack.provider_sim import ProviderSimulator, SimConfig, SimKey
from traffic import redis_keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCH = 4
WAIT_S = 60.0
"""celery-batches' timer period here: far longer than any test waits, so every batch starts early."""
BINDINGS = "_kombu.binding.celeryev"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with ProviderSimulator(SimConfig(keys={API_KEY: SimKey(key_id="k1")})) as sim:
        env = {
            "TRAFFIC_DETECTOR_BATCH": str(BATCH),
            "TRAFFIC_DETECTOR_PIPELINE": "2",
            "TRAFFIC_DETECTOR_BATCH_WAIT_MS": str(int(WAIT_S * 1000)),
        }
        with running_stack(tmp_path_factory.mktemp("batching"), sim, "gpu", "llm", "default", **env) as running:
            yield running


def gpu_node(stack: Stack) -> str:
    replies = stack.celery.control.ping(timeout=2.0) or []
    (node,) = [name for reply in replies for name in reply if name.startswith("gpu@")]
    return node


def gpu_worker_waits_on_redis(stack: Stack) -> bool:
    """Whether one of the gpu worker's connections is blocked in a BRPOP on the Redis server."""
    port = int(stack.redis_url.rsplit(":", 1)[1].split("/")[0])
    connections = psutil.Process(stack.group.pid("gpu")).net_connections(kind="tcp")
    ours = {c.laddr.port for c in connections if c.raddr and c.raddr.port == port}
    return any(
        int(client["addr"].rsplit(":", 1)[1]) in ours and client["cmd"] == "brpop" and "b" in client["flags"]
        for client in stack.redis.client_list()
    )


def paused_gpu(stack: Stack) -> Any:
    """A context manager: the gpu worker consumes nothing inside it, and everything queued when it leaves."""

    class Paused:
        def __enter__(self) -> None:
            self.node = gpu_node(stack)
            reply = stack.celery.control.cancel_consumer(celery_names.GPU_QUEUE, destination=[self.node], reply=True)
            assert reply, "the gpu worker did not answer cancel_consumer"
            # A BRPOP the worker sent before the cancel still waits in Redis (up to kombu's 1-s timeout): a
            # message it popped would reach no consumer and be put back behind the others, out of order.
            wait_until(lambda: not gpu_worker_waits_on_redis(stack), 10, "the gpu worker's last BRPOP to end")

        def __exit__(self, *exc: object) -> None:
            reply = stack.celery.control.add_consumer(celery_names.GPU_QUEUE, destination=[self.node], reply=True)
            assert reply, "the gpu worker did not answer add_consumer"

    return Paused()


def final_timings(stack: Stack, frame_ids: list[str], timeout: float = 120.0) -> dict[str, dict[str, float]]:
    """Each frame's stage times once every one of them was finalised."""
    store = FrameStore(stack.redis)
    wait_until(lambda: all("final" in store.timings(f) for f in frame_ids), timeout, f"{frame_ids} to be final")
    return {f: store.timings(f) for f in frame_ids}


def test_an_idle_worker_starts_a_lone_frame_at_once_at_batch_size_1(stack: Stack) -> None:
    sent = time.time()
    frame_id = stack.inject_frame("lone", bus_jpeg())
    timings = final_timings(stack, [frame_id])[frame_id]
    assert timings["batch"] == 1.0
    # Nothing else was queued, so the batch started without waiting for the timer.
    assert timings["received"] - sent < WAIT_S / 2


def test_frames_of_several_cameras_share_one_predict_and_each_keeps_its_own_result(stack: Stack) -> None:
    events = TaskEvents(stack)
    try:
        with paused_gpu(stack):
            frames = [stack.inject_frame(f"cam-{i}", bus_jpeg()) for i in range(BATCH)]
        timings = final_timings(stack, frames)
        assert [timings[f]["batch"] for f in frames] == [float(BATCH)] * BATCH
        # One predict, its time shared; each frame its own record, result and counters.
        assert len({timings[f]["analyse_s"] for f in frames}) == 1
        store = FrameStore(stack.redis)
        for i, frame_id in enumerate(frames):
            record = store.record(frame_id)
            assert record is not None and record.camera_id == f"cam-{i}" and record.analysis.detections
            latest = stack.redis.get(redis_keys.camera_latest(f"cam-{i}"))
            assert latest is not None and frame_id.encode() in latest
            assert stack.redis.hget(redis_keys.camera_stats(f"cam-{i}"), "detected") == b"1"
        # Flower still sees every message start and succeed, though one task ran them all: started when the
        # batch began, succeeded after the frame was done; both go out once the batch has ended (none while
        # its predict runs), so they reach Flower after every frame of the batch was routed.
        for i, frame_id in enumerate(frames):
            wait_until(lambda i=i: events.started_and_succeeded(f"'cam-{i}'"), 30, f"cam-{i}'s task events")
            started, succeeded = events.times(f"'cam-{i}'")
            assert started <= timings[frame_id]["received"] <= timings[frame_id]["detected"] <= succeeded
            assert events.started_arrival(f"'cam-{i}'") >= max(timings[f]["detected"] for f in frames)
    finally:
        events.close()


def test_the_next_predicts_frames_are_loaded_before_the_last_predicts_frames_are_routed(stack: Stack) -> None:
    # Two predicts' worth of messages in one delivery (the worker lines up two predicts): once the first
    # predict ends, the second predict's frames are taken and handed to the model before the first
    # predict's frames are routed (they are routed while it runs).
    with paused_gpu(stack):
        frames = [stack.inject_frame(f"piped-{i}", bus_jpeg()) for i in range(2 * BATCH)]
    timings = final_timings(stack, frames)
    first, second = frames[:BATCH], frames[BATCH:]
    assert [timings[f]["batch"] for f in frames] == [float(BATCH)] * (2 * BATCH)
    assert len({timings[f]["analyse_s"] for f in first}) == 1 and len({timings[f]["analyse_s"] for f in second}) == 1
    assert max(timings[f]["received"] for f in second) < min(timings[f]["detected"] for f in first)
    # ... and not before the first predict had ended: taken when the model was free for them.
    first_predict_ended = min(timings[f]["received"] for f in first) + timings[first[0]]["analyse_s"]
    assert min(timings[f]["received"] for f in second) >= first_predict_ended
    # Routed in the order of the messages, one predict after the other.
    detected = [timings[f]["detected"] for f in frames]
    assert detected == sorted(detected)


def test_a_bad_frame_in_a_batch_fails_alone_and_a_cameras_frames_keep_their_order(stack: Stack) -> None:
    store = FrameStore(stack.redis)
    with paused_gpu(stack):
        first = stack.inject_frame("ordered", bus_jpeg())
        broken = stack.inject_frame("broken", b"\xff\xd8 not really a jpeg")
        late = stack.inject_frame("late", bus_jpeg(), deadline_s=0.001)
        second = stack.inject_frame("ordered", bus_jpeg())
    timings = final_timings(stack, [first, second])
    # Only two frames reached the predict: the broken one failed to decode, the late one was dropped.
    assert timings[first]["batch"] == timings[second]["batch"] == 2.0
    assert timings[first]["detected"] < timings[second]["detected"]
    wait_until(lambda: stack.redis.hget(redis_keys.camera_stats("broken"), "detect_errors") == b"1", 30, "the error")
    wait_until(lambda: stack.redis.hget(redis_keys.camera_stats("late"), "dropped_age") == b"1", 30, "the drop")
    assert "detected" not in store.timings(broken) and "detected" not in store.timings(late)


class TaskEvents:
    """Records the ``task-started`` and ``task-succeeded`` events of ``detect_frame`` messages."""

    def __init__(self, stack: Stack) -> None:
        self.started: dict[str, float] = {}
        self.started_at: dict[str, float] = {}
        """Task id → when its ``task-started`` event reached this receiver."""
        self.succeeded: dict[str, tuple[str, float]] = {}
        self._connection = stack.celery.connection()
        self._receiver = stack.celery.events.Receiver(
            self._connection, handlers={"task-started": self._started, "task-succeeded": self._succeeded}
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        # Events reach a receiver once its queue is bound to the events exchange (kombu keeps the binding in Redis).
        queue = self._receiver.queue.name
        wait_until(lambda: any(queue.encode() in b for b in stack.redis.smembers(BINDINGS)), 10, "the event receiver")

    def _run(self) -> None:
        try:
            self._receiver.capture(limit=None, timeout=None, wakeup=False)
        except Exception:  # noqa: BLE001 - closed by close()
            pass

    def _started(self, event: dict[str, Any]) -> None:
        self.started_at[event["uuid"]] = time.time()
        self.started[event["uuid"]] = float(event["timestamp"])

    def _succeeded(self, event: dict[str, Any]) -> None:
        self.succeeded[event["uuid"]] = (str(event.get("result", "")), float(event["timestamp"]))

    def started_and_succeeded(self, text: str) -> bool:
        """Whether a task whose result mentions ``text`` was reported started, then succeeded."""
        return any(text in result and task_id in self.started for task_id, (result, _) in self.succeeded.items())

    def times(self, text: str) -> tuple[float, float]:
        """When the task whose result mentions ``text`` started and succeeded, as its events say."""
        task_id = self._task_id(text)
        return self.started[task_id], self.succeeded[task_id][1]

    def started_arrival(self, text: str) -> float:
        """When the ``task-started`` event of the task whose result mentions ``text`` reached this receiver."""
        return self.started_at[self._task_id(text)]

    def _task_id(self, text: str) -> str:
        """The one succeeded task whose result mentions ``text``."""
        (task_id,) = [task_id for task_id, (result, _) in self.succeeded.items() if text in result]
        return task_id

    def close(self) -> None:
        self._receiver.should_stop = True
        self._thread.join(3)
        self._connection.release()
