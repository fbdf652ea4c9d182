"""The detector worker's gate on a real Redis: the cooldown it sets, the recent verdicts it reads and
prunes, and the changes it left unserved (``camera:<id>:unserved``), remembered across frames."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from traffic import redis_keys
from traffic.codec import recent_verdict_to_json
from traffic.config import load_settings
from traffic.gate import RecentVerdict, SkipReason, group_signature
from traffic.models import BBox, Detection, GroupContext, GroupVerdict, RiskLevel, TrafficGroup, VerdictStatus
from workers.context import WorkerContext
from workers.detection import gate_groups

pytestmark = pytest.mark.integration

CAMERA = "cam-g"
PAIR = {3: ("car", (100.0, 100.0, 180.0, 160.0)), 7: ("car", (200.0, 100.0, 280.0, 160.0))}
JOINED = {**PAIR, 9: ("motorcycle", (290.0, 110.0, 330.0, 160.0))}


def _tracked(members: dict[int, tuple[str, BBox]], index: int = 1, epoch: int = 2) -> GroupContext:
    """A group whose members carry track ids, as the detector worker builds it with tracking on."""
    detections = tuple(Detection(cls, 0.9, box, track_id) for track_id, (cls, box) in members.items())
    boxes = [box for _, box in members.values()]
    bbox = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    group = TrafficGroup(
        index, tuple(range(len(members))), bbox, tuple(sorted({c for c, _ in members.values()})), 0.9,
        tracks=tuple(sorted(members)), key=f"e{epoch}t{min(members)}",
    )  # fmt: skip
    return GroupContext(group=group, detections=detections, image_size=(1280, 720))


@pytest.fixture
def ctx(redis_url: str) -> Iterator[WorkerContext]:
    """A worker context with a model configured (so the cooldown and budget ration calls)."""
    env = {
        "REDIS_URL": redis_url,
        "DASHSCOPE_API_KEY": "sk-gate-test-0000000000",
        "TRAFFIC_LLM_BASE_URL": "http://127.0.0.1:9/v1",
        "TRAFFIC_LLM_COOLDOWN": "60",
    }
    context = WorkerContext(load_settings(env))
    assert context.llm is not None
    yield context
    context.redis.delete(
        redis_keys.camera_cooldown(CAMERA),
        redis_keys.camera_recent_verdicts(CAMERA),
        redis_keys.camera_unserved_changes(CAMERA),
    )


def _remember(ctx: WorkerContext, context: GroupContext, at: float) -> None:
    """Store a verdict for ``context`` as the finaliser does after a call."""
    verdict = GroupVerdict(1, VerdictStatus.OK, RiskLevel.NONE, 0.7, (), "quiet", model="m")
    ctx.redis.hset(
        redis_keys.camera_recent_verdicts(CAMERA),
        group_signature(context),
        json.dumps(recent_verdict_to_json(RecentVerdict(verdict, at))),
    )


def test_a_change_refused_by_the_cooldown_is_kept_in_redis_and_served_on_the_next_frame(
    ctx: WorkerContext,
) -> None:
    now = time.time()
    unserved = redis_keys.camera_unserved_changes(CAMERA)
    first, _ = gate_groups(ctx, CAMERA, [_tracked(PAIR)], now, frozenset())
    assert first.assess == (1,)
    assert ctx.redis.exists(redis_keys.camera_cooldown(CAMERA))  # the call started the camera's cooldown
    _remember(ctx, _tracked(PAIR), now)
    ctx.redis.hset(unserved, mapping={"tracks:e2:not-a-track": "x", "tracks:e1:4,5": repr(now - 3600)})

    # A motorcycle joins while the camera cools down: no call, and the change is written down.
    joined, _ = gate_groups(ctx, CAMERA, [_tracked(JOINED)], now + 1.8, frozenset())
    assert joined.assess == () and joined.skipped_reason is SkipReason.COOLDOWN
    kept = {k.decode(): float(v) for k, v in ctx.redis.hgetall(unserved).items()}
    assert kept == {"tracks:e2:3,7,9": now + 1.8}  # the corrupt and the stale entries are gone
    window = ctx.settings.pipeline.dedupe_window_s
    assert 0 < ctx.redis.ttl(unserved) <= int(window * 2) + 1

    # The detector misses the motorcycle on the next frame: the group looks as it did at the verdict, but
    # that verdict predates the unserved change among its tracks, so the group is asked, cooldown or not.
    missed, _ = gate_groups(ctx, CAMERA, [_tracked(PAIR)], now + 3.6, frozenset())
    assert missed.reuse == () and missed.assess == (1,)
    # A worker in another process sees the same: the record is in Redis, not in this one.
    other = WorkerContext(ctx.settings)
    again, _ = gate_groups(other, CAMERA, [_tracked(PAIR)], now + 5.4, frozenset())
    assert again.assess == (1,)
    other.redis.close()


def test_without_a_cooldown_nothing_is_left_unserved(ctx: WorkerContext) -> None:
    now = time.time()
    gate_groups(ctx, CAMERA, [_tracked(PAIR)], now, frozenset())
    ctx.redis.delete(redis_keys.camera_cooldown(CAMERA))
    decision, _ = gate_groups(ctx, CAMERA, [_tracked(JOINED)], now + 1.8, frozenset())
    assert decision.assess == (1,) and decision.unserved == ()
    assert not ctx.redis.exists(redis_keys.camera_unserved_changes(CAMERA))
