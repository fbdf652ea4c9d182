"""Which groups of one camera frame go to the vision model: cooldown, unchanged-scene dedupe, budget.

``decide`` applies these rules, in order, to the frame's groups:

1. No groups: nothing to do, ``skipped_reason="no_groups"``.
2. Reuse: a group whose signature (``group_signature``) has a recent OK verdict, assessed less than
   ``dedupe_window_s`` ago (and not in the future), reuses it: the verdict is re-labelled with the new
   group index, with zero latency and usage since no call is made for this frame. Reuse is free, so it
   applies under cooldown and with no budget left. ERROR verdicts are never reused.
3. Every group reused: the frame counts as assessed (``skipped_reason=None``, ``assess`` empty).
4. Cooldown active: the remaining groups are not assessed (and not ``dropped``),
   ``skipped_reason="cooldown"``.
5. Otherwise the remaining groups are ranked largest first (object count, then lower index) and at
   most ``min(max_groups, budget_left)`` are assessed; the rest are ``dropped``. If that leaves
   nothing to assess (no budget left), ``skipped_reason="budget"``.

``assess`` and ``dropped`` are in ascending group order, ``reuse`` likewise. The frame's expected
groups are ``assess`` plus the reused indexes (``GateDecision.expected``); the reused verdicts are
folded in next to the chord's results. A ``skipped_reason`` says why the non-reused groups got no
call; reused verdicts are valid whatever it is.

The signature is the sorted multiset of member classes plus the group box quantised to a
``cells``×``cells`` grid of the image, so small jitter keeps it while a new member, a lost member or a
real move changes it. A box edge that crosses a grid line also changes it: that costs one extra call,
never a stale verdict.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from traffic.grouping import largest_groups
from traffic.models import GroupContext, GroupVerdict, Usage


class SkipReason(enum.StrEnum):
    """Why the groups that needed a call got none."""

    NO_GROUPS = "no_groups"
    COOLDOWN = "cooldown"
    BUDGET = "budget"


@dataclass(frozen=True)
class RecentVerdict:
    """The latest verdict for a group signature and when it was assessed (epoch s)."""

    verdict: GroupVerdict
    assessed_at: float


@dataclass(frozen=True)
class GateDecision:
    """What to do with one frame's groups."""

    assess: tuple[int, ...]
    """Group indexes to send to the vision model."""
    reuse: tuple[tuple[int, GroupVerdict], ...]
    """Group index → recent verdict of the unchanged group, re-labelled with that index."""
    skipped_reason: SkipReason | None
    dropped: tuple[int, ...]
    """Groups that needed a call but were left out by the budget or ``max_groups``."""

    @property
    def expected(self) -> tuple[int, ...]:
        """Groups whose verdicts make up the frame: assessed and reused, ascending."""
        return tuple(sorted((*self.assess, *(index for index, _ in self.reuse))))


def _cell(value: float, extent: int, cells: int) -> int:
    """Grid cell (0..cells-1) of a coordinate along an image side of ``extent`` pixels."""
    return min(cells - 1, max(0, math.floor(value / extent * cells)))


def group_signature(context: GroupContext, *, cells: int = 8) -> str:
    """Stable text of "the same scene", e.g. ``"car,car,person@2,3,4,5"`` (classes @ grid box)."""
    if cells < 1:
        raise ValueError(f"cells must be >= 1, got {cells}")
    width, height = context.image_size
    x1, y1, x2, y2 = context.group.bbox
    grid = (
        _cell(x1, width, cells),
        _cell(y1, height, cells),
        _cell(x2, width, cells),
        _cell(y2, height, cells),
    )
    classes = ",".join(sorted(d.cls for d in context.detections))
    return f"{classes}@{','.join(str(c) for c in grid)}"


def _reusable(recent: RecentVerdict | None, now: float, window_s: float) -> bool:
    """Whether a remembered verdict may stand in for a new call."""
    return recent is not None and recent.verdict.ok and 0.0 <= now - recent.assessed_at < window_s


def _relabel(verdict: GroupVerdict, index: int) -> GroupVerdict:
    """The verdict for group ``index`` of this frame, with no latency or usage (no call made)."""
    return dataclasses.replace(verdict, group_index=index, latency_s=0.0, usage=Usage())


def decide(
    contexts: Sequence[GroupContext],
    *,
    now: float,
    cooldown_active: bool,
    recent: Mapping[str, RecentVerdict],
    budget_left: int,
    max_groups: int,
    dedupe_window_s: float,
    cells: int = 8,
) -> GateDecision:
    """Split one frame's groups into assess / reuse / dropped (rules in the module docstring)."""
    if max_groups < 1:
        raise ValueError(f"max_groups must be >= 1, got {max_groups}")
    if not contexts:
        return GateDecision((), (), SkipReason.NO_GROUPS, ())
    reuse: list[tuple[int, GroupVerdict]] = []
    pending: list[GroupContext] = []
    for context in sorted(contexts, key=lambda c: c.group.index):
        found = recent.get(group_signature(context, cells=cells))
        if found is not None and _reusable(found, now, dedupe_window_s):
            reuse.append((context.group.index, _relabel(found.verdict, context.group.index)))
        else:
            pending.append(context)
    if not pending:
        return GateDecision((), tuple(reuse), None, ())
    if cooldown_active:
        return GateDecision((), tuple(reuse), SkipReason.COOLDOWN, ())
    chosen = tuple(g.index for g in largest_groups([c.group for c in pending], min(max_groups, budget_left)))
    dropped = tuple(c.group.index for c in pending if c.group.index not in chosen)
    return GateDecision(chosen, tuple(reuse), None if chosen else SkipReason.BUDGET, dropped)
