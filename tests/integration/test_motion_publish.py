"""A tracked frame's analytics as the detector worker publishes them, on a real Redis: counts stored,
``traffic_stats`` sent (at most once a second, the last of a burst by the beat), near misses and wrong-way
movement as rule-based alerts.

The packaged detector sees people only, so no near miss (which needs a vehicle) can come out of a real
frame in a test; the worker's publishing step is driven here with the analytics' own output types.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from infra.socketio_packets import read_emit
from infra.traffic_stats import TrafficStats
from stack.harness import wait_until
from traffic import redis_keys
from traffic.analysis import FrameAnalysis
from traffic.analytics import MotionEvent, MotionUpdate
from traffic.config import load_settings
from traffic.models import Detection, TrafficGroup
from traffic.wire import iso_timestamp
from workers.context import WorkerContext
from workers.motion import motion_counts, publish_motion, send_owed_stats, urgent_groups

pytestmark = pytest.mark.integration

CAR = Detection("car", 0.9, (300.0, 500.0, 420.0, 620.0), 3)
PERSON = Detection("person", 0.8, (410.0, 520.0, 450.0, 615.0), 7)


@pytest.fixture
def ctx(redis_url: str) -> Iterator[WorkerContext]:
    yield WorkerContext(load_settings({"REDIS_URL": redis_url}))


def _analysis() -> FrameAnalysis:
    return FrameAnalysis((1280, 720), (CAR, PERSON), (), tracking_epoch=4)


def _near(value: float, at: float) -> MotionEvent:
    return MotionEvent(
        "near_miss", at, (3, 7), ("car", "person"), measure="ttc", value=value, threshold=1.5,
        position=(400.0, 610.0), phase="start",
    )  # fmt: skip


def _update(events: tuple[MotionEvent, ...], active: tuple[MotionEvent, ...]) -> MotionUpdate:
    return MotionUpdate(events=events, tracks=(), occupancy=(), active_near_misses=active, unit="px")


def test_a_near_miss_is_counted_alerted_and_sent(ctx: WorkerContext) -> None:
    pubsub = ctx.redis.pubsub()
    pubsub.subscribe(redis_keys.SOCKETIO_CHANNEL)
    wait_until(lambda: pubsub.get_message(timeout=0.1), 5, "the subscription")
    crossing = MotionEvent("line_crossing", 100.0, (7,), ("person",), where="kerb", direction="in")
    first = _update((_near(1.2, 100.0), crossing), (_near(1.2, 100.0),))
    publish_motion(ctx, "cam-n", "cam-n", "f1", 100.0, _analysis(), first)

    alerts = {k.decode(): json.loads(v) for k, v in ctx.redis.hgetall(redis_keys.camera_alerts("cam-n")).items()}
    (alert,) = alerts.values()
    assert alert["alertId"] == "cam-n:nm:e4t3-t7" and alert["source"] == "rule-based"
    assert alert["level"] == "medium" and alert["trackIds"] == [3, 7] and alert["riskTypes"] == ["near_miss"]

    sent: list[tuple[str, dict]] = []

    def received() -> list[tuple[str, dict]]:
        while (message := pubsub.get_message(timeout=0.0)) is not None:
            packet = read_emit(message["data"]) if message["type"] == "message" else None
            if packet is not None:
                sent.append((packet.event, packet.data))
        return sent

    wait_until(lambda: {"alert", "traffic_stats"} <= {name for name, _ in received()}, 10, "alert and stats")
    stats = next(data for name, data in sent if name == "traffic_stats")
    assert stats["cameraId"] == "cam-n" and stats["trackingEpoch"] == 4
    assert [(e["kind"], e.get("measure")) for e in stats["events"]] == [("near_miss", "ttc"), ("line_crossing", None)]
    assert stats["nearMisses"][0]["trackIds"] == [3, 7]
    live = TrafficStats(ctx.redis).live("cam-n")
    assert live is not None and live["lines"] == [
        {"name": "kerb", "forward": None, "backward": None, "counts": {"in": {"person": 1}}, "totals": {"in": 1}}
    ]

    # The next frame, within the second: the encounter goes on, nothing new to alert, no second stats event.
    sent.clear()
    publish_motion(ctx, "cam-n", "cam-n", "f2", 100.2, _analysis(), _update((), (_near(1.2, 100.0),)))
    assert ctx.redis.hlen(redis_keys.camera_alerts("cam-n")) == 1
    assert [name for name, _ in received()] == []
    assert ctx.traffic_stats.owed() == ["cam-n"]

    # The beat sends the owed event once the second is up (held here by keeping the interval's key), once.
    tick = redis_keys.camera_stats_tick("cam-n")
    ctx.redis.pexpire(tick, 60_000)
    assert send_owed_stats(ctx) == 0 and ctx.traffic_stats.owed() == ["cam-n"]
    ctx.redis.delete(tick)
    assert send_owed_stats(ctx) == 1
    wait_until(lambda: [name for name, _ in received()] == ["traffic_stats"], 10, "the owed stats")
    assert sent[0][1]["timestamp"] == iso_timestamp(100.2) and ctx.traffic_stats.owed() == []
    assert send_owed_stats(ctx) == 0
    # A frame right after the owed event went out owes the next one (the beat set the interval again).
    publish_motion(ctx, "cam-n", "cam-n", "f3", 100.4, _analysis(), _update((), ()))
    assert ctx.traffic_stats.owed() == ["cam-n"] and ctx.redis.pttl(tick) > 0
    pubsub.close()


def test_metrics_and_the_gate_hear_of_it() -> None:
    wrong = MotionEvent("wrong_way", 5.0, (3,), ("car",), where="lane", value=40.0)
    update = _update((_near(0.7, 5.0), wrong, MotionEvent("dwell", 5.0, (9,), ("bus",), where="stop")), ())
    assert motion_counts(update) == {("near_miss", "ttc"): 1, ("wrong_way", ""): 1, ("dwell", ""): 1}
    assert motion_counts(None) == {}
    groups = (
        TrafficGroup(1, (0, 1), (300, 500, 450, 620), ("car", "person"), 0.85, tracks=(3, 7), key="e4t3"),
        TrafficGroup(2, (2, 3), (900, 100, 1000, 200), ("car",), 0.9, tracks=(11, 12), key="e4t11"),
    )
    analysis = FrameAnalysis((1280, 720), (CAR, PERSON), groups, tracking_epoch=4)
    assert urgent_groups(analysis, update) == frozenset({1})
    assert urgent_groups(analysis, None) == frozenset()
