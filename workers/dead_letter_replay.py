"""Replay of a dead-lettered group assessment: assess again from the saved inputs, republish the frame."""

from __future__ import annotations

import time

from infra.dead_letters import KEEP_S, DeadLetter, DeadLetters
from infra.frame_store import FrameStore
from traffic.models import GroupVerdict
from traffic.risk import error_verdict
from workers.assessment import assess_with_pool
from workers.context import WorkerContext
from workers.finalize import fold, publish


def replay_verdict(ctx: WorkerContext, entry: DeadLetter) -> GroupVerdict:
    """Assess a dead letter's group again from its saved inputs; store the verdict and republish the frame."""
    letters = DeadLetters(ctx.redis)
    crop, record = letters.inputs(entry.entry_id)
    groups = {g.index: g for g in record.analysis.groups} if record else {}
    if crop is None or record is None or entry.group_index not in groups:
        return error_verdict(entry.group_index, "replay_inputs_missing")
    started = time.time()
    deadline = started + ctx.settings.pipeline.assess_time_limit_s
    context = record.analysis.context(groups[entry.group_index])
    outcome = assess_with_pool(ctx, context, crop, deadline=deadline, started=started)
    if not isinstance(outcome, GroupVerdict):
        return error_verdict(entry.group_index, outcome.reason)
    store = FrameStore(ctx.redis)
    store.save_verdict(entry.frame_id, outcome, time.time() + KEEP_S)
    others = [v for v in store.verdicts(entry.frame_id) if v.group_index != entry.group_index]
    publish(ctx, store, record, fold(record, [outcome, *others]), by="replay")
    return outcome
