"""A camera's frames offered to the detector on a real redis-server: the newest frame waits, older ones are shed."""

from __future__ import annotations

import time

import pytest
import redis

from infra.frame_store import CapturedFrame, FrameStore, Offer, Taken
from traffic import redis_keys

pytestmark = pytest.mark.integration

LOST_AFTER_S = 30.0


def admitted(
    store: FrameStore, camera_id: str, name: str, *, captured_at: float | None = None, preview: bool = True
) -> CapturedFrame:
    """A frame stored as the capture service stores it (without a preview: as it does with privacy blur on)."""
    at = time.time() if captured_at is None else captured_at
    small = b"preview:" + name.encode() if preview else b""
    frame = CapturedFrame(name, camera_id, camera_id, at, at + 45.0, 4, 4, b"jpeg:" + name.encode(), small)
    store.admit(frame, ttl_s=30.0, fps=0.0)
    return frame


def offer(store: FrameStore, frame: CapturedFrame, max_in_flight: int = 2) -> Offer:
    return store.offer(frame, max_in_flight=max_in_flight, task_lost_after_s=LOST_AFTER_S)


def take(store: FrameStore, sent_for: str, *, turn: str = "turn", contended: bool = False) -> Taken:
    """What a detector worker does first: take the camera's frame (the queue "gpu" is empty unless a test fills it)."""
    return store.take("cam", sent_for, keep_s=45, queue="gpu", next_turn=turn, contended=contended)


def inflight(client: redis.Redis, camera_id: str) -> set[str]:
    return {m.decode() for m in client.zrange(redis_keys.camera_inflight(camera_id), 0, -1)}


def stats(client: redis.Redis, camera_id: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(redis_keys.camera_stats(camera_id)).items() if k != b"fps"}


def test_newer_frames_replace_the_waiting_one_which_the_task_then_takes(redis_client: redis.Redis) -> None:
    store = FrameStore(redis_client)
    a, b, c = (admitted(store, "cam", name) for name in ("a", "b", "c"))
    assert offer(store, a) == Offer("send")  # the caller sends a task for "a"
    assert offer(store, b) == Offer("waiting", shed="a")
    assert offer(store, c) == Offer("waiting", shed="b")
    assert stats(redis_client, "cam") == {"captured": 3, "dropped_superseded": 2}
    for shed in ("a", "b"):  # shed frames leave nothing behind
        assert not redis_client.exists(redis_keys.frame_image(shed), redis_keys.frame_meta(shed))
    assert inflight(redis_client, "cam") == {"c"}

    assert take(store, "a") == Taken("c", "waiting")
    assert take(store, "a") == Taken("c", "redelivered")  # a redelivered task: the same frame
    assert store.image("c") == b"jpeg:c"

    d = admitted(store, "cam", "d")
    assert offer(store, d) == Offer("send")  # nothing waits now: a new task goes to the back of the queue
    assert inflight(redis_client, "cam") == {"c", "d"}
    store.done_inflight("cam", "c")
    assert inflight(redis_client, "cam") == {"d"}


def test_the_in_flight_cap_counts_frames_in_detection_and_the_waiting_one(redis_client: redis.Redis) -> None:
    store = FrameStore(redis_client)
    for name in ("a", "b"):
        assert offer(store, admitted(store, "cam", name), max_in_flight=2) == Offer("send")
        take(store, name)  # a worker starts on it
    assert not store.has_room("cam", 2, 45.0)
    assert offer(store, admitted(store, "cam", "c"), max_in_flight=2) == Offer("dropped_inflight")
    assert not redis_client.exists(redis_keys.frame_image("c"))
    assert stats(redis_client, "cam")["dropped_inflight"] == 1
    store.done_inflight("cam", "a")
    assert store.has_room("cam", 2, 45.0)
    assert offer(store, admitted(store, "cam", "d"), max_in_flight=2) == Offer("send")
    assert store.has_room("cam", 2, 45.0), "a waiting frame can always be replaced"


def test_a_waiting_task_lost_for_longer_than_redelivery_takes_is_replaced(redis_client: redis.Redis) -> None:
    store = FrameStore(redis_client)
    assert offer(store, admitted(store, "cam", "a")) == Offer("send")
    redis_client.hset(redis_keys.camera_waiting("cam"), "sent", repr(time.time() - LOST_AFTER_S - 1))
    assert offer(store, admitted(store, "cam", "b")) == Offer("send", shed="a")
    assert inflight(redis_client, "cam") == {"b"}
    # Should the lost task turn up after all, its frame is gone and the new task owns the slot.
    assert take(store, "a") == Taken("a", "own")
    assert store.meta("a") is None
    assert take(store, "b") == Taken("b", "waiting")


def test_a_task_sent_for_a_frame_directly_keeps_it(redis_client: redis.Redis) -> None:
    store = FrameStore(redis_client)
    now = time.time()
    store.put("direct", "cam", b"jpeg", captured_at=now, deadline=now + 45)
    assert take(store, "direct") == Taken("direct", "own")
    assert store.image("direct") == b"jpeg"


def test_a_task_that_could_not_be_sent_frees_its_slots(redis_client: redis.Redis) -> None:
    store = FrameStore(redis_client)
    assert offer(store, admitted(store, "cam", "a")) == Offer("send")
    store.withdraw("cam", "a")
    assert not redis_client.exists(redis_keys.camera_waiting("cam"))
    assert inflight(redis_client, "cam") == set()
    assert stats(redis_client, "cam")["send_failed"] == 1
    assert offer(store, admitted(store, "cam", "b")) == Offer("send")


def test_while_other_cameras_wait_a_taken_camera_queues_its_next_turn_at_once(redis_client: redis.Redis) -> None:
    store = FrameStore(redis_client)
    assert offer(store, admitted(store, "cam", "a")) == Offer("send")
    redis_client.lpush("gpu", "another camera's task")
    assert take(store, "a", turn="t1") == Taken("a", "waiting", next_turn="t1")  # the caller sends task "t1"
    assert offer(store, admitted(store, "cam", "b")) == Offer("waiting")  # for t1: no new task
    assert offer(store, admitted(store, "cam", "c")) == Offer("waiting", shed="b")
    assert inflight(redis_client, "cam") == {"a", "c"}
    redis_client.delete("gpu")
    assert take(store, "t1", turn="t2") == Taken("c", "waiting")  # nothing else queued: no next turn
    store.done_inflight("cam", "a")
    assert offer(store, admitted(store, "cam", "d")) == Offer("send")


def test_a_batch_of_several_cameras_queues_the_next_turn_though_the_queue_is_empty(redis_client: redis.Redis) -> None:
    # The other cameras' tasks sit in the worker's buffer (prefetched for one batch), not in the queue.
    store = FrameStore(redis_client)
    assert offer(store, admitted(store, "cam", "a")) == Offer("send")
    assert take(store, "a", turn="t1", contended=True) == Taken("a", "waiting", next_turn="t1")
    assert offer(store, admitted(store, "cam", "b")) == Offer("waiting")  # for t1: no new task
    assert take(store, "t1", turn="t2") == Taken("b", "waiting")  # alone again: no next turn


def test_a_turn_that_finds_no_newer_frame_ends_and_the_next_frame_is_sent(redis_client: redis.Redis) -> None:
    store = FrameStore(redis_client)
    assert offer(store, admitted(store, "cam", "a")) == Offer("send")
    redis_client.lpush("gpu", "another camera's task")
    assert take(store, "a", turn="t1").next_turn == "t1"
    assert take(store, "t1", turn="t2") == Taken(None, "none")
    assert not redis_client.exists(redis_keys.camera_waiting("cam"))
    assert offer(store, admitted(store, "cam", "b")) == Offer("send")
    store.done_inflight("cam", "a")
    c = offer(store, admitted(store, "cam", "c"), max_in_flight=1)
    assert (c.outcome, c.shed) == ("waiting", "b")
    assert c.turn is not None and c.turn.ahead == 2  # the task sent for "b" joined the queue behind one other


def test_a_turn_that_could_not_be_sent_frees_the_slot_and_its_frame(redis_client: redis.Redis) -> None:
    store = FrameStore(redis_client)
    assert offer(store, admitted(store, "cam", "a")) == Offer("send")
    redis_client.lpush("gpu", "another camera's task")
    assert take(store, "a", turn="t1").next_turn == "t1"
    assert offer(store, admitted(store, "cam", "b")) == Offer("waiting")
    store.withdraw("cam", "t1")
    assert inflight(redis_client, "cam") == {"a"}
    assert offer(store, admitted(store, "cam", "c")) == Offer("send")


def test_a_batch_takes_and_loads_each_cameras_frame_in_one_round_trip_as_one_by_one(redis_client: redis.Redis) -> None:
    # A batch of three tasks: two cameras with a waiting frame (one sent for a frame since replaced), and a
    # task sent for a frame directly. Each gets what `take` would give it alone, in order, and is loaded.
    store = FrameStore(redis_client)
    a1, a2 = admitted(store, "cam-a", "a1"), admitted(store, "cam-a", "a2")
    assert offer(store, a1) == Offer("send") and offer(store, a2) == Offer("waiting", shed="a1")
    b1 = admitted(store, "cam-b", "b1")
    assert offer(store, b1) == Offer("send")
    own = admitted(store, "cam-c", "c1", preview=False)
    turns = [("cam-a", "a1", "turn-a"), ("cam-b", "b1", "turn-b"), ("cam-c", "c1", "turn-c")]
    taken = store.take_many(turns, keep_s=45, queue="gpu", contended=True)
    assert taken == [Taken("a2", "waiting", "turn-a"), Taken("b1", "waiting", "turn-b"), Taken("c1", "own")]
    loaded = store.load_many_for_detection(["a2", "b1", "c1"])
    assert [i.jpeg for i in loaded] == [b"jpeg:a2", b"jpeg:b1", b"jpeg:c1"]
    assert [i.preview for i in loaded] == [b"preview:a2", b"preview:b1", None]  # the detector decodes previews
    assert [i.meta.camera_id if i.meta else None for i in loaded] == ["cam-a", "cam-b", "cam-c"]
    captured = [i.meta.captured_at if i.meta else None for i in loaded]
    assert captured == [a2.captured_at, b1.captured_at, own.captured_at]
    assert all("received" in store.timings(f) for f in ("a2", "b1", "c1"))
    assert not any(i.final for i in loaded)
    # Redelivered, the batch takes the same frames again; one of them was finalised in between.
    store.confirm_final("b1", time.time() + 45)
    again = store.take_many(turns, keep_s=45, queue="gpu", contended=True)
    assert [t.frame_id for t in again] == ["a2", "b1", "c1"] and [t.how for t in again][:2] == ["redelivered"] * 2
    assert [i.final for i in store.load_many_for_detection(["a2", "b1", "c1"])] == [False, True, False]
    assert store.take_many([], keep_s=45, queue="gpu") == [] and store.load_many_for_detection([]) == []


def test_take_and_load_reads_the_frame_a_task_names_with_its_take_and_any_other_frame_after(
    redis_client: redis.Redis,
) -> None:
    # Three tasks: one sent for a frame since replaced (it takes the newer one, read after the take), one sent
    # for the frame it takes (read with the take), one whose camera had nothing newer (idle: nothing read).
    store = FrameStore(redis_client)
    a1, a2 = admitted(store, "cam-a", "a1"), admitted(store, "cam-a", "a2")
    assert offer(store, a1) == Offer("send") and offer(store, a2) == Offer("waiting", shed="a1")
    b1 = admitted(store, "cam-b", "b1")
    assert offer(store, b1) == Offer("send")
    turns = [("cam-a", "a1", "turn-a"), ("cam-b", "b1", "turn-b"), ("cam-c", "turn-c0", "turn-c")]
    redis_client.hset(redis_keys.camera_waiting("cam-c"), mapping={"origin": "turn-c0"})  # a turn, no frame
    loaded = store.take_and_load(turns, keep_s=45, queue="gpu", contended=False)
    assert [t for t, _ in loaded] == [Taken("a2", "waiting"), Taken("b1", "waiting"), Taken(None, "none")]
    (_, a), (_, b), (_, idle) = loaded
    assert a is not None and a.jpeg == b"jpeg:a2" and a.meta is not None and a.meta.captured_at == a2.captured_at
    assert b is not None and b.jpeg == b"jpeg:b1" and b.meta is not None and b.meta.camera_id == "cam-b"
    assert (a.preview, b.preview) == (b"preview:a2", b"preview:b1")  # read after the take, and with it
    assert idle is None
    assert not any(store.timings(f) for f in ("a2", "b1"))  # the caller stamps "received", not the load
    # Delivered again after b1 was finalised: the same frames, b1 marked final.
    store.confirm_final("b1", time.time() + 45)
    again = store.take_and_load(turns[:2], keep_s=45, queue="gpu")
    assert [(t.frame_id, t.how, i.final if i else None) for t, i in again] == [
        ("a2", "redelivered", False),
        ("b1", "redelivered", True),
    ]
    assert store.take_and_load([], keep_s=45, queue="gpu") == []


def test_a_requeued_turn_has_a_ticket_on_the_queues_turn_clock(redis_client: redis.Redis) -> None:
    store = FrameStore(redis_client)
    clock = redis_keys.turn_clock("gpu")

    def read_clock() -> dict[str, float]:
        return {k.decode(): float(v) for k, v in redis_client.hgetall(clock).items()}

    redis_client.rpush("gpu", "other-1", "other-2")  # two other cameras' turns queued
    assert offer(store, admitted(store, "cam", "a")) == Offer("send")
    assert take(store, "a", turn="t1") == Taken("a", "waiting", next_turn="t1")
    assert read_clock()["count"] == 1 and "pace" not in read_clock()  # one turn: no pace yet
    assert redis_client.hget(redis_keys.camera_waiting("cam"), "ticket") == b"4"  # after the two ahead of it
    assert offer(store, admitted(store, "cam", "b")) == Offer("waiting")  # no pace: no forecast
    time.sleep(0.02)
    store.take("other-1", "other-1", keep_s=45, queue="gpu", next_turn="unused")  # another camera's turn
    after = read_clock()
    assert after["count"] == 2 and after["pace"] > 0.0 and "jitter" not in after
    store.done_inflight("cam", "a")
    c = offer(store, admitted(store, "cam", "c"))
    assert c.outcome == "waiting" and c.shed == "b" and c.turn is not None
    assert c.turn.ahead == 2 and c.turn.last_take == pytest.approx(after["last"])
    assert c.turn.pace == pytest.approx(after["pace"]) and c.turn.jitter == 0.0
    assert store.turn("cam") == c.turn
    time.sleep(0.05)
    store.take("other-2", "other-2", keep_s=45, queue="gpu", next_turn="unused")
    later = read_clock()
    gap = later["last"] - after["last"]
    assert later["count"] == 3 and later["jitter"] == pytest.approx(abs(min(gap, 3 * after["pace"]) - after["pace"]))
    turn = store.turn("cam")
    assert turn is not None and turn.ahead == 1  # the next turn taken is this camera's
    assert redis_client.pttl(clock) <= 45_000  # an idle queue's clock goes away


def test_a_batch_of_turns_ticks_the_clock_once_per_turn_and_tickets_follow_the_batch(redis_client: redis.Redis) -> None:
    store = FrameStore(redis_client)
    clock = redis_keys.turn_clock("gpu")
    for camera in ("c0", "c1", "c2"):
        assert offer(store, admitted(store, camera, f"{camera}-a")).outcome == "send"
    redis_client.rpush("gpu", "queued turn")  # one more camera's turn waits in the queue
    turns = [(camera, f"{camera}-a", f"{camera}-next") for camera in ("c0", "c1", "c2")]
    taken = store.take_many(turns, keep_s=45, queue="gpu", contended=True)  # one predict of three frames
    assert [t.next_turn for t in taken] == ["c0-next", "c1-next", "c2-next"]
    assert redis_client.hget(clock, "count") == b"3" and redis_client.hget(clock, "run") == b"3"
    # Takes 1-3 are the batch, 4 the turn that waited, 5 c0's next turn, then c1's and c2's.
    tickets = [int(redis_client.hget(redis_keys.camera_waiting(c), "ticket") or 0) for c in ("c0", "c1", "c2")]
    assert tickets == [5, 6, 7]
    first = float(redis_client.hget(clock, "last") or 0)
    time.sleep(0.06)
    store.take("queued", "queued turn", keep_s=45, queue="gpu", next_turn="unused")
    later = float(redis_client.hget(clock, "last") or 0)
    pace = float(redis_client.hget(clock, "pace") or 0)
    assert pace == pytest.approx((later - first) / 3)  # the batch of three took that long: a third each
    turn = store.turn("c0")
    assert turn is not None and turn.ahead == 1 and turn.batch == 1
